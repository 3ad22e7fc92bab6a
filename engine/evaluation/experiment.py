"""Zero-shot experiment: prompts from truth -> WSI-SAM and SAM on the same slides -> Table 1.

With the official WSI-SAM weights (``--backbone vit_tiny --sam-checkpoint mobile_sam.pt
--hr-decoder ... --lr-decoder ...``) and the DCIS / CAMELYON16 slides with their annotations,
this reproduces the paper's zero-shot comparisons (Tables 1, 2 and 4: noisy ground-truth boxes
``boxes``, detector boxes ``detector`` with the user's coarse nnU-Net masks, and ``points3`` /
``points5`` / ``points10``). Both methods use the same weights: "WSI-SAM" is the HR/LR model,
"SAM" the frozen SAM decoder path on the HR patch alone (:class:`engine.segmenters.WsiSamSegmenter`
``mode="sam"``).

Layout of ``out_dir``::

    protocol.json                 protocol, seed, noise model, slides, truth files, model, schedule
    prompts/<slide_id>.geojson    the prompts (truth-linked: properties.name "truth_id=<id>", truth_id)
    runs/<method>/<slide_id>/     segment_slide outputs (labels.ome.zarr, objects.parquet, ...)
    table_dice.{csv,md,png}, table_iou.{csv,md}, objects.csv, slides.csv, evaluation.json
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import geopandas as gpd

from ..pipeline import OutputConfig, check_output_dir, segment_slide
from ..slide_result import SlideResult
from ..prompts import read_prompts
from ..scheduler import ScheduleConfig
from ..segmenters import WindowSegmenter
from ..slides import open_slide, slide_id_from_path
from .matching import prompt_links
from .metrics import SlideEvaluation, evaluate_source
from .predictions import PredictionSource
from .protocols import Protocol, SlideTarget, get_protocol
from .report import Evaluation, ReportFiles, collect, write_report
from .truth import find_truth_file, read_truth

#: Makes the segmenter of one method for one slide (the slide's truth is given for oracles).
SegmenterFactory = Callable[[str, gpd.GeoDataFrame], WindowSegmenter]
METHOD_ORDER = ("SAM", "WSI-SAM")


@dataclass(frozen=True)
class ModelFiles:
    """The weights: our ``checkpoint`` (.safetensors), or a ``backbone`` with SAM's / MobileSAM's
    file and the reference HR/LR decoder files."""

    checkpoint: str | None = None
    backbone: str | None = None
    sam_checkpoint: str | None = None
    hr_decoder: str | None = None
    lr_decoder: str | None = None

    def build(self):
        import wsisam

        if (self.checkpoint is None) == (self.backbone is None):
            raise ValueError("give --checkpoint (our .safetensors) or --backbone (with reference weights), not both")
        return wsisam.build_wsisam(self.backbone, checkpoint=self.checkpoint, sam_checkpoint=self.sam_checkpoint,
                                   hr_decoder_checkpoint=self.hr_decoder, lr_decoder_checkpoint=self.lr_decoder)


def model_methods(model, device: str | None = None, amp_dtype=None) -> tuple[dict[str, SegmenterFactory], int]:
    """``{"SAM": ..., "WSI-SAM": ...}`` segmenter factories sharing one predictor, and its patch px."""
    import wsisam

    from ..segmenters import WsiSamSegmenter

    predictor = wsisam.WsiSamPredictor(model, device=device, amp_dtype=amp_dtype)
    sam, wsi = WsiSamSegmenter(predictor, mode="sam"), WsiSamSegmenter(predictor, mode="wsi")
    return {"SAM": lambda _s, _t: sam, "WSI-SAM": lambda _s, _t: wsi}, predictor.img_px


def method_folder(method: str) -> str:
    """A folder name for a method ("WSI-SAM" -> "wsi-sam")."""
    return re.sub(r"[^a-z0-9._-]+", "-", method.lower()).strip("-") or "method"


def truth_files(slides: Sequence[Path], truth: Sequence[str | os.PathLike]) -> list[Path]:
    """One truth file per slide: as many files as slides (same order), or one folder holding
    ``<slide_id>.geojson`` (or .json / .parquet)."""
    truth = [Path(t) for t in truth]
    if len(truth) == 1 and truth[0].is_dir():
        return [find_truth_file(truth[0], slide_id_from_path(s)) for s in slides]
    if len(truth) != len(slides):
        raise ValueError(f"{len(slides)} slide(s) but {len(truth)} truth file(s): give one per slide, in the "
                         "same order, or a folder with <slide_id>.geojson")
    for t in truth:
        if not t.is_file():
            raise FileNotFoundError(f"truth file {t} not found")
    return truth


@dataclass
class ExperimentResult:
    out_dir: Path
    prompt_files: dict[str, Path]
    runs: dict[str, dict[str, SlideResult]]  # method -> slide_id -> result
    evaluation: Evaluation
    report: ReportFiles


def run_experiment(slides: Sequence[str | os.PathLike], truth: Sequence[str | os.PathLike],
                   protocol: Protocol | str, methods: Mapping[str, SegmenterFactory], out_dir: str | os.PathLike,
                   seed: int = 0, schedule: ScheduleConfig = ScheduleConfig(),
                   output: OutputConfig = OutputConfig(), description: dict | None = None) -> ExperimentResult:
    """Make the protocol's prompts for each slide, segment every slide with every method
    (:func:`engine.pipeline.segment_slide`), evaluate against the truth and write the report.

    Args:
        slides: slide files (their ids: the file stems).
        truth: one truth file per slide (same order) or a folder with ``<slide_id>.geojson``.
        protocol: a :class:`Protocol` or its name (``boxes``, ``points3``, ``points5``, ``points10``, ``detector``).
        methods: table row name -> segmenter factory (see :func:`model_methods`); rows in this order.
        seed: the protocol's seed (every object's prompt is a function of seed, slide, object).
        schedule: windows; ``patch_px`` must be the model's input size.
    """
    out = check_output_dir(out_dir)
    proto = get_protocol(protocol) if isinstance(protocol, str) else protocol
    slide_paths = [Path(s) for s in slides]
    truths = truth_files(slide_paths, truth)
    prompt_files: dict[str, Path] = {}
    runs: dict[str, dict[str, SlideResult]] = {m: {} for m in methods}
    evaluations: list[SlideEvaluation] = []
    record = {"protocol": proto.describe(), "seed": seed, "methods": list(methods), "schedule": asdict(schedule),
              "slides": [], **(description or {})}
    for slide_path, truth_path in zip(slide_paths, truths):
        truth_gdf = read_truth(truth_path)
        with open_slide(slide_path) as slide:
            w, h = slide.dimensions_l0_px
            target = SlideTarget(slide.slide_id, w, h, slide.mpp, truth_gdf)
            prompt_path = proto.write(target, seed, out / "prompts")
            prompt_files[slide.slide_id] = prompt_path
            prompts = read_prompts(prompt_path, slide_id=slide.slide_id).get(slide.slide_id, [])
            links = prompt_links(prompts) if proto.links_truth else None
            record["slides"].append({"slide_id": slide.slide_id, "slide": str(slide_path), "truth": str(truth_path),
                                     "prompts": str(prompt_path), "n_prompts": len(prompts),
                                     "n_truth": len(truth_gdf)})
            for method, factory in methods.items():
                run_dir = out / "runs" / method_folder(method)
                res = segment_slide(slide, prompts, factory(slide.slide_id, truth_gdf), run_dir, schedule, output)
                runs[method][slide.slide_id] = res
                src = PredictionSource(slide.slide_id, "polygons", res.parquet_path, slide.mpp)
                evaluations.append(evaluate_source(src, truth_gdf, method, links))
    (out / "protocol.json").write_text(json.dumps(record, indent=2, default=str))
    ev = collect(evaluations, list(methods))
    report = write_report(ev, out, record, title=f"protocol {proto.name}, seed {seed}")
    return ExperimentResult(out, prompt_files, runs, ev, report)
