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
        lab, area = _components(m)
        small = area < min_area_px
        small[0] = False
        if small.any():
            m[small[lab]] = 0  # a lookup by component id
    if min_hole_px > 1 and m.any():
        lab, area = _components(m ^ 1)
        fill = area < min_hole_px
        fill[0] = False
        fill[lab[[0, -1], :]] = fill[lab[:, [0, -1]]] = False  # background touching the border: no hole
        if fill.any():
            m[fill[lab]] = 1
    return m.astype(bool)


def _components(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """4-connected component ids of a uint8 0/1 image (0: the zeros) and each id's pixel count
    (labels only: cheaper than OpenCV's per-component statistics)."""
    n, lab = cv2.connectedComponents(m, connectivity=4)
    if n > 2:
        return lab, np.bincount(lab.ravel(), minlength=n)
    ones = int(np.count_nonzero(m))  # one component (the usual case): no need to count by id
    return lab, np.array([m.size - ones, ones])[:n]
