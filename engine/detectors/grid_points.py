"""``GridPointsDetector``: a regular grid of positive points over tissue ("segment everything")."""
from __future__ import annotations

import math

import numpy as np

from ..records import Prompt
from ..stitching.nms import MaskFilter
from ._tissue import slide_tissue_mask
from .base import Detector, SlideLike


class GridPointsDetector(Detector):
    """Segment everything: one single-point positive prompt at every grid node that lies on
    tissue, and the filters its masks go through (``mask_filter``, applied by the slide writer:
    see :mod:`engine.stitching.nms`), as SAM's automatic mask generator does.

    Nodes sit at ``(i + 0.5) * spacing`` in x and y (level-0 px, ``spacing = points_spacing_um /
    mpp``), row by row; prompt ids follow that order. An object is found when a node falls on it:
    objects narrower than the spacing may be missed.

    Args:
        points_spacing_um: grid step in µm (default 64).
        score_threshold: masks whose score (predicted IoU) is below this are dropped (default 0.7).
        stability_threshold: masks whose stability (share of the mask left when the logit
            threshold moves from -1 to +1) is below this are dropped (default 0.8).
        nms_iou: a mask whose IoU with a better-scoring kept mask is above this is a duplicate and
            dropped (default 0.5; 1 turns this off).
        max_covered_fraction: a mask more than this share of which better-scoring kept masks cover
            is dropped: a part of an object already found, which would leave only fragments in the
            label image (default 0.5; 1 turns this off).
        tissue_only: keep only nodes on the tissue mask (else the whole slide).
        thumbnail_max_px, method, min_area_um2, fill_holes: the tissue mask (see
            ``slide_tissue_mask``); ``"otsu"`` by default so that nodes do not land in the
            dilated margin, with holes (pale lumina inside tissue) filled.
        max_points: more nodes than this is an error (spacing too small for the slide).
    """

    name = "grid-points"

    def __init__(
        self,
        points_spacing_um: float = 64.0,
        score_threshold: float = 0.7,
        stability_threshold: float = 0.8,
        nms_iou: float = 0.5,
        max_covered_fraction: float = 0.5,
        tissue_only: bool = True,
        thumbnail_max_px: int = 2048,
        method: str = "otsu",
        min_area_um2: float = 10_000.0,
        fill_holes: bool = True,
        max_points: int = 200_000,
        class_name: str | None = None,
    ) -> None:
        if isinstance(points_spacing_um, bool) or not isinstance(points_spacing_um, (int, float)) \
                or not (math.isfinite(points_spacing_um) and points_spacing_um > 0):
            raise ValueError(f"points_spacing_um must be a positive number of µm, got {points_spacing_um!r}")
        self.points_spacing_um = float(points_spacing_um)
        self.mask_filter = MaskFilter(score_threshold, stability_threshold, nms_iou, max_covered_fraction)
        self.tissue_only = tissue_only
        self.thumbnail_max_px = int(thumbnail_max_px)
        self.method = method
        self.min_area_um2 = float(min_area_um2)
        self.fill_holes = fill_holes
        self.max_points = int(max_points)
        self.class_name = class_name

    def detect(self, slide: SlideLike) -> list[Prompt]:
        W, H = (float(v) for v in slide.dimensions_l0_px)
        step_l0_px = self.points_spacing_um / float(slide.mpp)
        xs = np.arange(0.5 * step_l0_px, W, step_l0_px)
        ys = np.arange(0.5 * step_l0_px, H, step_l0_px)
        if xs.size * ys.size > self.max_points:
            raise ValueError(
                f"grid of {xs.size} x {ys.size} points on slide {slide.slide_id!r} exceeds max_points="
                f"{self.max_points}; use a larger points_spacing_um than {self.points_spacing_um}"
            )
        gx, gy = np.meshgrid(xs, ys)  # row-major: y outer, x inner
        gx, gy = gx.ravel(), gy.ravel()
        if self.tissue_only:
            tm = slide_tissue_mask(
                slide, self.thumbnail_max_px, self.method, self.min_area_um2, fill_holes=self.fill_holes
            )
            on = tm.contains_l0(gx, gy)
            gx, gy = gx[on], gy[on]
        return [
            Prompt(
                slide_id=slide.slide_id,
                prompt_id=i,
                points_l0_px=((float(x), float(y)),),
                point_labels=(1,),
                class_name=self.class_name,
            )
            for i, (x, y) in enumerate(zip(gx, gy))
        ]
