"""The oracle segmenter: each prompt's ground-truth object, rasterised in its window."""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import rasterio.features
import torch
from affine import Affine
from shapely.geometry import box as shapely_box

from wsisam.predictor import foreground_crops

from ..completion import LR_MASK_KEY, hr_placement, touches_border
from ..records import ObjectMask, Prompt
from .base import WindowJob, mask_to_object


class TruthSegmenter:
    """Returns, for each prompt, the truth polygon that best matches it (largest overlap with the
    prompt's box, or containing its first positive point), rasterised at the window's HR pixel
    size (and, for a mask at its HR patch's border, at the LR pixel size over the LR patch, as
    WSI-SAM's LR mask for ``engine.completion``). Used to check scheduling, stitching and outputs
    exactly, and as the ceiling in evaluations.
    """

    name = "truth"

    def __init__(self, truth: gpd.GeoDataFrame) -> None:
        self.truth = truth.reset_index(drop=True)
        self.index = self.truth.sindex

    def match(self, prompt: Prompt) -> int | None:
        if prompt.box_l0_px is not None:
            q = shapely_box(*prompt.box_l0_px)
            cand = self.index.query(q, predicate="intersects")
            if cand.size == 0:
                return None
            overlap = [self.truth.geometry.iloc[c].intersection(q).area / max(q.area, 1e-9) for c in cand]
            return int(cand[int(np.argmax(overlap))])
        pos = [xy for xy, lab in zip(prompt.points_l0_px, prompt.point_labels) if lab == 1]
        if not pos:
            return None
        cand = self.index.query(gpd.points_from_xy([pos[0][0]], [pos[0][1]])[0], predicate="intersects")
        return int(cand[0]) if cand.size else None

    def segment(self, jobs: list[WindowJob], lr_masks: bool = True) -> list[ObjectMask]:
        out = []
        for job in jobs:
            pair = job.window.pair
            for prompt in job.prompts:
                i = self.match(prompt)
                if i is None:
                    continue
                geom = self.truth.geometry.iloc[i]
                obj = mask_to_object(_raster(geom, pair.hr_origin_l0_px, pair), prompt, job.window, score=1.0)
                if obj is None:
                    continue
                if lr_masks and touches_border(*hr_placement(obj, pair), obj.mask.shape, pair.patch_px):
                    # As WSI-SAM's LR mask: the object in the LR field, for the completion step.
                    lr = _raster(geom, pair.lr_origin_l0_px, pair, pair.lr_mpp)
                    obj.extra[LR_MASK_KEY] = foreground_crops(torch.from_numpy(lr[None]))[0]
                out.append(obj)
        return out


def _raster(geom, origin_l0_px, pair, mpp: float | None = None) -> np.ndarray:
    """``geom`` (level-0 px) rasterised on a ``pair.patch_px`` patch at ``mpp`` (default HR)."""
    f = (mpp or pair.hr_mpp) / pair.slide_mpp
    transform = Affine(f, 0, origin_l0_px[0], 0, f, origin_l0_px[1])
    return rasterio.features.rasterize([(geom, 1)], out_shape=(pair.patch_px,) * 2, transform=transform,
                                       dtype="uint8").astype(bool)
