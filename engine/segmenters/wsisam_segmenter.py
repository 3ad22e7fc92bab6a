"""WSI-SAM as a window segmenter."""
from __future__ import annotations

import time
from typing import Literal

import numpy as np
import torch

import wsisam
import wsisam.predictor

from ..completion import LR_MASK_KEY, touches_border
from ..records import ObjectMask
from .base import WindowJob, crop_to_object, group_by_kind, mask_to_object, prompt_arrays_hr_px


def segmenter_name(config_name: str, mode: str) -> str:
    """The name ``summary.json`` gives the segmenter, e.g. ``wsisam-vit_b-wsi``."""
    return f"wsisam-{config_name}-{mode}"


class WsiSamSegmenter:
    """Segments windows with a :class:`wsisam.WsiSamPredictor`: all windows of a call are encoded
    in one ``set_patch_pairs`` (batched), and all their prompts of one kind go through the
    decoders together. ``mode="sam"`` runs SAM's own path on the HR patch instead (the baseline)."""

    def __init__(self, predictor: wsisam.WsiSamPredictor, mode: Literal["wsi", "sam"] = "wsi") -> None:
        if mode not in ("wsi", "sam"):
            raise ValueError(f"mode must be 'wsi' or 'sam', got {mode!r}")
        self.predictor = predictor
        self.mode = mode
        self.name = segmenter_name(predictor.model.config.name, mode)
        self.patch_px = predictor.img_px
        # Seconds spent in the encoder (set_patch_pairs) and in the decoders (prompts -> objects),
        # accumulated over calls; read by ``wsisam-engine bench``.
        self.timings = {"encode": 0.0, "decode": 0.0}

    def segment(self, jobs: list[WindowJob], lr_masks: bool = True) -> list[ObjectMask]:
        if not jobs:
            return []
        ratios = {round(j.window.pair.ratio, 9) for j in jobs}
        if len(ratios) != 1:
            raise ValueError(f"windows of one call must share the HR/LR ratio, got {sorted(ratios)}")
        t0 = time.perf_counter()
        self.predictor.set_patch_pairs(np.stack([j.hr for j in jobs]), np.stack([j.lr for j in jobs]),
                                       scale_ratio=ratios.pop())
        t1 = time.perf_counter()
        flat = [(k, p) for k, j in enumerate(jobs) for p in j.prompts]
        results: dict[int, ObjectMask | None] = {}
        for idx in group_by_kind([p for _, p in flat]).values():
            masks, scores, lr = self._predict([flat[i] for i in idx], jobs, lr_masks)
            for j, (i, mask, score) in enumerate(zip(idx, masks, scores)):
                k, prompt = flat[i]
                if mask is None or isinstance(mask, wsisam.MaskCrop):  # a foreground crop, or empty
                    results[i] = mask and crop_to_object(mask.mask, mask.row0_px, mask.col0_px, prompt,
                                                         jobs[k].window, score)
                else:
                    results[i] = mask_to_object(mask, prompt, jobs[k].window, score)
                if results[i] is not None and getattr(mask, "stability", None) is not None:
                    results[i].extra["stability"] = mask.stability  # of the HR logits (wsisam.stability_scores)
                if j in lr:
                    results[i].extra[LR_MASK_KEY] = lr[j]
        self.timings["encode"] += t1 - t0
        self.timings["decode"] += time.perf_counter() - t1
        return [results[i] for i in range(len(flat)) if results[i] is not None]

    def _reaches_border(self, crop: wsisam.MaskCrop) -> bool:
        """Whether a mask needs its LR mask for completion (``engine.completion``): it reaches its
        HR patch's border."""
        return touches_border(crop.row0_px, crop.col0_px, crop.mask.shape, self.patch_px)

    def _prompt_kwargs(self, items, jobs):
        # Prompts are converted per window (each has its own frame), then batched together.
        arrays = [prompt_arrays_hr_px([p], jobs[k].window) for k, p in items]
        kw = {key: None if arrays[0][key] is None else np.concatenate([a[key] for a in arrays])
              for key in ("boxes", "points", "point_labels")}
        return kw, np.array([k for k, _ in items])

    def _predict(self, items, jobs, lr_masks: bool):
        """Masks, scores and, by item index, the LR masks (cropped, in LR px) of the masks that reach
        their HR border when ``lr_masks`` (``mode="wsi"`` only: SAM's own path makes none)."""
        kw, pair_index = self._prompt_kwargs(items, jobs)
        if self.mode == "sam":
            logits, iou = self.predictor.predict_sam(pair_index=pair_index, **kw)
            return wsisam.predictor.logit_crops(torch.from_numpy(logits[:, 0])), iou[:, 0], {}
        # Masks come back cropped to their foreground, one decoder batch at a time: memory does
        # not grow with the number of prompts times the window area. Each prompt is decoded once;
        # the LR mask comes from the same pass.
        lr_where = self._reaches_border if lr_masks else None
        return self.predictor.predict_mask_crops(pair_index=pair_index, lr_where=lr_where, **kw)
