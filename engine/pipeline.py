"""One slide, in one process: prompts -> windows -> patch pairs -> masks -> stitched outputs.

The stages are separate functions over plain records so that an executor (this module's
:func:`segment_slide`, or the Ray executor) composes them:

    plan_slide()      prompts (file or detector) -> validated prompts -> windows
    read_jobs()       windows -> WindowJob (pixels read from the slide)
    segmenter         WindowJob batch -> ObjectMask records
    SlideWriter       ObjectMask records -> labels.ome.zarr + objects.parquet + objects.geojson
                      (+ prompts.geojson, summary.json); polygons are traced from the label image

Outputs of a slide appear whole or not at all: everything is written into
``<output_dir>/.<slide_id>.partial/`` and renamed to ``<output_dir>/<slide_id>/`` at the end.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import geopandas as gpd

from .output_folder import SUMMARY_NAME, inside, partial_dir, remove_tree, slide_dir
from .records import ObjectMask, Prompt
from .scheduler import ScheduleConfig, Window, schedule_stats, schedule_windows
from .segmenters import WindowJob, WindowSegmenter
from .slides import Slide, SlideInfo
from .prompts import write_prompts_geojson
from .stitching import LabelImageWriter, write_geoparquet, write_qupath_geojson
from .stitching.mask_cleaning import clean_mask
from .stitching.polygons import SLIDE_COLUMNS, rows_to_geodataframe

LABELS_NAME = "labels.ome.zarr"
PARQUET_NAME = "objects.parquet"
GEOJSON_NAME = "objects.geojson"
PROMPTS_NAME = "prompts.geojson"  # every prompt segmented, with its prompt_id (objects refer to it)
#: SlideWriter.timings keys: label image painting (add), then at commit polygons and the three outputs.
WRITER_STAGES = ("stitch_labels", "vectorise", "write_pyramid", "write_parquet", "write_geojson")


@dataclass(frozen=True)
class OutputConfig:
    label_mpp: float | None = None  # default: the HR pixel size
    ngff_version: str = "0.5"  # "0.4" for QuPath / tiatoolbox
    min_area_um2: float = 10.0  # mask parts (pixels and polygons) smaller than this are dropped
    min_hole_um2: float = 10.0  # holes smaller than this are filled (a duct's lumen is much larger)
    geojson_object_type: str = "detection"

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


@dataclass
class SlidePlan:
    slide_id: str
    prompts: list[Prompt]
    windows: list[Window]
    prompts_read: int
    prompts_dropped_outside: int


@dataclass
class SlideResult:
    """What a run produced for one slide (plain data; crosses process boundaries)."""

    slide_id: str
    output_dir: str
    prompts: int = 0
    objects: int = 0
    empty_masks: int = 0
    windows: int = 0
    encoder_passes: int = 0
    prompts_dropped_outside: int = 0
    status: str = "done"  # done | skipped | failed | interrupted | not run
    error: str | None = None
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def labels_path(self) -> Path:
        return Path(self.output_dir) / LABELS_NAME

    @property
    def parquet_path(self) -> Path:
        return Path(self.output_dir) / PARQUET_NAME

    @property
    def geojson_path(self) -> Path:
        return Path(self.output_dir) / GEOJSON_NAME

    @property
    def prompts_path(self) -> Path:
        return Path(self.output_dir) / PROMPTS_NAME

    def geodataframe(self) -> gpd.GeoDataFrame:
        return gpd.read_parquet(self.parquet_path)


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


def read_jobs(slide: Slide, plan: SlidePlan, windows: Iterable[Window]) -> Iterator[WindowJob]:
    by_id = {p.prompt_id: p for p in plan.prompts}
    for w in windows:
        hr, lr = slide.read_patch_pair(w.pair)
        yield WindowJob(w, hr, lr, [by_id[i] for i in w.prompt_ids])


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


class SlideWriter:
    """Single writer of one slide's outputs, into a ``.partial`` folder published by :meth:`commit`."""

    def __init__(self, slide: Slide, output_dir: str | os.PathLike, label_mpp: float, cfg: OutputConfig) -> None:
        self.output_dir = Path(output_dir)
        self.final = slide_dir(output_dir, slide.slide_id)
        self.partial = partial_dir(output_dir, slide.slide_id)
        remove_tree(output_dir, self.partial.name)  # left by a run that died
        self.partial.mkdir(parents=True)
        self.slide_mpp = slide.mpp
        self.cfg = cfg
        w, h = slide.dimensions_l0_px
        self.labels = LabelImageWriter(self.partial / LABELS_NAME, slide_width_l0_px=w, slide_height_l0_px=h,
                                       slide_mpp=slide.mpp, label_mpp=label_mpp, slide_id=slide.slide_id,
                                       ngff_version=cfg.ngff_version)
        self.rows: list[dict] = []
        # Seconds per output stage (label image, polygons, pyramid, parquet, geojson), for benchmarks.
        self.timings = dict.fromkeys(WRITER_STAGES, 0.0)

    def add(self, obj: ObjectMask) -> None:
        self.add_many([obj])

    def add_many(self, objects: list[ObjectMask]) -> None:
        """Clean each mask, then paint the batch into the label image (one write per touched chunk)."""
        t0 = time.perf_counter()
        for obj in objects:
            px_um2 = obj.mask_mpp**2
            obj.mask = clean_mask(obj.mask, self.cfg.min_area_um2 / px_um2, self.cfg.min_hole_um2 / px_um2)
        self.labels.add_many([obj for obj in objects if obj.mask.any()])
        self.timings["stitch_labels"] += time.perf_counter() - t0

    def object_rows(self) -> tuple[list[dict], dict]:
        """One row per object with pixels left in the label image, traced from those pixels.

        The overlap rule has run by now, so polygons do not overlap and each one's area is its
        label pixel count times the label pixel area. An object whose pixels all went to
        neighbours (or that fell outside the slide) gets no row; fragments a neighbour left are
        kept whatever their size, so polygons and pixels stay one truth. Returns the rows and
        the counts for ``summary.json``.
        """
        outlines = self.labels.outlines_l0_px()
        label_px_um2 = self.labels.grid.label_mpp**2
        rows = []
        for oid, e in self.labels.entries.items():
            geom = outlines.get(oid)
            if geom is None:
                continue
            rows.append({"object_id": oid, "prompt_id": e.prompt_id, "class_name": e.class_name, "score": e.score,
                         "area_um2": float(geom.area * self.slide_mpp**2),
                         "area_raw_um2": float(e.n_px_raw * label_px_um2),
                         "lost_to_neighbour": e.n_px < e.n_px_raw, "geometry": geom})
        counts = {"polygons": len(rows), "objects_without_pixels": len(self.labels.entries) - len(rows),
                  "objects_lost_to_neighbour": sum(r["lost_to_neighbour"] for r in rows),
                  "rule": "polygons are traced from the label image after the overlap rule; an object left "
                          "with no pixel has no polygon"}
        return rows, counts

    def commit(self, summary: dict, prompts: list[Prompt]) -> Path:
        """Trace polygons from the label image, write every output and publish the slide folder.

        ``prompts``: the plan's prompts (each segmented once), written to ``prompts.geojson``.
        """
        t0 = time.perf_counter()
        rows, summary["vectors"] = self.object_rows()
        t1 = time.perf_counter()
        self.labels.close()
        t2 = time.perf_counter()
        gdf = rows_to_geodataframe(rows, SLIDE_COLUMNS)
        write_geoparquet(gdf, self.partial / PARQUET_NAME)
        t3 = time.perf_counter()
        write_qupath_geojson(gdf, self.partial / GEOJSON_NAME, object_type=self.cfg.geojson_object_type)
        t4 = time.perf_counter()
        write_prompts_geojson(prompts, self.partial / PROMPTS_NAME, slide_column=None, id_column="prompt_id")
        self.timings["vectorise"] += t1 - t0
        self.timings["write_pyramid"] += t2 - t1
        self.timings["write_parquet"] += t3 - t2
        self.timings["write_geojson"] += t4 - t3
        (self.partial / SUMMARY_NAME).write_text(json.dumps(summary, indent=2))
        old = None
        if self.final.exists():  # a slide redone with --overwrite: the old outputs go only once the new are in
            old = inside(self.output_dir, f".{self.final.name}.replaced")
            remove_tree(self.output_dir, old.name)
            os.replace(self.final, old)
        os.replace(self.partial, self.final)
        if old is not None:
            remove_tree(self.output_dir, old.name)
        return self.final

    def abort(self) -> None:
        self.labels.abort()
        remove_tree(self.output_dir, self.partial.name)


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
                  windows_per_batch: int = 4) -> SlideResult:
    """Segment one slide in this process and write its outputs (see module docstring)."""
    out = check_output_dir(output_dir)
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    plan = plan_slide(slide, prompts, schedule)
    t["plan"] = time.perf_counter() - t0
    writer = SlideWriter(slide, out, output.label_mpp or schedule.hr_mpp, output)
    result = SlideResult(slide.slide_id, str(slide_dir(out, slide.slide_id)), prompts=len(plan.prompts),
                         windows=len(plan.windows), encoder_passes=schedule_stats(plan.windows).encoder_passes,
                         prompts_dropped_outside=plan.prompts_dropped_outside)
    t.update(read=0.0, segment=0.0, stitch=0.0)
    try:
        # Windows of one level share the HR/LR ratio and pixel size: batch within a level.
        for level_windows in by_level(plan.windows):
            for windows in batched(level_windows, windows_per_batch):
                a = time.perf_counter()
                jobs = list(read_jobs(slide, plan, windows))
                b = time.perf_counter()
                objects = segmenter.segment(jobs)
                c = time.perf_counter()
                writer.add_many(objects)
                t["read"] += b - a
                t["segment"] += c - b
                t["stitch"] += time.perf_counter() - c
                result.objects += len(objects)
        result.empty_masks = result.prompts - result.objects
        a = time.perf_counter()
        result.timings_s = t
        writer.commit(summary_dict(result, slide.info(), asdict(schedule), asdict(output), segmenter.name),
                      plan.prompts)
        t["write"] = time.perf_counter() - a
        t.update(writer.timings)  # the breakdown of stitch and write (not in summary.json)
    except BaseException:
        writer.abort()
        raise
    return result


def by_level(windows: list[Window]) -> list[list[Window]]:
    """Windows grouped by pyramid level (finest first), each group in schedule order."""
    levels: dict[int, list[Window]] = {}
    for w in windows:
        levels.setdefault(w.level, []).append(w)
    return [levels[k] for k in sorted(levels)]


def summary_dict(result: SlideResult, info: SlideInfo, schedule: dict, output: dict, segmenter: str) -> dict:
    """The slide's ``summary.json``: what was run on what, and what came out."""
    return {
        "slide": asdict(info),
        "segmenter": segmenter,
        "schedule": schedule,
        "output": output,
        "result": asdict(result),
        "score": "predicted IoU of SAM's single-mask output in the same HR decoder pass (WSI-SAM has no score head)",
        "overlap_rule": "a pixel claimed by several objects goes to the higher score; ties to the lower object id",
    }
