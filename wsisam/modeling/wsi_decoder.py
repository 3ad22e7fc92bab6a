"""One WSI-SAM decoder: SAM's mask decoder plus a resolution token, its MLP and HQ-SAM-style fusion."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from segment_anything.modeling import MaskDecoder
from segment_anything.modeling.mask_decoder import MLP
from torch import nn

from .layer_norm import ChannelLayerNorm2d as LayerNorm2d

# Names of the parameters WSI-SAM adds to SAM's decoder (HQ-SAM's names, as in the reference files).
WSI_PARAM_PREFIXES = ("hf_token", "hf_mlp", "compress_vit_feat", "embedding_encoder", "embedding_maskfeature")


@dataclass
class DecoderOutput:
    """What one resolution's decoder hands to token aggregation. N prompts, L = low-res side.

    token: (N, D/8) the WSI token after its MLP; fused_features: (N, D/8, L, L) fused mask features;
    sam_logits: (N, 1, L, L) SAM's single-mask logits from the same pass; iou: (N,) SAM's IoU score
    for that mask.
    """

    token: torch.Tensor
    fused_features: torch.Tensor | None
    sam_logits: torch.Tensor
    iou: torch.Tensor


class WsiMaskDecoder(MaskDecoder):
    """SAM's ``MaskDecoder`` with one extra learnable token (the HR or LR token).

    The parent's parameters keep SAM's names and stay frozen; the new ones are ``hf_token``
    (1, D), ``hf_mlp`` (D -> D -> D/8), ``compress_vit_feat`` (early ViT feature -> D/8 at 4x),
    ``embedding_encoder`` (image embedding -> D/8 at 4x) and ``embedding_maskfeature`` (SAM's
    upscaled mask features -> D/8), with D the transformer width.
    """

    def __init__(self, *, early_dim: int, **sam_decoder_kwargs) -> None:
        super().__init__(**sam_decoder_kwargs)
        d = self.transformer_dim
        self.output_upscaling[1] = LayerNorm2d(d // 4)  # same parameters as SAM's, fused computation
        self.hf_token = nn.Embedding(1, d)
        self.hf_mlp = MLP(d, d, d // 8, 3)
        self.compress_vit_feat = nn.Sequential(
            nn.ConvTranspose2d(early_dim, d, 2, 2), LayerNorm2d(d), nn.GELU(), nn.ConvTranspose2d(d, d // 8, 2, 2)
        )
        self.embedding_encoder = nn.Sequential(
            nn.ConvTranspose2d(d, d // 4, 2, 2), LayerNorm2d(d // 4), nn.GELU(), nn.ConvTranspose2d(d // 4, d // 8, 2, 2)
        )
        self.embedding_maskfeature = nn.Sequential(
            nn.Conv2d(d // 8, d // 4, 3, 1, 1), LayerNorm2d(d // 4), nn.GELU(), nn.Conv2d(d // 4, d // 8, 3, 1, 1)
        )

    def wsi_parameters(self):
        """The parameters WSI-SAM trains (everything else is SAM's, frozen)."""
        for name, p in self.named_parameters():
            if name.startswith(WSI_PARAM_PREFIXES):
                yield p

    def sam_state_dict(self) -> dict[str, torch.Tensor]:
        """SAM's own decoder weights (without the WSI parameters), under SAM's names."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(WSI_PARAM_PREFIXES)}

    def image_features(self, image_embeddings: torch.Tensor, early_features: torch.Tensor) -> torch.Tensor:
        """Per-image part of the fusion, computed once per image and shared by all its prompts.

        (B, D, g, g) embedding and (B, g, g, early_dim) early feature -> (B, D/8, 4g, 4g).
        """
        return self.embedding_encoder(image_embeddings) + self.compress_vit_feat(early_features.permute(0, 3, 1, 2))

    def forward_wsi(self, image_embeddings: torch.Tensor, image_features: torch.Tensor, image_pe: torch.Tensor,
                    sparse_prompt_embeddings: torch.Tensor, dense_prompt_embeddings: torch.Tensor,
                    fuse: bool = True) -> DecoderOutput:
        """Run the two-way transformer once for N prompts, each with its own image.

        image_embeddings (N, D, g, g) and image_features (N, D/8, 4g, 4g), row i being prompt i's
        image (expanded views are fine); image_pe (1, D, g, g); sparse (N, T, D); dense (N, D, g, g).
        ``fuse=False`` skips the per-prompt fused mask features (``fused_features`` is None) when
        only this decoder's token is needed: the fusion is the decoder's costliest per-prompt step.
        """
        n = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight, self.hf_token.weight], dim=0)
        tokens = torch.cat((output_tokens.unsqueeze(0).expand(n, -1, -1), sparse_prompt_embeddings), dim=1)
        src = image_embeddings + dense_prompt_embeddings
        pos_src = image_pe.expand(n, -1, -1, -1)
        b, c, h, w = src.shape
        hs, src = self.transformer(src, pos_src, tokens)
        iou = self.iou_prediction_head(hs[:, 0, :])[:, 0]
        sam_token = self.output_hypernetworks_mlps[0](hs[:, 1, :])
        wsi_token = self.hf_mlp(hs[:, 1 + self.num_mask_tokens, :])
        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        fused = self.embedding_maskfeature(upscaled) + image_features if fuse else None
        lb, lc, lh, lw = upscaled.shape
        sam_logits = (sam_token.unsqueeze(1) @ upscaled.reshape(lb, lc, lh * lw)).view(lb, 1, lh, lw)
        return DecoderOutput(token=wsi_token, fused_features=fused, sam_logits=sam_logits, iou=iou)
