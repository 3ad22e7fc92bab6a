"""Training WSI-SAM (or the small SAM inside it) on concentric patch pairs with mask ground truth.

Two stages:

- ``stage="sam"``: the whole SAM (image encoder, prompt encoder, SAM's mask decoder) learns on HR
  patches alone through SAM's own single-mask path (the path ``WsiSamPredictor.predict_sam``
  runs), with gradients (segment-anything's ``Sam.forward`` is no_grad; this never goes through
  it). The WSI parameters do not move. After every epoch the LR decoder's SAM part is set to the
  HR decoder's (both wrap the same SAM decoder).
- ``stage="wsi"``: SAM is frozen (:meth:`WsiSam.freeze_sam`) and only :meth:`WsiSam.wsi_parameters`
  learn, with ``λ L_HR + (1 − λ) L_LR`` (each dice + BCE) on WSI-SAM's HR and LR masks.

A data set item is a dict of tensors: ``hr`` and ``lr`` (S, S, 3) uint8 RGB, ``hr_mask`` and
``lr_mask`` (S, S) ground truth (bool or float in [0, 1]) over the HR and the LR patch. If the data
set has ``set_epoch(epoch)`` it is called before each epoch (for augmentations seeded by epoch).

Determinism: everything random in epoch ``e`` (order, prompts, augmentations) is seeded by
``(seed, e)``, so a run resumed after epoch ``e`` continues exactly as an uninterrupted one.

Checkpoints in ``out_dir`` after every epoch: ``model.safetensors`` (our format, see
:func:`wsisam.save_wsisam`), ``optimizer.pt`` (optimizer and schedule state, weights-only),
``trainer_state.json`` (epochs done, file names, configuration, per-epoch records) and
``train_log.jsonl`` (one JSON line per epoch: losses, validation dice, seconds).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import DataLoader, Dataset

from ..checkpoint import save_wsisam
from ..modeling import EncodedImages, WsiSam
from .losses import dice_score, wsi_loss
from .prompt_sampling import PromptGroup, PromptSamplingConfig, box_prompts, sample_prompts

Stage = Literal["sam", "wsi"]
STATE_NAME = "trainer_state.json"
MODEL_NAME = "model.safetensors"
OPTIMIZER_NAME = "optimizer.pt"
LOG_NAME = "train_log.jsonl"


@dataclass(frozen=True)
class TrainConfig:
    """How to train. ``lr``/``weight_decay``/``lambda_hr``: the paper's AdamW 1e-3, 0.01, λ = 0.5."""

    stage: Stage = "wsi"
    epochs: int = 20
    lr: float = 1e-3
    weight_decay: float = 0.01
    lambda_hr: float = 0.5
    batch_size: int = 1  # the paper trains with mini-batch 1; a few samples per step suit a CPU
    seed: int = 0
    prompts: PromptSamplingConfig = field(default_factory=PromptSamplingConfig)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    grad_clip_norm: float | None = None
    add_sam_logits: bool = False  # False: WSI-SAM's masks alone are trained (the paper/reference)
    iou_loss_weight: float = 1.0  # stage sam: MSE of SAM's IoU head against the IoU its mask reaches
    device: str | None = None  # default: cuda when available
    amp: bool | None = None  # bf16 autocast; default on for CUDA, off on CPU (fp32)
    progress: bool = True  # tqdm bar per epoch
    verbose: bool = True  # one line per epoch on stdout

    def __post_init__(self) -> None:
        if self.stage not in ("sam", "wsi"):
            raise ValueError(f"stage must be 'sam' or 'wsi', got {self.stage!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if not 0.0 <= self.lambda_hr <= 1.0:
            raise ValueError(f"lambda_hr must be in [0, 1], got {self.lambda_hr}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class EpochRecord:
    """One epoch: mean training losses (``loss_lr`` None in stage ``sam``), validation dice with
    exact ground-truth boxes (``val_dice``: the stage's own output, WSI-SAM's HR mask in stage
    ``wsi`` as the predictor makes it; ``val_dice_sam``: SAM's path), seconds and step count."""

    stage: str
    epoch: int  # 1-based
    loss: float
    loss_hr: float
    loss_lr: float | None
    val_dice: float | None
    val_dice_sam: float | None
    lr: float
    steps: int
    samples: int
    seconds: float


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7919 + 17) % (2**63 - 1)


def sam_parameter_names(model: WsiSam) -> list[str]:
    """Names of the parameters stage ``sam`` trains: everything but the WSI parameters and the LR
    decoder (whose SAM part is a copy of the HR decoder's)."""
    wsi = {id(p) for p in model.wsi_parameters()}
    return [n for n, p in model.named_parameters() if id(p) not in wsi and not n.startswith("mask_decoder_lr.")]


class Trainer:
    """Trains ``model`` in place; see the module docstring.

    >>> trainer = Trainer(model, TrainConfig(stage="wsi", epochs=20), train_set, val_set, out_dir="run")
    >>> records = trainer.fit()            # or fit(resume=True) to continue a run in out_dir
    """

    def __init__(self, model: WsiSam, config: TrainConfig, train_set: Dataset, val_set: Dataset | None = None,
                 out_dir: str | os.PathLike | None = None) -> None:
        self.config = config
        self.device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.amp = config.amp if config.amp is not None else self.device.type == "cuda"
        self.model = model.to(self.device)
        self.train_set = train_set
        self.val_set = val_set
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.img_px = model.config.img_size
        self.low_res_px = model.config.low_res_px
        if config.stage == "wsi":
            model.freeze_sam(True)
            params = list(model.wsi_parameters())
        else:
            model.freeze_sam(False)
            names = set(sam_parameter_names(model))
            for n, p in model.named_parameters():
                p.requires_grad_(n in names)
            params = [p for n, p in model.named_parameters() if n in names]
        self.params = params
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        steps_per_epoch = max(1, math.ceil(len(train_set) / config.batch_size))
        self.total_steps = steps_per_epoch * config.epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.records: list[EpochRecord] = []
        self.epochs_done = 0

    # --- schedule -------------------------------------------------------------------------
    def _lr_factor(self, step: int) -> float:
        c = self.config
        if c.warmup_steps and step < c.warmup_steps:
            return (step + 1) / c.warmup_steps
        if c.lr_schedule == "cosine":
            t = min(1.0, (step - c.warmup_steps) / max(1, self.total_steps - c.warmup_steps))
            return 0.5 * (1.0 + math.cos(math.pi * t))
        return 1.0

    def _autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    # --- forward --------------------------------------------------------------------------
    def _batch_to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def _sam_logits(self, enc: EncodedImages, groups: list[PromptGroup], n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's single-mask low-res logits (n, 1, L, L) and predicted IoU (n,), sample by sample
        (SAM's decoder takes one image per call)."""
        out: list[torch.Tensor | None] = [None] * n
        ious: list[torch.Tensor | None] = [None] * n
        for g in groups:
            for j, row in enumerate(g.index.tolist()):
                image = EncodedImages(enc.embeddings[row:row + 1], enc.early[row:row + 1])
                low, iou = self.model.forward_sam(image, g.hr.select(slice(j, j + 1)), multimask_output=False)
                out[row] = low
                ious[row] = iou[:, 0]
        return torch.cat(out), torch.cat(ious)  # type: ignore[arg-type]

    def _wsi_logits(self, hr: EncodedImages, lr: EncodedImages, groups: list[PromptGroup], n: int,
                    add_sam_logits: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """WSI-SAM's HR and LR low-res logits, (n, 1, L, L) each, in batch order."""
        hr_f, lr_f = self.model.image_features(hr, lr)
        hr_out = [None] * n
        lr_out = [None] * n
        for g in groups:
            i = g.index
            o = self.model.forward_wsi(EncodedImages(hr.embeddings[i], None), hr_f[i],
                                       EncodedImages(lr.embeddings[i], None), lr_f[i], g.hr, g.lr,
                                       add_sam_logits=add_sam_logits)
            for j, row in enumerate(i.tolist()):
                hr_out[row] = o.hr_logits[j:j + 1]
                lr_out[row] = o.lr_logits[j:j + 1]
        return torch.cat(hr_out), torch.cat(lr_out)  # type: ignore[arg-type]

    def _encode_pairs(self, batch: dict) -> tuple[EncodedImages, EncodedImages]:
        b = batch["hr"].shape[0]
        enc = self.model.encode(torch.cat([batch["hr"], batch["lr"]]))
        return (EncodedImages(enc.embeddings[:b], enc.early[:b]), EncodedImages(enc.embeddings[b:], enc.early[b:]))

    def _step(self, batch: dict, generator: torch.Generator) -> tuple[float, float, float | None]:
        c = self.config
        hr_mask = batch["hr_mask"].float()
        lr_mask = batch["lr_mask"].float()
        n = hr_mask.shape[0]
        groups = sample_prompts(hr_mask.cpu(), lr_mask.cpu(), self.img_px, self._ratio(batch), self.low_res_px,
                                generator, c.prompts)
        groups = [PromptGroup(g.kind, g.index.to(self.device), _to(g.hr, self.device), _to(g.lr, self.device))
                  for g in groups]
        with self._autocast():
            if c.stage == "sam":
                enc = self.model.encode(batch["hr"])
                logits, iou = self._sam_logits(enc, groups, n)
                terms = wsi_loss(logits.float(), hr_mask)
                # SAM's IoU head learns the IoU its mask reaches (the score the engine reports), as in SAM.
                target = _hard_iou(logits.detach().float(), hr_mask)
                terms.total = terms.total + c.iou_loss_weight * torch.nn.functional.mse_loss(iou.float(), target)
            else:
                hr, lr = self._encode_pairs(batch)
                hr_logits, lr_logits = self._wsi_logits(hr, lr, groups, n, c.add_sam_logits)
                terms = wsi_loss(hr_logits.float(), hr_mask, lr_logits.float(), lr_mask, c.lambda_hr)
        self.optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        if c.grad_clip_norm:
            torch.nn.utils.clip_grad_norm_(self.params, c.grad_clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        return float(terms.total.detach()), terms.hr, terms.lr

    @staticmethod
    def _ratio(batch: dict) -> float:
        r = batch.get("ratio")
        if r is None:
            return 2.0
        r = torch.as_tensor(r).flatten()
        if not torch.allclose(r, r[0]):
            raise ValueError("samples of one batch must share the HR/LR ratio")
        return float(r[0])

    # --- epochs ---------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> EpochRecord:
        """Train epoch ``epoch`` (0-based) and validate; returns its record."""
        from tqdm.auto import tqdm

        c = self.config
        t0 = time.perf_counter()
        seed = _epoch_seed(c.seed, epoch)
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(epoch)
        order_gen = torch.Generator().manual_seed(seed)
        prompt_gen = torch.Generator().manual_seed(seed + 1)
        loader = DataLoader(self.train_set, batch_size=c.batch_size, shuffle=True, generator=order_gen,
                            num_workers=0, drop_last=False)
        self.model.train()
        sums = [0.0, 0.0, 0.0]
        steps = samples = 0
        bar = tqdm(loader, desc=f"{c.stage} epoch {epoch + 1}/{c.epochs}", disable=not c.progress, leave=False)
        for batch in bar:
            batch = self._batch_to_device(batch)
            loss, hr, lr = self._step(batch, prompt_gen)
            k = batch["hr"].shape[0]
            sums[0] += loss * k
            sums[1] += hr * k
            sums[2] += (lr or 0.0) * k
            steps += 1
            samples += k
            bar.set_postfix(loss=f"{sums[0] / samples:.4f}")
        bar.close()
        if c.stage == "sam":
            self.sync_lr_decoder()
        val = self.validate()
        return EpochRecord(
            stage=c.stage, epoch=epoch + 1, loss=sums[0] / max(samples, 1), loss_hr=sums[1] / max(samples, 1),
            loss_lr=None if c.stage == "sam" else sums[2] / max(samples, 1),
            val_dice=val.get("dice"), val_dice_sam=val.get("dice_sam"), lr=self.optimizer.param_groups[0]["lr"],
            steps=steps, samples=samples, seconds=time.perf_counter() - t0)

    def sync_lr_decoder(self) -> None:
        """Give the LR decoder the HR decoder's SAM weights (both wrap the same SAM decoder)."""
        self.model.mask_decoder_lr.load_state_dict(self.model.mask_decoder_hr.sam_state_dict(), strict=False)

    @torch.no_grad()
    def validate(self, dataset: Dataset | None = None, batch_size: int | None = None) -> dict:
        """Mean hard dice over ``dataset`` (default: the validation set) with exact ground-truth
        boxes: ``dice`` (stage ``wsi``: WSI-SAM's HR mask with the model's own ``add_sam_logits``,
        as the predictor makes it; stage ``sam``: SAM's path) and ``dice_sam`` (SAM's path)."""
        dataset = self.val_set if dataset is None else dataset
        if dataset is None or len(dataset) == 0:
            return {}
        was_training = self.model.training
        self.model.eval()
        wsi, sam = [], []
        for batch in DataLoader(dataset, batch_size=batch_size or max(self.config.batch_size, 8), shuffle=False):
            batch = self._batch_to_device(batch)
            hr_mask = batch["hr_mask"].float()
            g = box_prompts(hr_mask, self.img_px, self._ratio(batch))
            with self._autocast():
                hr, lr = self._encode_pairs(batch)
                sam.append(dice_score(self._sam_logits(hr, [g], len(hr_mask))[0].float(), hr_mask))
                if self.config.stage == "wsi":
                    hr_logits, _ = self._wsi_logits(hr, lr, [g], len(hr_mask), self.model.config.add_sam_logits)
                    wsi.append(dice_score(hr_logits.float(), hr_mask))
        self.model.train(was_training)
        out = {"dice_sam": float(torch.cat(sam).mean())}
        out["dice"] = float(torch.cat(wsi).mean()) if wsi else out["dice_sam"]
        return out

    def fit(self, resume: bool = False) -> list[EpochRecord]:
        """Train the remaining epochs (all of them, or those after the checkpoint in ``out_dir``
        with ``resume``), checkpointing after each; returns all records so far."""
        if resume:
            self.load_checkpoint()
        for epoch in range(self.epochs_done, self.config.epochs):
            rec = self.train_epoch(epoch)
            self.records.append(rec)
            self.epochs_done = epoch + 1
            if self.out_dir is not None:
                self.save_checkpoint()
            if self.config.verbose:
                val = "" if rec.val_dice is None else f" val dice {rec.val_dice:.4f} (SAM path {rec.val_dice_sam:.4f})"
                print(f"{rec.stage} epoch {rec.epoch}/{self.config.epochs}: loss {rec.loss:.4f}{val} "
                      f"[{rec.seconds:.0f} s]", flush=True)
        return self.records

    # --- checkpoints ----------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Write model, optimizer state, trainer state and the log to ``out_dir``; returns the model path."""
        if self.out_dir is None:
            raise ValueError("no out_dir to save into")
        out = self.out_dir
        out.mkdir(parents=True, exist_ok=True)
        if self.config.stage == "sam":
            self.sync_lr_decoder()
        model_path = save_wsisam(self.model, out / MODEL_NAME)
        _atomic_torch_save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
                           out / OPTIMIZER_NAME)
        state = {"epoch": self.epochs_done, "stage": self.config.stage, "model": MODEL_NAME,
                 "optimizer": OPTIMIZER_NAME, "config": self.config.to_dict(),
                 "records": [dataclasses.asdict(r) for r in self.records]}
        _atomic_write_text(out / STATE_NAME, json.dumps(state, indent=2))
        _atomic_write_text(out / LOG_NAME, "".join(json.dumps(dataclasses.asdict(r)) + "\n" for r in self.records))
        return model_path

    def load_checkpoint(self) -> int:
        """Restore model, optimizer and epoch count from ``out_dir``; returns the epochs done
        (0, and nothing restored, when ``out_dir`` has no checkpoint yet)."""
        from safetensors.torch import load_file

        if self.out_dir is None:
            raise ValueError("no out_dir to resume from")
        state_path = self.out_dir / STATE_NAME
        if not state_path.is_file():
            return 0
        state = json.loads(state_path.read_text())
        if state["stage"] != self.config.stage:
            raise ValueError(f"{state_path} is a stage {state['stage']!r} run, not {self.config.stage!r}")
        weights = load_file(str(self.out_dir / state["model"]), device=str(self.device))
        own = self.model.state_dict()
        self.model.load_state_dict({k: v.to(own[k].dtype) for k, v in weights.items()})
        opt = torch.load(self.out_dir / state["optimizer"], map_location=self.device, weights_only=True)
        self.optimizer.load_state_dict(opt["optimizer"])
        self.scheduler.load_state_dict(opt["scheduler"])
        self.epochs_done = int(state["epoch"])
        self.records = [EpochRecord(**r) for r in state.get("records", [])]
        return self.epochs_done


def _hard_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU (N,) of the masks ``logit > 0`` (resized to the target) with ``target > 0.5``."""
    if logits.shape[-2:] != target.shape[-2:]:
        logits = torch.nn.functional.interpolate(logits, target.shape[-2:], mode="bilinear", align_corners=False)
    p, t = logits[:, 0] > 0, target > 0.5
    inter = (p & t).flatten(1).sum(1).float()
    union = (p | t).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1.0), torch.ones_like(union))


def _to(p, device: torch.device):
    from ..prompts import PromptBatch

    return PromptBatch(**{f.name: None if (t := getattr(p, f.name)) is None else t.to(device)
                          for f in dataclasses.fields(p)})


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
