"""One entry point: :func:`build_wsisam`, and a registry of builders like segment-anything's."""
from __future__ import annotations

import os
from functools import partial
from typing import Callable

from .checkpoint import empty_model, load_reference_decoder, load_sam_checkpoint, load_wsisam, materialised, read_config
from .config import CONFIGS, get_config
from .modeling import WsiSam

PathLike = str | os.PathLike


def build_wsisam(backbone: str | None = "vit_tiny", *, checkpoint: PathLike | None = None,
                 sam_checkpoint: PathLike | None = None, hr_decoder_checkpoint: PathLike | None = None,
                 lr_decoder_checkpoint: PathLike | None = None, **config_overrides) -> WsiSam:
    """Build WSI-SAM, in eval mode.

    - ``checkpoint``: one of our own files (it carries its configuration; ``backbone`` must match
      it or be None).
    - otherwise the named ``backbone`` (see :data:`wsisam.config.CONFIGS`) with random weights,
      then optionally SAM's/MobileSAM's ``sam_checkpoint`` for the frozen parts and the
      reference ``hr_decoder_checkpoint``/``lr_decoder_checkpoint`` files (given reference decoders,
      token aggregation defaults to ``"sum"``, which their weights need).
    """
    if checkpoint is not None:
        if any(p is not None for p in (sam_checkpoint, hr_decoder_checkpoint, lr_decoder_checkpoint)):
            raise ValueError("give either checkpoint= (our format) or SAM/reference decoder files, not both")
        stored = read_config(checkpoint).name
        if backbone is not None and backbone != stored:
            raise ValueError(f"checkpoint {checkpoint} holds a {stored!r} model, not {backbone!r}")
        return load_wsisam(checkpoint, **config_overrides)
    if backbone is None:
        raise ValueError("give a backbone name or a checkpoint")
    if (hr_decoder_checkpoint is None) != (lr_decoder_checkpoint is None):
        raise ValueError("reference decoders come in pairs: give both hr_decoder_checkpoint and lr_decoder_checkpoint")
    if hr_decoder_checkpoint is not None:
        config_overrides.setdefault("token_aggregation", "sum")
    config = get_config(backbone, **config_overrides)
    if sam_checkpoint is None or hr_decoder_checkpoint is None:
        model = WsiSam(config)  # some weights stay random (initialised as before), the rest are loaded
    else:
        model = empty_model(config)  # the files hold every weight: nothing to initialise
    if sam_checkpoint is not None:
        load_sam_checkpoint(model, sam_checkpoint)
    if hr_decoder_checkpoint is not None:
        load_reference_decoder(model.mask_decoder_hr, hr_decoder_checkpoint)
        load_reference_decoder(model.mask_decoder_lr, lr_decoder_checkpoint)
    return materialised(model).eval()


wsisam_model_registry: dict[str, Callable[..., WsiSam]] = {name: partial(build_wsisam, name) for name in CONFIGS}
