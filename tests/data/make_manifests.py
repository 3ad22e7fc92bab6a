"""Writes the key/shape manifests of the published MobileSAM file and of a reference WSI-SAM
decoder file, from their public architectures (not from wsisam's modules):

- mobile_sam.json: ``mobile_sam.pt``: TinyViT 5M (embed dims 64/128/160/320, depths 2/2/6/2,
  heads 2/4/5/10, windows 7/7/14/7, MBConv expansion 4, MLP ratio 4, 3x3 local convs, a 1000-class
  head kept in the file, a 320 -> 256 neck) as ``image_encoder.*``, with SAM's prompt encoder and
  mask decoder from segment-anything.
- wsisam_decoder_vit_t.json: one decoder file's ``model`` dict: SAM's mask decoder plus the
  HQ-SAM-style extras (hf_token, hf_mlp, compress_vit_feat from the 160-channel early feature,
  embedding_encoder, embedding_maskfeature).

Run from the repository root: ``python tests/data/make_manifests.py``.
"""
import json
from pathlib import Path

import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

HERE = Path(__file__).parent


def conv_bn(prefix: str, c_in: int, c_out: int, k: int, groups: int = 1) -> dict:
    """TinyViT's Conv2d_BN: ``c`` (no bias) then ``bn``."""
    return {f"{prefix}.c.weight": [c_out, c_in // groups, k, k], f"{prefix}.bn.weight": [c_out],
            f"{prefix}.bn.bias": [c_out], f"{prefix}.bn.running_mean": [c_out], f"{prefix}.bn.running_var": [c_out],
            f"{prefix}.bn.num_batches_tracked": []}


def patch_merging(prefix: str, dim: int, out: int) -> dict:
    return {**conv_bn(f"{prefix}.conv1", dim, out, 1), **conv_bn(f"{prefix}.conv2", out, out, 3, groups=out),
            **conv_bn(f"{prefix}.conv3", out, out, 1)}


def tiny_vit_5m() -> dict:
    dims, depths, heads, windows = (64, 128, 160, 320), (2, 2, 6, 2), (2, 4, 5, 10), (7, 7, 14, 7)
    keys = {**conv_bn("patch_embed.seq.0", 3, dims[0] // 2, 3), **conv_bn("patch_embed.seq.2", dims[0] // 2, dims[0], 3)}
    for i, (d, n, h, w) in enumerate(zip(dims, depths, heads, windows)):
        for b in range(n):
            p = f"layers.{i}.blocks.{b}"
            if i == 0:  # MBConv, expansion 4
                keys |= {**conv_bn(f"{p}.conv1", d, 4 * d, 1), **conv_bn(f"{p}.conv2", 4 * d, 4 * d, 3, groups=4 * d),
                         **conv_bn(f"{p}.conv3", 4 * d, d, 1)}
                continue
            keys |= {f"{p}.attn.attention_biases": [h, w * w],  # one bias per (|dy|, |dx|) in a w x w window
                     f"{p}.attn.norm.weight": [d], f"{p}.attn.norm.bias": [d],
                     f"{p}.attn.qkv.weight": [3 * d, d], f"{p}.attn.qkv.bias": [3 * d],
                     f"{p}.attn.proj.weight": [d, d], f"{p}.attn.proj.bias": [d],
                     f"{p}.mlp.norm.weight": [d], f"{p}.mlp.norm.bias": [d],
                     f"{p}.mlp.fc1.weight": [4 * d, d], f"{p}.mlp.fc1.bias": [4 * d],
                     f"{p}.mlp.fc2.weight": [d, 4 * d], f"{p}.mlp.fc2.bias": [d],
                     **conv_bn(f"{p}.local_conv", d, d, 3, groups=d)}
        if i < len(dims) - 1:
            keys |= patch_merging(f"layers.{i}.downsample", d, dims[i + 1])
    keys |= {"norm_head.weight": [320], "norm_head.bias": [320], "head.weight": [1000, 320], "head.bias": [1000],
             "neck.0.weight": [256, 320, 1, 1], "neck.1.weight": [256], "neck.1.bias": [256],
             "neck.2.weight": [256, 256, 3, 3], "neck.3.weight": [256], "neck.3.bias": [256]}
    return keys


def shapes(module: torch.nn.Module, prefix: str = "") -> dict:
    return {prefix + k: list(v.shape) for k, v in module.state_dict().items()}


def sam_decoder() -> torch.nn.Module:
    return MaskDecoder(transformer_dim=256, transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048,
                                                                          num_heads=8),
                       num_multimask_outputs=3, iou_head_depth=3, iou_head_hidden_dim=256)


def wsi_extras(vit_dim: int) -> dict:
    keys = {"hf_token.weight": [1, 256]}
    for i, (o, c) in enumerate([(256, 256), (256, 256), (32, 256)]):
        keys |= {f"hf_mlp.layers.{i}.weight": [o, c], f"hf_mlp.layers.{i}.bias": [o]}
    # (ConvTranspose2d in -> mid, LayerNorm2d, GELU, ConvTranspose2d mid -> 32); Conv2d for the last
    for name, c_in, mid, transposed, k in (("compress_vit_feat", vit_dim, 256, True, 2),
                                           ("embedding_encoder", 256, 64, True, 2),
                                           ("embedding_maskfeature", 32, 64, False, 3)):
        w0 = [c_in, mid, k, k] if transposed else [mid, c_in, k, k]
        w3 = [mid, 32, k, k] if transposed else [32, mid, k, k]
        keys |= {f"{name}.0.weight": w0, f"{name}.0.bias": [mid], f"{name}.1.weight": [mid], f"{name}.1.bias": [mid],
                 f"{name}.3.weight": w3, f"{name}.3.bias": [32]}
    return keys


def write(name: str, keys: dict) -> None:
    lines = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in keys.items())
    (HERE / name).write_text("{\n" + lines + "\n}\n")


def main() -> None:
    with torch.device("meta"):
        prompt = PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024),
                               mask_in_chans=16)
        decoder = sam_decoder()
    mobile = {**{f"image_encoder.{k}": v for k, v in tiny_vit_5m().items()}, **shapes(prompt, "prompt_encoder."),
              **shapes(decoder, "mask_decoder.")}
    write("mobile_sam.json", mobile)
    ref = {**shapes(decoder), **wsi_extras(160)}
    write("wsisam_decoder_vit_t.json", ref)
    print(len(mobile), len(ref))


if __name__ == "__main__":
    main()
