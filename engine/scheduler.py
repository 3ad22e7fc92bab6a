"""Packing a slide's prompts into concentric HR/LR windows (patch-pair jobs).

Rules (all deterministic: the same prompts and settings give the same windows):

- Each prompt's *extent* is its box (and points) in level-0 px; a points-only prompt gets a
  square of ``points_extent_um`` around its points, since the object's size is unknown.
- Scale: a prompt goes to the finest pyramid level ``k`` (HR at ``hr_mpp * 2**k``, LR at
  ``lr_mpp * 2**k``, the same HR/LR ratio) at which its extent plus ``context_px`` HR pixels on
  every side fits in the HR patch. Objects larger than a 10x window are segmented at 5x/2.5x,
  and so on.
- Packing: within a level, prompts sorted by (top, left, id) seed windows in turn; each window
  takes, in the same order, every still-unplaced prompt whose extent keeps the union of extents
  (plus context) inside one HR patch. The window is centred on that union. Every prompt lands in
  exactly one window; encoder passes per prompt = 2 x windows / prompts.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from .geometry import PatchPair, concentric_pair
from .records import Prompt


@dataclass(frozen=True)
class ScheduleConfig:
    patch_px: int = 1024  # the model's input side
    hr_mpp: float = 1.0  # about 10x
    lr_mpp: float = 2.0  # about 5x
    context_px: int = 32  # HR pixels kept between an object's box and the HR patch's edge
    points_extent_um: float = 256.0  # assumed object size for points-only prompts
    max_level: int = 8  # coarsest level: hr_mpp * 2**max_level

    def __post_init__(self) -> None:
        for name in ("hr_mpp", "lr_mpp", "points_extent_um"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} (--{name.replace('_', '-')}) must be a positive number, got {v!r}")
        if self.context_px < 0 or self.max_level < 0 or self.patch_px < 16:
            raise ValueError(f"context_px ({self.context_px}), max_level ({self.max_level}) must be >= 0 and "
                             f"patch_px ({self.patch_px}) >= 16")
        if self.lr_mpp < self.hr_mpp:
            raise ValueError(f"lr_mpp ({self.lr_mpp}) must be >= hr_mpp ({self.hr_mpp})")
        if 2 * self.context_px >= self.patch_px:
            raise ValueError(f"context_px ({self.context_px}) leaves no room in a {self.patch_px} px patch")


@dataclass(frozen=True)
class Window:
    """One patch-pair job: the pair to read and the prompts it segments."""

    slide_id: str
    window_id: int
    level: int
    pair: PatchPair
    prompt_ids: tuple[int, ...]


def prompt_extent_l0_px(prompt: Prompt, cfg: ScheduleConfig, slide_mpp: float) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = prompt.extent_l0_px()
    if prompt.box_l0_px is None:
        half = 0.5 * cfg.points_extent_um / slide_mpp
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        x0, y0, x1, y1 = min(x0, cx - half), min(y0, cy - half), max(x1, cx + half), max(y1, cy + half)
    return x0, y0, x1, y1


def _usable_l0_px(cfg: ScheduleConfig, level: int, slide_mpp: float) -> float:
    """Side, in level-0 px, that extents may span in one HR patch at ``level``."""
    return (cfg.patch_px - 2 * cfg.context_px) * cfg.hr_mpp * 2**level / slide_mpp


def prompt_level(extent: tuple[float, float, float, float], cfg: ScheduleConfig, slide_mpp: float) -> int:
    """Finest level whose HR patch holds the extent with its context."""
    side = max(extent[2] - extent[0], extent[3] - extent[1])
    for level in range(cfg.max_level + 1):
        if side <= _usable_l0_px(cfg, level, slide_mpp):
            return level
    raise ValueError(f"an object of {side * slide_mpp:.0f} µm does not fit a window even at level {cfg.max_level}")


def schedule_windows(slide_id: str, prompts: list[Prompt], slide_mpp: float, cfg: ScheduleConfig) -> list[Window]:
    """Pack ``prompts`` into windows; every prompt appears in exactly one window."""
    by_level: dict[int, list[tuple[tuple[float, float, float, float], Prompt]]] = {}
    for p in prompts:
        ext = prompt_extent_l0_px(p, cfg, slide_mpp)
        by_level.setdefault(prompt_level(ext, cfg, slide_mpp), []).append((ext, p))
    windows: list[Window] = []
    for level in sorted(by_level):
        usable = _usable_l0_px(cfg, level, slide_mpp)
        items = sorted(by_level[level], key=lambda e: (e[0][1], e[0][0], e[1].prompt_id))
        tops = [e[0][1] for e in items]
        placed = [False] * len(items)
        for i, (seed_ext, _) in enumerate(items):
            if placed[i]:
                continue
            ux0, uy0, ux1, uy1 = seed_ext
            members = [i]
            placed[i] = True
            # Candidates start no higher than the seed and within one usable side below it.
            stop = bisect.bisect_right(tops, uy0 + usable)
            for j in range(i + 1, stop):
                if placed[j]:
                    continue
                x0, y0, x1, y1 = items[j][0]
                nx0, ny0, nx1, ny1 = min(ux0, x0), min(uy0, y0), max(ux1, x1), max(uy1, y1)
                if nx1 - nx0 <= usable and ny1 - ny0 <= usable:
                    ux0, uy0, ux1, uy1 = nx0, ny0, nx1, ny1
                    members.append(j)
                    placed[j] = True
            centre = ((ux0 + ux1) / 2, (uy0 + uy1) / 2)
            pair = concentric_pair(centre, cfg.patch_px, cfg.hr_mpp * 2**level, cfg.lr_mpp * 2**level, slide_mpp)
            windows.append(Window(slide_id, len(windows), level, pair,
                                  tuple(sorted(items[m][1].prompt_id for m in members))))
    return windows


@dataclass(frozen=True)
class ScheduleStats:
    prompts: int
    windows: int
    encoder_passes: int  # image-encoder passes: two per window (HR and LR)

    @property
    def encoder_passes_per_prompt(self) -> float:
        return self.encoder_passes / self.prompts if self.prompts else math.nan


def schedule_stats(windows: list[Window]) -> ScheduleStats:
    n = sum(len(w.prompt_ids) for w in windows)
    return ScheduleStats(prompts=n, windows=len(windows), encoder_passes=2 * len(windows))
