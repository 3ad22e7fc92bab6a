"""Training prompts drawn from ground-truth masks, one prompt type per sample (as in WSI-SAM).

All coordinates follow segment-anything's convention (see :mod:`wsisam.geometry`): a point is a
pixel index ``(x, y)``; a box ``(x0, y0, x1, y1)`` names its corner pixels.

- ``"box"``: the HR mask's bounding box with noise of scale 0.2 (as the reference): the centre
  moves by up to ±10 % of the box's width/height and each side length changes by up to ±20 %;
  clipped to the patch. The LR box is the model's own HR -> LR map of that box.
- ``"points"``: K positive points (the reference: 10) drawn uniformly from the mask's pixels,
  independently in the HR and the LR mask.
- ``"mask"``: a coarse mask, the ground truth at the decoder's low-res side L with its boundary
  noised (random flips in a band around the edge, then a random 0-2 cell dilation or erosion),
  given as logits ±``mask_logit`` in the (N, 1, L, L) mask input; the LR mask input is the HR one
  resampled onto the LR grid (:func:`wsisam.geometry.hr_to_lr_mask`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..prompts import PromptBatch

PROMPT_KINDS = ("box", "points", "mask")


@dataclass(frozen=True)
class PromptSamplingConfig:
    kinds: tuple[str, ...] = PROMPT_KINDS  # drawn uniformly per sample
    box_noise: float = 0.2
    num_points: int = 10
    mask_logit: float = 4.0  # magnitude of the coarse mask's logits

    def __post_init__(self) -> None:
        bad = set(self.kinds) - set(PROMPT_KINDS)
        if not self.kinds or bad:
            raise ValueError(f"prompt kinds must be a non-empty subset of {PROMPT_KINDS}, got {self.kinds}")
        if self.num_points < 1:
            raise ValueError(f"num_points must be >= 1, got {self.num_points}")


@dataclass
class PromptGroup:
    """Samples of one batch that drew the same prompt kind: ``index`` (n,) rows of the batch,
    ``hr`` and ``lr`` their prompts in the HR and the LR patch (n prompts each)."""

    kind: str
    index: torch.Tensor
    hr: PromptBatch
    lr: PromptBatch


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Exact bounding boxes (N, 4) of (N, S, S) masks, corner pixel indices; an empty mask gets
    the whole patch."""
    n, h, w = masks.shape
    m = masks > 0.5
    rows, cols = m.any(2), m.any(1)
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    big = torch.tensor(10**9, device=masks.device)
    y0 = torch.where(rows, ar_h, big).amin(1)
    y1 = torch.where(rows, ar_h, -big).amax(1)
    x0 = torch.where(cols, ar_w, big).amin(1)
    x1 = torch.where(cols, ar_w, -big).amax(1)
    boxes = torch.stack([x0, y0, x1, y1], 1).float()
    empty = ~rows.any(1)
    boxes[empty] = torch.tensor([0.0, 0.0, w - 1.0, h - 1.0], device=masks.device)
    return boxes


def noisy_boxes(masks: torch.Tensor, generator: torch.Generator, noise_scale: float = 0.2) -> torch.Tensor:
    """Noisy ground-truth boxes (N, 4): centre ± noise/2 of the size, size ± noise of itself."""
    boxes = mask_boxes(masks)
    s = masks.shape[-1]
    wh = (boxes[:, 2:] - boxes[:, :2] + 1.0)
    centre = (boxes[:, 2:] + boxes[:, :2]) / 2
    u = torch.rand(boxes.shape[0], 4, generator=generator).to(masks.device) * 2 - 1
    centre = centre + u[:, :2] * wh / 2 * noise_scale
    wh = (wh + u[:, 2:] * wh * noise_scale).clamp_min(1.0)
    out = torch.cat([centre - (wh - 1) / 2, centre + (wh - 1) / 2], 1)
    out = out.clamp(0.0, s - 1.0)
    out[:, 2:] = torch.maximum(out[:, 2:], out[:, :2])
    return out


def sample_points(masks: torch.Tensor, num_points: int, generator: torch.Generator) -> torch.Tensor:
    """(N, K, 2) float pixel indices ``(x, y)`` drawn uniformly (with replacement) from each
    (S, S) mask's foreground; an empty mask gives its centre pixel."""
    n, h, w = masks.shape
    out = torch.empty(n, num_points, 2)
    for i in range(n):
        ys, xs = torch.nonzero(masks[i].cpu() > 0.5, as_tuple=True)
        if ys.numel() == 0:
            out[i] = torch.tensor([w // 2, h // 2], dtype=torch.float32)
            continue
        pick = torch.randint(ys.numel(), (num_points,), generator=generator)
        out[i, :, 0] = xs[pick].float()
        out[i, :, 1] = ys[pick].float()
    return out.to(masks.device)


def coarse_masks(masks: torch.Tensor, low_res_px: int, generator: torch.Generator, mask_logit: float = 4.0
                 ) -> torch.Tensor:
    """(N, S, S) ground truth -> (N, 1, L, L) logits of a coarse, boundary-noised version."""
    m = F.adaptive_avg_pool2d(masks.float()[:, None].cpu(), low_res_px)  # soft at the boundary
    smooth = F.avg_pool2d(m, 5, stride=1, padding=2, count_include_pad=False)
    band = ((smooth > 0.02) & (smooth < 0.98)).float()
    noisy = ((m + torch.randn(m.shape, generator=generator) * band) > 0.5).float()
    for i in range(noisy.shape[0]):  # random dilation (k > 0) or erosion (k < 0) by |k| cells
        k = int(torch.randint(-2, 3, (1,), generator=generator))
        if k:
            x = noisy[i:i + 1] if k > 0 else 1.0 - noisy[i:i + 1]
            x = F.max_pool2d(x, 2 * abs(k) + 1, stride=1, padding=abs(k))
            noisy[i:i + 1] = x if k > 0 else 1.0 - x
    return ((noisy * 2 - 1) * mask_logit).to(masks.device)


def sample_prompts(hr_masks: torch.Tensor, lr_masks: torch.Tensor | None, img_px: int, ratio: float,
                   low_res_px: int, generator: torch.Generator,
                   config: PromptSamplingConfig = PromptSamplingConfig()) -> list[PromptGroup]:
    """One prompt of a random kind per sample, grouped by kind (a decoder call takes one kind).

    hr_masks / lr_masks (B, S, S) ground truth over the HR and the LR patch (``lr_masks`` may be
    None when only the HR prompts are needed; the LR prompts are then mapped from HR).
    """
    b = hr_masks.shape[0]
    kinds = [config.kinds[int(i)] for i in torch.randint(len(config.kinds), (b,), generator=generator)]
    groups = []
    for kind in PROMPT_KINDS:
        rows = [i for i, k in enumerate(kinds) if k == kind]
        if not rows:
            continue
        idx = torch.tensor(rows, dtype=torch.long)
        hm = hr_masks[idx]
        if kind == "box":
            hr = PromptBatch(boxes=noisy_boxes(hm, generator, config.box_noise))
            lr = hr.to_lr(img_px, ratio)
        elif kind == "points":
            pts = sample_points(hm, config.num_points, generator)
            labels = torch.ones(len(rows), config.num_points, dtype=torch.int64, device=hm.device)
            hr = PromptBatch(points=pts, point_labels=labels)
            lr = hr.to_lr(img_px, ratio)
            if lr_masks is not None:  # drawn afresh in the LR mask, unless it is empty there
                lm = lr_masks[idx]
                own = sample_points(lm, config.num_points, generator)
                has = (lm > 0.5).flatten(1).any(1)
                lr = PromptBatch(points=torch.where(has[:, None, None], own, lr.points), point_labels=labels)
        else:
            hr = PromptBatch(mask_inputs=coarse_masks(hm, low_res_px, generator, config.mask_logit))
            lr = hr.to_lr(img_px, ratio)
        groups.append(PromptGroup(kind, idx.to(hr_masks.device), hr, lr))
    return groups


def box_prompts(hr_masks: torch.Tensor, img_px: int, ratio: float) -> PromptGroup:
    """Exact ground-truth boxes for every sample (validation): one group of kind ``"box"``."""
    hr = PromptBatch(boxes=mask_boxes(hr_masks))
    return PromptGroup("box", torch.arange(hr_masks.shape[0], device=hr_masks.device), hr, hr.to_lr(img_px, ratio))
