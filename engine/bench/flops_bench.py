"""Suite ``flops``: the model's achieved FLOP/s against this machine's matrix-multiply peak.

FLOPs per call are counted with ``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-add;
convolutions, matmuls and attention; elementwise work is not counted). The encoder call is one
``set_patch_pairs`` of one window (HR + LR images, plus the fusion inputs); the decoder call is one
``predict`` of ``stage_density`` prompts on it, HR masks only (as the engine runs it). Achieved FLOP/s
= counted FLOPs / best-of-``repeats`` wall time. Peak = a large fp32 ``torch.matmul`` on the same
threads (best of several, measured before and after the model).
"""
from __future__ import annotations

import time

import numpy as np

from .common import BenchOptions, SuiteResult, Timer, build_model, fmt, headline, pct, torch_info


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def matmul_peak(n: int, repeats: int, device=None) -> float:
    """fp32 FLOP/s of an n x n matmul on this process's threads (best of ``repeats``)."""
    import torch

    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device or "cpu")
    b = torch.randn(n, n, generator=g).to(device or "cpu")

    def mm():
        torch.matmul(a, b)
        if a.is_cuda:
            torch.cuda.synchronize()

    mm()
    return 2.0 * n**3 / best_time(mm, repeats)


def run(opts: BenchOptions) -> SuiteResult:
    import torch

    import wsisam

    model = build_model(opts.backbone, opts.seed)
    pred = wsisam.WsiSamPredictor(model, device=opts.device)
    s = pred.img_px
    k = opts.stage_density
    rng = np.random.default_rng(opts.seed)
    hr = rng.integers(0, 256, (1, s, s, 3), dtype=np.uint8)
    lr = rng.integers(0, 256, (1, s, s, 3), dtype=np.uint8)
    x0 = rng.uniform(0, s * 0.85, k)
    y0 = rng.uniform(0, s * 0.85, k)
    boxes = np.stack([x0, y0, x0 + s * 0.1, y0 + s * 0.1], axis=1)
    sync = torch.cuda.synchronize if pred.device.type == "cuda" else (lambda: None)

    def encode():
        pred.set_patch_pairs(hr, lr)
        sync()

    def decode():
        pred.predict(boxes=boxes, return_lr=False)
        sync()

    n_mm = 4096 if not opts.quick else 2048
    with Timer() as total:
        peak0 = matmul_peak(n_mm, 3, pred.device)
        enc_flops = count_flops(encode)  # also the warm-up
        enc_s = best_time(encode, opts.repeats)
        dec_flops = count_flops(decode)
        dec_s = best_time(decode, opts.repeats)
        peak = max(peak0, matmul_peak(n_mm, 3, pred.device))
    rows = [
        {"part": "encoder (1 window: HR + LR)", "flops": enc_flops, "seconds": enc_s},
        {"part": f"decoder ({k} prompts, HR masks)", "flops": dec_flops, "seconds": dec_s},
        {"part": f"model (1 window, {k} prompts)", "flops": enc_flops + dec_flops, "seconds": enc_s + dec_s},
    ]
    for r in rows:
        r["flop_per_s"] = r["flops"] / r["seconds"]
        r["fraction_of_peak"] = r["flop_per_s"] / peak
    header = ["part", "GFLOP per call", "s per call", "achieved GFLOP/s", "matmul peak GFLOP/s", "fraction of peak"]
    table = [[r["part"], fmt(r["flops"] / 1e9), fmt(r["seconds"]), fmt(r["flop_per_s"] / 1e9), fmt(peak / 1e9),
              f"**{pct(r['fraction_of_peak'])}**"] for r in rows]
    info = torch_info()
    notes = [f"{opts.backbone} ({s} px, fp32) on {pred.device}, torch threads {info['threads']}; peak = {n_mm}^2 "
             f"fp32 matmul, best of 3 before ({fmt(peak0 / 1e9)} GFLOP/s) and after the model runs.",
             f"decoder FLOPs per prompt: {fmt(dec_flops / k / 1e9)} GFLOP (the fusion convolutions run at 4g x 4g "
             "per prompt); the encoder is mostly small convolutions and windowed attention, which reach a "
             "fraction of a large matmul's rate."]
    heads = [headline("model achieved / matmul peak", 100 * rows[2]["fraction_of_peak"], "%", None, None,
                      f"{fmt(rows[2]['flop_per_s'] / 1e9)} of {fmt(peak / 1e9)} GFLOP/s"),
             headline("encoder achieved / peak", 100 * rows[0]["fraction_of_peak"], "%"),
             headline("decoder achieved / peak", 100 * rows[1]["fraction_of_peak"], "%")]
    return SuiteResult("flops", "4. Achieved FLOP/s vs measured matmul peak", header, table, rows, heads, notes,
                       config={"backbone": opts.backbone, "patch_px": s, "prompts": k, "matmul_n": n_mm,
                               "peak_flop_per_s": peak, **info}, seconds=total.s)
