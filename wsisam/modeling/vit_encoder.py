"""SAM's ViT image encoder, also handing out the early feature the fusion module needs."""
from __future__ import annotations

import torch
from segment_anything.modeling import ImageEncoderViT


class ViTFeatureEncoder(ImageEncoderViT):
    """segment-anything's ``ImageEncoderViT`` (same parameters, same names) whose forward also
    returns the output of the first global-attention block.

    ``forward``: (B, 3, S, S) normalised pixels -> (B, out_chans, S/16, S/16) embedding and
    (B, S/16, S/16, embed_dim) early feature.
    """

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        early = None
        for blk in self.blocks:
            x = blk(x)
            if early is None and blk.window_size == 0:
                early = x
        if early is None:
            raise ValueError("the ViT encoder has no global-attention block to take the early feature from")
        return self.neck(x.permute(0, 3, 1, 2)), early
