"""Prompts for one batch of N objects, in one patch's pixel frame (see :mod:`wsisam.geometry`)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from .geometry import hr_to_lr_mask, hr_to_lr_px


@dataclass
class PromptBatch:
    """N prompts; each field is None or covers all N.

    boxes (N, 4) float xyxy; points (N, P, 2) float xy; point_labels (N, P) int (1 positive,
    0 negative); mask_inputs (N, 1, L, L) float logits, L the decoder's low-res side.
    """

    boxes: torch.Tensor | None = None
    points: torch.Tensor | None = None
    point_labels: torch.Tensor | None = None
    mask_inputs: torch.Tensor | None = None

    def __len__(self) -> int:
        for t in (self.boxes, self.points, self.mask_inputs):
            if t is not None:
                return t.shape[0]
        return 0

    def to_lr(self, img_px: int, ratio: float) -> "PromptBatch":
        """The same prompts in the concentric LR patch."""
        return PromptBatch(
            boxes=None if self.boxes is None else hr_to_lr_px(self.boxes, img_px, ratio),
            points=None if self.points is None else hr_to_lr_px(self.points, img_px, ratio),
            point_labels=self.point_labels,
            mask_inputs=None if self.mask_inputs is None else hr_to_lr_mask(self.mask_inputs, ratio),
        )

    def select(self, index: torch.Tensor | slice) -> "PromptBatch":
        return PromptBatch(**{f.name: None if (t := getattr(self, f.name)) is None else t[index]
                              for f in dataclasses.fields(self)})

    def as_sam_inputs(self) -> dict:
        """Keyword arguments of segment-anything's ``PromptEncoder``."""
        points = None if self.points is None else (self.points, self.point_labels)
        return {"points": points, "boxes": self.boxes, "masks": self.mask_inputs}

    @staticmethod
    def from_arrays(img_px: int, low_res_px: int, boxes=None, points=None, point_labels=None,
                    mask_inputs=None, device: torch.device | str = "cpu") -> "PromptBatch":
        """Validate user arrays (numpy or torch) and turn them into a batch.

        Raises ValueError naming the problem: no prompts, wrong shapes, NaN, coordinates outside
        the patch, labels other than 0/1, counts that disagree.
        """
        def arr(name: str, value, shape: str) -> np.ndarray:
            a = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
            want_ndim = shape.count(",") + 1
            if a.ndim == want_ndim - 1:  # a single prompt
                a = a[None]
            if a.ndim != want_ndim or (name != "point_labels" and a.shape[-1] != int(shape.rsplit(",", 1)[1][:-1])):
                raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
            if not np.isfinite(a).all():
                raise ValueError(f"{name} contain NaN or infinite values")
            return a

        if all(v is None for v in (boxes, points, mask_inputs)):
            raise ValueError("no prompts: give boxes, points (with point_labels) or mask_inputs")
        n_values = []
        t = {}
        if boxes is not None:
            b = arr("boxes", boxes, "(N, 4)")
            if b.shape[0] == 0:
                raise ValueError("no prompts: boxes is empty")
            if (b < 0).any() or (b > img_px).any():
                raise ValueError(f"boxes outside the {img_px} x {img_px} patch: coordinates must lie in [0, {img_px}]")
            if (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any():
                raise ValueError("boxes must be (x0, y0, x1, y1) with x1 >= x0 and y1 >= y0")
            n_values.append(b.shape[0])
            t["boxes"] = b
        if points is not None:
            if point_labels is None:
                raise ValueError("points need point_labels (1 positive, 0 negative)")
            p = arr("points", points, "(N, P, 2)")
            lab = arr("point_labels", point_labels, "(N, P)")
            if lab.shape != p.shape[:2]:
                raise ValueError(f"point_labels shape {lab.shape} does not match points {p.shape[:2]}")
            if not np.isin(lab, (0, 1)).all():
                raise ValueError("point_labels must be 1 (positive) or 0 (negative)")
            if p.shape[0] == 0 or p.shape[1] == 0:
                raise ValueError("no prompts: points is empty")
            if (p < 0).any() or (p >= img_px).any():
                raise ValueError(f"points outside the {img_px} x {img_px} patch: coordinates must lie in [0, {img_px})")
            n_values.append(p.shape[0])
            t["points"] = p
            t["point_labels"] = lab
        if mask_inputs is not None:
            m = np.asarray(mask_inputs.detach().cpu() if isinstance(mask_inputs, torch.Tensor) else mask_inputs,
                           dtype=np.float32)
            if m.ndim == 3:
                m = m[:, None]
            if m.ndim != 4 or m.shape[1:] != (1, low_res_px, low_res_px):
                raise ValueError(f"mask_inputs must have shape (N, 1, {low_res_px}, {low_res_px}), got {m.shape}")
            if not np.isfinite(m).all():
                raise ValueError("mask_inputs contain NaN or infinite values")
            n_values.append(m.shape[0])
            t["mask_inputs"] = m
        if len(set(n_values)) > 1:
            raise ValueError(f"prompt counts disagree: boxes/points/mask_inputs give {n_values} objects")
        return PromptBatch(
            boxes=None if "boxes" not in t else torch.as_tensor(t["boxes"], dtype=torch.float32, device=device),
            points=None if "points" not in t else torch.as_tensor(t["points"], dtype=torch.float32, device=device),
            point_labels=None if "points" not in t else torch.as_tensor(t["point_labels"], dtype=torch.int64,
                                                                        device=device),
            mask_inputs=None if "mask_inputs" not in t else torch.as_tensor(t["mask_inputs"], device=device),
        )
