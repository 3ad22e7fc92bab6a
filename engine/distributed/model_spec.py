"""Which model a run uses: a plain record that crosses to the model actors, which build it."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch

import wsisam
from wsisam.checkpoint import file_sha256

from ..segmenters import WsiSamSegmenter

DEMO_MODEL = Path(__file__).resolve().parents[1] / "data" / "demo_model.safetensors"


@dataclass(frozen=True)
class ModelSpec:
    """Either ``checkpoint`` (our format), or ``backbone`` with optional SAM/reference decoder files.

    ``mode``: "wsi" (WSI-SAM) or "sam" (SAM's own decoder path, the baseline).
    ``amp``: "bf16"/"fp16" autocast on GPU, None for fp32.
    """

    checkpoint: str | None = None
    backbone: str | None = None
    sam_checkpoint: str | None = None
    hr_decoder_checkpoint: str | None = None
    lr_decoder_checkpoint: str | None = None
    mode: Literal["wsi", "sam"] = "wsi"
    amp: str | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        if (self.checkpoint is None) == (self.backbone is None):
            raise ValueError("a model is a checkpoint (our .safetensors) or a backbone name, exactly one of them")
        for name in ("checkpoint", "sam_checkpoint", "hr_decoder_checkpoint", "lr_decoder_checkpoint"):
            path = getattr(self, name)
            if path is not None and not os.path.isfile(path):
                raise FileNotFoundError(f"model file {path} ({name}) not found")
        if self.mode not in ("wsi", "sam"):
            raise ValueError(f"mode must be 'wsi' or 'sam', got {self.mode!r}")
        if self.amp not in (None, "bf16", "fp16"):
            raise ValueError(f"amp must be bf16, fp16 or None, got {self.amp!r}")

    @staticmethod
    def demo() -> "ModelSpec":
        """The bundled demo model (trained on synthetic slides; not for tissue)."""
        return ModelSpec(checkpoint=str(DEMO_MODEL))

    def build(self) -> wsisam.WsiSam:
        return wsisam.build_wsisam(
            self.backbone, checkpoint=self.checkpoint, sam_checkpoint=self.sam_checkpoint,
            hr_decoder_checkpoint=self.hr_decoder_checkpoint, lr_decoder_checkpoint=self.lr_decoder_checkpoint)

    def segmenter(self, device: str) -> WsiSamSegmenter:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.amp or "") if device.startswith("cuda") else None
        predictor = wsisam.WsiSamPredictor(self.build(), device=device, amp_dtype=dtype, compile=self.compile)
        return WsiSamSegmenter(predictor, mode=self.mode)

    def checksums(self) -> dict[str, str]:
        """sha256 of every weights file, for the run manifest."""
        return {name: file_sha256(p) for name, p in asdict(self).items()
                if name.endswith("checkpoint") and p is not None}

    def patch_px(self) -> int:
        if self.checkpoint is not None:
            return wsisam.checkpoint.read_config(self.checkpoint).img_size
        return wsisam.get_config(self.backbone).img_size
