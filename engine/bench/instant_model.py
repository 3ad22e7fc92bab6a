"""A BENCH INSTRUMENT, not a model: masks drawn from the prompts in no time.

``wsisam-engine bench capacity`` runs the real ``segment`` path (embedded Ray, readers, model
actors, writers, completion, stitching, outputs) with :class:`InstantModelSpec` in place of the
model, so that what it measures is everything but the model. For each prompt the instrument
returns the ellipse inscribed in the prompt's box (points: a disc around them) at the window's HR
pixel size, clipped to the HR patch, and, where that mask reaches the patch's border and
completion asks for it, the same ellipse in the LR patch as the prompt's LR mask.

Nothing in the product's commands can reach it: ``segment`` and ``serve`` build their models from
files (``engine.distributed.model_spec.ModelSpec``); only ``bench capacity`` imports this module.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..completion import LR_MASK_KEY, hr_placement, touches_border
from ..distributed.model_spec import ModelSpec
from ..records import ObjectMask, Prompt
from ..segmenters.base import WindowJob, crop_to_object

#: The name outputs and the run manifest give the instrument.
INSTRUMENT_NAME = "instant-bench-instrument"
#: Score every instrument mask gets.
INSTRUMENT_SCORE = 0.9
#: Least radius (HR px) of a disc drawn around points.
MIN_DISC_RADIUS_PX = 8.0


def ellipse_crop(box_px: np.ndarray, size_px: int) -> tuple[int, int, np.ndarray] | None:
    """The ellipse inscribed in ``box_px`` (x0, y0, x1, y1; continuous patch px) rasterised on a
    ``size_px`` patch and cropped to it: (row0, col0, mask) or None when nothing is inside."""
    x0, y0, x1, y1 = (float(v) for v in box_px)
    c0, c1 = max(0, int(np.floor(x0))), min(size_px, int(np.ceil(x1)))
    r0, r1 = max(0, int(np.floor(y0))), min(size_px, int(np.ceil(y1)))
    if c0 >= c1 or r0 >= r1:
        return None
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    ax, ay = max((x1 - x0) / 2, 0.5), max((y1 - y0) / 2, 0.5)
    cols = (np.arange(c0, c1) + 0.5 - cx) / ax
    rows = (np.arange(r0, r1) + 0.5 - cy) / ay
    mask = rows[:, None] ** 2 + cols[None, :] ** 2 <= 1.0
    rr, cc = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rr.size == 0:
        return None
    return r0 + int(rr[0]), c0 + int(cc[0]), mask[rr[0]:rr[-1] + 1, cc[0]:cc[-1] + 1]


def _extent_l0_px(prompt: Prompt) -> np.ndarray:
    """The prompt's box, or a square around its points (level-0 px)."""
    if prompt.box_l0_px is not None:
        return np.asarray(prompt.box_l0_px, dtype=np.float64)
    xy = np.asarray([p for p, lab in zip(prompt.points_l0_px, prompt.point_labels) if lab == 1]
                    or prompt.points_l0_px, dtype=np.float64)
    centre = xy.mean(axis=0)
    r = max(float(np.linalg.norm(xy - centre, axis=1).max()) * 1.5, 1.0)
    return np.concatenate([centre - r, centre + r])


class InstantSegmenter:
    """The instrument's segmenter (see the module docstring). ``cpu_s``: thread CPU seconds spent
    drawing masks, so a bench can take the instrument's own cost out of what it measures."""

    name = INSTRUMENT_NAME

    def __init__(self, patch_px: int) -> None:
        self.patch_px = int(patch_px)
        self.timings = {"encode": 0.0, "decode": 0.0}
        self.cpu_s = 0.0

    def segment(self, jobs: list[WindowJob], lr_masks: bool = True) -> list[ObjectMask]:
        t0 = time.thread_time()
        out = [obj for job in jobs for p in job.prompts if (obj := self._object(job, p, lr_masks)) is not None]
        self.cpu_s += time.thread_time() - t0
        return out

    def _object(self, job: WindowJob, prompt: Prompt, lr_masks: bool) -> ObjectMask | None:
        pair = job.window.pair
        extent = _extent_l0_px(prompt)
        box_hr = pair.boxes_l0_to_hr_px(extent[None])[0]
        if prompt.box_l0_px is None:
            centre, r = (box_hr[:2] + box_hr[2:]) / 2, max((box_hr[2] - box_hr[0]) / 2, MIN_DISC_RADIUS_PX)
            box_hr = np.concatenate([centre - r, centre + r])
        hr = ellipse_crop(box_hr, self.patch_px)
        if hr is None:
            return None
        obj = crop_to_object(hr[2], hr[0], hr[1], prompt, job.window, INSTRUMENT_SCORE)
        if lr_masks and touches_border(*hr_placement(obj, pair), obj.mask.shape, self.patch_px):
            from wsisam.predictor import MaskCrop

            box_lr = pair.boxes_l0_to_lr_px(extent[None])[0]
            lr = ellipse_crop(box_lr, self.patch_px)
            if lr is not None:
                obj.extra[LR_MASK_KEY] = MaskCrop(lr[0], lr[1], lr[2])
        return obj


@dataclass(frozen=True)
class InstantModelSpec(ModelSpec):
    """A :class:`ModelSpec` whose model actors get :class:`InstantSegmenter` (bench instrument).
    ``backbone`` only sets the input size (its configuration's image size); nothing is loaded."""

    backbone: str | None = "vit_tiny"
    random_weights: bool = True
    allow_cpu: bool = True

    def validate(self) -> InstantModelSpec:
        return self

    def describe(self) -> str:
        return f"{INSTRUMENT_NAME} (no model: masks drawn from the prompts, {self.patch_px()} px windows)"

    def build(self):
        raise TypeError(f"{INSTRUMENT_NAME} has no model to build")

    def segmenter(self, device: str) -> InstantSegmenter:
        return InstantSegmenter(self.patch_px())

    def checksums(self) -> dict[str, str]:
        return {}

    def segmenter_name(self) -> str:
        return INSTRUMENT_NAME
