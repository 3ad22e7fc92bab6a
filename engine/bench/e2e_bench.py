"""Suite ``e2e``: one slide end to end, the real ``wsisam-engine segment`` against the in-process
pipeline, on the same slide and prompts, in one run (optionally a cohort row for peak memory).

- Ray path: a subprocess of the CLI, ``python -m engine.cli segment SLIDE --prompts FILE --output
  DIR --no-progress`` with every other option at its default (embedded Ray, one model actor), its
  own Ray temp dir (``RAY_TMPDIR``). Its output lines are timestamped as they arrive; phases:
  process start -> Ray up (``run_manifest.json`` first written, right after ``ray.init``) ->
  actors ready (the driver's ``model actor ...`` line) -> first batch done -> last batch done
  (``finished_unix_s`` of the manifest's batch entries) -> process exit. The streaming phase runs
  from the first model actor ready to the last batch done (``totals.streaming_s``: the time the
  model could work); busy share = sum of ``totals.actor_busy_s`` / (actors x that). The commit of
  the last slide after its last batch is shown apart (the tail).
- In-process path: a fresh interpreter (``python -m engine.bench.e2e_bench SPEC``) that loads the
  same model file and runs :func:`engine.pipeline.segment_slide`; it reports its stage timings.
  Its OpenMP threads sleep when they wait (``OMP_WAIT_POLICY=PASSIVE``), as the model actors' do.
- Memory: every ~0.2 s (longer when a sample costs more than 1/20 of that, so sampling takes at
  most about 5% of a core) the PSS of the process and all its descendants (psutil) is summed
  (``Pss`` of ``/proc/PID/smaps_rollup``, the figure of psutil's ``memory_full_info().pss``); the
  peak is reported. In embedded mode Ray's GCS, raylet and workers are descendants of the driver;
  processes outside the tree whose command line names the run's Ray temp dir are counted as
  strays (should be 0).
- Cohort row (``--e2e-cohort 2,20``): copies of one small slide with the same prompts, through
  the CLI; peak summed PSS of each run and their ratio.

Slides are synthetic (0.5 µm/px, cached); prompts are noisy truth boxes (the evaluation's box
protocol). Model: the bundled demo model, or ``--backbone NAME``: that backbone with random
weights, saved as a model file in the work folder and given to the CLI as ``--checkpoint``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..distributed.actors import OMP_WAIT_ENV, OMP_WAIT_POLICY
from .common import BenchOptions, SuiteResult, Timer, cached_slide, fmt, headline, pct

STITCH_TARGET = 0.10  # label stitching <= 10% of model time (in-process)
FIRST_BATCH_TARGET_S = 20.0  # first batch done, from process start (demo model, an idle 2-core machine)
BUSY_TARGET = 0.80  # model busy share of the streaming phase, demo model (a --backbone model: BUSY_TARGET_BACKBONE)
BUSY_TARGET_BACKBONE = 0.90
OVERHEAD_TARGET = 1.3  # Ray wall after Ray up / in-process wall
COHORT_TARGET = 0.20  # peak PSS of the large vs the small cohort: within ±20%
SAMPLE_INTERVAL_S = 0.2  # or longer: a sample's cost x SAMPLER_CPU_SHARE_INV
SAMPLER_CPU_SHARE_INV = 20
_MIB = 2**20


# -------------------------------------------------------------------------------------------
# Processes: a command run with timestamped output and its process tree's memory sampled


@dataclass
class TreeRun:
    """One watched subprocess: exit status, seconds, timestamped output lines, memory."""

    rc: int
    start_unix_s: float
    wall_s: float
    lines: list[tuple[float, str]]  # (seconds since start, line)
    peak_pss_mib: float
    peak_processes: int
    samples: int
    process_names: list[str]
    strays: list[str]  # processes outside the tree that name the run's Ray temp dir
    sampler_cpu_s: float  # CPU seconds this (the bench's) process spent meanwhile, sampling mostly
    load_avg: tuple[float, float]  # 1-minute load average before and after
    peak_by_proc_mib: dict[str, float]  # each process's PSS in the peak sample
    manifest_s: float | None = None  # when the watched file first appeared (seconds since start)

    def first_line(self, fragment: str) -> float | None:
        return next((t for t, line in self.lines if fragment in line), None)

    def tail(self, n: int = 40) -> str:
        return "\n".join(line for _, line in self.lines[-n:])


class TreeSampler(threading.Thread):
    """Sums the PSS of a process and all its descendants every ``interval_s``; keeps the peak."""

    def __init__(self, pid: int, interval_s: float, ray_temp_dir: Path | None, watch: Path | None,
                 start_unix_s: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval_s, self.ray_temp_dir, self.watch = pid, interval_s, ray_temp_dir, watch
        self.start_unix_s = start_unix_s
        self.peak_bytes, self.peak_processes, self.samples = 0, 0, 0
        self.names: set[str] = set()
        self.strays: set[str] = set()
        self.watch_s: float | None = None
        self._labelled: dict[int, str] = {}
        self.peak_by_proc: dict[str, float] = {}
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def tree(self) -> list:
        import psutil

        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def run(self) -> None:
        import psutil

        while not self._halt.is_set():
            t0 = time.perf_counter()
            procs = self.tree()
            total = n = 0
            by_proc = {}
            for p in procs:
                try:
                    pss = _pss_bytes(p)
                    total += pss
                    n += 1
                    self._labelled[p.pid] = _proc_label(p)  # Ray workers retitle themselves (ray::IDLE, ...)
                    self.names.add(self._labelled[p.pid])
                    by_proc[p.pid] = pss
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, FileNotFoundError,
                        ProcessLookupError):
                    continue
            self.samples += 1
            if total > self.peak_bytes:
                self.peak_bytes, self.peak_processes = total, n
                self.peak_by_proc = {f"{self._labelled[pid]} ({pid})": b / _MIB for pid, b in by_proc.items()}
            if self.ray_temp_dir is not None and self.samples % 10 == 1:
                self._find_strays({p.pid for p in procs})
            if self.watch is not None and self.watch_s is None and self.watch.exists():
                self.watch_s = time.time() - self.start_unix_s
            # At most about 5% of a core: reading a big process's smaps_rollup takes the kernel a while
            # (a run with vit_tiny weights), and the sampler must not slow down what it measures.
            self._halt.wait(max(self.interval_s, SAMPLER_CPU_SHARE_INV * (time.perf_counter() - t0)))

    def _find_strays(self, tree_pids: set[int]) -> None:
        import psutil

        key = str(self.ray_temp_dir)
        for p in psutil.process_iter(["pid", "cmdline"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if key not in cmd or p.info["pid"] in tree_pids:
                continue
            try:  # started since the tree was listed?
                if self.pid in {q.pid for q in p.parents()}:
                    continue
            except psutil.NoSuchProcess:
                continue
            self.strays.add(f"{p.info['pid']} {cmd[:80]}")


def _pss_bytes(p) -> int:
    """Proportional set size: the ``Pss`` line of ``/proc/PID/smaps_rollup`` (the kernel sums it;
    psutil's ``memory_full_info().pss`` gives the same figure by parsing every mapping of
    ``/proc/PID/smaps``, which costs a core's fifth at 5 Hz for a dozen torch processes)."""
    try:
        with open(f"/proc/{p.pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except PermissionError:
        pass
    return p.memory_full_info().pss


def _proc_label(p) -> str:
    cmd = p.cmdline()
    if not cmd:
        return p.name()
    first = os.path.basename(cmd[0])
    if first.startswith("python") and len(cmd) > 1:
        first += " " + " ".join(os.path.basename(c) for c in cmd[1:3])
    return first[:60]


def run_tree(argv: list[str], env: dict, log_path: Path, ray_temp_dir: Path | None = None,
             watch: Path | None = None, interval_s: float = SAMPLE_INTERVAL_S) -> TreeRun:
    """Run ``argv`` (stdout and stderr merged, each line timestamped, copied to ``log_path``)
    while sampling its process tree. Ends the tree (by pid) if this process is interrupted."""
    import psutil

    me = psutil.Process()
    cpu0, load0 = sum(me.cpu_times()[:2]), os.getloadavg()[0]
    start = time.time()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
                            bufsize=1, errors="replace")
    sampler = TreeSampler(proc.pid, interval_s, ray_temp_dir, watch, start)
    sampler.start()
    lines: list[tuple[float, str]] = []
    try:
        with open(log_path, "w") as log:
            for line in proc.stdout:
                t = time.time() - start
                lines.append((t, line.rstrip("\n")))
                log.write(f"{t:8.2f} {line}")
                log.flush()
        rc = proc.wait()
    except BaseException:
        for p in reversed(sampler.tree()):
            try:
                p.kill()
            except Exception:  # noqa: BLE001 - gone already
                pass
        raise
    finally:
        wall = time.time() - start
        sampler.stop()
    return TreeRun(rc, start, wall, lines, sampler.peak_bytes / _MIB, sampler.peak_processes, sampler.samples,
                   sorted(sampler.names), sorted(sampler.strays), sum(me.cpu_times()[:2]) - cpu0,
                   (load0, os.getloadavg()[0]), sampler.peak_by_proc, sampler.watch_s)


def _env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.update(extra or {})
    return env


# -------------------------------------------------------------------------------------------
# The two paths


def run_cli_segment(slides: Path, prompts: Path, out: Path, model_file: Path | None,
                    work: Path) -> tuple[TreeRun, dict]:
    """The real ``segment`` command in a subprocess; returns the watched run and its manifest."""
    from ..distributed.manifest import read_manifest
    from ..output_folder import MANIFEST_NAME

    # Ray's socket paths (its temp dir + about 70 characters) must stay within 107 bytes.
    ray_tmp = work / "ray" if len(str(work / "ray")) <= 36 else Path(tempfile.mkdtemp(prefix="wsisam-ray-"))
    ray_tmp.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "engine.cli", "segment", str(slides), "--prompts", str(prompts),
            "--output", str(out), "--no-progress"]
    if model_file is not None:
        argv += ["--checkpoint", str(model_file)]
    try:
        run = run_tree(argv, _env({"RAY_TMPDIR": str(ray_tmp)}), work / "segment.log", ray_temp_dir=ray_tmp,
                       watch=out / MANIFEST_NAME)
    finally:
        if not ray_tmp.is_relative_to(work):
            shutil.rmtree(ray_tmp, ignore_errors=True)
    if run.rc != 0:
        raise RuntimeError(f"wsisam-engine segment failed (exit {run.rc}); log {work / 'segment.log'}:\n{run.tail()}")
    return run, read_manifest(out)


def ray_figures(run: TreeRun, manifest: dict) -> dict:
    """Phases, busy share and model seconds of one CLI run, from its manifest and timed output."""
    batches = [b for e in manifest["slides"].values() for b in e["batches"]]
    done = sorted(b["finished_unix_s"] - run.start_unix_s for b in batches if "finished_unix_s" in b)
    totals = manifest["totals"]
    busy = totals.get("actor_busy_s") or []
    n_actors = max(1, len(manifest.get("actors") or busy))
    stream_s = totals.get("streaming_s")
    ready_s = totals.get("first_actor_ready_s")
    tail_s = totals["wall_s"] - ready_s - stream_s if stream_s is not None and ready_s is not None else None
    writer_s = sum(e["seconds"].get("stitch", 0.0) for e in manifest["slides"].values())
    actors_s = run.first_line("Ray GPU ids")  # the driver says so as each model actor is ready: the first one
    return {
        "wall_s": run.wall_s, "ray_up_s": run.manifest_s, "actors_ready_s": actors_s,
        "first_batch_s": done[0] if done else None, "last_batch_s": done[-1] if done else None,
        "stream_s": stream_s, "tail_s": tail_s, "actor_busy_s": busy, "actors": n_actors,
        "first_wait_s": _first_wait(batches, run, actors_s),
        "busy_share": sum(busy) / (n_actors * stream_s) if busy and stream_s else None,
        "batches": len(batches), "model_s": sum(b["seconds"] for b in batches),
        "writer_s": writer_s, "objects": sum(e["objects"] for e in manifest["slides"].values()),
        "windows": sum(e["windows"] for e in manifest["slides"].values()),
        "peak_pss_mib": run.peak_pss_mib, "peak_processes": run.peak_processes, "samples": run.samples,
        "process_names": run.process_names, "strays": run.strays, "sampler_cpu_s": run.sampler_cpu_s,
        "load_avg": run.load_avg,
        "peak_by_process_mib": dict(sorted(run.peak_by_proc_mib.items(), key=lambda kv: -kv[1])),
    }


def _first_wait(batches: list[dict], run: TreeRun, ready_s: float | None) -> float | None:
    """Seconds the first ready model actor waited for its first batch: from the driver's "model
    actor ... ready" line to the model starting on a batch (both from the process start); the time
    the first patch pairs took to be read, beyond the model load."""
    starts = [b["started_unix_s"] for b in batches if b.get("started_unix_s")]
    if not starts or ready_s is None:
        return None
    return min(starts) - run.start_unix_s - ready_s


def _child(spec: dict) -> None:
    """The in-process path, in a fresh interpreter: load the model, ``segment_slide``, report."""
    t_import = time.perf_counter()
    import torch

    from ..distributed.model_spec import ModelSpec
    from ..pipeline import segment_slide
    from ..prompts import read_prompts
    from ..scheduler import ScheduleConfig
    from ..slides import open_slide

    imports_s = time.perf_counter() - t_import
    device = spec["device"] or ("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    model = ModelSpec(checkpoint=spec["model"]).validate()
    segmenter = model.segmenter(device)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with open_slide(spec["slide"]) as slide:
        prompts = read_prompts(spec["prompts"], slide_id=slide.slide_id)[slide.slide_id]
        res = segment_slide(slide, prompts, segmenter, spec["out"], ScheduleConfig(patch_px=model.patch_px()))
    run_s = time.perf_counter() - t0
    Path(spec["report"]).write_text(json.dumps({
        "imports_s": imports_s, "load_s": load_s, "run_s": run_s, "timings_s": res.timings_s,
        "encode_s": segmenter.timings["encode"], "decode_s": segmenter.timings["decode"], "device": device,
        "threads": torch.get_num_threads(), "prompts": res.prompts, "windows": res.windows, "objects": res.objects}))


def run_in_process(slide: Path, prompts: Path, out: Path, model_file: Path, device: str | None,
                   work: Path) -> tuple[TreeRun, dict]:
    spec = {"slide": str(slide), "prompts": str(prompts), "out": str(out), "model": str(model_file),
            "device": device, "report": str(work / "inprocess.json")}
    # OpenMP threads sleep when they wait, as in the model actors (actors.OMP_WAIT_ENV): spinning ones
    # make the in-process run many times slower whenever other work shares the cores.
    env = _env({OMP_WAIT_ENV: os.environ.get(OMP_WAIT_ENV, OMP_WAIT_POLICY)})
    run = run_tree([sys.executable, "-m", "engine.bench.e2e_bench", json.dumps(spec)], env, work / "inprocess.log")
    if run.rc != 0:
        raise RuntimeError(f"in-process child failed (exit {run.rc}):\n{run.tail()}")
    return run, json.loads(Path(spec["report"]).read_text())


def _loads(pair) -> str:
    return " / ".join(f"{x:.1f}" for x in pair)


def stage_split(r: dict) -> dict[str, float]:
    """The in-process run's seconds per stage (they add up to its segment_slide time)."""
    t = r["timings_s"]
    enc, dec = r["encode_s"], r["decode_s"]
    write = t["write"] - t["vectorise"]
    parts = {"plan": t["plan"], "read": t["read"], "encoder": enc, "decoder": dec,
             "segmenter other": t["segment"] - enc - dec, "stitch (label painting)": t["stitch"],
             "vectorise": t["vectorise"], "write (pyramid, parquet, geojson, summary)": write}
    parts["other (open slide, read prompts, ...)"] = r["run_s"] - sum(parts.values())
    return parts


# -------------------------------------------------------------------------------------------
# Inputs


@dataclass
class E2eInputs:
    slide: Path
    slide_id: str
    prompts: Path  # <slide_id>.geojson
    n_prompts: int
    side_px: int
    generate_s: float
    cached: bool
    extra: dict = field(default_factory=dict)


def make_inputs(opts: BenchOptions, name: str, side_px: int, n_objects: int, work: Path) -> E2eInputs:
    """A cached synthetic slide with ``n_objects`` truth objects and noisy box prompts from them."""
    from ..evaluation.protocols import BoxProtocol, SlideTarget
    from ..evaluation.truth import read_truth

    c = cached_slide(opts.cache_dir, name, side_px, opts.seed, require_truth=True, n_objects=n_objects,
                     tissue_fraction=0.75)
    target = SlideTarget(c.slide_id, side_px, side_px, 0.5, read_truth(c.truth_path))
    protocol = BoxProtocol()
    path = protocol.write(target, opts.seed, work / "prompts")
    n = len(protocol.make_prompts(target, opts.seed))
    return E2eInputs(c.path, c.slide_id, path, n, side_px, c.generate_s, c.cached)


def model_file(opts: BenchOptions, work: Path) -> tuple[Path, str]:
    """The demo model, or ``opts.e2e_backbone`` with random weights written to ``work``."""
    from ..distributed.model_spec import DEMO_MODEL

    if not opts.e2e_backbone:
        return DEMO_MODEL, "the bundled demo model"
    import wsisam

    from .common import build_model

    path = wsisam.save_wsisam(build_model(opts.e2e_backbone, opts.seed),
                              work / f"{opts.e2e_backbone}_random.safetensors")
    return path, f"{opts.e2e_backbone}, random weights ({path.name})"


def cohort_row(opts: BenchOptions, n: int, inputs: E2eInputs, model: Path | None, work: Path) -> dict:
    """``n`` copies of one small slide (same prompts) through the CLI; peak summed PSS."""
    slides, prompts = work / "slides", work / "prompts"
    for d in (slides, prompts):
        d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sid = f"cohort_{i:03d}"
        shutil.copyfile(inputs.slide, slides / f"{sid}.ome.tif")
        shutil.copyfile(inputs.prompts, prompts / f"{sid}.geojson")
    run, manifest = run_cli_segment(slides, prompts, work / "out", model, work)
    f = ray_figures(run, manifest)
    return {"slides": n, **{k: f[k] for k in ("wall_s", "stream_s", "busy_share", "peak_pss_mib", "peak_processes",
                                              "objects", "windows", "strays", "load_avg")}}


# -------------------------------------------------------------------------------------------


def run(opts: BenchOptions) -> SuiteResult:
    work = Path(opts.work_dir) / "e2e" if opts.work_dir else Path(tempfile.mkdtemp(prefix="wsisam-e2e-"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        with Timer() as total:
            model, model_text = model_file(opts, work)
            inputs = make_inputs(opts, "e2e", opts.e2e_side_px, opts.e2e_prompts, work)
            ray_run, manifest = run_cli_segment(inputs.slide, inputs.prompts, work / "ray_out",
                                                None if not opts.e2e_backbone else model, work)
            rf = ray_figures(ray_run, manifest)
            ip_run, ip = run_in_process(inputs.slide, inputs.prompts, work / "inprocess_out", model, opts.device,
                                        work)
            cohort = []
            if opts.e2e_cohort:
                small = make_inputs(opts, "e2e_cohort", opts.e2e_cohort_side_px, opts.e2e_cohort_prompts,
                                    work / "cohort")
                for n in opts.e2e_cohort:
                    cohort.append(cohort_row(opts, n, small, None if not opts.e2e_backbone else model,
                                             work / f"c{n}"))
    finally:
        if not opts.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    return result(opts, inputs, model_text, rf, ray_run, ip, ip_run, cohort, total.s)


def result(opts, inputs, model_text, rf, ray_run, ip, ip_run, cohort, seconds) -> SuiteResult:
    parts = stage_split(ip)
    model_s = ip["encode_s"] + ip["decode_s"]
    ip_wall = ip["load_s"] + ip["run_s"]  # model load + segment_slide (no interpreter imports)
    ray_after_up = rf["wall_s"] - rf["ray_up_s"] if rf["ray_up_s"] is not None else None
    stitch_share = parts["stitch (label painting)"] / model_s
    rows = [{"stage": k, "inprocess_s": v, "inprocess_share": v / ip["run_s"]} for k, v in parts.items()]
    ray_stage = {"encoder": "model actor: {} s in {} batches (encoder + decoder + segmenter, not split)",
                 "stitch (label painting)": "writer actor: {} s (painting + vectorise + write, not split)"}
    header = ["stage", "in-process s (share of segment_slide)", "Ray path"]
    table = []
    for r in rows:
        note = "not measured (Ray reader actors)" if r["stage"] == "read" else ""
        if r["stage"] == "encoder":
            note = ray_stage["encoder"].format(fmt(rf["model_s"]), rf["batches"])
        elif r["stage"] == "stitch (label painting)":
            note = ray_stage["stitch (label painting)"].format(fmt(rf["writer_s"]))
        table.append([r["stage"], f"{fmt(r['inprocess_s'])} ({pct(r['inprocess_share'])})", note])
    phases = [("process start -> Ray up (imports, input checks, ray.init)", rf["ray_up_s"]),
              ("-> model actor ready (actor start, model load)", rf["actors_ready_s"]),
              ("-> first batch done", rf["first_batch_s"]), ("-> last batch done", rf["last_batch_s"]),
              ("-> process exit (commit, ray.shutdown)", rf["wall_s"])]
    phase_text = "; ".join(f"{name} at {fmt(t) if t is not None else 'n/a'} s" for name, t in phases)
    ratio = ray_after_up / ip_wall if ray_after_up is not None else None
    made = "cached" if inputs.cached else f"generated in {fmt(inputs.generate_s)} s"
    notes = [f"slide {inputs.side_px} px square at 0.5 µm/px ({made}), {inputs.n_prompts} noisy box prompts; "
             f"model: {model_text}.",
             f"Ray path (`wsisam-engine segment SLIDE --prompts FILE --output DIR --no-progress`, embedded Ray, "
             f"{rf['actors']} actor): wall {fmt(rf['wall_s'])} s; {phase_text}. Machine: {os.cpu_count()} CPUs, "
             f"1-min load average {_loads(rf['load_avg'])} before/after the Ray run, {_loads(ip_run.load_avg)} "
             "the in-process one (other work on the machine slows both, Ray's many processes more).",
             f"Ray streaming phase (first model actor ready -> last batch done) {fmt(rf['stream_s'])} s, model "
             f"actor busy {', '.join(fmt(b) for b in rf['actor_busy_s'])}"
             f" s = {pct(rf['busy_share']) if rf['busy_share'] is not None else 'n/a'}; then the last commit "
             f"{fmt(rf['tail_s'])} s (the tail); once ready, the model actor waited {fmt(rf['first_wait_s'])} s for "
             f"its first batch's patch pairs; {rf['windows']} windows, "
             f"{rf['objects']} objects (in-process: {ip['windows']} windows, {ip['objects']} objects).",
             f"in-process (fresh interpreter, {ip['device']}, torch threads {ip['threads']}): process wall "
             f"{fmt(ip_run.wall_s)} s = imports {fmt(ip['imports_s'])} + model load {fmt(ip['load_s'])} + "
             f"segment_slide {fmt(ip['run_s'])} s (model {fmt(model_s)} s) + interpreter start/exit.",
             f"Ray overhead = (Ray wall - time to Ray up) / (in-process model load + segment_slide) = "
             f"{fmt(ray_after_up)} / {fmt(ip_wall)} s.",
             f"peak PSS summed over the process tree (sampled every {SAMPLE_INTERVAL_S} s): Ray run "
             f"{fmt(rf['peak_pss_mib'])} MiB over {rf['peak_processes']} processes ({rf['samples']} samples; "
             f"processes seen: {', '.join(rf['process_names'])}; strays outside the tree: {len(rf['strays'])}); "
             f"in-process {fmt(ip_run.peak_pss_mib)} MiB. Largest at the Ray peak: "
             + ", ".join(f"{k} {fmt(v)}" for k, v in list(rf["peak_by_process_mib"].items())[:6])
             + f" MiB. The sampling took {fmt(rf['sampler_cpu_s'])} CPU s during the Ray run "
             f"({pct(rf['sampler_cpu_s'] / rf['wall_s'])} of one core).",
             "Not measurable on the Ray path: read seconds (reader actors are not timed), the encoder/decoder split "
             "(the actor reports one figure per batch) and painting vs vectorise vs write in the writer actor."]
    busy_target = BUSY_TARGET_BACKBONE if opts.e2e_backbone else BUSY_TARGET
    first, busy = rf["first_batch_s"], rf["busy_share"]
    heads = [headline("Ray path: time to first batch (from process start)", first or float("nan"), "s",
                      f"<= {FIRST_BATCH_TARGET_S:.0f} s (demo model, idle)",
                      None if first is None or opts.e2e_backbone else first <= FIRST_BATCH_TARGET_S,
                      f"Ray up at {fmt(rf['ray_up_s'])} s, actor ready at {fmt(rf['actors_ready_s'])} s"),
             headline("Ray path: model busy share of streaming", 100 * (busy or float("nan")), "%",
                      f">= {pct(busy_target)}", None if busy is None else busy >= busy_target,
                      f"{fmt(sum(rf['actor_busy_s']))} of {fmt(rf['stream_s'])} s"),
             headline("Ray overhead (Ray wall after Ray up / in-process wall)", ratio or float("nan"), "x",
                      f"<= {OVERHEAD_TARGET}x", None if ratio is None else ratio <= OVERHEAD_TARGET,
                      f"Ray {fmt(rf['wall_s'])} s end to end, in-process {fmt(ip_run.wall_s)} s end to end"),
             headline("in-process label stitching / model time", 100 * stitch_share, "%", f"<= {pct(STITCH_TARGET)}",
                      stitch_share <= STITCH_TARGET, f"{fmt(parts['stitch (label painting)'])} s / {fmt(model_s)} s"),
             headline("peak PSS, Ray run (all processes)", rf["peak_pss_mib"], "MiB", None, None,
                      f"in-process {fmt(ip_run.peak_pss_mib)} MiB")]
    if cohort:
        a, b = cohort[0], cohort[-1]
        change = b["peak_pss_mib"] / a["peak_pss_mib"] - 1
        met = abs(change) <= COHORT_TARGET
        heads.append(headline(f"peak PSS, cohort of {b['slides']} vs {a['slides']} slides", 100 * change, "%",
                              f"within ±{pct(COHORT_TARGET)}", met,
                              f"{fmt(a['peak_pss_mib'])} -> {fmt(b['peak_pss_mib'])} MiB"))
        notes.append("cohort (copies of a " + f"{opts.e2e_cohort_side_px} px slide, {opts.e2e_cohort_prompts} "
                     "objects each): " + "; ".join(
                         f"{r['slides']} slides: wall {fmt(r['wall_s'])} s, stream {fmt(r['stream_s'])} s, busy "
                         f"{pct(r['busy_share']) if r['busy_share'] is not None else 'n/a'}, peak PSS "
                         f"{fmt(r['peak_pss_mib'])} MiB over {r['peak_processes']} processes" for r in cohort) + ".")
    config = {"model": model_text, "side_px": inputs.side_px, "prompts": inputs.n_prompts, "ray": rf,
              "inprocess": {**ip, "wall_s": ip_run.wall_s, "peak_pss_mib": ip_run.peak_pss_mib, "parts": parts,
                            "load_avg": ip_run.load_avg},
              "ray_overhead_ratio": ratio, "stitch_share_of_model": stitch_share, "cohort": cohort}
    return SuiteResult("e2e", "7. End to end: `segment` on Ray vs the in-process pipeline", header, table, rows,
                       heads, notes, config=config, seconds=seconds)


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
