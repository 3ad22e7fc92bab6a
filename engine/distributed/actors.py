"""Thin Ray actors and tasks; the work itself lives in engine.pipeline and engine.segmenters."""
from __future__ import annotations

import importlib
import os
import socket
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import ray

from ..completion import BatchOutcome, CompletionLimits, settle
from ..pipeline import OutputConfig, SlidePlan, plan_slide, read_jobs
from ..records import ObjectMask, Prompt
from ..scheduler import ScheduleConfig, Window
from ..segmenters import WindowJob
from ..slides import Slide, SlideInfo
from .errors import DeviceError
from .model_spec import ModelSpec


@dataclass(frozen=True)
class WorkerIdentity:
    """Who ran something: for the run manifest."""

    actor_index: int
    pid: int
    host: str
    node_id: str
    gpu_ids: tuple[str, ...]
    device: str


@dataclass(frozen=True)
class BatchReport:
    slide_id: str
    batch_id: int
    window_ids: tuple[int, ...]
    objects: int
    seconds: float
    worker: WorkerIdentity
    outcome: BatchOutcome | None = None  # completion counts and prompts to redo (its objects list is empty)
    arrived_unix_s: float = 0.0  # its patch pairs were read and the actor took the call
    started_unix_s: float = 0.0  # the model started on it (after the batch before it on this actor)


class ModelActor:
    """Holds one loaded model. Created with ``num_gpus`` when the cluster has GPUs (Ray then sets
    CUDA_VISIBLE_DEVICES to the GPU it pinned), CPUs otherwise."""

    def __init__(self, spec: ModelSpec, actor_index: int, torch_threads: int) -> None:
        _injected_delay(SLOW_START_ENV, str(actor_index))
        # Set before torch loads its OpenMP runtime: threads waiting at the end of each op sleep
        # instead of spinning. The cores are shared with the readers, the writers and the driver (or
        # other jobs); each op then waits for a spinning thread the OS took off its core. Measured
        # on a busy 2-core machine, 2 threads: 8 batches of the demo model took 29 s spinning, 0.7 s
        # sleeping (1 thread: 0.68 s).
        os.environ.setdefault(OMP_WAIT_ENV, OMP_WAIT_POLICY)
        import torch

        gpu_ids = tuple(str(g) for g in ray.get_gpu_ids())
        host, node_id = socket.gethostname(), ray.get_runtime_context().get_node_id()
        where = f"on host {host} (Ray node {node_id}, pid {os.getpid()})"
        device = actor_device(f"model actor {actor_index} {where}", gpu_ids, spec.allow_cpu)
        name = f" ({torch.cuda.get_device_name()})" if device == "cuda" else ""
        print(f"model actor {actor_index}: {device}{name} {where}", flush=True)
        torch.set_num_threads(max(1, torch_threads))
        self.segmenter = spec.segmenter(device)
        self.identity = WorkerIdentity(actor_index, os.getpid(), host, node_id, gpu_ids, device)
        self._lock = threading.Lock()
        self.busy_s = 0.0

    def identify(self) -> WorkerIdentity:
        return self.identity

    def segment(self, jobs: list[WindowJob], batch_id: int, limits: CompletionLimits | None = None,
                previous: dict[int, ObjectMask] | None = None) -> tuple[list[ObjectMask], BatchReport]:
        """The batch's objects; with ``limits``, only final ones, settled here (``engine.completion``)
        so LR masks never leave the actor, and the report says which prompts to segment again
        (``previous``: the cut masks of prompts segmented again in this batch)."""
        arrived = time.time()
        _injected_fault(jobs)
        with self._lock:
            started = time.time()
            t0 = time.perf_counter()
            completing = limits is not None and limits.schedule.complete_cut_objects
            objects = self.segmenter.segment(jobs, lr_masks=completing)
            outcome = None
            if limits is not None:
                outcome = settle(objects, [j.window for j in jobs], {p.prompt_id: p for j in jobs for p in j.prompts},
                                 limits, previous)
                objects, outcome.objects = outcome.objects, []
            dt = time.perf_counter() - t0
            self.busy_s += dt
        window = jobs[0].window
        return objects, BatchReport(window.slide_id, batch_id, tuple(j.window.window_id for j in jobs),
                                    len(objects), dt, self.identity, outcome, arrived, started)

    def busy_seconds(self) -> float:
        return self.busy_s


def actor_device(who: str, gpu_ids: tuple[str, ...], allow_cpu: bool) -> str:
    """"cuda" when Ray gave this worker GPUs and torch sees CUDA, "cpu" when it gave none. GPUs that
    torch cannot see raise :class:`DeviceError`, or with ``allow_cpu`` give "cpu" and a warning."""
    import torch

    if not gpu_ids:
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    seen = (f"torch.cuda.is_available()=False, torch.cuda.device_count()={torch.cuda.device_count()}, "
            f"torch.version.cuda={torch.version.cuda}, torch {torch.__version__}, "
            f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}")
    if not allow_cpu:
        raise DeviceError(f"{who}: Ray gave it GPU(s) {', '.join(gpu_ids)} but torch sees no CUDA device "
                          f"({seen}). Check the NVIDIA driver on that node and that torch is a CUDA build, or pass "
                          "--allow-cpu (ModelSpec(allow_cpu=True)) to run on its CPU")
    print(f"warning: {who}: Ray gave it GPU(s) {', '.join(gpu_ids)} but torch sees no CUDA device ({seen}); "
          "running on the CPU (--allow-cpu)", file=sys.stderr, flush=True)
    return "cpu"


#: OpenMP's wait policy, set for model actors (unless set already): see ModelActor.
OMP_WAIT_ENV, OMP_WAIT_POLICY = "OMP_WAIT_POLICY", "PASSIVE"
#: Fault injection for the engine's own fault tests: a model actor given a batch of this slide
#: ends its process at once, as an out-of-memory kill would.
FAULT_ENV = "WSISAM_ENGINE_TEST_KILL_WORKER_ON_SLIDE"
#: For the same tests: "<seconds>:<slide id>" makes each batch of that slide (SLOW_ENV), or its
#: plan (SLOW_PLAN_ENV), take that long, so a run is reliably mid-cohort when the test acts.
SLOW_ENV = "WSISAM_ENGINE_TEST_SLOW_SLIDE"
SLOW_PLAN_ENV = "WSISAM_ENGINE_TEST_SLOW_PLAN"
#: "<seconds>:<actor index>": that model actor takes this much longer to load its model.
SLOW_START_ENV = "WSISAM_ENGINE_TEST_SLOW_ACTOR_START"


def _injected_delay(env: str, key: str) -> None:
    seconds, _, slow = os.environ.get(env, "").partition(":")
    if slow and key == slow:
        time.sleep(float(seconds))


def _injected_fault(jobs: list[WindowJob]) -> None:
    target = os.environ.get(FAULT_ENV)
    if target and jobs and jobs[0].window.slide_id == target:
        os._exit(137)
    if jobs:
        _injected_delay(SLOW_ENV, jobs[0].window.slide_id)


class SlideWriterActor:
    """Writes slides' outputs (label image, polygons, summary): each slide has exactly one writer,
    a :class:`SlideWriter` in one of these processes, and a process serves slide after slide, so
    no process starts per slide.

    Calls run in the order they were sent. If an ``add`` of a slide fails, that slide's
    ``commit`` refuses with the error, so a slide is never published with a batch missing.
    """

    def __init__(self) -> None:
        # Imported now, while the model actors load, not at the first add. Not the slide reader's
        # stack (tiatoolbox, torch): a writer never opens a slide, its QC thumbnail comes from a reader.
        from ..slide_writer import SlideWriter  # the stitching stack: the other actors do without it

        self._slide_writer = SlideWriter
        self.writers: dict = {}  # slide id -> SlideWriter
        self.seconds: dict[str, float] = {}
        self.errors: dict[str, BaseException] = {}

    def open(self, info: SlideInfo, output_dir: str, label_mpp: float, output: OutputConfig) -> None:
        self.seconds[info.slide_id] = 0.0
        try:
            self.writers[info.slide_id] = self._slide_writer(info, output_dir, label_mpp, output)
        except BaseException as exc:  # the slide's next call says so
            self.errors[info.slide_id] = exc

    def _writer(self, slide_id: str):
        if slide_id in self.errors:
            raise self.errors[slide_id]
        if slide_id not in self.writers:
            raise RuntimeError(f"slide {slide_id} is not open in writer process {os.getpid()} (the process that "
                               "had it died)")
        return self.writers[slide_id]

    def add(self, slide_id: str, objects: list[ObjectMask]) -> int:
        t0 = time.perf_counter()
        try:
            writer = self._writer(slide_id)
            writer.add_many(objects)
        except BaseException as exc:
            self.errors.setdefault(slide_id, exc)
            raise
        finally:
            self.seconds[slide_id] = self.seconds.get(slide_id, 0.0) + time.perf_counter() - t0
        return len(objects)

    def commit(self, slide_id: str, summary: dict, prompts: list[Prompt], thumbnail: np.ndarray | None = None) -> float:
        """Publish the slide (``thumbnail``: its QC thumbnail, from :meth:`SlideReaderActor.thumbnail`);
        returns the seconds its writer worked."""
        if slide_id in self.errors:
            self.abort(slide_id)
            raise RuntimeError(f"not published: opening or adding a batch failed earlier: "
                               f"{self.errors.pop(slide_id)!r}")
        t0 = time.perf_counter()
        try:
            self._writer(slide_id).commit(summary, prompts, thumbnail)
        finally:
            self.writers.pop(slide_id, None)
        return self.seconds.pop(slide_id, 0.0) + time.perf_counter() - t0

    def abort(self, slide_id: str) -> None:
        writer = self.writers.pop(slide_id, None)
        self.seconds.pop(slide_id, None)
        self.errors.pop(slide_id, None)
        if writer is not None:
            writer.abort()


class SlideReaderActor:
    """Plans slides and reads patch pairs, the process kept (no worker started per task: Ray would
    start and stop task workers, each importing the stack again). Started with two threads, so a
    slow plan (a detector) does not hold up reads.

    It imports the slide reader's stack when it starts (seconds: tiatoolbox imports torch), so that
    happens while the model actors load, not on the first batch; and each thread keeps its last
    slides open (:data:`OPEN_SLIDES`) instead of opening the slide for every batch.
    """

    def __init__(self) -> None:
        importlib.import_module(SLIDE_READER_MODULE)

        self._local = threading.local()

    def _slide(self, info: SlideInfo) -> Slide:
        """This thread's open handle on the slide (least recently used ones closed)."""
        cache = self._local.__dict__.setdefault("slides", OrderedDict())
        slide = cache.pop(info, None) or info.open()
        cache[info] = slide
        while len(cache) > OPEN_SLIDES:
            cache.popitem(last=False)[1].close()
        return slide

    def plan(self, info: SlideInfo, prompts: list[Prompt] | None, detector, schedule: ScheduleConfig) -> SlidePlan:
        """Prompts (given, or from the detector) -> validated prompts and windows."""
        _injected_delay(SLOW_PLAN_ENV, info.slide_id)
        slide = self._slide(info)
        if prompts is None:
            prompts = detector.detect(slide)
        return plan_slide(slide, prompts, schedule)

    def ready(self) -> bool:
        """Answers once the process has started (its stack imported): the driver stops reading then."""
        return True

    def read(self, info: SlideInfo, prompts_by_id: dict[int, Prompt], windows: list[Window]) -> list[WindowJob]:
        """Read the patch pairs of a batch of windows (``prompts_by_id``: the windows' prompts)."""
        return list(read_jobs(self._slide(info), prompts_by_id, windows))

    def thumbnail(self, info: SlideInfo) -> np.ndarray:
        """The slide's QC thumbnail, for its writer's ``qc.png`` (writers never open slides)."""
        from ..slides.thumbnail import qc_thumbnail

        return qc_thumbnail(self._slide(info))


#: What :class:`engine.slides.Slide` opens files with: seconds to import (it imports torch), so
#: reader processes import it when they start.
SLIDE_READER_MODULE = "tiatoolbox.wsicore.wsireader"
#: Slides each reader thread keeps open (the slides being planned and read are a few at a time).
OPEN_SLIDES = 2
