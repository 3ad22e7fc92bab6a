"""WSI-SAM's HR mask at inference with less work: the same maths as ``WsiSam.forward_wsi`` (the
reference), reordered where the algebra allows. The HR mask and SAM's IoU are produced, and the
LR mask only for the prompts it is asked for, from the same pass (``WsiSam.fast_lr_logits``):

- the LR decoder stops at its WSI token and final keys (no LR upscaling or fusion unless asked
  for, no IoU head or SAM LR logits);
- the first transformer layer's projections of the image side (keys/values of token-to-image
  attention, queries of image-to-token attention) are computed once per image, not per prompt,
  when the dense prompt embedding is the same for every prompt (no mask inputs);
- the final token-to-image attention runs only for the tokens read afterwards, with the key and
  value projections folded into those few queries;
- the fusion's last 3x3 convolution is folded into the aggregated token (it is linear and only
  its dot product with the token is used).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from segment_anything.modeling.transformer import Attention

from .wsi_decoder import WsiMaskDecoder


def _heads(x: torch.Tensor, h: int) -> torch.Tensor:
    """(B, n, I) -> (B, h, n, I/h)."""
    b, n, c = x.shape
    return x.reshape(b, n, h, c // h).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """(B, h, n, d) -> (B, n, h d)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def few_query_attention(attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``attn(q, k, v)`` for a few queries over many keys, without projecting the keys and values:
    q_h . (W_k k + b_k) = (W_k,h^T q_h) . k + const (the constant cancels in the softmax), and
    sum_j a_j (W_v v_j + b_v) = W_v (sum_j a_j v_j) + b_v (the weights sum to 1)."""
    h = attn.num_heads
    qp = _heads(attn.q_proj(q), h)  # (B, h, nq, d)
    b, _, nq, d = qp.shape
    c = k.shape[-1]
    qk = (qp @ attn.k_proj.weight.view(h, d, c)) / math.sqrt(d)  # (B, h, nq, C)
    a = torch.softmax(qk.reshape(b, h * nq, c) @ k.transpose(1, 2), dim=-1)  # (B, h nq, nk)
    pooled = (a @ v).view(b, h, nq, c)
    out = _merge(pooled @ attn.v_proj.weight.view(h, d, c).transpose(1, 2)) + attn.v_proj.bias
    return attn.out_proj(out)


def _image_groups(idx: torch.Tensor) -> list[tuple[int, torch.Tensor | slice]]:
    """(image, prompt rows) for each image used by ``idx``; a slice when all prompts share one."""
    if bool((idx == idx[0]).all()):
        return [(int(idx[0]), slice(None))]
    return [(int(m), torch.nonzero(idx == m)[:, 0]) for m in torch.unique(idx)]


def _first_layer(dec: WsiMaskDecoder, src: torch.Tensor, pe: torch.Tensor, tokens: torch.Tensor, idx: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The transformer's first block with its image-side projections done once per row of ``src``.

    src (M, HW, C) per image, pe (1, HW, C), tokens (N, T, C), idx (N,) rows of ``src``.
    """
    layer = dec.transformer.layers[0]
    t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
    h = t2i.num_heads
    queries = layer.norm1(layer.self_attn(q=tokens, k=tokens, v=tokens))  # skip_first_layer_pe
    src_pe = src + pe
    kp, vp = _heads(t2i.k_proj(src_pe), h), _heads(t2i.v_proj(src), h)  # (M, h, HW, d)
    qp = _heads(t2i.q_proj(queries + tokens), h)  # (N, h, T, d)
    d = qp.shape[-1]
    out = torch.empty_like(qp)
    for m, rows in _image_groups(idx):
        a = torch.softmax(qp[rows] @ kp[m].transpose(1, 2) / math.sqrt(d), dim=-1)  # (n, h, T, HW)
        out[rows] = a @ vp[m]
    queries = layer.norm2(queries + t2i.out_proj(_merge(out)))
    queries = layer.norm3(queries + layer.mlp(queries))

    q_img = _heads(i2t.q_proj(src_pe), h)  # (M, h, HW, d)
    q_tok = queries + tokens
    k_tok, v_tok = _heads(i2t.k_proj(q_tok), h), _heads(i2t.v_proj(queries), h)  # (N, h, T, d)
    n, hw = tokens.shape[0], src.shape[1]
    out = torch.empty(n, h, hw, d, dtype=src.dtype, device=src.device)
    for m, rows in _image_groups(idx):
        a = torch.softmax(q_img[m] @ k_tok[rows].transpose(2, 3) / math.sqrt(d), dim=-1)  # (n, h, HW, T)
        out[rows] = a @ v_tok[rows]
    keys = layer.norm4(src[idx] + i2t.out_proj(_merge(out)))
    return queries, keys


def decoder_tokens(dec: WsiMaskDecoder, src: torch.Tensor, sparse: torch.Tensor, idx: torch.Tensor,
                   pe: torch.Tensor, wanted: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The two-way transformer for N prompts, returning only the output tokens ``wanted`` (N, len, C)
    and the final image-side keys (N, HW, C).

    src (M, HW, C): image embedding plus dense prompt embedding, flattened, one row per image (or
    per prompt); idx (N,) the row of each prompt; pe (1, HW, C); sparse (N, S, C).
    """
    n = sparse.shape[0]
    output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight, dec.hf_token.weight], dim=0)
    tokens = torch.cat((output_tokens.unsqueeze(0).expand(n, -1, -1), sparse), dim=1)
    tr = dec.transformer
    queries, keys = _first_layer(dec, src, pe, tokens, idx)
    for layer in tr.layers[1:]:
        queries, keys = layer(queries=queries, keys=keys, query_pe=tokens, key_pe=pe)
    q = queries[:, wanted]
    q = q + few_query_attention(tr.final_attn_token_to_image, q + tokens[:, wanted], keys + pe, keys)
    return tr.norm_final_attn(q), keys


def folded_fusion_logits(dec: WsiMaskDecoder, token: torch.Tensor, upscaled: torch.Tensor,
                         image_features: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """token . (embedding_maskfeature(upscaled) + image_features[idx]) with the last convolution
    folded into the token: one 1-channel 3x3 convolution per prompt instead of a D/8-channel one.

    token (N, D/8); upscaled (N, D/8, L, L); image_features (M, D/8, L, L), idx (N,) -> (N, 1, L, L).
    """
    conv1, norm, act, conv2 = dec.embedding_maskfeature
    hidden = act(norm(conv1(upscaled)))  # (N, D/4, L, L)
    n, c, h, w = hidden.shape
    weight = torch.einsum("no,oikl->nikl", token, conv2.weight)  # (N, D/4, 3, 3)
    out = F.conv2d(hidden.reshape(1, n * c, h, w), weight, padding=1, groups=n).view(n, 1, h, w)
    out = out + (token @ conv2.bias).view(n, 1, 1, 1)
    feats = image_features.flatten(2)  # (M, D/8, L L)
    for m, rows in _image_groups(idx):
        out[rows] += (token[rows] @ feats[m]).view(-1, 1, h, w)
    return out
