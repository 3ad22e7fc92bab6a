"""The offline demo: a generated slide, the bundled demo model, the engine on an embedded Ray.

Steps: generate a demo-profile slide with its truth (:mod:`engine.support.demo_eval`), make noisy box
prompts from the truth (the paper's box protocol, :class:`engine.evaluation.BoxProtocol`),
segment the slide with WSI-SAM and with the same model's SAM path through
:func:`engine.segment_slides`, score both against the truth (Table 1 layout), and draw a QC picture.
The demo model was trained on synthetic slides only: it is not a model for tissue.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from ..api import segment_slides
from .demo_eval import make_demo_slide
from ..distributed.cluster import connect, stop_ray
from ..distributed.executor import ExecutionConfig
from ..distributed.model_spec import ModelSpec
from ..evaluation import BoxProtocol, SlideTarget, evaluate_predictions, resolve_predictions, write_report
from ..evaluation.experiment import method_folder
from ..stitching.qc_picture import qc_picture
from ..slides import open_slide
from .synthetic import CLASS_COLORS

METHODS = {"WSI-SAM": "wsi", "SAM": "sam"}


@dataclass
class DemoReport:
    out_dir: Path
    slide: Path
    truth: Path
    prompts: Path
    outputs: dict[str, Path]
    qc_png: Path
    table_md: Path
    dice_by_method: dict[str, float]
    table_text: str


def run_demo(out_dir: str | os.PathLike, seed: int = 2026, model: ModelSpec | None = None, compare_sam: bool = True,
             num_cpus: int | None = None, progress: bool = True) -> DemoReport:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    slide = make_demo_slide(out / "slide" / f"demo_{seed}.ome.tif", seed)
    truth_path = slide.write_truth(out / "slide" / f"demo_{seed}.geojson")
    target = SlideTarget(slide.slide_id, slide.width_l0_px, slide.height_l0_px, slide.mpp, slide.truth)
    prompts_path = BoxProtocol().write(target, seed, out / "prompts")
    model = model or ModelSpec.demo()
    methods = METHODS if compare_sam else {"WSI-SAM": "wsi"}
    cluster = connect(num_cpus=num_cpus)  # one embedded Ray (or the running cluster) for both runs
    outputs = {}
    try:
        for name, mode in methods.items():
            folder = out / "segmentation" / method_folder(name)
            segment_slides(slide.path, prompts=prompts_path, output_dir=folder, model=dataclasses.replace(model, mode=mode),
                           execution=ExecutionConfig(progress=progress))
            outputs[name] = folder / slide.slide_id
    finally:
        if cluster.embedded:
            stop_ray()
    ev = evaluate_predictions({name: resolve_predictions([p]) for name, p in outputs.items()}, truth_path,
                              prompts=prompts_path)
    files = write_report(ev, out / "evaluation", title=f"demo slide seed {seed}, noisy box prompts")
    with open_slide(slide.path) as s:
        import geopandas as gpd

        png = qc_picture(s, gpd.read_parquet(outputs["WSI-SAM"] / "objects.parquet"), out / "qc.png",
                         truth=slide.truth, colors=CLASS_COLORS)
    dice = {m: float(ev.objects[ev.objects.method == m].dice.mean()) for m in ev.methods}
    return DemoReport(out, slide.path, truth_path, prompts_path, outputs, png, files.table_dice_md, dice,
                      files.table_dice_md.read_text())
