"""Objects are never cut by a window: what to do with a mask that reaches its window's border.

A side of a field (the HR or the LR patch) is a *cut* when the mask touches it and the side lies
inside the slide (a mask at the slide's own border is not cut). What the prompt says decides
whether the mask there is the prompt's object (:mod:`engine.cut_rule`): for a box, the mask's
components that meet the box, inside the box grown by the annotator noise's tolerance; for
points, the components that hold a point. After a batch is decoded, :func:`settle` decides per
object:

1. no HR cut: the HR mask is final;
2. the mask reaches the HR border only where it is not the object (another object, or past the
   box's tolerance): those parts are *trimmed* (removed) and the mask is final, not completed; a
   mask that meets neither its box nor its points is left as it is (*refused*);
3. the object reaches the HR border: it is *completed* with WSI-SAM's own LR mask of the same
   prompt (concentric, twice the field): the object inside the HR field, the LR mask (sampled at
   the HR pixel size) outside it, keeping only the parts connected to it and, for a box, inside
   the tolerance box. The object stays at the HR pixel size (``mask_mpp`` = HR) and its crop
   grows past the HR field;
4. the completed mask also cuts the LR field (for a box: where the tolerance box reaches past
   it); or, for a points prompt, the LR mask does not carry the object on across the cut HR side
   (more than :data:`OPEN_SEAM_MAX` of its pixels on that side have none right across); or the
   segmenter gave no LR mask (SAM's own path): the prompt is segmented again one pyramid level
   coarser (same HR/LR ratio, window centred on the prompt's extent joined with the cut mask's
   box), and this mask is dropped; at ``ScheduleConfig.max_level`` the mask is final and flagged
   ``extra["truncated"]``.

The first cut mask (trimmed, before the LR mask) travels with the redo (:attr:`Redo.previous`).
A coarser pass is taken only when its mask holds the prompt's positive points, agrees with the
first mask inside the prompt's region (IoU >= :data:`~engine.cut_rule.MIN_AGREEMENT_IOU` in the
tolerance box, or in the points' assumed extent) and its score and stability are at most
:data:`~engine.cut_rule.MAX_SCORE_DROP` below the first mask's; otherwise (or when it is empty)
the completion is *refused*: the first mask is final, flagged truncated.

Only final masks reach the writer, so each prompt gives one object at most. Both executors call
:func:`settle` after each batch and turn its ``redo`` into windows with :func:`redo_windows`,
which depend only on the batch's prompts: the same inputs give the same windows in both.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .geometry import PatchPair, concentric_pair
from .cut_rule import (MIN_AGREEMENT_IOU, iou_within, no_worse_scores, object_part, pixel_window, positive_points,
                       prompt_region_l0_px, sample, tolerance_box_l0_px, without_border_strays)
from .records import ObjectMask, Prompt
from .scheduler import ScheduleConfig, Window, pack_level, prompt_extent_l0_px

if TYPE_CHECKING:
    from .stitching.nms import MaskFilter

#: ``ObjectMask.extra`` key a segmenter sets on a mask that touches its HR border: the prompt's LR
#: mask as ``wsisam.MaskCrop`` (row0_px, col0_px, mask) in LR patch pixels. :func:`settle` removes it.
LR_MASK_KEY = "lr_mask"
_Box = tuple[float, float, float, float]
#: A mask is still cut along an HR side when more than this share of its pixels on that side have
#: no LR mask pixel right across (the LR mask disagrees): it then goes to a coarser pair.
OPEN_SEAM_MAX = 0.5


@dataclass(frozen=True)
class CompletionLimits:
    """What :func:`settle` needs besides the batch: the slide's size and the schedule."""

    width_l0_px: float
    height_l0_px: float
    slide_mpp: float
    schedule: ScheduleConfig
    #: Segmenting everything: a mask this filter rejects (score, stability) will be dropped by the
    #: writer, so it is not completed or segmented again (engine.stitching.nms.MaskFilter).
    mask_filter: "MaskFilter | None" = None


@dataclass(frozen=True)
class Redo:
    """A prompt to segment again at ``level``, its window to hold ``extent_l0_px``; ``previous``:
    its mask at the first level it was cut at, as the model made it (before the LR mask), kept in
    case a coarser pass fails."""

    prompt_id: int
    level: int
    extent_l0_px: _Box
    previous: ObjectMask | None = None


@dataclass
class BatchOutcome:
    objects: list[ObjectMask]  # final masks, one per prompt at most
    redo: list[Redo] = field(default_factory=list)
    completed_from_lr: int = 0  # final masks that took pixels from the LR mask
    truncated: int = 0  # final masks flagged truncated (cut at the coarsest level, or a coarser pass failed)
    completed: int = 0  # final masks grown past their first HR field (LR mask pixels, or a coarser pass taken)
    trimmed: int = 0  # final masks whose parts at the HR border that are not the prompt's object were removed
    refused: int = 0  # completions not taken: a coarser pass refused, or a mask that misses its prompt


def cut_sides(mask: np.ndarray, row0: int, col0: int, size_px: int, field_l0_px: _Box,
              limits: CompletionLimits) -> tuple[bool, bool, bool, bool]:
    """(top, left, bottom, right): sides of a ``size_px`` field that the mask (placed at
    ``row0, col0`` in the field's pixels) touches where the side lies inside the slide."""
    h, w = mask.shape
    x0, y0, x1, y1 = field_l0_px
    return (row0 <= 0 and mask[max(0, -row0)].any() and y0 > 0,
            col0 <= 0 and mask[:, max(0, -col0)].any() and x0 > 0,
            row0 + h >= size_px and mask[size_px - 1 - row0].any() and y1 < limits.height_l0_px,
            col0 + w >= size_px and mask[:, size_px - 1 - col0].any() and x1 < limits.width_l0_px)


def touches_border(row0: int, col0: int, shape: tuple[int, int], size_px: int) -> bool:
    """Whether a crop cropped to its foreground reaches a side of its ``size_px`` patch."""
    return row0 <= 0 or col0 <= 0 or row0 + shape[0] >= size_px or col0 + shape[1] >= size_px


def hr_placement(obj: ObjectMask, pair: PatchPair) -> tuple[int, int]:
    """(row0, col0) of the object's crop in its window's HR patch pixels."""
    col, row = pair.points_l0_to_hr_px(np.array(obj.origin_l0_px))
    return int(round(float(row))), int(round(float(col)))


def _lr_index(hr_px: np.ndarray, hr_origin: float, lr_origin: float, pair: PatchPair) -> np.ndarray:
    """LR pixel index holding the centre of each HR pixel index (one axis)."""
    f_hr, f_lr = pair.hr_mpp / pair.slide_mpp, pair.lr_mpp / pair.slide_mpp
    return np.floor((hr_origin + (hr_px + 0.5) * f_hr - lr_origin) / f_lr).astype(np.int64)


def compose_with_lr(hr_mask: np.ndarray, row0: int, col0: int, lr, pair: PatchPair
                    ) -> tuple[np.ndarray, int, int, tuple[bool, ...], tuple[float, ...]]:
    """The HR mask inside the HR field, the LR crop ``lr`` (``MaskCrop`` in LR px) outside it,
    at the HR pixel size; only parts connected (4-neighbours) to the HR mask are kept.

    Returns the mask cropped to its foreground, its (row0, col0) in HR patch pixels (may be
    negative), which LR field sides (top, left, bottom, right) it touches, and per HR field side
    the share of the HR mask's pixels on that side with no mask pixel right across it (1: the LR
    mask does not continue the object there; 0 where the mask does not reach the side)."""
    from scipy import ndimage

    s, (hx, hy), (lx, ly) = pair.patch_px, pair.hr_origin_l0_px, pair.lr_origin_l0_px
    f, lh, lw = pair.ratio, *lr.mask.shape
    # The canvas (HR px) spans the HR crop and the LR crop mapped to HR px (with a pixel to spare).
    f_lr = pair.lr_mpp / pair.slide_mpp
    corner = pair.points_l0_to_hr_px(np.array([lx + lr.col0_px * f_lr, ly + lr.row0_px * f_lr]))
    c_lo, r_lo = (math.floor(float(v)) for v in corner)
    r0, c0 = min(row0, r_lo), min(col0, c_lo)
    r1 = max(row0 + hr_mask.shape[0], r_lo + math.ceil((lh + 1) * f))
    c1 = max(col0 + hr_mask.shape[1], c_lo + math.ceil((lw + 1) * f))
    rows, cols = np.arange(r0, r1), np.arange(c0, c1)
    lr_rows, lr_cols = _lr_index(rows, hy, ly, pair), _lr_index(cols, hx, lx, pair)
    rv = (lr_rows >= lr.row0_px) & (lr_rows < lr.row0_px + lh)
    cv = (lr_cols >= lr.col0_px) & (lr_cols < lr.col0_px + lw)
    canvas = np.zeros((len(rows), len(cols)), bool)
    canvas[np.ix_(rv, cv)] = lr.mask[np.ix_(lr_rows[rv] - lr.row0_px, lr_cols[cv] - lr.col0_px)]
    canvas[np.ix_((rows >= 0) & (rows < s), (cols >= 0) & (cols < s))] = False  # the HR field is HR's
    hr_slice = np.s_[row0 - r0:row0 - r0 + hr_mask.shape[0], col0 - c0:col0 - c0 + hr_mask.shape[1]]
    canvas[hr_slice] |= hr_mask
    labels, _ = ndimage.label(canvas)
    keep = np.unique(labels[hr_slice][hr_mask])
    kept = np.isin(labels, keep[keep > 0])
    sides = (bool(kept[lr_rows == 0].any()), bool(kept[:, lr_cols == 0].any()),
             bool(kept[lr_rows == s - 1].any()), bool(kept[:, lr_cols == s - 1].any()))
    h, w = hr_mask.shape
    open_share = (_open_share(hr_mask[0], _line(kept, -1 - r0, col0 - c0, w)) if row0 == 0 else 0.0,
                  _open_share(hr_mask[:, 0], _line(kept.T, -1 - c0, row0 - r0, h)) if col0 == 0 else 0.0,
                  _open_share(hr_mask[-1], _line(kept, s - r0, col0 - c0, w)) if row0 + h == s else 0.0,
                  _open_share(hr_mask[:, -1], _line(kept.T, s - c0, row0 - r0, h)) if col0 + w == s else 0.0)
    rr, cc = np.flatnonzero(kept.any(axis=1)), np.flatnonzero(kept.any(axis=0))
    crop = kept[rr[0]:rr[-1] + 1, cc[0]:cc[-1] + 1]
    return np.ascontiguousarray(crop), int(r0 + rr[0]), int(c0 + cc[0]), sides, open_share


def _line(a: np.ndarray, i: int, j: int, n: int) -> np.ndarray:
    """``a[i, j:j + n]``, all False when row ``i`` is outside ``a``."""
    return a[i, j:j + n] if 0 <= i < a.shape[0] else np.zeros(n, bool)


def _open_share(seam: np.ndarray, across: np.ndarray) -> float:
    n = int(seam.sum())
    return 0.0 if n == 0 else float((seam & ~across).sum()) / n


def _placed(obj: ObjectMask, crop: np.ndarray, row0: int, col0: int, pair: PatchPair, **extra) -> ObjectMask:
    origin = pair.points_hr_px_to_l0(np.array([col0, row0], dtype=np.float64))
    return ObjectMask(obj.slide_id, obj.prompt_id, crop, (float(origin[0]), float(origin[1])), pair.hr_mpp,
                      obj.score, obj.class_name, {**obj.extra, **extra})


def holds_points(mask: ObjectMask, prompt: Prompt, slide_mpp: float) -> bool:
    """Whether the mask holds at least half of the prompt's positive points (True without any)."""
    pos = positive_points(prompt)
    return 2 * int(sample(mask, pos[:, 0], pos[:, 1], slide_mpp).sum()) >= len(pos)


def takes_coarser(obj: ObjectMask, first: ObjectMask, prompt: Prompt, limits: CompletionLimits) -> bool:
    """Whether a coarser pass's mask replaces the first cut mask (see the module docstring)."""
    region = prompt_region_l0_px(prompt, prompt_extent_l0_px(prompt, limits.schedule, limits.slide_mpp))
    return holds_points(obj, prompt, limits.slide_mpp) and no_worse_scores(obj, first) \
        and iou_within(obj, first, region, limits.slide_mpp) >= MIN_AGREEMENT_IOU


def border_pixels(shape: tuple[int, int], row0: int, col0: int, size_px: int, sides: tuple[bool, ...]) -> np.ndarray:
    """Pixels of a crop (placed at ``row0, col0`` in its ``size_px`` field) on the given field sides
    (top, left, bottom, right)."""
    rows, cols = np.arange(shape[0])[:, None] + row0, np.arange(shape[1])[None, :] + col0
    top, left, bottom, right = sides
    return (top & (rows <= 0)) | (left & (cols <= 0)) | (bottom & (rows >= size_px - 1)) | (right & (cols >= size_px - 1))


def _shrunk(obj: ObjectMask, keep: np.ndarray, slide_mpp: float, **extra) -> ObjectMask:
    """``obj`` with only the ``keep`` pixels of its crop, cropped to them (``keep`` not empty)."""
    rr, cc = np.flatnonzero(keep.any(axis=1)), np.flatnonzero(keep.any(axis=0))
    f = obj.mask_mpp / slide_mpp
    origin = (obj.origin_l0_px[0] + cc[0] * f, obj.origin_l0_px[1] + rr[0] * f)
    return ObjectMask(obj.slide_id, obj.prompt_id, np.ascontiguousarray(keep[rr[0]:rr[-1] + 1, cc[0]:cc[-1] + 1]),
                      origin, obj.mask_mpp, obj.score, obj.class_name, {**obj.extra, **extra})


def previous_masks(pending: dict[int, ObjectMask], windows: list[Window]) -> dict[int, ObjectMask]:
    """The cut masks (from :attr:`Redo.previous`) of the prompts of ``windows``."""
    return {i: pending[i] for w in windows for i in w.prompt_ids if i in pending}


def settle(objects: list[ObjectMask], windows: list[Window], prompts: dict[int, Prompt],
           limits: CompletionLimits, previous: dict[int, ObjectMask] | None = None) -> BatchOutcome:
    """Final masks of a batch and the prompts to segment again (see the module docstring).

    ``objects``: the segmenter's output for ``windows`` (``extra["window_id"]`` names each one's
    window); ``prompts``: at least the batch's prompts by id; ``previous``: the cut masks of the
    batch's prompts that are being segmented again. A coarser mask that :func:`takes_coarser`
    refuses (or none) leaves the cut mask final, truncated."""
    cfg = limits.schedule
    out = BatchOutcome([])
    by_id = {w.window_id: w for w in windows}
    fallback = dict(previous or {})
    for obj in objects:
        has_lr, lr = LR_MASK_KEY in obj.extra, obj.extra.pop(LR_MASK_KEY, None)  # None: an empty LR mask
        prompt = prompts[obj.prompt_id]
        coarser = obj.prompt_id in fallback
        if coarser and takes_coarser(obj, fallback[obj.prompt_id], prompt, limits):
            del fallback[obj.prompt_id]
        if obj.prompt_id in fallback:
            continue
        win = by_id[obj.extra["window_id"]]
        pair = win.pair
        if not cfg.complete_cut_objects or abs(obj.mask_mpp - pair.hr_mpp) > 1e-9 * pair.hr_mpp:
            out.objects.append(obj)
            continue
        row0, col0 = hr_placement(obj, pair)
        hr_cut = cut_sides(obj.mask, row0, col0, pair.patch_px, pair.hr_box_l0_px, limits)
        if not any(hr_cut) or (limits.mask_filter is not None and not coarser
                               and limits.mask_filter.rejects(obj) is not None):
            out.objects.append(obj)
            out.completed += coarser
            continue
        part = _object_pixels(obj, row0, col0, lr, pair, prompt, limits.slide_mpp)
        if not part.any():  # the mask meets neither the box nor the points: not the object, left as it is
            out.objects.append(obj)
            out.refused += 1
            continue
        kept = without_border_strays(obj.mask, part, border_pixels(obj.mask.shape, row0, col0, pair.patch_px, hr_cut))
        trimmed = not np.array_equal(kept, obj.mask)
        first = _shrunk(obj, kept, limits.slide_mpp) if trimmed else obj
        row0, col0 = hr_placement(first, pair)
        first_cut = cut_sides(first.mask, row0, col0, pair.patch_px, pair.hr_box_l0_px, limits)
        if not any(first_cut):
            out.objects.append(first)  # the object is not cut: only what was not it reached the border
            out.trimmed += trimmed
            out.completed += coarser
            continue
        obj, lr_sides, open_share = first, (False,) * 4, (1.0,) * 4
        if lr is not None:
            crop, r0, c0, lr_sides, open_share = compose_with_lr(first.mask, row0, col0, lr, pair)
            obj = _placed(first, crop, r0, c0, pair, completed_from_lr=True)
            if prompt.box_l0_px is not None:
                obj = _within(obj, tolerance_box_l0_px(prompt.box_l0_px), limits.slide_mpp)
        cut = True
        if has_lr:
            cut = any(a and b for a, b in zip(lr_sides, _sides_inside(pair.lr_box_l0_px, prompt, limits))) \
                or prompt.box_l0_px is None and any(c and o > OPEN_SEAM_MAX for c, o in zip(first_cut, open_share))
        if cut and win.level < cfg.max_level:
            out.redo.append(_redo(obj, win, prompt, limits, (previous or {}).get(obj.prompt_id, first)))
            continue
        if cut:
            obj.extra["truncated"] = True
            out.truncated += 1
        out.objects.append(obj)
        out.completed_from_lr += lr is not None
        out.completed += coarser or int(obj.mask.sum()) > int(first.mask.sum())
        out.trimmed += trimmed
    for obj in fallback.values():  # the coarser pass was refused: the cut mask stays, flagged
        obj.extra["truncated"] = True
        out.objects.append(obj)
        out.truncated += 1
        out.refused += 1
        out.completed_from_lr += bool(obj.extra.get("completed_from_lr"))
    return out


def _redo(obj: ObjectMask, win: Window, prompt: Prompt, limits: CompletionLimits, first: ObjectMask) -> Redo:
    """Segment the prompt again one level coarser, in a window holding its extent and ``obj``."""
    ext = prompt_extent_l0_px(prompt, limits.schedule, limits.slide_mpp)
    h, w = obj.mask.shape
    f = obj.mask_mpp / limits.slide_mpp
    (x, y), (mx, my) = obj.origin_l0_px, (obj.origin_l0_px[0] + w * f, obj.origin_l0_px[1] + h * f)
    return Redo(obj.prompt_id, win.level + 1, (min(ext[0], x), min(ext[1], y), max(ext[2], mx), max(ext[3], my)), first)


def _object_pixels(obj: ObjectMask, row0: int, col0: int, lr, pair: PatchPair, prompt: Prompt,
                   slide_mpp: float) -> np.ndarray:
    """The pixels of ``obj``'s HR crop (at ``row0, col0`` in its HR patch) that are the prompt's
    object (:func:`engine.cut_rule.object_part`), its components joined by the LR mask where the
    segmenter gave one (one object's parts can meet outside the HR field only)."""
    if lr is None:
        return object_part(obj, prompt, slide_mpp)
    crop, r0, c0, _, _ = compose_with_lr(obj.mask, row0, col0, lr, pair)
    whole = object_part(_placed(obj, crop, r0, c0, pair), prompt, slide_mpp)
    h, w = obj.mask.shape
    return whole[row0 - r0:row0 - r0 + h, col0 - c0:col0 - c0 + w] & obj.mask


def _within(obj: ObjectMask, box_l0_px: tuple[float, float, float, float], slide_mpp: float) -> ObjectMask:
    """``obj`` without its pixels whose centres lie outside ``box_l0_px`` (kept whole if none is inside)."""
    keep = np.zeros_like(obj.mask)
    keep[pixel_window(obj, box_l0_px, slide_mpp)] = True
    keep &= obj.mask
    return obj if not keep.any() or np.array_equal(keep, obj.mask) else _shrunk(obj, keep, slide_mpp)


def _sides_inside(field_l0_px, prompt: Prompt, limits: CompletionLimits) -> tuple[bool, bool, bool, bool]:
    """(top, left, bottom, right): sides of a field that lie inside the slide and, for a box
    prompt, that its tolerance box reaches past (the object may go on there)."""
    x0, y0, x1, y1 = field_l0_px
    inside = (y0 > 0, x0 > 0, y1 < limits.height_l0_px, x1 < limits.width_l0_px)
    if prompt.box_l0_px is None:
        return inside
    tx0, ty0, tx1, ty1 = tolerance_box_l0_px(prompt.box_l0_px)
    return tuple(a and b for a, b in zip(inside, (ty0 < y0, tx0 < x0, ty1 > y1, tx1 > x1)))


def redo_window_id(first_id: int, id_stride: int, level: int, prompt_ids: tuple[int, ...]) -> int:
    """A redo window's id: above the plan's ``first_id``, unique per (level, first prompt id), the
    same whichever order batches finish in (``id_stride`` > every prompt id of the slide)."""
    return first_id + (level - 1) * id_stride + min(prompt_ids)


def redo_windows(slide_id: str, redo: list[Redo], limits: CompletionLimits, first_id: int, id_stride: int,
                 make_pair: Callable[..., PatchPair] | None = None) -> list[Window]:
    """Windows for a batch's redo prompts, packed per level as the scheduler packs prompts.

    ``make_pair(centre_l0_px, patch_px, hr_mpp, lr_mpp)``: the slide's ``patch_pair`` (which snaps
    the centre to its pyramid's pixel grid); default: the exact concentric pair."""
    cfg = limits.schedule
    if make_pair is None:
        def make_pair(centre, patch_px, hr_mpp, lr_mpp):
            return concentric_pair(centre, patch_px, hr_mpp, lr_mpp, limits.slide_mpp)
    out: list[Window] = []
    for level in sorted({r.level for r in redo}):
        items = sorted(((r.extent_l0_px, r.prompt_id) for r in redo if r.level == level),
                       key=lambda e: (e[0][1], e[0][0], e[1]))
        for pair, ids in pack_level(level, items, limits.slide_mpp, cfg):
            pair = make_pair(pair.centre_l0_px, pair.patch_px, pair.hr_mpp, pair.lr_mpp)
            out.append(Window(slide_id, redo_window_id(first_id, id_stride, level, ids), level, pair, ids))
    return out
