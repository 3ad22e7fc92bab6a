"""Segmentation losses of WSI-SAM's training: dice (on the sigmoid, squared denominators) plus
binary cross-entropy with logits, per resolution, combined as ``λ L_HR + (1 − λ) L_LR``."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _to_target_size(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Bilinearly resize (N, 1, L, L) logits to the (N, S, S) target's side (no-op when equal)."""
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits.float(), target.shape[-2:], mode="bilinear", align_corners=False)
    return logits[:, 0].float()


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Per-sample soft dice loss, (N,): ``1 − (2 Σ p t + eps) / (Σ p² + Σ t² + eps)``, p = sigmoid.

    logits (N, 1, L, L) (resized to the target when L differs); target (N, S, S) in [0, 1].
    """
    p = torch.sigmoid(_to_target_size(logits, target)).flatten(1)
    t = target.float().flatten(1)
    return 1.0 - (2.0 * (p * t).sum(1) + eps) / (p.pow(2).sum(1) + t.pow(2).sum(1) + eps)


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample binary cross-entropy with logits, (N,), averaged over pixels."""
    x = _to_target_size(logits, target)
    return F.binary_cross_entropy_with_logits(x, target.float(), reduction="none").flatten(1).mean(1)


def mask_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice + BCE per sample, (N,)."""
    return dice_loss(logits, target) + bce_loss(logits, target)


@dataclass
class LossTerms:
    """Batch-mean losses: ``total`` (with autograd) and the per-resolution parts (detached floats)."""

    total: torch.Tensor
    hr: float
    lr: float | None


def wsi_loss(hr_logits: torch.Tensor, hr_target: torch.Tensor, lr_logits: torch.Tensor | None = None,
             lr_target: torch.Tensor | None = None, lambda_hr: float = 0.5) -> LossTerms:
    """``λ L_HR + (1 − λ) L_LR`` averaged over the batch (the paper: λ = 0.5).

    hr_logits / lr_logits (N, 1, L, L); hr_target / lr_target (N, S, S). Without LR terms
    (SAM's own path) the total is ``L_HR`` alone.
    """
    hr = mask_loss(hr_logits, hr_target).mean()
    if lr_logits is None:
        return LossTerms(hr, float(hr.detach()), None)
    if lr_target is None:
        raise ValueError("lr_logits given without lr_target")
    lr = mask_loss(lr_logits, lr_target).mean()
    total = lambda_hr * hr + (1.0 - lambda_hr) * lr
    return LossTerms(total, float(hr.detach()), float(lr.detach()))


def dice_score(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Hard dice per sample, (N,): masks ``logit > 0`` against ``target > 0.5``; 1 when both are empty."""
    pred = _to_target_size(logits, target) > 0
    t = target > 0.5
    inter = (pred & t).flatten(1).sum(1).float()
    total = pred.flatten(1).sum(1).float() + t.flatten(1).sum(1).float()
    return torch.where(total > 0, 2.0 * inter / total.clamp_min(1.0), torch.ones_like(total))
