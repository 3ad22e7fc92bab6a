"""Model-level benchmark: encoder seconds per patch pair and decoder seconds per prompt.

Shows that prompts sharing a patch pair share its encoder pass and its decoder batch: the
decoder's cost per prompt falls as more prompts go through in one batch.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

import wsisam


@dataclass
class ModelBenchRow:
    backbone: str
    img_px: int
    device: str
    encoder_s_per_pair: float
    decoder_ms_per_prompt: dict[int, float]


def _best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_model(backbone: str, prompt_counts=(1, 8, 64), repeats: int = 3, device: str | None = None,
                amp_dtype: torch.dtype | None = None, seed: int = 0) -> ModelBenchRow:
    """Time one backbone with random weights on random patches (timings do not depend on weights)."""
    torch.manual_seed(seed)
    model = wsisam.build_wsisam(backbone)
    pred = wsisam.WsiSamPredictor(model, device=device, amp_dtype=amp_dtype, max_prompts_per_batch=max(prompt_counts))
    s = model.config.img_size
    rng = np.random.default_rng(seed)
    hr = rng.integers(0, 256, (1, s, s, 3), dtype=np.uint8)
    lr = rng.integers(0, 256, (1, s, s, 3), dtype=np.uint8)
    pred.set_patch_pairs(hr, lr)  # warm-up
    enc = _best_of(lambda: pred.set_patch_pairs(hr, lr), repeats)
    per_prompt = {}
    for n in prompt_counts:
        x0 = rng.uniform(0, s * 0.6, n)
        y0 = rng.uniform(0, s * 0.6, n)
        boxes = np.stack([x0, y0, x0 + s * 0.3, y0 + s * 0.3], axis=1)
        pred.predict(boxes=boxes)
        per_prompt[n] = 1000 * _best_of(lambda: pred.predict(boxes=boxes), repeats) / n
    return ModelBenchRow(backbone, s, str(pred.device), enc, per_prompt)


def format_rows(rows: list[ModelBenchRow]) -> str:
    counts = sorted(rows[0].decoder_ms_per_prompt)
    head = ["backbone", "patch px", "device", "encoder s/pair"] + [f"decoder ms/prompt @{n}" for n in counts]
    head.append(f"cost/prompt @{counts[-1]} vs @{counts[0]}")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        d = r.decoder_ms_per_prompt
        cells = [r.backbone, str(r.img_px), r.device, f"{r.encoder_s_per_pair:.3f}"]
        cells += [f"{d[n]:.1f}" for n in counts] + [f"{d[counts[-1]] / d[counts[0]]:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rows_to_json(rows: list[ModelBenchRow]) -> list[dict]:
    return [asdict(r) for r in rows]
