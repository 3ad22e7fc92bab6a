"""The Python API: :func:`segment_slides`."""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, replace
from pathlib import Path

from .detectors import get_detector
from .distributed.cluster import connect, stop_ray
from .distributed.executor import ExecutionConfig, new_manifest, new_run_id, run_cohort
from .distributed.model_spec import ModelSpec
from .output_folder import RESERVED_NAMES, RunLock
from .pipeline import OutputConfig, check_output_dir
from .slide_result import SlideResult
from .prompts import check_slide_ids, read_prompts
from .records import Prompt
from .run_settings import plan_rerun, prompts_sha256, slide_settings
from .scheduler import ScheduleConfig
from .slides import SlideInfo, open_slide

SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide",
                  ".dcm", ".jp2", ".png", ".jpg", ".jpeg")
PROMPT_SUFFIXES = (".geojson", ".json", ".csv", ".parquet", ".geoparquet")


def find_slides(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Slide files named directly or found (not recursively) in folders, sorted by name."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(q for q in p.iterdir() if q.is_file() and q.name.lower().endswith(SLIDE_SUFFIXES))
        elif p.exists():
            found.append(p)
        else:
            raise FileNotFoundError(f"slide {p} not found")
    if not found:
        raise ValueError(f"no slides found in {', '.join(map(str, paths))}")
    return found


def load_prompts(source: str | os.PathLike | Mapping[str, list[Prompt]], slides: list[SlideInfo]
                 ) -> dict[str, list[Prompt]]:
    """Prompts per slide from a cohort file, a folder of ``<slide_id>.<ext>`` files, a single
    file for a single slide, or an in-memory mapping. Unknown slide ids are an error."""
    ids = [s.slide_id for s in slides]
    if isinstance(source, Mapping):
        out = dict(source)
    else:
        path = Path(source)
        if path.is_dir():
            out = {}
            for s in slides:
                files = [path / f"{s.slide_id}{ext}" for ext in PROMPT_SUFFIXES if (path / f"{s.slide_id}{ext}").exists()]
                if not files:
                    raise FileNotFoundError(f"no prompt file for slide {s.slide_id!r} in {path}")
                out.update(read_prompts(files[0], slide_id=s.slide_id))
        elif len(slides) == 1:  # a one-slide file, or a cohort file naming only this slide
            out = read_prompts(path, slide_id=slides[0].slide_id, known_slide_ids=ids)
        else:
            out = read_prompts(path, known_slide_ids=ids)
    check_slide_ids(out, ids, None if isinstance(source, Mapping) else Path(source))
    return out


def segment_slides(slides: Iterable[str | os.PathLike] | str | os.PathLike, *,
                   prompts: str | os.PathLike | Mapping[str, list[Prompt]] | None = None,
                   detector: str | object | None = None, detector_options: dict | None = None,
                   output_dir: str | os.PathLike, model: ModelSpec | None = None,
                   schedule: ScheduleConfig | None = None, output: OutputConfig = OutputConfig(),
                   execution: ExecutionConfig = ExecutionConfig(), address: str | None = None,
                   slide_mpp: float | None = None, num_cpus: int | None = None, num_gpus: int | None = None,
                   overwrite: bool = False) -> list[SlideResult]:
    """Segment a cohort of slides on Ray and write each slide's outputs under ``output_dir``.

    - ``prompts``: a prompt file (one slide, or a cohort file with a slide column), a folder of
      ``<slide_id>.geojson|.csv|.parquet``, or a mapping slide id -> prompts; or ``detector``: a
      detector name (see :func:`engine.detectors.available_detectors`) or object.
    - ``model``: a :class:`ModelSpec` (default: the bundled demo model).
    - ``output``: output options (:class:`OutputConfig`); ``OutputConfig(qc=False)`` leaves out
      each slide's ``qc.png``. A detector with a ``mask_filter`` (grid-points) sets
      ``output.mask_filter`` unless it is set: masks are then filtered and de-duplicated.
    - Joins the cluster at ``address`` (or the one this process runs in: ``ray job submit``,
      ``RAY_ADDRESS``); otherwise starts an embedded local Ray on 127.0.0.1 (``num_cpus``,
      ``num_gpus`` declare its resources) and shuts it down afterwards.
    - Every input is checked before Ray starts. The run holds a lock on ``output_dir``.
    - Slides finished in ``output_dir`` with the same settings are skipped untouched; slides
      finished with other settings are refused (:class:`RerunConflictError`) unless ``overwrite``.
    - A slide that fails is reported (``status == "failed"``, ``error``) and the others finish,
      unless ``execution.fail_fast``. ``run_manifest.json`` (and ``.runs/<run_id>.json``) record the
      configuration, model checksums, each slide's status and who ran what.

    Returns one :class:`SlideResult` per slide (``.geodataframe()`` loads its polygons).
    """
    if (prompts is None) == (detector is None):
        raise ValueError("give prompts or a detector (exactly one)")
    paths = find_slides([slides] if isinstance(slides, (str, os.PathLike)) else slides)
    infos = []
    for p in paths:
        with open_slide(p, mpp=slide_mpp) as s:
            infos.append(s.info())
    ids = [s.slide_id for s in infos]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ValueError(f"several slides share the id(s) {dup}: slide ids come from file names; rename one of "
                         + ", ".join(s.path for s in infos if s.slide_id in dup))
    reserved = [s for s in infos if s.slide_id in RESERVED_NAMES]
    if reserved:
        raise ValueError(f"slide {reserved[0].path}: its id {reserved[0].slide_id!r} is a name the output folder "
                         "uses for itself; rename the file")
    by_slide = load_prompts(prompts, infos) if prompts is not None else None
    det = get_detector(detector, **(detector_options or {})) if isinstance(detector, str) else detector
    if getattr(det, "mask_filter", None) is not None and output.mask_filter is None:
        output = replace(output, mask_filter=det.mask_filter)  # segment everything (grid-points)
    model = (model or ModelSpec.demo()).validate()  # model files opened and matched before Ray starts
    schedule = schedule or ScheduleConfig(patch_px=model.patch_px())
    if schedule.patch_px != model.patch_px():
        raise ValueError(f"schedule.patch_px {schedule.patch_px} differs from the model's input size {model.patch_px()}")
    out = check_output_dir(output_dir)
    run_id = new_run_id()
    with RunLock(out, run_id):
        model_sha256 = model.checksums()
        model_settings = {"sha256": model_sha256, "backbone": model.backbone, "mode": model.mode, "amp": model.amp}
        settings = {s.slide_id: slide_settings(
            s, model_settings, asdict(schedule), asdict(output),
            {"prompts_sha256": prompts_sha256(by_slide.get(s.slide_id, []))} if by_slide is not None
            else {"detector": detector if isinstance(detector, str) else type(detector).__name__,
                  "options": detector_options or {}}) for s in infos}
        rerun = plan_rerun(out, settings, overwrite)
        run_config = {"schedule": asdict(schedule), "output": asdict(output), "execution": asdict(execution),
                      "model": asdict(model), "segmenter": model.segmenter_name(),
                      "prompts": None if prompts is None or isinstance(prompts, Mapping) else str(prompts),
                      "detector": None if detector is None else str(detector), "overwrite": overwrite,
                      "redone": rerun.redone}
        cluster = connect(address, num_cpus=num_cpus, num_gpus=num_gpus) if rerun.todo else None
        try:
            manifest = new_manifest(infos, run_id, run_config, model_sha256, cluster)
            return run_cohort(infos, set(rerun.skipped), by_slide, det, model, out, schedule, output, execution,
                              cluster, manifest, settings)
        finally:
            if cluster is not None and cluster.embedded:
                stop_ray()
