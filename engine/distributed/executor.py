"""The streaming driver: slides -> plans -> window batches -> model actors -> slide writers.

- Windows are cut into batches per slide and level (``windows_per_batch``); a batch is the unit
  of reading, of one ``set_patch_pairs`` encoder call and of retry. Batch composition depends
  only on the inputs, never on the number of actors, so outputs are identical with 1 or N actors.
- At most ``max_in_flight`` batches are read or segmented at once (default 2 per actor), so
  memory stays flat for a cohort of any size.
- Model actors restart when their process dies and their calls are retried
  (``max_restarts=-1``, ``max_task_retries=-1``); a batch's objects reach the slide's writer only
  once, from the call that completed, so a killed actor loses and duplicates nothing.
- A slide's outputs are published whole by its writer (``.partial`` folder renamed); a slide whose
  output folder already has its summary is skipped untouched on a rerun.
"""
from __future__ import annotations

import datetime as dt
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ray
from tqdm.auto import tqdm

from ..pipeline import SUMMARY_NAME, OutputConfig, SlidePlan, SlideResult, batched, by_level, summary_dict
from ..records import Prompt
from ..scheduler import ScheduleConfig, schedule_stats
from ..slides import SlideInfo
from .actors import BatchReport, ModelActor, SlideWriterActor, plan_task, read_task
from .cluster import ClusterInfo
from .manifest import RunManifest, SlideEntry
from .model_spec import ModelSpec

_plan_remote = ray.remote(num_cpus=0.25)(plan_task)
_read_remote = ray.remote(num_cpus=0.25)(read_task)


@dataclass(frozen=True)
class ExecutionConfig:
    actors: int | None = None  # default: one per GPU, else 1
    gpus_per_actor: float = 1.0
    cpus_per_actor: float = 1.0
    windows_per_batch: int = 4
    max_in_flight: int | None = None  # batches being read or segmented; default 2 per actor
    progress: bool = True


@dataclass
class _SlideState:
    info: SlideInfo
    plan: SlidePlan
    writer: "ray.actor.ActorHandle"
    entry: SlideEntry
    batches_left: int
    add_refs: list = field(default_factory=list)
    t0: float = 0.0


def _actor_count(cfg: ExecutionConfig, cluster: ClusterInfo) -> int:
    if cfg.actors is not None:
        if cfg.actors < 1:
            raise ValueError(f"actors must be >= 1, got {cfg.actors}")
        return cfg.actors
    return max(1, int(cluster.num_gpus / cfg.gpus_per_actor)) if cluster.num_gpus else 1


def start_model_actors(spec: ModelSpec, cfg: ExecutionConfig, cluster: ClusterInfo) -> list:
    n = _actor_count(cfg, cluster)
    use_gpu = cluster.num_gpus > 0
    # Model actors together claim at most half the cluster's CPUs: the rest reads patches and
    # writes outputs. Actors that claimed every CPU would starve those tasks (a deadlock).
    cpus = min(cfg.cpus_per_actor, max(0.1, cluster.num_cpus / 2 / n))
    opts = dict(num_cpus=cpus, num_gpus=cfg.gpus_per_actor if use_gpu else 0,
                max_restarts=-1, max_task_retries=-1, max_concurrency=2)
    remote = ray.remote(ModelActor)
    threads = max(1, int(cfg.cpus_per_actor))
    return [remote.options(**opts).remote(spec, i, threads) for i in range(n)]


def run_cohort(slides: list[SlideInfo], prompts: dict[str, list[Prompt]] | None, detector, spec: ModelSpec,
               output_dir: Path, schedule: ScheduleConfig, output: OutputConfig, cfg: ExecutionConfig,
               cluster: ClusterInfo, run_config: dict) -> tuple[list[SlideResult], RunManifest]:
    manifest = RunManifest(run_id=uuid.uuid4().hex[:12], started=_now(), config=run_config,
                           model_sha256=spec.checksums(), cluster=asdict(cluster))
    for s in slides:
        manifest.slides[s.slide_id] = SlideEntry(s.slide_id, s.path)
    todo = []
    for s in slides:
        if (output_dir / s.slide_id / SUMMARY_NAME).exists():
            manifest.slides[s.slide_id].status = "skipped"
        else:
            todo.append(s)
    manifest.write(output_dir)
    results: dict[str, SlideResult] = {}
    if todo:
        actors = start_model_actors(spec, cfg, cluster)
        manifest.actors = [asdict(w) for w in ray.get([a.identify.remote() for a in actors])]
        manifest.write(output_dir)
        try:
            _stream(todo, prompts, detector, actors, output_dir, schedule, output, cfg, manifest, results)
        finally:
            busy = ray.get([a.busy_seconds.remote() for a in actors])
            manifest.totals["actor_busy_s"] = busy
            for a in actors:
                ray.kill(a)
    manifest.finished = _now()
    manifest.write(output_dir)
    ordered = []
    for s in slides:
        if s.slide_id in results:
            ordered.append(results[s.slide_id])
        elif manifest.slides[s.slide_id].status == "skipped":
            ordered.append(SlideResult(s.slide_id, str(output_dir / s.slide_id), status="skipped"))
    return ordered, manifest


def _stream(todo, prompts, detector, actors, output_dir, schedule, output, cfg, manifest, results) -> None:
    label_mpp = output.label_mpp or schedule.hr_mpp
    max_in_flight = cfg.max_in_flight or 2 * len(actors)
    plan_refs = deque(_plan_remote.remote(
        s, None if prompts is None else prompts.get(s.slide_id, []), detector, schedule) for s in todo)
    slide_queue = deque(todo)
    bars = _Bars(len(todo), cfg.progress)
    states: dict[str, _SlideState] = {}
    batch_queue: deque = deque()  # (slide_id, batch_id, windows)
    in_flight: dict = {}  # report ref -> (slide_id, objects ref)
    load = [0] * len(actors)
    actor_of: dict = {}
    t_start = time.perf_counter()

    def open_next_slide() -> None:
        info = slide_queue.popleft()
        plan: SlidePlan = ray.get(plan_refs.popleft())
        entry = manifest.slides[info.slide_id]
        entry.prompts, entry.windows = len(plan.prompts), len(plan.windows)
        entry.encoder_passes = schedule_stats(plan.windows).encoder_passes
        entry.prompts_dropped_outside = plan.prompts_dropped_outside
        writer = ray.remote(SlideWriterActor).options(num_cpus=0.25).remote(info, str(output_dir), label_mpp, output)
        batches = [b for level in by_level(plan.windows) for b in batched(level, cfg.windows_per_batch)]
        states[info.slide_id] = _SlideState(info, plan, writer, entry, len(batches), t0=time.perf_counter())
        for i, b in enumerate(batches):
            batch_queue.append((info.slide_id, i, b))
        bars.windows.total = (bars.windows.total or 0) + len(plan.windows)
        if not batches:
            finish_slide(info.slide_id)

    def finish_slide(slide_id: str) -> None:
        st = states.pop(slide_id)
        ray.get(st.add_refs)
        res = SlideResult(slide_id, str(output_dir / slide_id), prompts=st.entry.prompts,
                          objects=st.entry.objects, empty_masks=st.entry.prompts - st.entry.objects,
                          windows=st.entry.windows, encoder_passes=st.entry.encoder_passes,
                          prompts_dropped_outside=st.entry.prompts_dropped_outside)
        res.timings_s = {"wall": time.perf_counter() - st.t0,
                         "segment": sum(b["seconds"] for b in st.entry.batches)}
        summary = summary_dict(res, st.info, manifest.config.get("schedule", {}), manifest.config.get("output", {}),
                                manifest.config.get("segmenter", ""))
        res.timings_s["stitch"] = ray.get(st.writer.commit.remote(summary))
        ray.kill(st.writer)
        st.entry.status = "done"
        st.entry.seconds = res.timings_s
        results[slide_id] = res
        manifest.write(output_dir)
        bars.slides.update(1)

    try:
        while slide_queue or batch_queue or in_flight or states:
            # Keep one slide ahead planned so the actors never wait for a plan.
            while slide_queue and (len(batch_queue) < max_in_flight or not states):
                open_next_slide()
            while batch_queue and len(in_flight) < max_in_flight:
                slide_id, batch_id, windows = batch_queue.popleft()
                st = states[slide_id]
                ids = {i for w in windows for i in w.prompt_ids}
                needed = {p.prompt_id: p for p in st.plan.prompts if p.prompt_id in ids}
                jobs = _read_remote.remote(st.info, needed, windows)
                k = min(range(len(actors)), key=lambda a: (load[a], a))
                objects_ref, report_ref = actors[k].segment.options(num_returns=2).remote(jobs, batch_id)
                load[k] += 1
                actor_of[report_ref] = k
                in_flight[report_ref] = (slide_id, objects_ref)
            if not in_flight:
                continue
            done, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in done:
                slide_id, objects_ref = in_flight.pop(ref)
                load[actor_of.pop(ref)] -= 1
                report: BatchReport = ray.get(ref)
                st = states[slide_id]
                st.add_refs.append(st.writer.add.remote(objects_ref))
                st.entry.objects += report.objects
                st.entry.windows_computed += len(report.window_ids)
                st.entry.batches.append({"batch_id": report.batch_id, "windows": list(report.window_ids),
                                         "objects": report.objects, "seconds": report.seconds,
                                         **asdict(report.worker)})
                st.batches_left -= 1
                bars.windows.update(len(report.window_ids))
                bars.objects.update(report.objects)
                if st.batches_left == 0:
                    finish_slide(slide_id)
    except BaseException as exc:
        for slide_id, st in states.items():
            st.entry.status, st.entry.error = "failed", f"{type(exc).__name__}: {exc}"
            try:
                ray.get(st.writer.abort.remote())
            finally:
                ray.kill(st.writer)
        manifest.write(output_dir)
        raise
    finally:
        bars.close()
    manifest.totals["wall_s"] = time.perf_counter() - t_start


class _Bars:
    def __init__(self, n_slides: int, enabled: bool) -> None:
        self.slides = tqdm(total=n_slides, desc="slides", unit="slide", position=0, disable=not enabled)
        self.windows = tqdm(total=0, desc="windows", unit="win", position=1, disable=not enabled)
        self.objects = tqdm(desc="objects", unit="obj", position=2, disable=not enabled)

    def close(self) -> None:
        for b in (self.slides, self.windows, self.objects):
            b.close()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
