"""Concentric HR/LR patch geometry, in the model's pixel frames.

Both patches are ``img_px`` square and centred on the same slide point; one LR pixel covers
``ratio`` HR pixels per side (ratio 2: HR at 10x, LR at 5x, the paper's set-up).

Coordinates follow segment-anything's prompt convention: a point ``(x, y)`` names the pixel in
column x, row y, whose centre is ``(x + 0.5, y + 0.5)`` (SAM's prompt encoder adds the 0.5);
a box ``(x0, y0, x1, y1)`` names its corner pixels that way. The exact concentric map of such
coordinates is ``x_lr = (x_hr + 0.5 - img_px / 2) / ratio + img_px / 2 - 0.5``; for 1024 px and
ratio 2 that is ``x_hr / 2 + 255.75``, a quarter LR pixel from the reference code's ``x / 2 + 256``
(which treats the coordinates as pixel edges).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def hr_to_lr_px(xy_hr_px: torch.Tensor, img_px: int, ratio: float) -> torch.Tensor:
    """Map HR patch pixel coordinates (..., 2k) to the LR patch; works for points and boxes."""
    half = img_px / 2.0
    return (xy_hr_px + 0.5 - half) / ratio + half - 0.5


def lr_to_hr_px(xy_lr_px: torch.Tensor, img_px: int, ratio: float) -> torch.Tensor:
    """Inverse of :func:`hr_to_lr_px`."""
    half = img_px / 2.0
    return (xy_lr_px + 0.5 - half) * ratio + half - 0.5


def hr_to_lr_mask(mask_hr: torch.Tensor, ratio: float, fill: torch.Tensor | float | None = None) -> torch.Tensor:
    """Resample mask logits covering the HR patch, (N, 1, L, L), onto the LR patch's grid.

    The HR patch is the central 1/ratio of the LR patch; LR cells outside it get ``fill``
    (default: each mask's minimum, i.e. its background level).
    """
    n = mask_hr.shape[0]
    if fill is None:
        fill = mask_hr.flatten(1).amin(dim=1).view(n, 1, 1, 1)
    theta = torch.zeros(n, 2, 3, dtype=mask_hr.dtype, device=mask_hr.device)
    theta[:, 0, 0] = ratio
    theta[:, 1, 1] = ratio
    grid = F.affine_grid(theta, list(mask_hr.shape), align_corners=False)
    inside = F.grid_sample(torch.ones_like(mask_hr), grid, mode="bilinear", align_corners=False)
    values = F.grid_sample(mask_hr, grid, mode="bilinear", align_corners=False)
    return values + (1.0 - inside) * fill
