"""One slide, in one process: prompts -> windows -> patch pairs -> masks -> stitched outputs.

The stages are separate functions over plain records so that an executor (this module's
:func:`segment_slide`, or the Ray executor) composes them:

    plan_slide()      prompts (file or detector) -> validated prompts -> windows
    read_jobs()       windows -> WindowJob (pixels read from the slide)
    segmenter         WindowJob batch -> ObjectMask records
    SlideWriter       ObjectMask records -> labels.ome.zarr + objects.parquet + objects.geojson
                      (+ prompts.geojson, summary.json); polygons are traced from the label image
                      (``engine.slide_writer``)

Outputs of a slide appear whole or not at all: everything is written into
``<output_dir>/.<slide_id>.partial/`` and renamed to ``<output_dir>/<slide_id>/`` at the end.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from .completion import BatchOutcome, CompletionLimits, previous_masks, redo_windows, settle
from .output_folder import slide_dir
from .records import ObjectMask, Prompt
from .scheduler import ScheduleConfig, Window, schedule_stats, schedule_windows
from .segmenters.base import WindowJob, WindowSegmenter
from .slide_result import RunContext, SlideResult, slide_summary
from .slides import Slide, SlideInfo
from .stitching.nms import MaskFilter


@dataclass(frozen=True)
class OutputConfig:
    label_mpp: float | None = None  # default: the HR pixel size
    ngff_version: str = "0.5"  # "0.4" for QuPath / tiatoolbox
    min_area_um2: float = 10.0  # mask parts (pixels and polygons) smaller than this are dropped
    min_hole_um2: float = 10.0  # holes smaller than this are filled (a duct's lumen is much larger)
    geojson_object_type: str = "detection"
    qc: bool = True  # write qc.png (an audit picture: not compared on reruns, see run_settings)
    # Segment everything (the grid-points detector sets it): masks filtered by score and
    # stability, duplicates removed by NMS before painting (engine.stitching.nms). None: all kept.
    mask_filter: MaskFilter | None = None

    def __post_init__(self) -> None:
        if self.ngff_version not in ("0.4", "0.5"):
            raise ValueError(f"ngff_version (--ngff) must be '0.4' or '0.5', got {self.ngff_version!r}")
        if self.label_mpp is not None and not (math.isfinite(self.label_mpp) and self.label_mpp > 0):
            raise ValueError(f"label_mpp must be a positive number of µm per pixel, got {self.label_mpp!r}")
        for name in ("min_area_um2", "min_hole_um2"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} (--{name.replace('_', '-')}) must be a number >= 0, got {v!r}")
        if self.geojson_object_type not in ("detection", "annotation", "cell"):
            raise ValueError(f"geojson_object_type must be detection, annotation or cell, got "
                             f"{self.geojson_object_type!r}")
        if not isinstance(self.qc, bool):
            raise ValueError(f"qc must be True or False, got {self.qc!r}")
        if self.mask_filter is not None and not isinstance(self.mask_filter, MaskFilter):
            raise ValueError(f"mask_filter must be a MaskFilter or None, got {type(self.mask_filter).__name__}")


@dataclass
class SlidePlan:
    slide_id: str
    prompts: list[Prompt]
    windows: list[Window]
    prompts_read: int
    prompts_dropped_outside: int

    def prompts_by_id(self, ids: Iterable[int] | None = None) -> dict[int, Prompt]:
        """The plan's prompts by id (only ``ids`` when given): what :func:`read_jobs` takes."""
        wanted = None if ids is None else set(ids)
        return {p.prompt_id: p for p in self.prompts if wanted is None or p.prompt_id in wanted}


def plan_slide(slide: Slide, prompts: list[Prompt], schedule: ScheduleConfig) -> SlidePlan:
    """Validate prompts against the slide and pack them into windows."""
    from .prompts import validate_prompts

    w, h = slide.dimensions_l0_px
    kept, report = validate_prompts(prompts, w, h)
    windows = [
        # The slide moves each centre onto its pyramid's pixel grid, so the pair is read exactly.
        dataclasses.replace(win, pair=slide.patch_pair(win.pair.centre_l0_px, win.pair.patch_px, win.pair.hr_mpp,
                                                       win.pair.lr_mpp))
        for win in schedule_windows(slide.slide_id, kept, slide.mpp, schedule)
    ]
    return SlidePlan(slide.slide_id, kept, windows, len(prompts), report.dropped_outside)


def read_jobs(slide: Slide, prompts_by_id: Mapping[int, Prompt], windows: Iterable[Window]) -> Iterator[WindowJob]:
    """Read each window's patch pair; ``prompts_by_id`` holds (at least) the windows' prompts."""
    for w in windows:
        hr, lr = slide.read_patch_pair(w.pair)
        yield WindowJob(w, hr, lr, [prompts_by_id[i] for i in w.prompt_ids])


def check_output_dir(output_dir: str | os.PathLike) -> Path:
    """Create ``output_dir`` if needed and make sure it can be written (before any work)."""
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise PermissionError(f"output folder {out} cannot be written: {exc.strerror or exc}") from exc
    return out


def batched(items: Iterable, n: int) -> Iterator[list]:
    batch: list = []
    for it in items:
        batch.append(it)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def segment_slide(slide: Slide, prompts: list[Prompt], segmenter: WindowSegmenter, output_dir: str | os.PathLike,
                  schedule: ScheduleConfig = ScheduleConfig(), output: OutputConfig = OutputConfig(),
                  windows_per_batch: int = 4, run: RunContext | None = None,
                  clock: Callable[[], float] = time.perf_counter) -> SlideResult:
    """Segment one slide in this process and write its outputs (see module docstring).

    ``run``: what ``summary.json`` says about the run (default: this call, no run id or settings).
    ``clock``: what ``timings_s`` counts in (wall seconds; a benchmark may pass ``time.process_time``).
    """
    out = check_output_dir(output_dir)
    run = run or RunContext(asdict(schedule), asdict(output), segmenter.name)
    t: dict[str, float] = {}
    t0 = clock()
    plan = plan_slide(slide, prompts, schedule)
    t["plan"] = clock() - t0
    info = slide.info()
    from .slide_writer import SlideWriter  # the stitching stack, imported when a slide is written
    from .slides.thumbnail import qc_thumbnail

    writer = SlideWriter(info, out, output.label_mpp or schedule.hr_mpp, output)
    writer.clock = clock
    by_id = plan.prompts_by_id()
    result = SlideResult.of_plan(plan, slide_dir(out, slide.slide_id))  # counts added as batches settle
    t.update(read=0.0, segment=0.0, stitch=0.0)
    limits = completion_limits(info, schedule, output)
    pending: dict[int, ObjectMask] = {}  # cut masks of prompts being segmented again
    try:
        # Windows of one level share the HR/LR ratio and pixel size: batch within a level. A batch
        # whose masks are cut by their LR window adds batches of coarser windows (completion.py).
        queue = deque(b for level in by_level(plan.windows) for b in batched(level, windows_per_batch))
        while queue:
            windows = queue.popleft()
            a = clock()
            jobs = list(read_jobs(slide, by_id, windows))
            b = clock()
            objects = segmenter.segment(jobs, lr_masks=schedule.complete_cut_objects)
            done = settle(objects, windows, {p.prompt_id: p for j in jobs for p in j.prompts}, limits,
                          previous_masks(pending, windows))
            c = clock()
            writer.add_many(done.objects)
            result.objects += len(done.objects)
            t["read"] += b - a
            t["segment"] += c - b
            t["stitch"] += clock() - c
            queue.extend(add_outcome(result, done, windows, plan, limits, slide.patch_pair, windows_per_batch, pending))
        result.empty_masks = result.prompts - result.objects
        a = clock()
        result.timings_s = dict(t)
        writer.commit(slide_summary(result, info, plan, run), plan.prompts, qc_thumbnail(slide) if output.qc else None)
        t["write"] = clock() - a
        t.update(writer.timings)  # the breakdown of stitch and write (not in summary.json)
    except BaseException:
        writer.abort()
        raise
    result.timings_s = t
    return result


def completion_limits(info: SlideInfo, schedule: ScheduleConfig, output: OutputConfig) -> CompletionLimits:
    return CompletionLimits(info.width_l0_px, info.height_l0_px, info.mpp, schedule, output.mask_filter)


def add_outcome(counts, done: BatchOutcome, windows: list[Window], plan: SlidePlan, limits: CompletionLimits,
                make_pair, windows_per_batch: int, pending: dict[int, ObjectMask]) -> list[list[Window]]:
    """Count a settled batch of ``windows`` into ``counts`` (a SlideResult or a manifest entry),
    move its prompts' cut masks in ``pending`` (out: theirs; in: those segmented again), and
    return the batches of coarser windows for its prompts to segment again."""
    for i in previous_masks(pending, windows):
        del pending[i]
    pending.update((r.prompt_id, r.previous) for r in done.redo)
    new = redo_windows(plan.slide_id, done.redo, limits, len(plan.windows),
                       1 + max((p.prompt_id for p in plan.prompts), default=0), make_pair) if done.redo else []
    counts.completed_from_lr += done.completed_from_lr
    counts.resegmented += len(done.redo)
    counts.truncated += done.truncated
    counts.completed += done.completed
    counts.trimmed += done.trimmed
    counts.refused += done.refused
    counts.windows += len(new)
    counts.encoder_passes += schedule_stats(new).encoder_passes
    return list(batched(new, windows_per_batch))


def by_level(windows: list[Window]) -> list[list[Window]]:
    """Windows grouped by pyramid level (finest first), each group in schedule order."""
    levels: dict[int, list[Window]] = {}
    for w in windows:
        levels.setdefault(w.level, []).append(w)
    return [levels[k] for k in sorted(levels)]
