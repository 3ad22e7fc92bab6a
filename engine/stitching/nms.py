"""Segment everything: filtering the masks of a grid of point prompts before they are painted.

One object hit by several grid points comes back several times, and points on background give
poor masks. As SAM's automatic mask generator does, candidates are kept only when

1. their score (the predicted IoU, ``ObjectMask.score``) is at least ``score_threshold``;
2. their stability (``ObjectMask.extra["stability"]``: area(logits > 1) / area(logits > -1),
   see ``wsisam.stability_scores``) is at least ``stability_threshold``; masks from a segmenter
   that reports no stability pass this filter (counted as ``stability_unknown``);
3. something is left after the writer's small-region cleaning (``min_area_um2``);
4. no kept candidate overlaps them with a mask IoU above ``nms_iou`` (non-maximum suppression);
5. at most ``max_covered_fraction`` of their pixels lie under kept candidates: a part of an object
   already found, or a mask spilling over several, would keep only fragments in the label image
   (where the better score takes each pixel).

NMS runs once all candidates of a slide are in (:meth:`CandidateSet.select`), greedily in the
order (score descending, prompt id ascending), so the result does not depend on the order in
which batches arrive. IoU is computed on the label grid (every level's masks are resampled onto
it, as they are painted), so masks from different windows and pyramid levels compare. Memory:
each candidate keeps its label-grid crop bit-packed (one bit per label pixel of its bounding box).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from engine.records import ObjectMask
from engine.stitching.grid import LabelGrid, Window

#: Side, in label pixels, of the buckets of the spatial index NMS looks overlaps up in.
_BUCKET_PX = 256


@dataclass(frozen=True)
class MaskFilter:
    """Thresholds of segment everything (see the module docstring). Defaults suit the bundled
    demo model; SAM's automatic mask generator uses 0.88 (score), 0.95 (stability) and 0.7 (box IoU)."""

    score_threshold: float = 0.7
    stability_threshold: float = 0.8
    nms_iou: float = 0.5
    max_covered_fraction: float = 0.5

    def __post_init__(self) -> None:
        for name in ("score_threshold", "stability_threshold", "nms_iou", "max_covered_fraction"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and 0 <= v <= 1):
                raise ValueError(f"{name} must be a number from 0 to 1, got {v!r}")

    def rejects(self, obj: ObjectMask) -> str | None:
        """``"score"`` or ``"stability"`` when ``obj`` fails that filter, else None."""
        if obj.score < self.score_threshold:
            return "score"
        stability = obj.extra.get("stability")
        if stability is not None and stability < self.stability_threshold:
            return "stability"
        return None


@dataclass
class _Candidate:
    obj: ObjectMask  # its mask replaced by an empty placeholder while it waits
    window: Window  # its bounding box on the label grid
    bits: np.ndarray  # the label-grid mask over ``window``, np.packbits
    area_px: int

    def mask(self) -> np.ndarray:
        h, w = self.window.shape
        return np.unpackbits(self.bits, count=h * w).reshape(h, w).astype(bool)


def _slices(part: Window, win: Window) -> tuple[slice, slice]:
    """``part`` (on the grid) as slices of an array over ``win``."""
    return slice(part.r0 - win.r0, part.r1 - win.r0), slice(part.c0 - win.c0, part.c1 - win.c0)


class CandidateSet:
    """One slide's candidate masks, filtered by score and stability as they come and by NMS at the end."""

    def __init__(self, grid: LabelGrid, mask_filter: MaskFilter) -> None:
        self.grid = grid
        self.filter = mask_filter
        self.candidates: list[_Candidate] = []
        self.counts = dict.fromkeys(("candidates", "removed_by_score", "removed_by_stability", "removed_small",
                                     "removed_by_nms", "removed_as_covered", "kept", "stability_unknown"), 0)
        self.max_iou_kept = 0.0  # the largest mask IoU between two kept objects (<= nms_iou)

    def passes(self, obj: ObjectMask) -> bool:
        """Counts ``obj`` as a candidate; False when its score or stability rejects it."""
        self.counts["candidates"] += 1
        self.counts["stability_unknown"] += obj.extra.get("stability") is None
        reason = self.filter.rejects(obj)
        if reason is not None:
            self.counts[f"removed_by_{reason}"] += 1
        return reason is None

    def add(self, obj: ObjectMask) -> None:
        """Keep a candidate that passed (its mask already cleaned) until :meth:`select`."""
        win = self.grid.object_window(obj) if obj.mask.any() else None
        mask = None if win is None else self.grid.sample(obj, win)
        if mask is None or not mask.any():
            self.counts["removed_small"] += 1
            return
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        mask = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        win = Window(win.r0 + int(rows[0]), win.r0 + int(rows[-1]) + 1,
                     win.c0 + int(cols[0]), win.c0 + int(cols[-1]) + 1)
        placeholder = dataclasses.replace(obj, mask=np.zeros((0, 0), dtype=bool))
        self.candidates.append(_Candidate(placeholder, win, np.packbits(mask, axis=None), int(mask.sum())))

    def select(self) -> Iterator[ObjectMask]:
        """Greedy NMS in (score descending, prompt id ascending) order: yields each kept object as
        soon as it is decided, with its mask on the label grid (``mask_mpp`` = the label pixel
        size). Kept masks stay packed; only the one being decided and its neighbours are unpacked."""
        order = sorted(self.candidates, key=lambda c: (-c.obj.score, c.obj.prompt_id))
        self.candidates = []
        buckets: dict[tuple[int, int], list[int]] = {}
        kept: list[_Candidate] = []
        f = self.grid.l0_px_per_label_px
        for cand in order:
            mask = cand.mask()
            near = sorted({k for key in _buckets(cand.window) for k in buckets.get(key, ())})
            iou, covered = 0.0, np.zeros_like(mask)
            for k in near:  # stops at the first duplicate
                other = kept[k]
                part = cand.window.intersect(other.window)
                if part is None:
                    continue
                mine = _slices(part, cand.window)
                both = mask[mine] & other.mask()[_slices(part, other.window)]
                inter = int(np.count_nonzero(both))
                iou = max(iou, inter / (cand.area_px + other.area_px - inter))
                covered[mine] |= both
                if iou > self.filter.nms_iou:
                    break
            if iou > self.filter.nms_iou:
                self.counts["removed_by_nms"] += 1
                continue
            if np.count_nonzero(covered) > self.filter.max_covered_fraction * cand.area_px:
                self.counts["removed_as_covered"] += 1
                continue
            self.max_iou_kept = max(self.max_iou_kept, iou)
            for key in _buckets(cand.window):
                buckets.setdefault(key, []).append(len(kept))
            kept.append(cand)
            self.counts["kept"] += 1
            yield dataclasses.replace(cand.obj, mask=mask, mask_mpp=self.grid.label_mpp,
                                      origin_l0_px=(cand.window.c0 * f, cand.window.r0 * f))

    def report(self) -> dict:
        """Counts and thresholds for ``summary.json``."""
        return {**self.counts, "max_iou_kept": round(self.max_iou_kept, 6), **dataclasses.asdict(self.filter),
                "rule": "candidates below score_threshold or stability_threshold are removed, then specks "
                        "(min_area_um2); then, in order of score (ties: lower prompt id), masks whose IoU with a "
                        "kept one exceeds nms_iou, or more than max_covered_fraction of which kept ones cover"}


def _buckets(win: Window) -> list[tuple[int, int]]:
    b = _BUCKET_PX
    return [(i, j) for i in range(win.r0 // b, (win.r1 - 1) // b + 1)
            for j in range(win.c0 // b, (win.c1 - 1) // b + 1)]
