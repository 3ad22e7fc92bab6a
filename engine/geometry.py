"""Pure coordinate geometry between level-0 slide pixels and patch pixels (no I/O).

Frames (see ``engine.records``): coordinates are continuous, pixel ``i`` spans ``[i, i+1)``,
so pixel ``i``'s centre is ``i + 0.5``. ``_l0_px`` is level-0 (baseline) pixels of the slide,
x to the right, y down; ``_px`` on a patch is that patch's own pixel frame; ``_mpp`` is µm per
pixel. A patch read at ``patch_mpp`` from a slide whose level 0 is ``slide_mpp`` has
``f = patch_mpp / slide_mpp`` level-0 px per patch px, and its pixel ``(r, c)`` covers
level-0 ``x in [ox + c*f, ox + (c+1)*f)``, ``y in [oy + r*f, oy + (r+1)*f)`` for origin
``(ox, oy)``.

Note: segment-anything's prompt convention names a pixel by its index (centre at ``i + 0.5``);
a continuous coordinate ``x`` here is SAM's ``x - 0.5``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def l0_per_px(target_mpp: float, slide_mpp: float) -> float:
    """Level-0 pixels per pixel at ``target_mpp`` (> 1 when the target is coarser).

    Multiply a length in target pixels by this to get level-0 pixels; divide to go back.
    """
    if not (target_mpp > 0 and slide_mpp > 0):
        raise ValueError(f"mpp must be positive, got target_mpp={target_mpp}, slide_mpp={slide_mpp}")
    return float(target_mpp) / float(slide_mpp)


def patch_origin_l0_px(
    centre_l0_px: tuple[float, float], patch_px: int, patch_mpp: float, slide_mpp: float
) -> tuple[float, float]:
    """Top-left corner (x, y), in level-0 px, of a square ``patch_px`` patch at ``patch_mpp``
    whose centre (the corner between its four middle pixels for even sizes) is ``centre_l0_px``.

    Continuous: no rounding. Readers that need integer origins round it themselves.
    """
    half_l0 = 0.5 * patch_px * l0_per_px(patch_mpp, slide_mpp)
    return float(centre_l0_px[0]) - half_l0, float(centre_l0_px[1]) - half_l0


def _as_xy(a: np.ndarray | tuple | list, last: int) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.shape[-1:] != (last,):
        raise ValueError(f"expected an array of shape (..., {last}), got {arr.shape}")
    return arr


def l0_to_patch_px(
    xy_l0_px: np.ndarray, origin_l0_px: tuple[float, float], patch_mpp: float, slide_mpp: float
) -> np.ndarray:
    """Map points (..., 2) ``(x, y)`` in level-0 px to patch px of a patch with that origin."""
    xy = _as_xy(xy_l0_px, 2)
    f = l0_per_px(patch_mpp, slide_mpp)
    return (xy - np.asarray(origin_l0_px, dtype=np.float64)) / f


def patch_px_to_l0(
    xy_px: np.ndarray, origin_l0_px: tuple[float, float], patch_mpp: float, slide_mpp: float
) -> np.ndarray:
    """Inverse of :func:`l0_to_patch_px`: points (..., 2) in patch px to level-0 px."""
    xy = _as_xy(xy_px, 2)
    f = l0_per_px(patch_mpp, slide_mpp)
    return xy * f + np.asarray(origin_l0_px, dtype=np.float64)


def boxes_l0_to_patch_px(
    boxes_l0_px: np.ndarray, origin_l0_px: tuple[float, float], patch_mpp: float, slide_mpp: float
) -> np.ndarray:
    """Map boxes (..., 4) ``(x0, y0, x1, y1)`` in level-0 px to patch px (edges, not indices)."""
    b = _as_xy(boxes_l0_px, 4)
    return l0_to_patch_px(b.reshape(*b.shape[:-1], 2, 2), origin_l0_px, patch_mpp, slide_mpp).reshape(b.shape)


def boxes_patch_px_to_l0(
    boxes_px: np.ndarray, origin_l0_px: tuple[float, float], patch_mpp: float, slide_mpp: float
) -> np.ndarray:
    """Inverse of :func:`boxes_l0_to_patch_px`: boxes (..., 4) in patch px to level-0 px."""
    b = _as_xy(boxes_px, 4)
    return patch_px_to_l0(b.reshape(*b.shape[:-1], 2, 2), origin_l0_px, patch_mpp, slide_mpp).reshape(b.shape)


@dataclass(frozen=True)
class PatchPair:
    """Two concentric square patches of ``patch_px`` pixels: HR at ``hr_mpp``, LR at ``lr_mpp``.

    The HR patch covers the central ``1 / ratio`` of the LR patch (``ratio = lr_mpp / hr_mpp``).
    Origins are in level-0 px and are what a reader reads (see :func:`concentric_pair`).
    """

    centre_l0_px: tuple[float, float]
    patch_px: int
    hr_mpp: float
    lr_mpp: float
    slide_mpp: float
    hr_origin_l0_px: tuple[float, float]
    lr_origin_l0_px: tuple[float, float]

    @property
    def ratio(self) -> float:
        """LR px size over HR px size (2 for 10x HR with 5x LR)."""
        return self.lr_mpp / self.hr_mpp

    @property
    def hr_box_l0_px(self) -> tuple[float, float, float, float]:
        """Level-0 extent ``(x0, y0, x1, y1)`` of the HR patch."""
        s = self.patch_px * l0_per_px(self.hr_mpp, self.slide_mpp)
        x, y = self.hr_origin_l0_px
        return x, y, x + s, y + s

    @property
    def lr_box_l0_px(self) -> tuple[float, float, float, float]:
        """Level-0 extent ``(x0, y0, x1, y1)`` of the LR patch."""
        s = self.patch_px * l0_per_px(self.lr_mpp, self.slide_mpp)
        x, y = self.lr_origin_l0_px
        return x, y, x + s, y + s

    def points_l0_to_hr_px(self, xy_l0_px: np.ndarray) -> np.ndarray:
        """Points (..., 2) level-0 px -> HR patch px."""
        return l0_to_patch_px(xy_l0_px, self.hr_origin_l0_px, self.hr_mpp, self.slide_mpp)

    def boxes_l0_to_hr_px(self, boxes_l0_px: np.ndarray) -> np.ndarray:
        """Boxes (..., 4) level-0 px -> HR patch px."""
        return boxes_l0_to_patch_px(boxes_l0_px, self.hr_origin_l0_px, self.hr_mpp, self.slide_mpp)

    def points_hr_px_to_l0(self, xy_hr_px: np.ndarray) -> np.ndarray:
        """Points (..., 2) HR patch px -> level-0 px."""
        return patch_px_to_l0(xy_hr_px, self.hr_origin_l0_px, self.hr_mpp, self.slide_mpp)

    def points_l0_to_lr_px(self, xy_l0_px: np.ndarray) -> np.ndarray:
        """Points (..., 2) level-0 px -> LR patch px."""
        return l0_to_patch_px(xy_l0_px, self.lr_origin_l0_px, self.lr_mpp, self.slide_mpp)

    def boxes_l0_to_lr_px(self, boxes_l0_px: np.ndarray) -> np.ndarray:
        """Boxes (..., 4) level-0 px -> LR patch px."""
        return boxes_l0_to_patch_px(boxes_l0_px, self.lr_origin_l0_px, self.lr_mpp, self.slide_mpp)

    def points_hr_px_to_lr_px(self, xy_hr_px: np.ndarray) -> np.ndarray:
        """Points (..., 2) HR patch px -> LR patch px (continuous coordinates, exact)."""
        return self.points_l0_to_lr_px(self.points_hr_px_to_l0(xy_hr_px))


def concentric_pair(
    centre_l0_px: tuple[float, float],
    patch_px: int,
    hr_mpp: float,
    lr_mpp: float,
    slide_mpp: float,
    integer_origins: bool = True,
) -> PatchPair:
    """HR/LR patch pair of ``patch_px`` squares centred on ``centre_l0_px``.

    With ``integer_origins`` (default) each origin is rounded to whole level-0 pixels, because
    readers (tiatoolbox ``read_rect``) take integer level-0 locations; the pair then maps
    coordinates with the rounded origins, so the maps stay exact for what is read and the two
    centres differ from ``centre_l0_px`` by at most half a level-0 pixel.
    """
    if patch_px <= 0:
        raise ValueError(f"patch_px must be positive, got {patch_px}")
    if lr_mpp < hr_mpp:
        raise ValueError(f"LR must be coarser than HR, got hr_mpp={hr_mpp}, lr_mpp={lr_mpp}")
    hr = patch_origin_l0_px(centre_l0_px, patch_px, hr_mpp, slide_mpp)
    lr = patch_origin_l0_px(centre_l0_px, patch_px, lr_mpp, slide_mpp)
    if integer_origins:
        hr = (float(round(hr[0])), float(round(hr[1])))
        lr = (float(round(lr[0])), float(round(lr[1])))
    return PatchPair(
        centre_l0_px=(float(centre_l0_px[0]), float(centre_l0_px[1])),
        patch_px=int(patch_px),
        hr_mpp=float(hr_mpp),
        lr_mpp=float(lr_mpp),
        slide_mpp=float(slide_mpp),
        hr_origin_l0_px=hr,
        lr_origin_l0_px=lr,
    )
