"""Training WSI-SAM on concentric patch pairs with mask ground truth (model side only: no slide I/O).

- :mod:`.losses`: dice + BCE per resolution, ``λ L_HR + (1 − λ) L_LR``.
- :mod:`.prompt_sampling`: one random prompt kind per sample (noisy box, points, coarse mask).
- :mod:`.trainer`: :class:`Trainer` for stage ``sam`` (the small SAM itself on HR patches) and
  stage ``wsi`` (SAM frozen, the WSI parameters on HR/LR pairs), with checkpoints and resume.
"""
from .losses import LossTerms, bce_loss, dice_loss, dice_score, mask_loss, wsi_loss
from .prompt_sampling import (PROMPT_KINDS, PromptGroup, PromptSamplingConfig, box_prompts, coarse_masks,
                              mask_boxes, noisy_boxes, sample_points, sample_prompts)
from .trainer import EpochRecord, TrainConfig, Trainer, sam_parameter_names

__all__ = [
    "LossTerms", "bce_loss", "dice_loss", "dice_score", "mask_loss", "wsi_loss", "PROMPT_KINDS", "PromptGroup",
    "PromptSamplingConfig", "box_prompts", "coarse_masks", "mask_boxes", "noisy_boxes", "sample_points",
    "sample_prompts", "EpochRecord", "TrainConfig", "Trainer", "sam_parameter_names",
]
