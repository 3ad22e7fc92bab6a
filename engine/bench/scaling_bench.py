"""Suite ``scaling``: 1 vs 2 model actors on an embedded Ray (``engine.segment_slides``).

The same slide and prompts run once per actor count, each on a fresh embedded Ray (started and
shut down by ``segment_slides``), one window per batch so batches can spread over the actors.
Rates use the streaming wall time from the run manifest (``totals.wall_s`` less
``totals.first_actor_ready_s``: after the first actor has loaded the model, until the last slide
is published); the end-to-end time, Ray start included, is shown beside it. Busy share = sum of
``totals.actor_busy_s`` / (actors x that wall time).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .common import (BenchOptions, SuiteResult, Timer, bench_slide, clustered_prompts, fmt, headline, pct,
                     schedule_for, usable_l0_px)


def thread_ceiling(cpus: int, n: int) -> dict:
    """fp32 matmul FLOP/s on 1 thread and on ``cpus`` threads: what more cores can give on this
    machine (vCPUs that share a physical core, or are busy with other work, give less than 1x each)."""
    import torch

    from .flops_bench import matmul_peak

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = matmul_peak(n, 3)
        torch.set_num_threads(cpus)
        many = matmul_peak(n, 3)
    finally:
        torch.set_num_threads(before)
    return {"threads": cpus, "one_thread_flop_per_s": one, "all_threads_flop_per_s": many, "ratio": many / one}


def run(opts: BenchOptions) -> SuiteResult:
    from .. import api
    from ..distributed.executor import ExecutionConfig
    from ..distributed.manifest import read_manifest
    from ..distributed.model_spec import ModelSpec

    schedule = schedule_for(opts.backbone)
    cached, centres = bench_slide(opts, max(opts.scaling_windows, 4))
    prompts = clustered_prompts(cached.slide_id, centres[:opts.scaling_windows], opts.scaling_density,
                                usable_l0_px(schedule), opts.seed)
    work = Path(opts.work_dir) / "scaling" if opts.work_dir else Path(tempfile.mkdtemp(prefix="wsisam-bench-ray-"))
    cpus = os.cpu_count() or 1
    ceiling = thread_ceiling(cpus, 2048 if opts.quick else 4096)
    rows = []
    try:
        with Timer() as total:
            for n in opts.scaling_actors:
                out = work / f"actors{n}"
                shutil.rmtree(out, ignore_errors=True)
                load0 = os.getloadavg()[0]
                with Timer() as t:
                    res = api.segment_slides([cached.path], prompts={cached.slide_id: prompts}, output_dir=out,
                                             model=ModelSpec(backbone=opts.backbone, random_weights=True),
                                             schedule=schedule,
                                             execution=ExecutionConfig(actors=n, windows_per_batch=1, progress=False),
                                             num_cpus=cpus)
                m = read_manifest(out)
                wall = m["totals"]["wall_s"] - (m["totals"].get("first_actor_ready_s") or 0.0)
                busy = m["totals"]["actor_busy_s"]
                r = res[0]
                rows.append({"actors": n, "windows": r.windows, "prompts": r.prompts, "objects": r.objects,
                             "wall_s": wall, "end_to_end_s": t.s, "windows_per_s": r.windows / wall,
                             "objects_per_s": r.prompts / wall, "actor_busy_s": busy,
                             "busy_share": sum(busy) / (n * wall), "actor_s_per_window": sum(busy) / r.windows,
                             "load_avg_1min": [load0, os.getloadavg()[0]],
                             "actors_used": len({b["actor_index"] for e in m["slides"].values()
                                                 for b in e["batches"]})})
    finally:
        if not opts.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    base = rows[0]
    for r in rows:
        r["speedup"] = r["objects_per_s"] / base["objects_per_s"]
    header = ["model actors", "windows", "prompts", "stream wall s", "end-to-end s", "windows/s", "objects/s",
              "speedup", "actors busy (share of wall)", "actor s per window", "load avg before/after"]
    table = [[str(r["actors"]), str(r["windows"]), str(r["prompts"]), fmt(r["wall_s"]), fmt(r["end_to_end_s"]),
              fmt(r["windows_per_s"]), fmt(r["objects_per_s"]), f"**{r['speedup']:.2f}x**",
              pct(r["busy_share"]) + " (" + ", ".join(fmt(b) for b in r["actor_busy_s"]) + " s)",
              fmt(r["actor_s_per_window"]), " / ".join(f"{x:.1f}" for x in r["load_avg_1min"])] for r in rows]
    last = rows[-1]
    notes = [f"{opts.backbone} ({schedule.patch_px} px) on an embedded Ray with num_cpus={cpus}; each model actor "
             "runs torch on 1 thread (ExecutionConfig.cpus_per_actor=1), reads are separate Ray tasks; "
             f"{opts.scaling_windows} windows x {opts.scaling_density} prompts, 1 window per batch.",
             f"ceiling on this machine: a {2048 if opts.quick else 4096}^2 fp32 matmul runs "
             f"{fmt(ceiling['one_thread_flop_per_s'] / 1e9)} GFLOP/s on 1 thread and "
             f"{fmt(ceiling['all_threads_flop_per_s'] / 1e9)} on {cpus} threads ({ceiling['ratio']:.2f}x): that is "
             "the most a second single-thread actor can add here.",
             "objects/s = prompts segmented per second (random weights: empty masks count).",
             "actor s per window = busy model-actor seconds per window: it rises when the actors (and anything "
             "else on the machine, see the load average) compete for the cores, which caps the speedup."]
    heads = [headline(f"objects/s, {last['actors']} vs {base['actors']} model actors", last["speedup"], "x", None, None,
                      f"on {cpus} vCPUs whose {cpus}-thread matmul is {ceiling['ratio']:.2f}x the 1-thread one; "
                      f"actors busy {pct(last['busy_share'])} of wall")]
    return SuiteResult("scaling", "6. Scaling over model actors (embedded Ray)", header, table, rows, heads, notes,
                       config={"backbone": opts.backbone, "cpus": cpus, "windows": opts.scaling_windows,
                               "density": opts.scaling_density, "matmul_thread_scaling": ceiling}, seconds=total.s)
