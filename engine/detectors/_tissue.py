"""Tissue mask of a slide from its thumbnail (tiatoolbox's tissue maskers), shared by the
tissue and grid-points detectors."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import SlideLike

TISSUE_METHODS = ("otsu", "morphological")


@dataclass
class TissueMask:
    """A boolean tissue mask over the whole slide; pixel ``(r, c)`` covers level-0
    ``x in [c*fx, (c+1)*fx)``, ``y in [r*fy, (r+1)*fy)`` with ``fx, fy = l0_px_per_px``."""

    mask: np.ndarray  # bool (h, w)
    l0_px_per_px: tuple[float, float]
    mask_mpp: float  # µm per mask pixel (mean of x and y)

    def contains_l0(self, x_l0_px: np.ndarray, y_l0_px: np.ndarray) -> np.ndarray:
        """Whether level-0 points lie on tissue (False outside the mask)."""
        c = np.floor(np.asarray(x_l0_px, dtype=np.float64) / self.l0_px_per_px[0]).astype(np.int64)
        r = np.floor(np.asarray(y_l0_px, dtype=np.float64) / self.l0_px_per_px[1]).astype(np.int64)
        h, w = self.mask.shape
        ok = (c >= 0) & (c < w) & (r >= 0) & (r < h)
        out = np.zeros(c.shape, dtype=bool)
        out[ok] = self.mask[r[ok], c[ok]]
        return out


def slide_tissue_mask(
    slide: SlideLike,
    thumbnail_max_px: int = 2048,
    method: str = "otsu",
    min_area_um2: float = 0.0,
    min_contrast: int = 8,
    fill_holes: bool = False,
) -> TissueMask:
    """Tissue on a thumbnail of ``slide``: tiatoolbox's ``OtsuTissueMasker`` (``"otsu"``) or
    ``MorphologicalMasker`` at the thumbnail's mpp (``"morphological"``: Otsu, small-region
    removal, then a dilation of about 32 µm), then components under ``min_area_um2`` removed
    and, with ``fill_holes``, enclosed background (pale lumina, fat) filled.

    A thumbnail with grey-level range below ``min_contrast`` (blank slide) has no tissue:
    Otsu would split noise.
    """
    import cv2

    if method not in TISSUE_METHODS:
        raise ValueError(f"tissue method must be one of {TISSUE_METHODS}, got {method!r}")
    thumb = np.asarray(slide.thumbnail(int(thumbnail_max_px)))
    if thumb.ndim != 3 or thumb.shape[2] < 3 or thumb.dtype != np.uint8:
        raise ValueError(f"slide.thumbnail must return uint8 (H, W, 3), got {thumb.dtype} {thumb.shape}")
    thumb = np.ascontiguousarray(thumb[..., :3])
    W, H = slide.dimensions_l0_px
    fx, fy = float(W) / thumb.shape[1], float(H) / thumb.shape[0]
    mask_mpp = float(slide.mpp) * 0.5 * (fx + fy)
    grey = cv2.cvtColor(thumb, cv2.COLOR_RGB2GRAY)
    if int(grey.max()) - int(grey.min()) < min_contrast:
        mask = np.zeros(grey.shape, dtype=bool)
    else:
        from tiatoolbox.tools.tissuemask import MorphologicalMasker, OtsuTissueMasker

        masker = OtsuTissueMasker() if method == "otsu" else MorphologicalMasker(mpp=mask_mpp)
        mask = np.asarray(masker.fit_transform(thumb[None])[0], dtype=bool)
    if min_area_um2 > 0 and mask.any():
        min_px = min_area_um2 / (float(slide.mpp) ** 2 * fx * fy)
        n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        keep = np.zeros(n, dtype=bool)
        keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_px
        mask = keep[lab]
    if fill_holes and mask.any():
        import scipy.ndimage as ndi

        mask = ndi.binary_fill_holes(mask)
    return TissueMask(mask=mask, l0_px_per_px=(fx, fy), mask_mpp=mask_mpp)
