"""Which model a run uses: a plain record that crosses to the model actors, which build it.

torch and ``wsisam`` are imported by the methods that need them, so that processes importing
this module for the record alone (Ray's readers and writers, via ``actors``) never load torch.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import wsisam

    from ..segmenters import WsiSamSegmenter

DEMO_MODEL = Path(__file__).resolve().parents[1] / "data" / "demo_model.safetensors"


# Field -> command-line option, for messages.
_OPTIONS = {"checkpoint": "--checkpoint", "backbone": "--backbone", "sam_checkpoint": "--sam-checkpoint",
            "hr_decoder_checkpoint": "--hr-decoder", "lr_decoder_checkpoint": "--lr-decoder"}


def _name(field: str) -> str:
    return f"{field} ({_OPTIONS[field]})"


@dataclass(frozen=True)
class ModelSpec:
    """Either ``checkpoint`` (our format, carrying its configuration), or SAM's/MobileSAM's
    ``sam_checkpoint`` with the reference ``hr_decoder_checkpoint`` and ``lr_decoder_checkpoint``
    (``backbone`` is inferred from the SAM file when not given). SAM weights alone suit
    ``mode="sam"`` only. ``backbone`` alone, with ``random_weights=True``: random weights (benchmarks).

    ``mode``: "wsi" (WSI-SAM) or "sam" (SAM's own decoder path, the baseline).
    ``amp``: "bf16"/"fp16" autocast on GPU, None for fp32.
    ``allow_cpu``: a model actor that Ray gave a GPU torch cannot see runs on the CPU with a warning
    instead of failing.
    :meth:`validate` opens the files and matches them to the configuration (on the driver).
    """

    checkpoint: str | None = None
    backbone: str | None = None
    sam_checkpoint: str | None = None
    hr_decoder_checkpoint: str | None = None
    lr_decoder_checkpoint: str | None = None
    mode: Literal["wsi", "sam"] = "wsi"
    amp: str | None = None
    compile: bool = False
    random_weights: bool = False
    allow_cpu: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("wsi", "sam"):
            raise ValueError(f"mode must be 'wsi' or 'sam', got {self.mode!r}")
        if self.amp not in (None, "bf16", "fp16"):
            raise ValueError(f"amp must be bf16, fp16 or None, got {self.amp!r}")
        self._check_combination()
        for name in ("checkpoint", "sam_checkpoint", "hr_decoder_checkpoint", "lr_decoder_checkpoint"):
            path = getattr(self, name)
            if path is not None and not os.path.isfile(path):
                raise FileNotFoundError(f"model file {path} ({_name(name)}) not found")

    def _check_combination(self) -> None:
        """Which model options go together (no file is opened here)."""
        weights = [n for n in ("sam_checkpoint", "hr_decoder_checkpoint", "lr_decoder_checkpoint")
                   if getattr(self, n) is not None]
        if self.checkpoint is not None:
            others = [_name(n) for n in ("backbone", *weights) if getattr(self, n) is not None]
            if others or self.random_weights:
                raise ValueError(f"checkpoint {self.checkpoint} ({_OPTIONS['checkpoint']}) carries its own "
                                 f"configuration and weights: give it without {', '.join(others) or 'random_weights'}")
            return
        if self.random_weights:
            if self.backbone is None or weights:
                raise ValueError("random_weights needs a backbone name and no weights files")
            return
        hr, lr = self.hr_decoder_checkpoint, self.lr_decoder_checkpoint
        if (hr is None) != (lr is None):
            pair = ("hr_decoder_checkpoint", "lr_decoder_checkpoint")
            given, missing = pair if hr is not None else pair[::-1]
            raise ValueError(f"{_name(given)} {getattr(self, given)} needs {_name(missing)} as well: "
                             "WSI-SAM's reference decoders come in pairs")
        if self.sam_checkpoint is None:
            if hr is not None:
                raise ValueError(f"the reference decoders ({hr}, {lr}) need SAM's/MobileSAM's weights for the "
                                 f"frozen image encoder and decoder: add {_name('sam_checkpoint')}")
            if self.backbone is not None:
                raise ValueError(f"backbone {self.backbone!r} ({_OPTIONS['backbone']}) without weights files would "
                                 f"run a randomly initialised model: add {_name('sam_checkpoint')} (and the "
                                 f"reference decoders), or give {_name('checkpoint')}")
            raise ValueError(f"no model given: give {_name('checkpoint')}, or {_name('sam_checkpoint')} with "
                             "the reference decoders")
        if hr is None and self.mode == "wsi":
            raise ValueError(f"SAM's weights {self.sam_checkpoint} alone leave WSI-SAM's own decoder parts random: "
                             f"add {_name('hr_decoder_checkpoint')} and {_name('lr_decoder_checkpoint')}, or use "
                             "mode 'sam' (--mode sam) for SAM's own decoder")

    @staticmethod
    def demo(**fields) -> "ModelSpec":
        """The bundled demo model (trained on synthetic slides; not for tissue)."""
        return ModelSpec(checkpoint=str(DEMO_MODEL), **fields)

    @property
    def is_demo(self) -> bool:
        return self.checkpoint is not None and Path(self.checkpoint).resolve() == DEMO_MODEL

    def validate(self) -> "ModelSpec":
        """Open every model file and match its keys and shapes to the configuration (headers and
        memory maps only: nothing is built or loaded). Returns the spec with ``backbone`` filled in
        from the SAM file when it was not given. Raises ``CheckpointError`` (a ValueError)."""
        import wsisam

        backbone = wsisam.check_model_files(
            self.backbone, checkpoint=self.checkpoint, sam_checkpoint=self.sam_checkpoint,
            hr_decoder_checkpoint=self.hr_decoder_checkpoint, lr_decoder_checkpoint=self.lr_decoder_checkpoint)
        return self if self.checkpoint is not None or backbone == self.backbone else replace(self, backbone=backbone)

    def describe(self) -> str:
        """One line naming the model a run uses."""
        import wsisam.checkpoint

        if self.is_demo:
            return f"the bundled demo model (trained on synthetic slides only, not for tissue): {self.checkpoint}"
        if self.checkpoint is not None:
            return f"{self.checkpoint} ({wsisam.checkpoint.read_config(self.checkpoint).name})"
        if self.random_weights:
            return f"{self.backbone} with RANDOM weights (benchmarks only)"
        text = f"{self.backbone or 'backbone from the SAM file'}, SAM weights {self.sam_checkpoint}"
        if self.hr_decoder_checkpoint is not None:
            text += f", reference decoders {self.hr_decoder_checkpoint} (HR) and {self.lr_decoder_checkpoint} (LR)"
        return text

    def build(self) -> wsisam.WsiSam:
        """The model, in eval mode, on the CPU: weights from files are memory-mapped, not copied."""
        import wsisam

        return wsisam.build_wsisam(
            self.backbone, checkpoint=self.checkpoint, sam_checkpoint=self.sam_checkpoint,
            hr_decoder_checkpoint=self.hr_decoder_checkpoint, lr_decoder_checkpoint=self.lr_decoder_checkpoint)

    def segmenter(self, device: str) -> WsiSamSegmenter:
        import torch

        import wsisam
        from ..segmenters import WsiSamSegmenter

        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.amp or "") if device.startswith("cuda") else None
        predictor = wsisam.WsiSamPredictor(self.build(), device=device, amp_dtype=dtype, compile=self.compile)
        return WsiSamSegmenter(predictor, mode=self.mode)

    def checksums(self) -> dict[str, str]:
        """sha256 of every weights file, for the run manifest."""
        from wsisam.checkpoint import file_sha256

        return {name: file_sha256(p) for name, p in asdict(self).items()
                if name.endswith("checkpoint") and p is not None}

    def config(self) -> wsisam.WsiSamConfig:
        """The model's configuration, read from the files (no weights loaded)."""
        import wsisam.checkpoint

        if self.checkpoint is not None:
            return wsisam.checkpoint.read_config(self.checkpoint)
        return wsisam.get_config(self.backbone or wsisam.infer_backbone(self.sam_checkpoint))

    def patch_px(self) -> int:
        return self.config().img_size

    def segmenter_name(self) -> str:
        from ..segmenters.wsisam_segmenter import segmenter_name

        return segmenter_name(self.config().name, self.mode)
