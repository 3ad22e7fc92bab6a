"""The slide-level label grid and nearest-neighbour placement of mask crops on it.

Frames (see ``engine.records``): level-0 pixel ``i`` spans ``[i, i+1)`` in ``_l0_px``. Label pixel
``(r, c)`` of a grid with ``f = label_mpp / slide_mpp`` level-0 px per label px spans level-0
``x in [c*f, (c+1)*f)``, ``y in [r*f, (r+1)*f)``; its centre is ``((c+0.5)*f, (r+0.5)*f)``.

Resampling is nearest neighbour by pixel centre: a label pixel takes the value of the mask
pixel that contains the label pixel's centre (False if the centre lies outside the crop). A
centre exactly on a mask pixel edge (e.g. mask_mpp = label_mpp / 2) follows GDAL's polygon
rasterisation rule, x in ``(left, right]`` and y in ``[top, bottom)``, so a polygon traced from
the crop and burnt with ``rasterio.features.rasterize(all_touched=False)`` on the label grid
gives back exactly the label pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine.records import ObjectMask

_EPS = 1e-9


@dataclass(frozen=True)
class Window:
    """Half-open pixel window ``rows [r0, r1) x cols [c0, c1)`` on a grid."""

    r0: int
    r1: int
    c0: int
    c1: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.r1 - self.r0, self.c1 - self.c0

    def intersect(self, other: "Window") -> "Window | None":
        r0, r1 = max(self.r0, other.r0), min(self.r1, other.r1)
        c0, c1 = max(self.c0, other.c0), min(self.c1, other.c1)
        return Window(r0, r1, c0, c1) if r0 < r1 and c0 < c1 else None

    def slices(self) -> tuple[slice, slice]:
        return slice(self.r0, self.r1), slice(self.c0, self.c1)


@dataclass(frozen=True)
class LabelGrid:
    """Pixel grid of a slide's label image (level 0 of its pyramid).

    ``shape_px`` is ``(height, width)`` in label pixels: the slide's level-0 extent divided by
    ``l0_px_per_label_px`` and rounded up, so the grid covers the whole slide.
    """

    slide_width_l0_px: int
    slide_height_l0_px: int
    slide_mpp: float
    label_mpp: float

    def __post_init__(self) -> None:
        if self.slide_width_l0_px <= 0 or self.slide_height_l0_px <= 0:
            raise ValueError("slide size must be positive")
        if not (self.slide_mpp > 0 and self.label_mpp > 0):
            raise ValueError("slide_mpp and label_mpp must be positive")

    @property
    def l0_px_per_label_px(self) -> float:
        return self.label_mpp / self.slide_mpp

    @property
    def shape_px(self) -> tuple[int, int]:
        f = self.l0_px_per_label_px
        return (
            max(1, math.ceil(self.slide_height_l0_px / f - _EPS)),
            max(1, math.ceil(self.slide_width_l0_px / f - _EPS)),
        )

    def object_window(self, obj: ObjectMask) -> Window | None:
        """Label pixels that may sample the object's crop (centres in or next to it), clipped."""
        h, w = np.shape(obj.mask)
        g = obj.mask_mpp / self.slide_mpp  # level-0 px per mask px
        f = self.l0_px_per_label_px
        x0, y0 = float(obj.origin_l0_px[0]), float(obj.origin_l0_px[1])
        # centres (c + 0.5) * f inside [x0, x0 + w*g], one pixel of slack for the edge rule;
        # ``sample`` decides the edge pixels exactly
        c0, c1 = math.floor(x0 / f - 0.5), math.ceil((x0 + w * g) / f - 0.5) + 1
        r0, r1 = math.floor(y0 / f - 0.5), math.ceil((y0 + h * g) / f - 0.5) + 1
        H, W = self.shape_px
        return Window(r0, r1, c0, c1).intersect(Window(0, H, 0, W))

    def sample(self, obj: ObjectMask, win: Window) -> np.ndarray:
        """The object's mask resampled onto ``win`` of the label grid: bool ``win.shape``."""
        mask = np.asarray(obj.mask, dtype=bool)
        h, w = mask.shape
        g = obj.mask_mpp / self.slide_mpp
        f = self.l0_px_per_label_px
        x0, y0 = float(obj.origin_l0_px[0]), float(obj.origin_l0_px[1])
        # mask row k spans [k, k+1) (top edge in), mask column k spans (k, k+1] (GDAL's rule)
        rows = np.floor(((np.arange(win.r0, win.r1) + 0.5) * f - y0) / g + _EPS).astype(np.int64)
        cols = np.ceil(((np.arange(win.c0, win.c1) + 0.5) * f - x0) / g - _EPS).astype(np.int64) - 1
        rok, cok = (rows >= 0) & (rows < h), (cols >= 0) & (cols < w)
        out = np.zeros(win.shape, dtype=bool)
        # rows and columns are monotone, so the in-crop ones are one block of ``out``; two takes
        # (one per axis) are several times faster than fancy indexing with np.ix_
        rin, cin = np.flatnonzero(rok), np.flatnonzero(cok)
        if rin.size and cin.size:
            out[rin[0]:rin[-1] + 1, cin[0]:cin[-1] + 1] = mask.take(rows[rin], axis=0).take(cols[cin], axis=1)
        return out
