"""Checking model files against a configuration without building the model or reading weights.

Expected keys and shapes come from the model built on the ``meta`` device (no memory, no
initialisation); a file's keys and shapes from its header (safetensors) or a memory-mapped,
weights-only ``torch.load`` (tensor data is not read). So a run can refuse a file that does not
fit before it starts any workers.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

from safetensors import safe_open

from .checkpoint import (CheckpointError, Shapes, _check_fit, _decoder_state, _is_sam_key, _sam_state, _shapes,
                         _torch_load, empty_model, read_config)
from .config import CONFIGS, WsiSamConfig, get_config

PathLike = str | os.PathLike
_VIT_PROBE = "image_encoder.patch_embed.proj.weight"


@functools.lru_cache(maxsize=16)
def expected_shapes(config: WsiSamConfig) -> Shapes:
    """Every state-dict key of a model of ``config`` and its shape (built on the meta device)."""
    return _shapes(empty_model(config).state_dict())


def safetensors_shapes(path: PathLike) -> Shapes:
    """Keys and shapes of a safetensors file, from its header only."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is not a readable safetensors file: {exc}") from exc


def check_wsisam_file(path: PathLike) -> WsiSamConfig:
    """One of our files: its stored configuration, after matching its keys and shapes to it."""
    config = read_config(path)
    own = expected_shapes(config)
    _check_fit(Path(path), own, safetensors_shapes(path), set(own), f"its stored {config.name!r} configuration")
    return config


def _sam_fit_error(sam_shapes: Shapes, path: Path, config: WsiSamConfig) -> CheckpointError | None:
    own = expected_shapes(config)
    try:
        _check_fit(path, own, sam_shapes, {k for k in own if _is_sam_key(k)}, f"a {config.name!r} model")
    except CheckpointError as exc:
        return exc
    return None


def _sam_candidates(sam_shapes: Shapes) -> list[str]:
    """Named configurations whose encoder kind (and ViT width) agree with the file's."""
    kind = "vit" if _VIT_PROBE in sam_shapes else "tiny_vit"
    return [name for name, cfg in CONFIGS.items() if cfg.encoder.kind == kind
            and (kind != "vit" or sam_shapes[_VIT_PROBE][0] == cfg.encoder.embed_dim)]


def _infer(sam_shapes: Shapes, path: Path) -> str:
    fits = [name for name in _sam_candidates(sam_shapes) if _sam_fit_error(sam_shapes, path, CONFIGS[name]) is None]
    if len(fits) == 1:
        return fits[0]
    if fits:
        raise CheckpointError(f"SAM checkpoint {path} fits several backbones ({', '.join(fits)}): name one")
    raise CheckpointError(f"SAM checkpoint {path} fits none of the known backbones ({', '.join(CONFIGS)}): "
                          f"it is not a SAM (sam_vit_b/l/h) or MobileSAM (vit_tiny) weights file of a known size")


def infer_backbone(sam_checkpoint: PathLike) -> str:
    """The named configuration (vit_tiny, vit_b, ...) whose SAM parts a SAM/MobileSAM file fits exactly."""
    path = Path(sam_checkpoint)
    return _infer(_shapes(_sam_state(_torch_load(path, mmap=True))), path)


def check_sam_file(path: PathLike, backbone: str | None) -> str:
    """A SAM/MobileSAM file matched to ``backbone`` (or, when None, the backbone it fits). Returns the
    backbone; a file of another backbone is refused naming both."""
    path = Path(path)
    sam_shapes = _shapes(_sam_state(_torch_load(path, mmap=True)))
    if backbone is None:
        return _infer(sam_shapes, path)
    error = _sam_fit_error(sam_shapes, path, get_config(backbone))
    if error is None:
        return backbone
    try:
        found = _infer(sam_shapes, path)
    except CheckpointError:
        raise error from None
    raise CheckpointError(f"SAM checkpoint {path} holds a {found!r} model, but backbone {backbone!r} was asked "
                          f"for: give backbone {found!r} (or leave it out), or the {backbone!r} SAM file")


def check_decoder_file(path: PathLike, config: WsiSamConfig) -> None:
    """A reference WSI-SAM decoder file matched to one decoder of ``config``."""
    path = Path(path)
    state = _decoder_state(_torch_load(path, mmap=True), path)
    prefix = "mask_decoder_hr."
    own = {k[len(prefix):]: v for k, v in expected_shapes(config).items() if k.startswith(prefix)}
    _check_fit(path, own, _shapes(state), set(own), f"a decoder of a {config.name!r} model")


def check_model_files(backbone: str | None = None, *, checkpoint: PathLike | None = None,
                      sam_checkpoint: PathLike | None = None, hr_decoder_checkpoint: PathLike | None = None,
                      lr_decoder_checkpoint: PathLike | None = None) -> str:
    """Open every model file :func:`~wsisam.build_wsisam` would load and match its keys and shapes
    to the configuration; returns the backbone name (stored in ``checkpoint``, inferred from
    ``sam_checkpoint`` when ``backbone`` is None). Raises :class:`CheckpointError` (a ValueError)
    naming the file and what does not fit."""
    if checkpoint is not None:
        config = check_wsisam_file(checkpoint)
        if backbone is not None and backbone != config.name:
            raise CheckpointError(f"checkpoint {checkpoint} holds a {config.name!r} model, not {backbone!r}")
        return config.name
    if sam_checkpoint is not None:
        backbone = check_sam_file(sam_checkpoint, backbone)
    if backbone is None:
        raise ValueError("give a backbone name, a SAM checkpoint or a checkpoint")
    config = get_config(backbone)
    for path in (hr_decoder_checkpoint, lr_decoder_checkpoint):
        if path is not None:
            check_decoder_file(path, config)
    return backbone
