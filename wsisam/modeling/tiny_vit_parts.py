"""Building blocks of MobileSAM's TinyViT, with MobileSAM's parameter names.

Written from the architecture's description (Wu et al. 2022, TinyViT; Zhang et al. 2023,
MobileSAM) so that ``mobile_sam.pt`` loads by name. Attention biases are gathered on every
forward (no cache), so a model loaded after ``.eval()`` never sees stale biases.
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn


class ConvBN(nn.Sequential):
    """Conv2d without bias followed by BatchNorm2d; keys ``c.*`` and ``bn.*``."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, pad: int = 0,
                 groups: int = 1, bn_weight_init: float = 1.0) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(in_ch, out_ch, kernel, stride, pad, groups=groups, bias=False))
        bn = nn.BatchNorm2d(out_ch)
        nn.init.constant_(bn.weight, bn_weight_init)
        nn.init.zeros_(bn.bias)
        self.add_module("bn", bn)


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 convolutions: (B, 3, S, S) -> (B, dim, S/4, S/4)."""

    def __init__(self, in_ch: int, dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(ConvBN(in_ch, dim // 2, 3, 2, 1), nn.GELU(), ConvBN(dim // 2, dim, 3, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block (1x1 expand, 3x3 depthwise, 1x1 project) on (B, C, H, W)."""

    def __init__(self, dim: int, expand_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden, 1)
        self.act1 = nn.GELU()
        self.conv2 = ConvBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = ConvBN(hidden, dim, 1, bn_weight_init=0.0)
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.conv1(x))
        y = self.act2(self.conv2(y))
        return self.act3(x + self.conv3(y))


class PatchMerging(nn.Module):
    """Channel change and (optionally) 2x downsampling: (B, C, H, W) or (B, H*W, C) -> (B, H'*W', C')."""

    def __init__(self, resolution: int, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.conv1 = ConvBN(dim, out_dim, 1)
        self.act = nn.GELU()
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            b = x.shape[0]
            x = x.view(b, self.resolution, self.resolution, -1).permute(0, 3, 1, 2)
        x = self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))
        return x.flatten(2).transpose(1, 2)


class ConvStage(nn.Module):
    """Stage 0 of TinyViT: MBConv blocks, then a PatchMerging."""

    def __init__(self, dim: int, resolution: int, depth: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([MBConv(dim) for _ in range(depth)])
        self.downsample = PatchMerging(resolution, dim, out_dim, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x)


class WindowAttention(nn.Module):
    """Multi-head attention inside a ``window`` x ``window`` window with learned relative-offset biases.

    (B, N, C) -> (B, N, C) with N = window**2.
    """

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = dim // num_heads
        self.scale = self.key_dim ** -0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.window = window
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))  # one per offset (dy, dx)
        self.reset_buffers()

    def reset_buffers(self) -> None:
        """(Re)compute the buffer not stored in weights files: each pair of cells' offset index."""
        cells = list(itertools.product(range(self.window), range(self.window)))
        offsets: dict[tuple[int, int], int] = {}
        idxs = []
        for p in cells:
            for q in cells:
                off = (abs(p[0] - q[0]), abs(p[1] - q[1]))
                idxs.append(offsets.setdefault(off, len(offsets)))
        self.register_buffer(
            "attention_bias_idxs", torch.tensor(idxs, dtype=torch.long).view(len(cells), len(cells)), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, -1)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.key_dim], dim=3)
        q, k, v = (t.permute(0, 2, 1, 3) for t in (q, k, v))
        attn = (q @ k.transpose(-2, -1)) * self.scale + self.attention_biases[:, self.attention_bias_idxs]
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, -1)
        return self.proj(x)


class Mlp(nn.Module):
    """LayerNorm, Linear, GELU, Linear on (B, N, C)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Window attention, a depthwise 3x3 conv and an MLP on (B, H*W, C) at a fixed resolution."""

    def __init__(self, dim: int, resolution: int, num_heads: int, window: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.resolution = resolution
        self.window = window
        self.attn = WindowAttention(dim, num_heads, window)
        self.local_conv = ConvBN(dim, dim, 3, 1, 1, groups=dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def _windowed_attention(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        r, w = self.resolution, self.window
        if r == w:
            return self.attn(x)
        x = x.view(b, r, r, c)
        pad = (w - r % w) % w
        if pad:
            x = F.pad(x, (0, 0, 0, pad, 0, pad))
        p = r + pad
        nw = p // w
        x = x.view(b, nw, w, nw, w, c).transpose(2, 3).reshape(b * nw * nw, w * w, c)
        x = self.attn(x)
        x = x.view(b, nw, nw, w, w, c).transpose(2, 3).reshape(b, p, p, c)
        return x[:, :r, :r].reshape(b, n, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        x = x + self._windowed_attention(x)
        x = x.transpose(1, 2).reshape(b, c, self.resolution, self.resolution)
        x = self.local_conv(x).view(b, c, n).transpose(1, 2)
        return x + self.mlp(x)


class AttentionStage(nn.Module):
    """Stages 1-3 of TinyViT: TinyViT blocks, then an optional PatchMerging."""

    def __init__(self, dim: int, resolution: int, depth: int, num_heads: int, window: int,
                 out_dim: int | None, stride: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([TinyViTBlock(dim, resolution, num_heads, window) for _ in range(depth)])
        self.downsample = PatchMerging(resolution, dim, out_dim, stride) if out_dim is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x
