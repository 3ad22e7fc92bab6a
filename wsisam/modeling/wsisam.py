"""WSI-SAM: frozen SAM with an HR and an LR decoder whose tokens are aggregated."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from segment_anything.modeling import PromptEncoder, TwoWayTransformer
from torch import nn

from ..config import WsiSamConfig
from ..prompts import PromptBatch
from .fast_decoder import decoder_tokens, folded_fusion_logits
from .tiny_vit import TinyViT
from .vit_encoder import ViTFeatureEncoder
from .wsi_decoder import WsiMaskDecoder


@dataclass
class EncodedImages:
    """Encoder outputs for B images: embeddings (B, D, g, g), early (B, g, g, E)."""

    embeddings: torch.Tensor
    early: torch.Tensor


@dataclass
class WsiSamOutput:
    """Low-resolution outputs for N prompts, L = 4g (256 for 1024 px patches).

    hr_logits / lr_logits (N, 1, L, L): WSI-SAM's masks over the HR and the LR patch;
    sam_hr_logits (N, 1, L, L): SAM's own single mask from the HR pass; iou (N,): SAM's predicted
    IoU for that mask, the score we report for the WSI mask (WSI-SAM has no head of its own).
    """

    hr_logits: torch.Tensor
    lr_logits: torch.Tensor | None
    sam_hr_logits: torch.Tensor
    iou: torch.Tensor


@dataclass
class FastOutput:
    """:meth:`WsiSam.forward_fast` for N prompts: hr_logits (N, 1, L, L) and iou (N,) as
    :class:`WsiSamOutput`'s; token (N, D/8) the aggregated WSI token and lr_keys (N, HW, D) the LR
    decoder's final image side, from which :meth:`WsiSam.fast_lr_logits` makes LR masks."""

    hr_logits: torch.Tensor
    iou: torch.Tensor
    token: torch.Tensor
    lr_keys: torch.Tensor


def build_image_encoder(cfg: WsiSamConfig) -> nn.Module:
    enc = cfg.encoder
    if enc.kind == "tiny_vit":
        return TinyViT(cfg.img_size, enc.embed_dims, enc.depths, enc.stage_heads, enc.window_sizes,
                       out_dim=cfg.transformer_dim)
    return ViTFeatureEncoder(**vit_encoder_kwargs(cfg))


def vit_encoder_kwargs(cfg: WsiSamConfig) -> dict:
    """Keyword arguments of segment-anything's ``ImageEncoderViT`` for a ViT configuration."""
    enc = cfg.encoder
    return dict(
        img_size=cfg.img_size, patch_size=cfg.patch_size, embed_dim=enc.embed_dim, depth=enc.depth,
        num_heads=enc.num_heads, mlp_ratio=4, norm_layer=partial(nn.LayerNorm, eps=1e-6), qkv_bias=True,
        use_rel_pos=enc.use_rel_pos, global_attn_indexes=enc.global_attn_indexes, window_size=enc.window_size,
        out_chans=cfg.transformer_dim,
    )


def build_decoder(cfg: WsiSamConfig) -> WsiMaskDecoder:
    return WsiMaskDecoder(
        early_dim=cfg.encoder.early_dim,
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=cfg.transformer_depth, embedding_dim=cfg.transformer_dim,
                                      mlp_dim=cfg.transformer_mlp_dim, num_heads=cfg.transformer_heads),
        transformer_dim=cfg.transformer_dim,
        iou_head_depth=3,
        iou_head_hidden_dim=cfg.iou_head_hidden_dim,
    )


class WsiSam(nn.Module):
    """The network. Parameter names: ``image_encoder.*`` and ``prompt_encoder.*`` as in SAM;
    ``mask_decoder_hr.*`` and ``mask_decoder_lr.*`` each SAM's decoder keys plus the WSI keys."""

    def __init__(self, config: WsiSamConfig) -> None:
        super().__init__()
        self.config = config
        g = config.embedding_px
        self.image_encoder = build_image_encoder(config)
        self.prompt_encoder = PromptEncoder(
            embed_dim=config.transformer_dim, image_embedding_size=(g, g),
            input_image_size=(config.img_size, config.img_size), mask_in_chans=16,
        )
        self.mask_decoder_hr = build_decoder(config)
        self.mask_decoder_lr = build_decoder(config)
        # Both decoders wrap the same frozen SAM decoder: start them from the same weights.
        self.mask_decoder_lr.load_state_dict(self.mask_decoder_hr.sam_state_dict(), strict=False)
        self.reset_buffers()
        self.sam_frozen = False

    def reset_buffers(self) -> None:
        """(Re)compute the buffers not stored in weights files (the input normalisation)."""
        self.register_buffer("pixel_mean", torch.tensor(self.config.pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(self.config.pixel_std).view(-1, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # --- training set-up -------------------------------------------------------------------
    def wsi_parameters(self) -> list[nn.Parameter]:
        """The parameters WSI-SAM learns: tokens, token MLPs and fusion of both decoders."""
        return [*self.mask_decoder_hr.wsi_parameters(), *self.mask_decoder_lr.wsi_parameters()]

    def freeze_sam(self, frozen: bool = True) -> "WsiSam":
        """Freeze (or unfreeze) everything but :meth:`wsi_parameters`; frozen parts stay in eval mode."""
        wsi = {id(p) for p in self.wsi_parameters()}
        for p in self.parameters():
            p.requires_grad_(id(p) in wsi or not frozen)
        self.sam_frozen = frozen
        return self.train(self.training)

    def train(self, mode: bool = True) -> "WsiSam":
        super().train(mode)
        if self.sam_frozen:  # frozen BatchNorm statistics must not move
            self.image_encoder.eval()
            self.prompt_encoder.eval()
        return self

    # --- forward pieces -------------------------------------------------------------------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, S, S, 3) uint8 RGB -> (B, 3, S, S) normalised float."""
        x = images.permute(0, 3, 1, 2).to(self.pixel_mean.dtype)
        return (x - self.pixel_mean) / self.pixel_std

    def encode(self, images: torch.Tensor) -> EncodedImages:
        """(B, S, S, 3) uint8 -> encoder outputs. Runs without autograd when SAM is frozen."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.sam_frozen):
            emb, early = self.image_encoder(self.preprocess(images))
        return EncodedImages(emb, early)

    def embed_prompts(self, prompts: PromptBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse (N, T, D) and dense (N, D, g, g) prompt embeddings."""
        return self.prompt_encoder(**prompts.as_sam_inputs())

    def forward_wsi(self, hr: EncodedImages, hr_features: torch.Tensor, lr: EncodedImages,
                    lr_features: torch.Tensor, hr_prompts: PromptBatch, lr_prompts: PromptBatch,
                    add_sam_logits: bool | None = None, lr_mask: bool = True) -> WsiSamOutput:
        """WSI-SAM for N prompts; prompt i pairs HR image i with LR image i.

        ``hr``/``lr`` rows (and the fused image features from :meth:`image_features`) must be
        per prompt (N rows; expanded views are fine). ``add_sam_logits`` defaults to the config's
        (the reference adds SAM's HR mask at inference; training uses the WSI masks alone).
        ``lr_mask=False`` skips the LR mask (``lr_logits`` is None), which halves the per-prompt
        fusion work when only the HR mask is wanted; the LR token still takes part.
        """
        pe = self.prompt_encoder.get_dense_pe()
        hr_sparse, hr_dense = self.embed_prompts(hr_prompts)
        lr_sparse, lr_dense = self.embed_prompts(lr_prompts)
        out_hr = self.mask_decoder_hr.forward_wsi(hr.embeddings, hr_features, pe, hr_sparse, hr_dense)
        out_lr = self.mask_decoder_lr.forward_wsi(lr.embeddings, lr_features, pe, lr_sparse, lr_dense, fuse=lr_mask)
        token = out_hr.token + out_lr.token
        if self.config.token_aggregation == "mean":
            token = token / 2
        hr_logits = self._apply_token(token, out_hr.fused_features)
        lr_logits = self._apply_token(token, out_lr.fused_features) if lr_mask else None
        if self.config.add_sam_logits if add_sam_logits is None else add_sam_logits:
            hr_logits = hr_logits + out_hr.sam_logits
        return WsiSamOutput(hr_logits, lr_logits, out_hr.sam_logits, out_hr.iou)

    def forward_hr(self, hr: EncodedImages, hr_features: torch.Tensor, lr: EncodedImages, lr_features: torch.Tensor,
                   idx: torch.Tensor, hr_prompts: PromptBatch, lr_prompts: PromptBatch,
                   add_sam_logits: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """HR logits (N, 1, L, L) and SAM's IoU (N,), equal to :meth:`forward_wsi`'s ``hr_logits`` and
        ``iou`` (the reference) but with less work: see :mod:`wsisam.modeling.fast_decoder`.

        ``hr``/``lr`` and their fused features have one row per image (``lr_features`` is unused: the
        LR mask is not made); idx (N,) is the image row of each prompt.
        """
        del lr_features
        out = self.forward_fast(hr, hr_features, lr, idx, hr_prompts, lr_prompts, add_sam_logits)
        return out.hr_logits, out.iou

    def forward_fast(self, hr: EncodedImages, hr_features: torch.Tensor, lr: EncodedImages, idx: torch.Tensor,
                     hr_prompts: PromptBatch, lr_prompts: PromptBatch, add_sam_logits: bool | None = None
                     ) -> FastOutput:
        """:meth:`forward_hr`'s outputs, with what :meth:`fast_lr_logits` needs to make the LR mask of
        any of the prompts afterwards from this same pass (the LR decoder's transformer is not run again)."""
        pe = self.prompt_encoder.get_dense_pe().flatten(2).transpose(1, 2)
        dec_hr, dec_lr = self.mask_decoder_hr, self.mask_decoder_lr
        hf = 1 + dec_hr.num_mask_tokens
        hr_tokens, keys = decoder_tokens(dec_hr, *self._image_src(hr, hr_prompts, idx), pe, [0, 1, hf])
        lr_tokens, lr_keys = decoder_tokens(dec_lr, *self._image_src(lr, lr_prompts, idx), pe, [hf])
        token = dec_hr.hf_mlp(hr_tokens[:, 2]) + dec_lr.hf_mlp(lr_tokens[:, 0])
        if self.config.token_aggregation == "mean":
            token = token / 2
        upscaled = self._upscaled(dec_hr, keys)
        logits = folded_fusion_logits(dec_hr, token, upscaled, hr_features, idx)
        if self.config.add_sam_logits if add_sam_logits is None else add_sam_logits:
            logits = logits + self._apply_token(dec_hr.output_hypernetworks_mlps[0](hr_tokens[:, 1]), upscaled)
        return FastOutput(logits, dec_hr.iou_prediction_head(hr_tokens[:, 0])[:, 0], token, lr_keys)

    def fast_lr_logits(self, out: FastOutput, lr_features: torch.Tensor, idx: torch.Tensor,
                       rows: torch.Tensor) -> torch.Tensor:
        """LR logits (n, 1, L, L) of the prompts ``rows`` (n,) of a :meth:`forward_fast` output: the
        LR decoder's fusion with the aggregated token, as :meth:`forward_wsi`'s ``lr_logits``.
        ``lr_features`` has one row per image, idx (N,) is the image row of each of the N prompts."""
        upscaled = self._upscaled(self.mask_decoder_lr, out.lr_keys[rows])
        return folded_fusion_logits(self.mask_decoder_lr, out.token[rows], upscaled, lr_features, idx[rows])

    def _upscaled(self, dec: WsiMaskDecoder, keys: torch.Tensor) -> torch.Tensor:
        """The decoder's upscaled mask features (N, D/8, L, L) from its final keys (N, HW, D)."""
        n, hw, c = keys.shape
        g = self.config.embedding_px
        return dec.output_upscaling(keys.transpose(1, 2).reshape(n, c, g, g))

    def _image_src(self, images: EncodedImages, prompts: PromptBatch, idx: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The decoder's image side (rows, HW, D), its row per prompt, and the sparse prompt
        embeddings: one row per image when no prompt has a mask input (the dense embedding is then
        the same for all), else one per prompt."""
        sparse, dense = self.embed_prompts(prompts)
        if prompts.mask_inputs is None:
            src = images.embeddings + dense[:1]
        else:
            src, idx = images.embeddings[idx] + dense, torch.arange(len(idx), device=idx.device)
        return src.flatten(2).transpose(1, 2), sparse, idx

    def image_features(self, hr: EncodedImages, lr: EncodedImages) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image fusion inputs for each decoder, (B, D/8, 4g, 4g) each."""
        return (self.mask_decoder_hr.image_features(hr.embeddings, hr.early),
                self.mask_decoder_lr.image_features(lr.embeddings, lr.early))

    def forward_sam(self, image: EncodedImages, prompts: PromptBatch, multimask_output: bool = False
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's own path for N prompts on ONE image (embeddings (1, D, g, g)): SAM's frozen decoder
        (the HR decoder's SAM part) exactly as segment-anything runs it. Returns low-res logits
        (N, 1 or 3, L, L) and IoU (N, 1 or 3)."""
        sparse, dense = self.embed_prompts(prompts)
        return self.mask_decoder_hr(image.embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense,
                                    multimask_output)

    @staticmethod
    def _apply_token(token: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """(N, C) token times (N, C, L, L) features -> (N, 1, L, L) logits."""
        n, c, h, w = features.shape
        return (token.unsqueeze(1) @ features.reshape(n, c, h * w)).view(n, 1, h, w)
