"""Suite ``engine``: objects/s of the engine against the reference demo's way, on the same prompts.

- Engine: the scheduler packs prompts into shared windows, a batch of ``windows_per_batch``
  windows is read and encoded in one ``set_patch_pairs`` call (HR and LR images of all windows
  together), and all the batch's prompts go through the decoders together.
- Naive (what the reference demo does): for each prompt, read its own concentric pair centred on
  the prompt, encode HR and LR (two encoder passes: encoder batch size 1), decode that one prompt.
  It uses the same segmenter code and decoder settings (HR mask only), which if anything favours it.

Prompts come in clusters of ``d`` boxes that fit one window (``d`` = prompts per window). The naive
path runs on an evenly spread subset of each density's prompts (its cost per prompt does not depend
on the density); both are reported as prompts segmented per second ("objects/s": one object per
prompt, empty masks included, since the weights are random).
"""
from __future__ import annotations

from ..pipeline import batched, by_level, plan_slide, read_jobs
from ..scheduler import Window, prompt_extent_l0_px, prompt_level, schedule_stats
from ..segmenters import WindowJob, WsiSamSegmenter
from ..slides import open_slide
from .common import (BenchOptions, SuiteResult, Timer, bench_slide, build_model, clustered_prompts, fmt, headline,
                     schedule_for, spread_subset, torch_info, usable_l0_px)


def _segmenters(opts: BenchOptions):
    import wsisam

    model = build_model(opts.backbone, opts.seed)
    engine = WsiSamSegmenter(wsisam.WsiSamPredictor(model, device=opts.device))
    naive = WsiSamSegmenter(wsisam.WsiSamPredictor(model, device=opts.device, encoder_batch_size=1,
                                                   max_prompts_per_batch=1))
    return engine, naive


def run_engine(slide, prompts, segmenter: WsiSamSegmenter, schedule, windows_per_batch: int) -> dict:
    """Plan, read and segment ``prompts`` the engine's way; seconds and counts."""
    enc0, dec0 = segmenter.timings["encode"], segmenter.timings["decode"]
    objects = 0
    with Timer() as t:
        plan = plan_slide(slide, prompts, schedule)
        for level in by_level(plan.windows):
            for windows in batched(level, windows_per_batch):
                jobs = list(read_jobs(slide, plan.prompts_by_id(), windows))
                objects += len(segmenter.segment(jobs, lr_masks=schedule.complete_cut_objects))  # as segment
    stats = schedule_stats(plan.windows)
    return {"prompts": len(plan.prompts), "windows": stats.windows, "encoder_passes": stats.encoder_passes,
            "objects_nonempty": objects, "seconds": t.s, "encode_s": segmenter.timings["encode"] - enc0,
            "decode_s": segmenter.timings["decode"] - dec0}


def run_naive(slide, prompts, segmenter: WsiSamSegmenter, schedule) -> dict:
    """One pair per prompt, centred on it (at the prompt's own pyramid level), one prompt per decode."""
    enc0, dec0 = segmenter.timings["encode"], segmenter.timings["decode"]
    objects = 0
    with Timer() as t:
        for i, p in enumerate(prompts):
            ext = prompt_extent_l0_px(p, schedule, slide.mpp)
            level = prompt_level(ext, schedule, slide.mpp)
            centre = ((ext[0] + ext[2]) / 2, (ext[1] + ext[3]) / 2)
            pair = slide.patch_pair(centre, schedule.patch_px, schedule.hr_mpp * 2**level,
                                    schedule.lr_mpp * 2**level)
            hr, lr = slide.read_patch_pair(pair)
            window = Window(slide.slide_id, i, level, pair, (p.prompt_id,))
            objects += len(segmenter.segment([WindowJob(window, hr, lr, [p])], lr_masks=schedule.complete_cut_objects))
    return {"prompts": len(prompts), "windows": len(prompts), "encoder_passes": 2 * len(prompts),
            "objects_nonempty": objects, "seconds": t.s, "encode_s": segmenter.timings["encode"] - enc0,
            "decode_s": segmenter.timings["decode"] - dec0}


def run(opts: BenchOptions) -> SuiteResult:
    schedule = schedule_for(opts.backbone)
    cached, centres = bench_slide(opts, max(opts.windows, 4))
    engine, naive = _segmenters(opts)
    rows = []
    with Timer() as total, open_slide(cached.path) as slide:
        warm = clustered_prompts(slide.slide_id, centres[:1], 2, usable_l0_px(schedule), opts.seed + 99)
        run_engine(slide, warm, engine, schedule, opts.windows_per_batch)  # warm-ups (allocator, oneDNN)
        run_naive(slide, warm[:1], naive, schedule)
        for d in opts.densities:
            prompts = clustered_prompts(slide.slide_id, centres[:opts.windows], d, usable_l0_px(schedule), opts.seed)
            e = run_engine(slide, prompts, engine, schedule, opts.windows_per_batch)
            n = run_naive(slide, spread_subset(prompts, opts.naive_prompts), naive, schedule)
            e_rate, n_rate = e["prompts"] / e["seconds"], n["prompts"] / n["seconds"]
            rows.append({"density": d, "prompts_per_window": e["prompts"] / e["windows"], "engine": e, "naive": n,
                         "engine_objects_per_s": e_rate, "naive_objects_per_s": n_rate, "speedup": e_rate / n_rate,
                         "engine_encoder_passes_per_prompt": e["encoder_passes"] / e["prompts"],
                         "naive_encoder_passes_per_prompt": 2.0})
    header = ["prompts/window", "engine prompts", "windows", "engine s", "engine obj/s", "encode/decode s",
              "naive prompts", "naive s", "naive obj/s", "speedup", "enc passes/prompt (engine vs naive)"]
    table = [[fmt(r["prompts_per_window"]), str(r["engine"]["prompts"]), str(r["engine"]["windows"]),
              fmt(r["engine"]["seconds"]), fmt(r["engine_objects_per_s"]),
              f"{fmt(r['engine']['encode_s'])} / {fmt(r['engine']['decode_s'])}", str(r["naive"]["prompts"]),
              fmt(r["naive"]["seconds"]), fmt(r["naive_objects_per_s"]), f"**{r['speedup']:.2f}x**",
              f"{r['engine_encoder_passes_per_prompt']:.3g} vs 2"] for r in rows]
    dense = [r for r in rows if r["prompts_per_window"] >= 8]
    heads = [headline(f"engine vs naive objects/s @{fmt(r['prompts_per_window'])} prompts/window", r["speedup"], "x",
                      ">= 5x" if r["prompts_per_window"] >= 8 else None,
                      (r["speedup"] >= 5.0) if r["prompts_per_window"] >= 8 else None)
             for r in rows]
    notes = [f"{opts.backbone} ({schedule.patch_px} px, random weights) on {engine.predictor.device}, "
             f"torch threads {torch_info()['threads']}; slide {cached.side_px} px square at 0.5 µm/px, "
             f"engine batch {opts.windows_per_batch} windows per encoder call.",
             "Naive = the reference demo: one concentric pair per prompt centred on it, HR and LR encoded "
             "separately, one prompt per decoder call; run on an evenly spread subset of the same prompts."]
    if not dense:
        notes.append("no density >= 8 prompts/window was run: the >= 5x target is not checked.")
    return SuiteResult("engine", "1. Engine vs naive (reference demo) objects/s", header, table, rows, heads, notes,
                       config={"backbone": opts.backbone, "patch_px": schedule.patch_px,
                               "windows_per_density": opts.windows, "naive_prompts": opts.naive_prompts,
                               "slide_px": cached.side_px, **torch_info()}, seconds=total.s)
