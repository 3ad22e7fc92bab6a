"""Plain records that cross stage (and process) boundaries.

Coordinates carry their frame in their name: ``_l0_px`` is level-0 (baseline) pixels of the
slide as tiatoolbox opens it, x to the right and y down, pixel ``i`` spanning ``[i, i+1)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Prompt:
    """One object to segment on one slide: a box, points, or both.

    ``prompt_id`` is unique within a slide and stable (file order); the object it yields gets
    label ``prompt_id + 1`` in the label image (0 is background).
    """

    slide_id: str
    prompt_id: int
    box_l0_px: tuple[float, float, float, float] | None = None  # x0, y0, x1, y1
    points_l0_px: tuple[tuple[float, float], ...] = ()
    point_labels: tuple[int, ...] = ()  # 1 positive, 0 negative, one per point
    class_name: str | None = None
    name: str | None = None

    def extent_l0_px(self) -> tuple[float, float, float, float]:
        """Bounding box of everything the prompt names (box and points)."""
        xs: list[float] = []
        ys: list[float] = []
        if self.box_l0_px is not None:
            xs += [self.box_l0_px[0], self.box_l0_px[2]]
            ys += [self.box_l0_px[1], self.box_l0_px[3]]
        for x, y in self.points_l0_px:
            xs.append(x)
            ys.append(y)
        if not xs:
            raise ValueError(f"prompt {self.prompt_id} of slide {self.slide_id!r} has neither box nor points")
        return min(xs), min(ys), max(xs), max(ys)


@dataclass
class ObjectMask:
    """One segmented object: a binary mask crop placed on the slide.

    The crop's pixel ``(r, c)`` covers level-0 x from ``origin_l0_px[0] + c * mask_mpp / slide_mpp``.
    """

    slide_id: str
    prompt_id: int
    mask: np.ndarray  # bool, (h, w)
    origin_l0_px: tuple[float, float]  # level-0 position of the crop's top-left corner
    mask_mpp: float  # µm per mask pixel
    score: float  # predicted IoU (see README: "Scores")
    class_name: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def object_id(self) -> int:
        return self.prompt_id + 1
