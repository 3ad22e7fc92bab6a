"""What a run produced for one slide, and its ``summary.json``: one assembly for both executors.

The in-process pipeline (:func:`engine.pipeline.segment_slide`) and the Ray stream
(:mod:`engine.distributed.stream`) both build a :class:`SlideResult` with :meth:`SlideResult.of_plan`
and its summary with :func:`slide_summary`, so their ``summary.json`` files carry the same keys.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .scheduler import schedule_stats
from .slides import SlideInfo

if TYPE_CHECKING:  # the plan's module imports this one
    import geopandas as gpd

    from .pipeline import SlidePlan

LABELS_NAME = "labels.ome.zarr"
PARQUET_NAME = "objects.parquet"
GEOJSON_NAME = "objects.geojson"
PROMPTS_NAME = "prompts.geojson"  # every prompt segmented, with its prompt_id (objects refer to it)
QC_NAME = "qc.png"  # thumbnail with outlines and prompts (unless OutputConfig.qc is False)


#: What a run counts as a slide's batches settle (SlideResult fields; the manifest's entry has them too).
COUNTS = ("objects", "windows", "encoder_passes", "completed_from_lr", "resegmented", "truncated", "completed",
          "trimmed", "refused")


@dataclass
class SlideResult:
    """What a run produced for one slide (plain data; crosses process boundaries)."""

    slide_id: str
    output_dir: str
    prompts: int = 0
    objects: int = 0
    empty_masks: int = 0
    windows: int = 0  # plan windows plus those of prompts segmented again in a coarser pair
    encoder_passes: int = 0
    prompts_dropped_outside: int = 0
    completed_from_lr: int = 0  # masks cut by their HR window, completed from the LR mask
    resegmented: int = 0  # times a prompt was segmented again one level coarser (cut by the LR window)
    truncated: int = 0  # objects still cut (coarsest level reached, or a coarser pass failed): flagged "truncated"
    completed: int = 0  # objects grown past their first HR window (LR mask pixels, or a coarser pass taken)
    trimmed: int = 0  # objects whose parts at a window border that were not the prompt's object were removed
    refused: int = 0  # completions not taken (a coarser pass that disagreed or scored lower; a mask missing its prompt)
    status: str = "done"  # done | skipped | failed | interrupted | not run
    error: str | None = None
    timings_s: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of_plan(cls, plan: "SlidePlan", output_dir: str | Path, counts=None,
                timings_s: dict[str, float] | None = None) -> "SlideResult":
        """A slide's result: its prompts and planned windows; with ``counts`` (any record with the
        :data:`COUNTS` attributes, e.g. the run manifest's slide entry) the counts of its run."""
        r = cls(plan.slide_id, str(output_dir), prompts=len(plan.prompts), windows=len(plan.windows),
                encoder_passes=schedule_stats(plan.windows).encoder_passes,
                prompts_dropped_outside=plan.prompts_dropped_outside, timings_s=dict(timings_s or {}))
        for name in COUNTS if counts is not None else ():
            setattr(r, name, getattr(counts, name))
        r.empty_masks = r.prompts - r.objects
        return r

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

    def geodataframe(self) -> "gpd.GeoDataFrame":
        import geopandas as gpd

        return gpd.read_parquet(self.parquet_path)


@dataclass(frozen=True)
class RunContext:
    """What a slide's summary says about the run it came from (the same for every slide of it)."""

    schedule: dict
    output: dict
    segmenter: str  # see engine.segmenters.wsisam_segmenter.segmenter_name
    run_id: str | None = None  # None: the in-process pipeline, outside a run
    settings: dict[str, dict] = field(default_factory=dict)  # slide id -> rerun settings (run_settings.py)


def slide_summary(result: SlideResult, info: SlideInfo, plan: "SlidePlan", run: RunContext) -> dict:
    """The slide's ``summary.json``: what was run on what, and what came out."""
    return {
        "slide": asdict(info),
        "segmenter": run.segmenter,
        "run_id": run.run_id,
        "settings": run.settings.get(info.slide_id),
        "schedule": run.schedule,
        "output": run.output,
        "prompts_read": plan.prompts_read,
        "result": asdict(result),
        "score": "predicted IoU of SAM's single-mask output in the same HR decoder pass (WSI-SAM has no score head)",
        "overlap_rule": "a pixel claimed by several objects goes to the higher score; ties to the lower object id",
    }
