"""Suite ``memory``: peak memory of the single-process pipeline for slides of growing size.

Each slide is square at 0.5 µm/px and mostly blank (5% tissue, a handful of objects), generated
once into the cache folder (the generation time is reported separately). Every slide gets the same
prompts: two clusters of ``memory_prompts / 2`` boxes, at a quarter and three quarters of the
slide's diagonal, so the label image spans the slide. Each run is a fresh subprocess
(``python -m engine.bench.memory_bench CHILD_SPEC``: build the model, open the slide,
``segment_slide``) that reports its own peak resident set, ``VmHWM`` from ``/proc/self/status``.
(Not ``ru_maxrss`` from ``wait4``/``getrusage``: on Linux ``exec`` carries the forking parent's
high-water mark into it, so a child of a big parent reports the parent's size.) The child also
resets the high-water mark after loading the model (``/proc/self/clear_refs``) to measure the
pipeline's own peak above the RSS it started from.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import (BenchOptions, SuiteResult, Timer, cached_slide, fmt, headline, pct, schedule_for, usable_l0_px)

TARGET = 0.20
BLANK = {"tissue_fraction": 0.05, "n_objects": 6, "n_large": 0}


def _status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` value in KiB (VmRSS, VmHWM); None where there is no procfs."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _child(spec: dict) -> None:
    """Runs in the subprocess: one slide through ``segment_slide``; writes a JSON report."""
    import wsisam

    from ..pipeline import segment_slide
    from ..segmenters import WsiSamSegmenter
    from ..slides import open_slide
    from .common import build_model, clustered_prompts

    schedule = schedule_for(spec["backbone"])
    segmenter = WsiSamSegmenter(wsisam.WsiSamPredictor(build_model(spec["backbone"], spec["seed"]),
                                                       device=spec["device"]))
    with open_slide(spec["slide"]) as slide:
        w, h = slide.dimensions_l0_px
        centres = [(0.25 * w, 0.25 * h), (0.75 * w, 0.75 * h)]
        prompts = clustered_prompts(slide.slide_id, centres, spec["prompts"] // 2, usable_l0_px(schedule), spec["seed"])
        load_hwm = _status_kib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start_rss = _status_kib("VmRSS")
        reset = _reset_hwm()
        t0 = time.perf_counter()
        res = segment_slide(slide, prompts, segmenter, spec["out"], schedule)
        dt = time.perf_counter() - t0
        run_hwm = _status_kib("VmHWM")
    Path(spec["report"]).write_text(json.dumps({
        "load_peak_kib": load_hwm, "start_rss_kib": start_rss,
        "run_peak_kib": run_hwm if reset else None,
        "peak_kib": max(load_hwm, run_hwm or 0),
        "seconds": dt, "prompts": res.prompts, "windows": res.windows, "objects": res.objects,
        "timings_s": res.timings_s}))


def run_child(spec: dict, log_dir: Path) -> dict:
    """Run the child in a fresh interpreter and return its report."""
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(log_dir / "child.out", "wb") as out, open(log_dir / "child.err", "wb") as err:
        proc = subprocess.run([sys.executable, "-m", "engine.bench.memory_bench", json.dumps(spec)],
                              stdout=out, stderr=err, env=env)
    if proc.returncode != 0:
        tail = (log_dir / "child.err").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"memory child for {spec['slide']} failed ({proc.returncode}):\n{tail}")
    return json.loads(Path(spec["report"]).read_text())


def run(opts: BenchOptions) -> SuiteResult:
    schedule = schedule_for(opts.backbone)
    work = Path(opts.work_dir) / "memory" if opts.work_dir else Path(tempfile.mkdtemp(prefix="wsisam-bench-mem-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        with Timer() as total:
            for side in opts.memory_sizes:
                slide = cached_slide(opts.cache_dir, "blank", side, opts.seed, **BLANK)
                d = work / f"s{side}"
                shutil.rmtree(d, ignore_errors=True)
                d.mkdir(parents=True)
                spec = {"backbone": opts.backbone, "seed": opts.seed, "device": opts.device, "slide": str(slide.path),
                        "prompts": opts.memory_prompts, "out": str(d / "out"), "report": str(d / "report.json")}
                r = run_child(spec, d)
                rows.append({"side_px": side, "side_mm": side * 0.5e-3, "generate_s": slide.generate_s,
                             "generated_this_run": not slide.cached, "file_mb": slide.file_mb,
                             "prompts": r["prompts"], "windows": r["windows"], "objects": r["objects"],
                             "run_s": r["seconds"], "load_peak_rss_mib": r["load_peak_kib"] / 1024,
                             "start_rss_mib": (r["start_rss_kib"] or 0) / 1024,
                             "pipeline_peak_rss_mib": None if r["run_peak_kib"] is None else r["run_peak_kib"] / 1024,
                             "peak_rss_mib": r["peak_kib"] / 1024, "timings_s": r["timings_s"]})
                p = rows[-1]
                p["pipeline_rise_mib"] = (None if p["pipeline_peak_rss_mib"] is None
                                          else p["pipeline_peak_rss_mib"] - p["start_rss_mib"])
    finally:
        if not opts.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    first, last = rows[0]["peak_rss_mib"], rows[-1]["peak_rss_mib"]
    change = last / first - 1
    spread = max(abs(r["peak_rss_mib"] / first - 1) for r in rows)
    header = ["slide (px, square)", "slide mm", "file MB", "generate s", "prompts", "windows", "run s",
              "RSS at pipeline start MiB", "pipeline rise MiB", "peak RSS MiB", "peak vs smallest"]
    table = [[f"{r['side_px']:,}", fmt(r["side_mm"]), fmt(r["file_mb"]),
              fmt(r["generate_s"]) + ("" if r["generated_this_run"] else " (cached)"), str(r["prompts"]),
              str(r["windows"]), fmt(r["run_s"]), fmt(r["start_rss_mib"]),
              "n/a" if r["pipeline_rise_mib"] is None else fmt(r["pipeline_rise_mib"]), fmt(r["peak_rss_mib"]),
              f"{r['peak_rss_mib'] / first - 1:+.1%}"] for r in rows]
    met = spread <= TARGET
    notes = [f"{opts.backbone} ({schedule.patch_px} px); {opts.memory_prompts} prompts on every slide "
             f"(two clusters); slides {BLANK['tissue_fraction']:.0%} tissue, JPEG tiles, 0.5 µm/px; cache "
             f"{opts.cache_dir}. 'generate s' is the one-time synthesis (not part of the run).",
             f"peak RSS of the largest vs the smallest slide: {change:+.1%} (largest deviation {pct(spread)}). "
             "Peak RSS = VmHWM of the child process over its life (imports, model, pipeline); pipeline rise = "
             "its peak during segment_slide above the RSS it started from."]
    heads = [headline(f"peak RSS, {opts.memory_sizes[-1]:,} px vs {opts.memory_sizes[0]:,} px slide", 100 * change,
                      "%", "within ±20%", met, f"{fmt(first)} -> {fmt(last)} MiB; largest deviation {pct(spread)}")]
    return SuiteResult("memory", "5. Peak memory vs slide size (same prompts)", header, table, rows, heads, notes,
                       config={"backbone": opts.backbone, "sizes": list(opts.memory_sizes),
                               "prompts": opts.memory_prompts, "blank": BLANK}, seconds=total.s)


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
