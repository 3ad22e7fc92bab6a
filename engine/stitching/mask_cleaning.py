"""Cleaning an object's mask before it is stitched and vectorised.

Foreground components (4-connected) smaller than ``min_area_px`` are removed and holes
(4-connected background components not touching the crop's border) smaller than
``min_hole_px`` are filled, in pixels, so that the label image and the polygons of an object
describe the same shape. Noisy masks (e.g. from an untrained model) otherwise turn into
thousands of tiny polygon parts, which cost time and memory to vectorise and keep.
"""
from __future__ import annotations

import cv2
import numpy as np


def clean_mask(mask: np.ndarray, min_area_px: float, min_hole_px: float) -> np.ndarray:
    """bool (h, w) -> bool (h, w) without specks below ``min_area_px`` and holes below ``min_hole_px``."""
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    if min_area_px > 1 and m.any():
        n, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=4)
        small = stats[:, cv2.CC_STAT_AREA] < min_area_px
        small[0] = False
        if small.any():
            m[small[lab]] = 0  # a lookup by component id, cheaper than np.isin
    if min_hole_px > 1 and m.any():
        bg = (1 - m).astype(np.uint8)
        n, lab, stats, _ = cv2.connectedComponentsWithStats(bg, connectivity=4)
        h, w = m.shape
        x, y = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
        inner = (x > 0) & (y > 0) & (x + stats[:, cv2.CC_STAT_WIDTH] < w) & (y + stats[:, cv2.CC_STAT_HEIGHT] < h)
        fill = inner & (stats[:, cv2.CC_STAT_AREA] < min_hole_px)
        fill[0] = False
        if fill.any():
            m[fill[lab]] = 1
    return m.astype(bool)
