"""The slide thumbnail behind each slide's ``qc.png``, read where the slide is open.

Reader processes (and the in-process pipeline) read it; the slide writer only draws on it, so
writer processes never open slides and never import the slide reader's stack (tiatoolbox, which
imports torch). Nothing here imports the drawing stack either.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .slide import Slide

QC_MAX_PX = 2048  # longer side of qc.png ...
QC_MIN_MPP = 2.0  # ... and no finer than this many µm per pixel (detail is in the label image)
#: Most pixels one read may take from the pyramid level tiatoolbox picks (64 Mpx, 192 MB RGB).
MAX_READ_PX = 8192 * 8192


def qc_thumbnail(slide: Slide, max_px: int = QC_MAX_PX) -> np.ndarray:
    """The thumbnail ``qc.png`` is drawn on (h, w, 3) uint8: longer side ``max_px``, and no finer
    than :data:`QC_MIN_MPP`."""
    longer_um = max(slide.dimensions_l0_px) * slide.mpp
    return bounded_thumbnail(slide, min(max_px, math.ceil(longer_um / QC_MIN_MPP)))


def bounded_thumbnail(slide: Slide, max_px: int = QC_MAX_PX, max_read_px: int = MAX_READ_PX) -> np.ndarray:
    """The whole slide (h, w, 3) uint8, longer side ``min(max_px, slide's)``, read from the
    coarsest pyramid level fine enough; when that level's region is over ``max_read_px`` (a slide
    without a usable pyramid), read in square tiles that each stay under it."""
    w, h = slide.dimensions_l0_px
    f = max(w, h) / float(min(max_px, max(w, h)))  # level-0 px per thumbnail px
    tw, th = max(1, round(w / f)), max(1, round(h / f))
    _, _, level_size, *_ = slide.reader.find_read_rect_params(location=(0, 0), size=(tw, th),
                                                             resolution=slide.mpp * f, units="mpp")
    if int(level_size[0]) * int(level_size[1]) <= max_read_px:
        return slide.thumbnail(max(tw, th))
    level_px_per_px = max(level_size[0] / tw, level_size[1] / th)
    tile = max(1, int(math.sqrt(max_read_px) / level_px_per_px))
    out = np.zeros((th, tw, 3), np.uint8)
    for y in range(0, th, tile):
        for x in range(0, tw, tile):
            img = slide.read_region((x * f, y * f), tile, slide.mpp * f)
            out[y:y + tile, x:x + tile] = img[:min(tile, th - y), :min(tile, tw - x)]
    return out
