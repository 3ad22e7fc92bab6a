"""The oracle segmenter: each prompt's ground-truth object, rasterised in its window."""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import rasterio.features
from affine import Affine
from shapely.geometry import box as shapely_box

from ..records import ObjectMask, Prompt
from .base import WindowJob, mask_to_object


class TruthSegmenter:
    """Returns, for each prompt, the truth polygon that best matches it (largest overlap with the
    prompt's box, or containing its first positive point), rasterised at the window's HR pixel
    size. Used to check scheduling, stitching and outputs exactly, and as the ceiling in evaluations.
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

    def segment(self, jobs: list[WindowJob]) -> list[ObjectMask]:
        out = []
        for job in jobs:
            pair = job.window.pair
            f = pair.hr_mpp / pair.slide_mpp
            transform = Affine(f, 0, pair.hr_origin_l0_px[0], 0, f, pair.hr_origin_l0_px[1])
            for prompt in job.prompts:
                i = self.match(prompt)
                if i is None:
                    continue
                mask = rasterio.features.rasterize([(self.truth.geometry.iloc[i], 1)], out_shape=(pair.patch_px,) * 2,
                                                   transform=transform, dtype="uint8").astype(bool)
                obj = mask_to_object(mask, prompt, job.window, score=1.0)
                if obj is not None:
                    out.append(obj)
        return out
