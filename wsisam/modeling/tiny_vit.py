"""MobileSAM's TinyViT image encoder, returning SAM's image embedding and the early feature."""
from __future__ import annotations

import torch
from segment_anything.modeling.common import LayerNorm2d
from torch import nn

from .tiny_vit_parts import AttentionStage, ConvStage, PatchEmbed


class TinyViT(nn.Module):
    """TinyViT-5M as MobileSAM uses it, generalised to any ``img_size`` divisible by 16.

    Resolutions for ``img_size`` S: patch embedding S/4, stage 1 S/8, stages 2 and 3 S/16 (the
    downsampling into the last stage has stride 1, as in MobileSAM).
    ``forward``: (B, 3, S, S) normalised pixels -> (B, out_dim, S/16, S/16) embedding and
    (B, S/16, S/16, embed_dims[2]) early feature: stage 1's output after its downsampling.
    """

    def __init__(self, img_size: int = 1024, embed_dims=(64, 128, 160, 320), depths=(2, 2, 6, 2),
                 num_heads=(2, 4, 5, 10), window_sizes=(7, 7, 14, 7), out_dim: int = 256) -> None:
        super().__init__()
        if img_size % 16:
            raise ValueError(f"TinyViT img_size must be divisible by 16, got {img_size}")
        self.img_size = img_size
        self.grid = img_size // 16
        res = img_size // 4
        self.patch_embed = PatchEmbed(3, embed_dims[0])
        resolutions = (res, res // 2, res // 4, res // 4)
        self.layers = nn.ModuleList([ConvStage(embed_dims[0], res, depths[0], embed_dims[1], stride=2)])
        for i in range(1, 4):
            last = i == 3
            self.layers.append(
                AttentionStage(
                    embed_dims[i], resolutions[i], depths[i], num_heads[i], window_sizes[i],
                    out_dim=None if last else embed_dims[i + 1], stride=1 if i == 2 else 2,
                )
            )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[3], out_dim, 1, bias=False),
            LayerNorm2d(out_dim),
            nn.Conv2d(out_dim, out_dim, 3, padding=1, bias=False),
            LayerNorm2d(out_dim),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.layers[0](self.patch_embed(x))
        x = self.layers[1](x)
        b = x.shape[0]
        early = x.view(b, self.grid, self.grid, -1)
        x = self.layers[3](self.layers[2](x))
        x = x.view(b, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        return self.neck(x), early
