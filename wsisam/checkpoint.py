"""Reading and writing weights. Nothing here unpickles code: ``torch.load(weights_only=True)``
for SAM, MobileSAM and reference WSI-SAM files; safetensors for our own format.

Formats:
- SAM (``sam_vit_*.pth``) and MobileSAM (``mobile_sam.pt``): a plain state dict with
  ``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``; MobileSAM also has TinyViT's
  unused classifier (``image_encoder.head.*``, ``image_encoder.norm_head.*``), which is skipped.
  SAM's decoder weights go to both WSI decoders (they are the same frozen decoder).
- Reference WSI-SAM decoder files: ``{"model": state_dict}`` of one decoder, SAM's decoder keys
  without prefix plus ``hf_token``, ``hf_mlp``, ``compress_vit_feat``, ``embedding_encoder``,
  ``embedding_maskfeature``; one file for HR, one for LR.
- Ours: one ``.safetensors`` file holding the whole model's state dict and, in its metadata,
  the :class:`~wsisam.config.WsiSamConfig` as JSON, so a file rebuilds its own model.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
import zipfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import WsiSamConfig
from .modeling import WSI_PARAM_PREFIXES, WsiMaskDecoder, WsiSam

FORMAT_NAME = "wsisam-engine"
FORMAT_VERSION = "1"
_SKIPPED_SAM_KEYS = ("image_encoder.head.", "image_encoder.norm_head.")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, or its keys or shapes do not fit the model."""


def _describe_mismatch(path: Path, missing: list[str], unexpected: list[str], shapes: list[str],
                       model: str = "the model") -> str:
    def head(keys: list[str]) -> str:
        return ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")

    parts = [f"checkpoint {path} does not fit {model}"]
    if missing:
        parts.append(f"missing keys: {head(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {head(unexpected)}")
    if shapes:
        parts.append(f"shape mismatches: {head(shapes)}")
    return "; ".join(parts)


Shapes = dict[str, tuple[int, ...]]


def _shapes(state: dict[str, torch.Tensor]) -> Shapes:
    return {k: tuple(v.shape) for k, v in state.items()}


def _check_fit(path: Path, own: Shapes, got: Shapes, required: set[str], model: str = "the model") -> None:
    """Every key in ``required`` present, every key known to the model, every shape equal."""
    missing = sorted(required - set(got))
    unexpected = sorted(set(got) - set(own))
    shapes = [f"{k} {got[k]} vs model {own[k]}" for k in got if k in own and own[k] != got[k]]
    if missing or unexpected or shapes:
        raise CheckpointError(_describe_mismatch(path, missing, unexpected, shapes, model))


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, required: set[str]) -> None:
    """Load ``state`` into ``module`` by assignment; every key in ``required`` must be present and every key known.

    The module's tensors become ``state``'s: memory-mapped file pages stay shared with the page
    cache (and with other processes mapping the file) instead of being copied. Copies are made only
    where they cannot be avoided: a dtype or device differing from the module's (e.g. fp16 stored,
    fp32 model; a module already on a GPU), a non-contiguous stored tensor, and the second of two
    keys given one tensor (SAM's decoder for both WSI decoders), so that no two parameters share
    memory. The mapping is private: changing a weight (training) copies its pages, never writes
    the file; but a file rewritten in place while mapped changes the pages not yet changed.
    """
    own = module.state_dict()
    _check_fit(path, _shapes(own), _shapes(state), required)
    seen: set[int] = set()
    fitted = {}
    for key, value in state.items():
        device = value.device if own[key].is_meta else own[key].device
        value = value.to(device, own[key].dtype).contiguous()
        if value.numel() and value.data_ptr() in seen:
            value = value.clone()
        seen.add(value.data_ptr())
        fitted[key] = value
    module.load_state_dict(fitted, strict=False, assign=True)


def empty_model(config: WsiSamConfig) -> WsiSam:
    """A model of ``config`` whose parameters have no memory (the ``meta`` device, no initialisation):
    loading assigns the file's tensors, then :func:`materialised` checks that none is left empty."""
    with torch.device("meta"):
        return WsiSam(config)


def materialised(model: WsiSam) -> WsiSam:
    """``model`` after loading into an :func:`empty_model`: its buffers not stored in files are
    computed (on the CPU), and a tensor no file filled is an error."""
    for module in model.modules():
        if hasattr(module, "reset_buffers"):
            module.reset_buffers()
    empty = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if empty:
        raise RuntimeError(f"no weights were loaded for {', '.join(empty[:8])} ({len(empty)} in all)")
    return model


def _torch_load(path: str | os.PathLike, mmap: bool = False) -> dict:
    """A weights-only torch file; ``mmap``: tensors stay on disk until read (zip-format files only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except Exception as exc:  # unpickling errors, truncated files, code objects refused
        raise CheckpointError(f"checkpoint {path} cannot be read as a weights-only torch file: {exc}") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict")
    return obj


def _is_sam_key(key: str) -> bool:
    return not key.split(".", 1)[1].startswith(WSI_PARAM_PREFIXES)


def _sam_state(raw: dict) -> dict[str, torch.Tensor]:
    """SAM's/MobileSAM's keys renamed to ours: SAM's decoder goes to both WSI decoders."""
    state: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        if key.startswith(_SKIPPED_SAM_KEYS) or key.endswith("attention_bias_idxs"):
            continue
        if key.startswith("mask_decoder."):
            rest = key[len("mask_decoder."):]
            state[f"mask_decoder_hr.{rest}"] = value
            state[f"mask_decoder_lr.{rest}"] = value
        else:
            state[key] = value
    return state


def _decoder_state(raw: dict, path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a reference WSI-SAM decoder file (``{"model": state_dict}``)."""
    if "model" not in raw or not isinstance(raw["model"], dict):
        raise CheckpointError(f"checkpoint {path} is not a WSI-SAM decoder file: no 'model' state dict "
                              f"(top-level keys: {sorted(raw)[:8]})")
    return {k.removeprefix("module."): v for k, v in raw["model"].items()}


def load_sam_checkpoint(model: WsiSam, path: str | os.PathLike) -> WsiSam:
    """Load SAM's or MobileSAM's weights into the frozen SAM parts of ``model`` (both decoders)."""
    return load_sam_state(model, _torch_load(path, mmap=True), Path(path))


def load_sam_state(model: WsiSam, raw: dict, path: Path) -> WsiSam:
    """:func:`load_sam_checkpoint` for a state dict already read from ``path``."""
    required = {k for k in model.state_dict() if _is_sam_key(k)}
    _load_strict(model, _sam_state(raw), path, required)
    return model


def load_reference_decoder(decoder: WsiMaskDecoder, path: str | os.PathLike) -> WsiMaskDecoder:
    """Load one reference WSI-SAM decoder file (``{"model": state_dict}``) into ``decoder``."""
    path = Path(path)
    state = _decoder_state(_torch_load(path, mmap=True), path)
    _load_strict(decoder, state, path, set(decoder.state_dict()))
    return decoder


def save_wsisam(model: WsiSam, path: str | os.PathLike) -> Path:
    """Write ``model`` with its configuration to one safetensors file (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "config": json.dumps(model.config.to_dict())}
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        save_file(state, str(tmp), metadata=meta)
        os.chmod(tmp, 0o666 & ~_umask())  # safetensors writes 0600; a model file is as readable as any new file
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_config(path: str | os.PathLike) -> WsiSamConfig:
    """The configuration stored in one of our checkpoint files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is not a readable safetensors file: {exc}") from exc
    if meta.get("format") != FORMAT_NAME or "config" not in meta:
        raise CheckpointError(f"checkpoint {path} is a safetensors file but not a {FORMAT_NAME} model "
                              "(no configuration in its metadata)")
    return WsiSamConfig.from_dict(json.loads(meta["config"]))


def load_wsisam(path: str | os.PathLike, **config_overrides) -> WsiSam:
    """Rebuild a model from one of our checkpoint files; inference-only fields may be overridden.

    The weights are the file's pages, memory-mapped (not copied, not initialised first): processes
    loading one file share them. Floating-point tensors stored at a lower precision (e.g. fp16, to
    keep a file small) are upcast to the model's own dtype (fp32) on loading, a copy.
    """
    from safetensors.torch import load_file

    path = Path(path)
    config = read_config(path)
    if config_overrides:
        config = config.replace(**config_overrides)
    model = empty_model(config)
    _load_strict(model, load_file(str(path)), path, set(model.state_dict()))
    return materialised(model).eval()


def file_sha256(path: str | os.PathLike) -> str:
    """Checksum of a weights file, for run manifests."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
