"""The overlap rule between objects of one label image.

Where objects overlap, the pixel goes to the object with the higher score; between equal
scores, to the lower object id. This is a total order on ``(-score, object_id)``, and each
pixel ends with the best object covering it, so the result does not depend on the order in
which objects arrive (painting is a running maximum, which commutes).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass
class ObjectEntry:
    """What the label image keeps in memory per object (a few dozen bytes)."""

    object_id: int
    prompt_id: int
    score: float
    class_name: str | None
    n_px: int = 0  # level-0 label pixels the object currently owns
    n_px_raw: int = 0  # level-0 label pixels its mask covers, before the overlap rule
    truncated: bool = False  # still cut by a window at the coarsest level (engine.completion)


def beats(score_a: float, id_a: int, score_b: float, id_b: int) -> bool:
    """True if object a takes a pixel from object b."""
    return score_a > score_b or (score_a == score_b and id_a < id_b)


def check_score(score: float) -> float:
    score = float(score)
    if not math.isfinite(score):
        raise ValueError(f"object score must be finite, got {score}")
    return score


def paint(
    block: np.ndarray,
    new_mask: np.ndarray,
    entry: ObjectEntry,
    entries: Mapping[int, ObjectEntry],
) -> tuple[int, dict[int, int]]:
    """Paint ``entry`` into ``block`` in place where ``new_mask`` is set and the rule allows.

    block: uint32 (h, w) label ids, 0 = background. new_mask: bool (h, w).
    Returns (pixels won, {previous owner id: pixels it lost}) for bookkeeping.
    """
    win = new_mask & (block == 0)  # free pixels; then those taken from beaten owners
    taken = new_mask != win  # covered pixels another object owns
    lost: dict[int, int] = {}
    if taken.any():
        owners, counts = np.unique(block[taken], return_counts=True)
        lost = {o: n for o, n in zip(owners.tolist(), counts.tolist())
                if beats(entry.score, entry.object_id, entries[o].score, o)}
        if len(lost) == len(owners):
            win = new_mask
        elif lost:
            win |= taken & np.isin(block, list(lost))
    np.copyto(block, np.uint32(entry.object_id), where=win)
    return int(np.count_nonzero(win)), lost
