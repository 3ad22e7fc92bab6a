"""``WsiSamPredictor``: concentric patch pairs in, masks for any number of prompts out."""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from .modeling import EncodedImages, FastOutput, WsiSam
from .prompts import PromptBatch


@dataclass
class WsiSamPrediction:
    """Outputs for N prompts over S x S patches (numpy, on the CPU).

    hr_logits / lr_logits (N, S, S) float32 (lr_logits is None when not asked for);
    hr_masks / lr_masks (N, S, S) bool (logit > 0);
    iou (N,) float32: SAM's predicted IoU for the prompt's HR mask (the score we report);
    low_res_hr_logits (N, L, L): the HR logits before upsampling, usable as a next mask input.
    """

    hr_logits: np.ndarray
    lr_logits: np.ndarray | None
    iou: np.ndarray
    low_res_hr_logits: np.ndarray

    @property
    def hr_masks(self) -> np.ndarray:
        return self.hr_logits > 0.0

    @property
    def lr_masks(self) -> np.ndarray | None:
        return None if self.lr_logits is None else self.lr_logits > 0.0


@dataclass
class MaskCrop:
    """A mask cropped to its foreground: ``mask`` (h, w) bool, whose top-left pixel is pixel
    (``row0_px``, ``col0_px``) of the patch; ``stability``: see :func:`stability_scores`."""

    row0_px: int
    col0_px: int
    mask: np.ndarray
    stability: float | None = None


#: On a CPU, images at least this large (px per side) are encoded one at a time (see WsiSamPredictor).
CPU_ONE_IMAGE_PX = 1024
#: SAM's ``stability_score_offset``: logits are thresholded at +offset and -offset.
STABILITY_OFFSET = 1.0


def stability_scores(logits: torch.Tensor, offset: float = STABILITY_OFFSET) -> torch.Tensor:
    """(n, S, S) logits -> (n,) area(logits > offset) / area(logits > -offset), as SAM's automatic
    mask generator defines it: the share of the mask that survives moving the threshold (1 for an
    empty mask)."""
    inner = (logits > offset).sum(dim=(-2, -1), dtype=torch.float64)
    outer = (logits > -offset).sum(dim=(-2, -1), dtype=torch.float64)
    return torch.where(outer > 0, inner / outer.clamp(min=1), torch.ones_like(outer))


def foreground_crops(masks: torch.Tensor) -> list[MaskCrop | None]:
    """(n, S, S) bool masks (any device) -> each cropped to its foreground's bounding box, on the CPU."""
    rows, cols = masks.any(dim=2).cpu().numpy(), masks.any(dim=1).cpu().numpy()
    out: list[MaskCrop | None] = []
    for k in range(len(masks)):
        r, c = np.flatnonzero(rows[k]), np.flatnonzero(cols[k])
        if r.size == 0:
            out.append(None)
            continue
        # A copy: on the CPU a view would keep the whole batch's masks alive.
        crop = masks[k, r[0]:r[-1] + 1, c[0]:c[-1] + 1].cpu().numpy().copy()
        out.append(MaskCrop(int(r[0]), int(c[0]), crop))
    return out


def logit_crops(logits: torch.Tensor) -> list[MaskCrop | None]:
    """(n, S, S) logits (any device) -> each mask (logit > 0) cropped to its foreground (None when
    empty), with its :func:`stability_scores` value."""
    crops = foreground_crops(logits > 0.0)
    for crop, stability in zip(crops, stability_scores(logits).cpu().numpy()):
        if crop is not None:
            crop.stability = float(stability)
    return crops


class WsiSamPredictor:
    """Predict WSI-SAM masks for prompts on concentric HR/LR patch pairs.

    >>> p = WsiSamPredictor(build_wsisam("vit_test"))
    >>> p.set_patch_pairs(hr, lr, scale_ratio=2.0)          # (B, S, S, 3) uint8 each
    >>> out = p.predict(boxes=[[10, 10, 60, 80]], pair_index=[0])

    Prompts are in HR pixel coordinates with segment-anything's convention (see
    :mod:`wsisam.geometry`); the LR prompts are derived inside. All prompts of a call go through
    the decoders in batches of ``max_prompts_per_batch``; each image is encoded once.
    """

    def __init__(self, model: WsiSam, device: str | torch.device | None = None, amp_dtype: torch.dtype | None = None,
                 compile: bool = False, encoder_batch_size: int | None = None,
                 max_prompts_per_batch: int | None = None) -> None:
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if encoder_batch_size is None:
            # On a CPU a large image's activations spill the caches: 1024 px images encode faster one
            # at a time there; small ones (the 256 px demo model) and any image on a GPU in fours.
            encoder_batch_size = 1 if self.device.type == "cpu" and model.config.img_size >= CPU_ONE_IMAGE_PX else 4
        if max_prompts_per_batch is None:
            # On a CPU the decoder is compute-bound per prompt (the fusion convolutions run at 4g x 4g
            # for every prompt) and large batches only spill caches; a GPU wants wide batches.
            max_prompts_per_batch = 64 if self.device.type == "cuda" else 8
        self.model = model.to(self.device).eval()
        self.amp_dtype = amp_dtype
        self.encoder_batch_size = encoder_batch_size
        self.max_prompts_per_batch = max_prompts_per_batch
        self._encoder = torch.compile(self.model.image_encoder) if compile else self.model.image_encoder
        self.img_px = model.config.img_size
        self.low_res_px = model.config.low_res_px
        self.reset()

    def reset(self) -> None:
        self._hr: EncodedImages | None = None
        self._lr: EncodedImages | None = None
        self._hr_features = self._lr_features = None
        self.scale_ratio = 2.0

    @property
    def num_pairs(self) -> int:
        return 0 if self._hr is None else self._hr.embeddings.shape[0]

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _check_images(self, name: str, images) -> np.ndarray:
        a = images.cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        if a.ndim == 3:
            a = a[None]
        s = self.img_px
        if a.ndim != 4 or a.shape[1:] != (s, s, 3):
            raise ValueError(f"{name} must be (B, {s}, {s}, 3) or ({s}, {s}, 3) RGB, got shape {a.shape}")
        if a.dtype != np.uint8:
            raise ValueError(f"{name} must be uint8 RGB, got dtype {a.dtype}")
        if a.shape[0] == 0:
            raise ValueError(f"{name} holds no images")
        return a

    @torch.inference_mode()
    def _encode(self, images: np.ndarray) -> EncodedImages:
        embs, earlies = [], []
        for i in range(0, len(images), self.encoder_batch_size):
            x = torch.from_numpy(images[i:i + self.encoder_batch_size]).to(self.device)
            with self._autocast():
                emb, early = self._encoder(self.model.preprocess(x))
            embs.append(emb.float())
            earlies.append(early.float())
        return EncodedImages(torch.cat(embs), torch.cat(earlies))

    @torch.inference_mode()
    def set_patch_pairs(self, hr_images, lr_images, scale_ratio: float = 2.0) -> None:
        """Encode B concentric pairs: HR and LR (B, S, S, 3) uint8, LR covering ``scale_ratio``
        times the HR field of view per side, both centred on the same point."""
        hr = self._check_images("hr_images", hr_images)
        lr = self._check_images("lr_images", lr_images)
        if hr.shape[0] != lr.shape[0]:
            raise ValueError(f"hr_images has {hr.shape[0]} images but lr_images has {lr.shape[0]}")
        if not np.isfinite(scale_ratio) or scale_ratio < 1.0:
            raise ValueError(f"scale_ratio must be a finite number >= 1 (LR pixel / HR pixel), got {scale_ratio}")
        self.reset()
        both = self._encode(np.concatenate([hr, lr]))
        b = hr.shape[0]
        self._hr = EncodedImages(both.embeddings[:b], both.early[:b])
        self._lr = EncodedImages(both.embeddings[b:], both.early[b:])
        with self._autocast():
            hr_f, lr_f = self.model.image_features(self._hr, self._lr)
        self._hr_features, self._lr_features = hr_f.float(), lr_f.float()
        self.scale_ratio = float(scale_ratio)

    def _pair_index(self, pair_index, n: int) -> torch.Tensor:
        if self._hr is None:
            raise ValueError("no patch pairs set: call set_patch_pairs() first")
        if pair_index is None:
            if self.num_pairs != 1:
                raise ValueError(f"{self.num_pairs} patch pairs are set: give pair_index for each prompt")
            return torch.zeros(n, dtype=torch.long, device=self.device)
        idx = np.asarray(pair_index)
        if idx.shape == ():
            idx = np.full(n, int(idx))
        if idx.shape != (n,) or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"pair_index must be {n} integers, one per prompt, got {idx.shape} {idx.dtype}")
        if (idx < 0).any() or (idx >= self.num_pairs).any():
            raise ValueError(f"pair_index out of range: {self.num_pairs} patch pairs are set")
        return torch.as_tensor(idx, dtype=torch.long, device=self.device)

    @staticmethod
    def _rows(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Per-prompt rows of per-image tensors, without copying when all prompts share one image."""
        if bool((idx == idx[0]).all()):
            return t[idx[0]:idx[0] + 1].expand(len(idx), *t.shape[1:])
        return t.index_select(0, idx)

    def _upsample(self, low: torch.Tensor) -> torch.Tensor:
        """(n, 1, L, L) low-res logits -> (n, S, S) float32 on the device."""
        return F.interpolate(low.float(), (self.img_px, self.img_px), mode="bilinear", align_corners=False)[:, 0]

    def _prompts(self, boxes, points, point_labels, mask_inputs, pair_index) -> tuple[PromptBatch, torch.Tensor]:
        prompts = PromptBatch.from_arrays(self.img_px, self.low_res_px, boxes, points, point_labels, mask_inputs,
                                          device=self.device)
        return prompts, self._pair_index(pair_index, len(prompts))

    def _decode(self, prompts: PromptBatch, idx: torch.Tensor, add_sam_logits, return_lr: bool, reference: bool):
        """Yield (prompt slice, HR low-res logits, LR, IoU) per decoder batch, where LR maps the
        batch's rows (k,) to their LR low-res logits (k, 1, L, L) from the same pass.

        ``return_lr=False`` takes :meth:`WsiSam.forward_fast` on the images of the batch, whose LR
        logits are made only for the rows asked for; ``return_lr`` or ``reference=True`` takes
        :meth:`WsiSam.forward_wsi`, the plain computation it must equal (no LR without ``return_lr``)."""
        for start in range(0, len(prompts), self.max_prompts_per_batch):
            sl = slice(start, start + self.max_prompts_per_batch)
            hr_p, i = prompts.select(sl), idx[sl]
            lr_p = hr_p.to_lr(self.img_px, self.scale_ratio)
            with self._autocast():
                if return_lr or reference:
                    o = self.model.forward_wsi(
                        EncodedImages(self._rows(self._hr.embeddings, i), None), self._rows(self._hr_features, i),
                        EncodedImages(self._rows(self._lr.embeddings, i), None), self._rows(self._lr_features, i),
                        hr_p, lr_p, add_sam_logits=add_sam_logits, lr_mask=return_lr)
                    lr = None if o.lr_logits is None else (lambda rows, o=o: o.lr_logits[rows].float())
                    yield sl, o.hr_logits.float(), lr, o.iou.float()
                    continue
                used, rows = torch.unique(i, return_inverse=True)
                fast = self.model.forward_fast(EncodedImages(self._hr.embeddings[used], None), self._hr_features[used],
                                               EncodedImages(self._lr.embeddings[used], None), rows, hr_p, lr_p,
                                               add_sam_logits)
            yield sl, fast.hr_logits.float(), partial(self._fast_lr, fast, i), fast.iou.float()

    def _fast_lr(self, fast: FastOutput, idx: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """LR low-res logits (k, 1, L, L) of the ``rows`` of a fast decoder batch whose prompts are on
        the pairs ``idx``."""
        with self._autocast():
            return self.model.fast_lr_logits(fast, self._lr_features, idx, rows).float()

    @torch.inference_mode()
    def predict(self, boxes=None, points=None, point_labels=None, mask_inputs=None, pair_index=None,
                add_sam_logits: bool | None = None, return_lr: bool = True, reference: bool = False
                ) -> WsiSamPrediction:
        """WSI-SAM masks for N prompts (HR pixel coordinates), prompt i on pair ``pair_index[i]``.

        boxes (N, 4); points (N, P, 2) with point_labels (N, P); mask_inputs (N, 1, L, L) logits
        over the HR patch. Prompt i at HR is paired with the same prompt mapped into LR.
        ``return_lr=False`` skips the LR masks (the LR token still shapes the HR mask) and takes the
        faster HR-only decoder path; ``reference=True`` forces the plain path (same HR logits).
        The outputs hold N x S x S floats: for many prompts prefer :meth:`predict_mask_crops`.
        """
        prompts, idx = self._prompts(boxes, points, point_labels, mask_inputs, pair_index)
        n, s, low = len(prompts), self.img_px, self.low_res_px
        hr_logits, low_res = np.empty((n, s, s), np.float32), np.empty((n, low, low), np.float32)
        lr_logits = np.empty((n, s, s), np.float32) if return_lr else None
        iou = np.empty(n, np.float32)
        for sl, hr, lr, score in self._decode(prompts, idx, add_sam_logits, return_lr, reference):
            hr_logits[sl] = self._upsample(hr).cpu().numpy()
            low_res[sl] = hr[:, 0].cpu().numpy()
            iou[sl] = score.cpu().numpy()
            if return_lr:
                lr_logits[sl] = self._upsample(lr(slice(None))).cpu().numpy()
        return WsiSamPrediction(hr_logits, lr_logits, iou, low_res)

    @torch.inference_mode()
    def predict_mask_crops(self, boxes=None, points=None, point_labels=None, mask_inputs=None, pair_index=None,
                           add_sam_logits: bool | None = None, lr_where: Callable[[MaskCrop], bool] | None = None
                           ) -> tuple[list[MaskCrop | None], np.ndarray, dict[int, MaskCrop | None]]:
        """Each prompt's HR mask (logit > 0, as :meth:`predict`'s ``hr_masks``) cropped to its
        foreground (None when empty), with its stability (:func:`stability_scores` of the HR
        logits), SAM's IoU (N,), and the LR mask (as ``lr_masks``), cropped the same way, of each
        prompt whose HR crop ``lr_where`` accepts, by prompt index: made from the same decoder pass.
        Memory stays at one decoder batch of S x S logits, whatever N."""
        prompts, idx = self._prompts(boxes, points, point_labels, mask_inputs, pair_index)
        crops: list[MaskCrop | None] = []
        ious, lr_crops = [], {}
        for sl, hr, lr, score in self._decode(prompts, idx, add_sam_logits, False, False):
            batch = logit_crops(self._upsample(hr))
            wanted = [] if lr_where is None else [k for k, c in enumerate(batch) if c is not None and lr_where(c)]
            if wanted:
                lr_logits = self._upsample(lr(torch.as_tensor(wanted, device=self.device)))
                lr_crops.update(zip([sl.start + k for k in wanted], foreground_crops(lr_logits > 0.0)))
            crops.extend(batch)
            ious.append(score.cpu().numpy())
        return crops, np.concatenate(ious), lr_crops

    @torch.inference_mode()
    def predict_sam(self, boxes=None, points=None, point_labels=None, mask_inputs=None, pair_index=None,
                    multimask_output: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """SAM's own path on the HR patches (no WSI tokens): the baseline WSI-SAM is compared with.

        Returns logits (N, K, S, S) and predicted IoU (N, K), K = 3 with ``multimask_output`` else 1,
        as ``segment_anything.SamPredictor.predict_torch`` with ``return_logits=True``.
        """
        prompts, idx = self._prompts(boxes, points, point_labels, mask_inputs, pair_index)
        idx = idx.cpu().numpy()
        k = 3 if multimask_output else 1
        logits = np.zeros((len(prompts), k, self.img_px, self.img_px), np.float32)
        ious = np.zeros((len(prompts), k), np.float32)
        for pair in np.unique(idx):
            rows = np.flatnonzero(idx == pair)
            for start in range(0, len(rows), self.max_prompts_per_batch):
                r = rows[start:start + self.max_prompts_per_batch]
                image = EncodedImages(self._hr.embeddings[pair:pair + 1], self._hr.early[pair:pair + 1])
                with self._autocast():
                    low, iou = self.model.forward_sam(image, prompts.select(torch.as_tensor(r)), multimask_output)
                up = F.interpolate(low.float(), (self.img_px, self.img_px), mode="bilinear", align_corners=False)
                logits[r] = up.cpu().numpy()
                ious[r] = iou.float().cpu().numpy()
        return logits, ious
