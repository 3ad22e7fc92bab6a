"""The detector interface: a slide in, prompts (level-0 px) out.

A detector is any object with ``detect(slide) -> list[Prompt]``; built-ins subclass
:class:`Detector`. ``slide`` is anything satisfying :class:`SlideLike` (``engine.slides``
provides the real one; tests may use a small in-memory class).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np

from ..records import Prompt


@runtime_checkable
class SlideLike(Protocol):
    """What a detector may use of a slide."""

    slide_id: str

    @property
    def dimensions_l0_px(self) -> tuple[int, int]:  # (width, height) of level 0
        ...

    @property
    def mpp(self) -> float:  # level-0 µm per pixel
        ...

    def read_region(self, origin_l0_px: tuple[float, float], size_px: int, mpp: float) -> np.ndarray:
        """uint8 (size_px, size_px, 3) at ``mpp`` whose top-left corner is ``origin_l0_px``."""
        ...

    def thumbnail(self, max_px: int) -> np.ndarray:
        """uint8 (H, W, 3) of the whole slide, longest side at most ``max_px``."""
        ...


class Detector(ABC):
    """Finds prompts on a slide. Subclasses set ``name`` and implement :meth:`detect`."""

    name: ClassVar[str] = ""

    @abstractmethod
    def detect(self, slide: SlideLike) -> list[Prompt]:
        """Prompts for ``slide`` in level-0 px, ``prompt_id`` 0..N-1 in a deterministic order."""


def components_to_boxes(
    mask: np.ndarray,
    l0_px_per_px: tuple[float, float],
    slide_size_l0_px: tuple[float, float],
    min_area_px: float = 0.0,
    origin_l0_px: tuple[float, float] = (0.0, 0.0),
    connectivity: int = 8,
) -> list[tuple[tuple[float, float, float, float], int]]:
    """Connected components of a binary ``mask`` -> level-0 boxes, in raster order.

    Mask pixel ``(r, c)`` covers level-0 x in ``[ox + c*fx, ox + (c+1)*fx)`` (same for y), so a
    component spanning columns ``c0..c1`` gives ``x0 = ox + c0*fx``, ``x1 = ox + (c1+1)*fx``.
    Boxes are clipped to the slide; components smaller than ``min_area_px`` mask pixels, or
    wholly outside the slide, are skipped. Returns ``[(box, area_px), ...]``.
    """
    import cv2

    fx, fy = (float(v) for v in l0_px_per_px)
    W, H = (float(v) for v in slide_size_l0_px)
    ox, oy = (float(v) for v in origin_l0_px)
    n, _, stats, _ = cv2.connectedComponentsWithStats(
        np.ascontiguousarray(mask, dtype=np.uint8), connectivity=connectivity
    )
    out = []
    for i in range(1, n):
        left, top, w, h, area = (int(v) for v in stats[i])
        if area < min_area_px:
            continue
        x0, y0 = max(ox + left * fx, 0.0), max(oy + top * fy, 0.0)
        x1, y1 = min(ox + (left + w) * fx, W), min(oy + (top + h) * fy, H)
        if x1 > x0 and y1 > y0:
            out.append(((x0, y0, x1, y1), area))
    return out
