"""What every segmenter takes and gives, and the level-0 -> model-prompt conversion."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..records import ObjectMask, Prompt
from ..scheduler import Window


@dataclass
class WindowJob:
    """A window with its pixels: HR and LR (S, S, 3) uint8, and its prompts in ``window.prompt_ids`` order."""

    window: Window
    hr: np.ndarray
    lr: np.ndarray
    prompts: list[Prompt]


class WindowSegmenter(Protocol):
    name: str

    def segment(self, jobs: list[WindowJob], lr_masks: bool = True) -> list[ObjectMask]:
        """One ObjectMask per prompt whose mask is not empty, in job and prompt order. With
        ``lr_masks``, masks that reach their HR patch's border carry the prompt's LR mask for
        window-border completion (``engine.completion``); without, none is made."""
        ...


def prompt_arrays_hr_px(prompts: list[Prompt], window: Window) -> dict[str, np.ndarray | None]:
    """Boxes (N, 4) and points (N, P, 2) with labels (N, P) in the window's HR patch, in
    segment-anything's pixel-index convention (a continuous coordinate c is index c - 0.5; a box
    [x0, x1) spans pixel indices x0 .. x1 - 1).

    Prompts of one call must be of one kind (all with boxes, or all with P points); mixed kinds
    go through :func:`group_by_kind` first. Coordinates are clipped to the patch.
    """
    pair = window.pair
    s = pair.patch_px
    out: dict[str, np.ndarray | None] = {"boxes": None, "points": None, "point_labels": None}
    if prompts[0].box_l0_px is not None:
        b = pair.boxes_l0_to_hr_px(np.array([p.box_l0_px for p in prompts], dtype=np.float64))
        b[:, 2:] = np.maximum(b[:, 2:] - 1.0, b[:, :2])
        out["boxes"] = np.clip(b, 0, s - 1)
    if prompts[0].points_l0_px:
        pts = pair.points_l0_to_hr_px(np.array([p.points_l0_px for p in prompts], dtype=np.float64)) - 0.5
        out["points"] = np.clip(pts, 0, s - 1)
        out["point_labels"] = np.array([p.point_labels for p in prompts], dtype=np.int64)
    return out


def group_by_kind(prompts: list[Prompt]) -> dict[tuple[bool, int], list[int]]:
    """Indices of prompts that can share one decoder call: same (has box, number of points)."""
    groups: dict[tuple[bool, int], list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault((p.box_l0_px is not None, len(p.points_l0_px)), []).append(i)
    return groups


def mask_to_object(mask_hr: np.ndarray, prompt: Prompt, window: Window, score: float) -> ObjectMask | None:
    """Crop a window-sized HR mask to its foreground and place it on the slide (None when empty)."""
    rows = np.flatnonzero(mask_hr.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask_hr.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return crop_to_object(mask_hr[r0:r1, c0:c1], int(r0), int(c0), prompt, window, score)


def crop_to_object(crop: np.ndarray, row0_px: int, col0_px: int, prompt: Prompt, window: Window,
                   score: float) -> ObjectMask:
    """An HR mask already cropped to its foreground, top-left at (row0_px, col0_px) of the window's
    HR patch, placed on the slide."""
    origin = window.pair.points_hr_px_to_l0(np.array([col0_px, row0_px], dtype=np.float64))
    return ObjectMask(
        slide_id=window.slide_id, prompt_id=prompt.prompt_id, mask=np.ascontiguousarray(crop),
        origin_l0_px=(float(origin[0]), float(origin[1])), mask_mpp=window.pair.hr_mpp, score=float(score),
        class_name=prompt.class_name, extra={"window_id": window.window_id, "level": window.level},
    )
