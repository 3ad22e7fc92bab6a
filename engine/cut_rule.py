"""When a mask at its window's border is a cut object: what the prompt says (engine.completion's rule).

- A **box** states the object's extent, up to an annotator's noise: the object lies within the
  box grown by :data:`BOX_TOLERANCE` of its width (height) on each side, the *tolerance box*
  (the evaluation's box protocol, ``engine.evaluation.protocols.BoxNoise``: the centre moves by
  up to 10% of the size and the size changes by up to 20%, so a truth side lies at most
  0.2 / 0.8 = 25% of the noisy box's side outside it). The object is the mask's components that
  meet the box, inside the tolerance box.
- **Points** lie in the object: the object is the mask's components (4-neighbours) that hold a
  positive point.

Everything else of the mask (another object, or a leak past the tolerance box) is not the object:
it is no reason to complete, and where it reaches the window border it is trimmed.
"""
from __future__ import annotations

import numpy as np

from .records import ObjectMask, Prompt

_Box = tuple[float, float, float, float]
#: Share of a box's side that the object may lie outside the box, per side (annotator noise).
BOX_TOLERANCE = 0.25
#: A coarser pass is taken when its IoU with the first mask inside the prompt's region is at least this.
MIN_AGREEMENT_IOU = 0.4
#: A coarser pass is refused when its score or stability is more than this below the first mask's.
MAX_SCORE_DROP = 0.3


def tolerance_box_l0_px(box_l0_px: _Box) -> _Box:
    """The box grown by :data:`BOX_TOLERANCE` of its width and height on each side."""
    x0, y0, x1, y1 = box_l0_px
    dx, dy = BOX_TOLERANCE * (x1 - x0), BOX_TOLERANCE * (y1 - y0)
    return x0 - dx, y0 - dy, x1 + dx, y1 + dy


def positive_points(prompt: Prompt) -> np.ndarray:
    """(n, 2) level-0 x, y of the prompt's positive points."""
    return np.array([xy for xy, lab in zip(prompt.points_l0_px, prompt.point_labels) if lab == 1],
                    dtype=np.float64).reshape(-1, 2)


def pixel_window(obj: ObjectMask, box_l0_px: _Box, slide_mpp: float) -> tuple[slice, slice]:
    """Rows and columns of ``obj.mask`` whose pixel centres lie in ``box_l0_px``."""
    f = obj.mask_mpp / slide_mpp
    (ox, oy), (h, w) = obj.origin_l0_px, obj.mask.shape
    c0, c1 = (np.clip(np.ceil((np.array(box_l0_px[0::2]) - ox) / f - 0.5), 0, w)).astype(int)
    r0, r1 = (np.clip(np.ceil((np.array(box_l0_px[1::2]) - oy) / f - 0.5), 0, h)).astype(int)
    return slice(r0, r1), slice(c0, c1)


def object_part(obj: ObjectMask, prompt: Prompt, slide_mpp: float) -> np.ndarray:
    """``obj.mask``'s pixels (bool, the crop's shape) that are the prompt's object (module
    docstring): empty when no component meets the box; all of the mask when none holds a point."""
    from scipy import ndimage

    labels, _ = ndimage.label(obj.mask)
    f = obj.mask_mpp / slide_mpp
    if prompt.box_l0_px is not None:
        rows, cols = pixel_window(obj, prompt.box_l0_px, slide_mpp)
        ids = labels[rows, cols]
    else:
        c, r = np.floor((positive_points(prompt) - np.array(obj.origin_l0_px)) / f).astype(np.int64).T
        ok = (r >= 0) & (r < labels.shape[0]) & (c >= 0) & (c < labels.shape[1])
        ids = labels[r[ok], c[ok]]
    part = np.isin(labels, np.unique(ids[ids > 0]))
    if prompt.box_l0_px is None and not part.any():
        return obj.mask.copy()  # the mask misses its points: all of it is what the model made of them
    if prompt.box_l0_px is not None:
        inside = np.zeros_like(part)
        inside[pixel_window(obj, tolerance_box_l0_px(prompt.box_l0_px), slide_mpp)] = True
        part &= inside
    return part


def without_border_strays(mask: np.ndarray, part: np.ndarray, border: np.ndarray) -> np.ndarray:
    """``mask`` without what is not the object (``part``) among its components that meet ``border``
    (bool, the mask's pixels on a cut side of its window): the object and the other components."""
    from scipy import ndimage

    labels, _ = ndimage.label(mask)
    at_border = np.unique(labels[border & mask])
    return part | (mask & ~np.isin(labels, at_border[at_border > 0]))


def prompt_region_l0_px(prompt: Prompt, extent_l0_px: _Box) -> _Box:
    """Where a coarser mask must agree with the first one: the tolerance box for a box, else the
    prompt's scheduled extent (``extent_l0_px``: the points' assumed object extent)."""
    return tolerance_box_l0_px(prompt.box_l0_px) if prompt.box_l0_px is not None else extent_l0_px


def sample(obj: ObjectMask, xs_l0_px: np.ndarray, ys_l0_px: np.ndarray, slide_mpp: float) -> np.ndarray:
    """Whether each level-0 point (x, y) lies in the mask (False outside its crop)."""
    f = obj.mask_mpp / slide_mpp
    c = np.floor((xs_l0_px - obj.origin_l0_px[0]) / f).astype(np.int64)
    r = np.floor((ys_l0_px - obj.origin_l0_px[1]) / f).astype(np.int64)
    ok = (r >= 0) & (r < obj.mask.shape[0]) & (c >= 0) & (c < obj.mask.shape[1])
    out = np.zeros(len(xs_l0_px), bool)
    out[ok] = obj.mask[r[ok], c[ok]]
    return out


def iou_within(a: ObjectMask, b: ObjectMask, region_l0_px: _Box, slide_mpp: float) -> float:
    """IoU of two placed masks inside ``region_l0_px``, on a grid at the finer mask's pixel size
    (0 when both are empty there)."""
    step = min(a.mask_mpp, b.mask_mpp) / slide_mpp
    x0, y0, x1, y1 = region_l0_px
    xs, ys = np.arange(x0 + step / 2, x1, step), np.arange(y0 + step / 2, y1, step)
    gx, gy = (g.ravel() for g in np.meshgrid(xs, ys))
    ina, inb = sample(a, gx, gy, slide_mpp), sample(b, gx, gy, slide_mpp)
    union = int((ina | inb).sum())
    return 0.0 if union == 0 else float((ina & inb).sum()) / union


def no_worse_scores(new: ObjectMask, first: ObjectMask) -> bool:
    """Whether ``new``'s score and stability (where both masks have one) are no more than
    :data:`MAX_SCORE_DROP` below ``first``'s."""
    s_new, s_first = new.extra.get("stability"), first.extra.get("stability")
    return new.score >= first.score - MAX_SCORE_DROP and (
        s_new is None or s_first is None or s_new >= s_first - MAX_SCORE_DROP)
