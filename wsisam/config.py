"""Architecture configurations of WSI-SAM, separate from weights (as timm separates them).

A :class:`WsiSamConfig` fully describes the network; checkpoints carry it so that a file
rebuilds its own model. Named configurations live in :data:`CONFIGS`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

Aggregation = Literal["sum", "mean"]


@dataclass(frozen=True)
class EncoderConfig:
    """Image encoder: ``kind`` is ``"vit"`` (SAM's ImageEncoderViT) or ``"tiny_vit"`` (MobileSAM's TinyViT)."""

    kind: Literal["vit", "tiny_vit"]
    # vit
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    use_rel_pos: bool = True
    # tiny_vit
    embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    stage_heads: tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)

    @property
    def early_dim(self) -> int:
        """Channels of the early feature map the fusion module reads."""
        return self.embed_dim if self.kind == "vit" else self.embed_dims[2]


@dataclass(frozen=True)
class WsiSamConfig:
    """The whole network. ``img_size`` is the square patch side in pixels (HR and LR alike)."""

    name: str
    encoder: EncoderConfig
    img_size: int = 1024
    patch_size: int = 16  # image pixels per embedding cell
    transformer_dim: int = 256
    transformer_depth: int = 2
    transformer_mlp_dim: int = 2048
    transformer_heads: int = 8
    iou_head_hidden_dim: int = 256
    token_aggregation: Aggregation = "mean"  # the paper averages; the reference code sums
    add_sam_logits: bool = True  # the reference adds SAM's own HR single-mask logits at inference
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)

    @property
    def embedding_px(self) -> int:
        """Side of the image embedding grid (64 for 1024 px)."""
        return self.img_size // self.patch_size

    @property
    def low_res_px(self) -> int:
        """Side of the decoder's mask logits and of SAM's mask input (256 for 1024 px)."""
        return 4 * self.embedding_px

    def replace(self, **changes: Any) -> "WsiSamConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "WsiSamConfig":
        data = dict(data)
        enc = {k: tuple(v) if isinstance(v, list) else v for k, v in data.pop("encoder").items()}
        known = {f.name for f in dataclasses.fields(WsiSamConfig)}
        unknown = set(data) - known - {"encoder"}
        if unknown:
            raise ValueError(f"unknown WSI-SAM configuration fields: {sorted(unknown)}")
        data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return WsiSamConfig(encoder=EncoderConfig(**enc), **data)


def _vit(dim: int, depth: int, heads: int, global_idx: tuple[int, ...]) -> EncoderConfig:
    return EncoderConfig(kind="vit", embed_dim=dim, depth=depth, num_heads=heads, global_attn_indexes=global_idx)


CONFIGS: dict[str, WsiSamConfig] = {
    # MobileSAM's TinyViT: the paper's backbone.
    "vit_tiny": WsiSamConfig(name="vit_tiny", encoder=EncoderConfig(kind="tiny_vit")),
    "vit_b": WsiSamConfig(name="vit_b", encoder=_vit(768, 12, 12, (2, 5, 8, 11))),
    "vit_l": WsiSamConfig(name="vit_l", encoder=_vit(1024, 24, 16, (5, 11, 17, 23))),
    "vit_h": WsiSamConfig(name="vit_h", encoder=_vit(1280, 32, 16, (7, 15, 23, 31))),
    # Test size: 256 px patches and narrow layers, for CPU tests and the demo.
    "vit_test": WsiSamConfig(
        name="vit_test",
        encoder=EncoderConfig(
            kind="vit", embed_dim=96, depth=4, num_heads=3, global_attn_indexes=(1, 3), window_size=4
        ),
        img_size=256,
        transformer_dim=64,
        transformer_mlp_dim=256,
        transformer_heads=4,
        iou_head_hidden_dim=64,
    ),
    "vit_tiny_test": WsiSamConfig(
        name="vit_tiny_test",
        encoder=EncoderConfig(
            kind="tiny_vit", embed_dims=(16, 32, 48, 64), depths=(1, 1, 2, 1), stage_heads=(1, 2, 3, 4),
            window_sizes=(7, 7, 8, 8),
        ),
        img_size=256,
        transformer_dim=64,
        transformer_mlp_dim=256,
        transformer_heads=4,
        iou_head_hidden_dim=64,
    ),
}


def get_config(name: str, **overrides: Any) -> WsiSamConfig:
    """A named configuration, optionally with fields replaced (e.g. ``token_aggregation="sum"``)."""
    if name not in CONFIGS:
        raise ValueError(f"unknown WSI-SAM backbone {name!r}; known: {sorted(CONFIGS)}")
    return CONFIGS[name].replace(**overrides) if overrides else CONFIGS[name]
