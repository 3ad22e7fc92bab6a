"""Suite ``capacity``: the engine's CPU per window and per object outside the model, at 1024 px.

The model is replaced by a bench instrument (:mod:`engine.bench.instant_model`: masks drawn from
the prompts in no time), so what is measured is everything but the model: reading, completion,
painting, polygons, writing. Inputs: the generated 40x slides of ``bench read`` (2x and 4x pyramid
steps) with two kinds of prompts: gland-sized boxes (60-250 µm) and nucleus-sized boxes (5-10 µm,
as a nucleus detector gives).

- *In process* (``engine.pipeline.segment_slide``, the stage functions the Ray actors call): CPU
  per stage. The per-window stages (read, completion, painting, polygons) of the two prompt sets
  give CPU = a x windows + b x objects, solved for a (ms per window) and b (ms per object); plan
  and writing are per slide. The instrument's own CPU is taken out.
- *On Ray* (``engine.segment_slides`` with the instrument, embedded Ray, one reader per model
  actor; a cohort of copies of the 2x slide with the gland prompts): windows/s and objects/s over
  the streaming phase (first model actor ready to last batch done), with 1 and 2 actors.
- *Cores per GPU*: the CPU per window outside the model times the window pairs per second a GPU
  runs (:data:`GPU_PAIRS_PER_S`: estimates with their sources, until ``bench model`` has run on a GPU).
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import BenchOptions, SuiteResult, fmt, headline
from .read_bench import SCAN_MPP, scan40x_slide

#: Window pairs per second one GPU's model part runs (1024 px HR + LR, decoders included):
#: estimates, with where they come from.
GPU_PAIRS_PER_S = {
    "vit_tiny": (50.0, "estimate: MobileSAM's TinyViT encoder takes about 8 ms per 1024 px image on one GPU "
                       "(its authors' figure); two images per pair plus the decoders, about 20 ms"),
    "vit_b": (25.0, "estimate: SAM's ViT-H encoder takes about 0.15 s per 1024 px image on an A100 (the SAM "
                    "paper's figure) and ViT-B about a sixth of ViT-H's FLOPs, so about 25 ms per image there and "
                    "less with bf16 on an H100; two images per pair plus the decoders, about 40 ms"),
}
WINDOW_TARGET_MS = 40.0  # issue 19: CPU outside the model per window ...
OBJECT_TARGET_MS = 1.0  # ... plus per nucleus-sized object
GLAND_UM = (60.0, 250.0)
NUCLEUS_UM = (5.0, 10.0)


def box_prompts(slide_id: str, side_px: int, n: int, size_um: tuple[float, float], seed: int):
    """``n`` boxes of sides ``size_um`` spread uniformly over a ``side_px`` square (level-0 px at
    the 40x pixel size)."""
    from ..records import Prompt

    rng = np.random.default_rng([seed, n])
    wh = rng.uniform(*size_um, (n, 2)) / SCAN_MPP
    xy = rng.uniform(0, 1, (n, 2)) * (side_px - wh)
    return [Prompt(slide_id, i, box_l0_px=(float(x), float(y), float(x + w), float(y + h)))
            for i, ((x, y), (w, h)) in enumerate(zip(xy, wh))]


def transfer_ms_per_window(slide_path: Path, prompts, windows_per_batch: int = 4) -> float:
    """CPU of pickling a batch of read windows and loading it back (what crossing processes costs
    at most: Ray moves the arrays through shared memory, without the copies pickling makes)."""
    from ..pipeline import plan_slide, read_jobs
    from ..scheduler import ScheduleConfig
    from ..slides import open_slide

    with open_slide(slide_path) as slide:
        plan = plan_slide(slide, prompts, ScheduleConfig())
        jobs = list(read_jobs(slide, plan.prompts_by_id(), plan.windows[:windows_per_batch]))
    t = time.process_time()
    for _ in range(3):
        buffers: list = []
        data = pickle.dumps(jobs, protocol=5, buffer_callback=buffers.append)
        pickle.loads(data, buffers=[b.raw().tobytes() for b in buffers])
    return (time.process_time() - t) / 3 / len(jobs) * 1e3


def in_process(slide_path: Path, prompts, work: Path) -> dict:
    """One in-process run: CPU seconds, windows, objects, and each stage's seconds."""
    from ..pipeline import segment_slide
    from ..scheduler import ScheduleConfig
    from ..slides import open_slide
    from ..slides.tiles import TILE_CACHE
    from .instant_model import InstantSegmenter

    TILE_CACHE.clear()
    seg = InstantSegmenter(1024)
    out = work / f"inproc_{len(prompts)}"
    with open_slide(slide_path) as slide:
        wall0 = time.perf_counter()
        res = segment_slide(slide, prompts, seg, out, ScheduleConfig(), clock=time.process_time)
        wall = time.perf_counter() - wall0
    shutil.rmtree(out, ignore_errors=True)
    t = res.timings_s
    per_window = {"read": t["read"], "completion and glue": t["segment"] - seg.cpu_s,
                  "painting": t["stitch_labels"], "polygons": t["vectorise"]}
    per_slide = {"plan": t["plan"], "writing and commit": t["write"] - t["vectorise"]}
    return {"cpu_s": sum(per_window.values()), "wall_s": wall, "instrument_cpu_s": seg.cpu_s,
            "windows": res.windows, "objects": res.objects, "stages_s": per_window, "slide_stages_s": per_slide}


def cohort(slide_path: Path, slide_id: str, prompts, n: int, work: Path) -> dict[Path, list]:
    """``n`` copies of the slide (real copies: the tile cache keys files by inode), each with the
    prompts: a cohort with ``n`` times the windows."""
    from ..records import Prompt

    folder = work / "cohort"
    folder.mkdir(exist_ok=True)
    out = {}
    for k in range(n):
        path = folder / f"{slide_id}_{k}.ome.tif"
        if not path.exists():
            shutil.copyfile(slide_path, path)
        out[path] = [Prompt(f"{slide_id}_{k}", p.prompt_id, box_l0_px=p.box_l0_px) for p in prompts]
    return out


def on_ray(slides: dict[Path, list], work: Path, actors: int) -> dict:
    """The real segment path on an embedded Ray with the instrument: rates over the streaming phase."""
    from .. import api
    from ..distributed.executor import ExecutionConfig
    from .instant_model import InstantModelSpec

    out = work / f"ray_{actors}"
    t = time.perf_counter()
    res = api.segment_slides(list(slides), prompts={ps[0].slide_id: ps for ps in slides.values()}, output_dir=out,
                             model=InstantModelSpec(), execution=ExecutionConfig(actors=actors, progress=False))
    wall = time.perf_counter() - t
    manifest = json.loads((out / "run_manifest.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    failed = [r for r in res if r.status != "done"]
    if failed:
        raise RuntimeError(f"bench capacity: the Ray run failed: {failed[0].error}")
    streaming = max(float(manifest["totals"].get("streaming_s") or 0.0), 1e-6)
    windows, objects = sum(r.windows for r in res), sum(r.objects for r in res)
    return {"actors": actors, "slides": len(res), "windows": windows, "objects": objects, "streaming_s": streaming,
            "wall_s": wall, "windows_per_s": windows / streaming, "objects_per_s": objects / streaming}


def per_window_and_object(a: dict, b: dict) -> tuple[float, float]:
    """(ms per window, ms per object) solving cpu = x * windows + y * objects for two runs."""
    m = np.array([[a["windows"], a["objects"]], [b["windows"], b["objects"]]], dtype=np.float64)
    x, y = np.linalg.solve(m, np.array([a["cpu_s"], b["cpu_s"]]) * 1e3)
    return float(x), float(y)


def run(opts: BenchOptions) -> SuiteResult:
    t0 = time.perf_counter()
    side = opts.read_side_px
    work = Path(tempfile.mkdtemp(prefix="wsisam-capacity-", dir=opts.work_dir))
    rows, table, heads, notes = [], [], [], []
    try:
        for step in (2, 4):
            cached = scan40x_slide(opts, step)
            glands = box_prompts(cached.slide_id, side, opts.capacity_glands, GLAND_UM, opts.seed)
            nuclei = box_prompts(cached.slide_id, side, opts.capacity_nuclei, NUCLEUS_UM, opts.seed)
            g, n = in_process(cached.path, glands, work), in_process(cached.path, nuclei, work)
            window_ms, object_ms = per_window_and_object(g, n)
            transfer = transfer_ms_per_window(cached.path, glands)
            row = {"level_step": step, "glands": g, "nuclei": n, "cpu_ms_per_window": window_ms,
                   "cpu_ms_per_object": object_ms, "transfer_ms_per_window": transfer}
            for name, r in (("glands", g), ("nuclei", n)):
                per_w = {k: v / r["windows"] * 1e3 for k, v in r["stages_s"].items()}
                table.append([f"{step}x", name, str(r["windows"]), str(r["objects"]),
                              fmt(r["cpu_s"] / r["windows"] * 1e3), fmt(r["cpu_s"] / max(1, r["objects"]) * 1e3),
                              *(fmt(v) for v in per_w.values()),
                              " / ".join(fmt(v * 1e3) for v in r["slide_stages_s"].values())])
            if step == 2:
                slides = cohort(cached.path, cached.slide_id, glands, opts.capacity_slides, work)
                row["ray"] = [on_ray(slides, work, k) for k in (1, 2)]
                heads.append(headline("CPU outside the model per 1024 px window (2x pyramid)", window_ms, "ms",
                                      f"<= {WINDOW_TARGET_MS:g} ms", window_ms <= WINDOW_TARGET_MS,
                                      f"+ {fmt(object_ms)} ms per object"))
                heads.append(headline("CPU outside the model per nucleus-sized object", object_ms, "ms",
                                      f"<= {OBJECT_TARGET_MS:g} ms", object_ms <= OBJECT_TARGET_MS))
                one, two = row["ray"]
                heads.append(headline("windows/s on Ray, 2 vs 1 actors (and readers)",
                                      two["windows_per_s"] / one["windows_per_s"], "x", None, None,
                                      f"{fmt(one['windows_per_s'])} -> {fmt(two['windows_per_s'])} windows/s"))
                # per window: its own stages, moving it between processes, and its share of the per-slide work
                slide_ms = sum(g["slide_stages_s"].values()) * 1e3 / g["windows"]
                row["cpu_ms_per_window_all_in"] = window_ms + transfer + slide_ms
                for model, (rate, source) in GPU_PAIRS_PER_S.items():
                    cores = row["cpu_ms_per_window_all_in"] / 1e3 * rate
                    heads.append(headline(f"cores per GPU implied, {model} (glands)", cores, "cores", None, None,
                                          f"{rate:g} pairs/s per GPU x {fmt(row['cpu_ms_per_window_all_in'])} ms "
                                          "per window (transfer and per-slide work included)"))
                    notes.append(f"{model}: {rate:g} window pairs/s per GPU, {source}.")
            rows.append(row)
        ray_rows = rows[0]["ray"]
        notes.insert(0, "On Ray (2x pyramid, glands): " + "; ".join(
            f"{r['actors']} actor(s), {r['slides']} slides, {r['windows']} windows, {r['objects']} objects: "
            f"{fmt(r['windows_per_s'])} "
            f"windows/s, {fmt(r['objects_per_s'])} objects/s over {fmt(r['streaming_s'])} s streaming "
            f"({fmt(r['wall_s'])} s in all)" for r in ray_rows) + ".")
        notes.insert(1, f"Per window and per object (2x / 4x pyramid): {fmt(rows[0]['cpu_ms_per_window'])} / "
                        f"{fmt(rows[1]['cpu_ms_per_window'])} ms per window, {fmt(rows[0]['cpu_ms_per_object'])} / "
                        f"{fmt(rows[1]['cpu_ms_per_object'])} ms per object, from the two prompt sets together; "
                        f"moving a batch between processes (pickled and loaded back, an upper bound): "
                        f"{fmt(rows[0]['transfer_ms_per_window'])} ms per window.")
        notes.append("The model is a bench instrument (instant-bench-instrument: an ellipse per box); its own CPU "
                     "is left out. All columns are CPU time of the in-process run (time.process_time); per slide: "
                     "planning, and writing and committing the outputs (label pyramid, GeoParquet, GeoJSON, QC).")
        notes.append(f"Load average when done: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs.")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    stage_names = list(rows[0]["glands"]["stages_s"])
    return SuiteResult(
        suite="capacity", title="Capacity without the model (bench instrument in place of the model), 1024 px windows",
        header=["pyramid", "prompts", "windows", "objects", "CPU ms / window", "CPU ms / object",
                *[f"{s} ms / window" for s in stage_names], "per slide: plan / writing ms"],
        table=table, rows=rows, headline=heads, notes=notes, seconds=time.perf_counter() - t0)
