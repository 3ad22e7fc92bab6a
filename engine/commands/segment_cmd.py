"""``wsisam-engine segment``: a cohort of slides through WSI-SAM on Ray (the product's main job)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="segment slides (prompt files or a detector) on Ray",
                       description="Segment a cohort on Ray. Joins the cluster it runs in (ray job submit, "
                                   "RAY_ADDRESS or --address), otherwise starts an embedded local Ray.")
    p.add_argument("slides", nargs="+", help="slide files or folders of slides")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompts", help="prompt file (one slide or a cohort file with a slide column) or a folder "
                                       "of <slide_id>.geojson|.csv|.parquet")
    src.add_argument("--detector", help="detector name: tissue, mask-to-boxes, grid-points or a plugin")
    p.add_argument("--detector-options", default="{}",
                   help="JSON object of detector keyword arguments. grid-points (segment everything): "
                        "points_spacing_um (default 64), score_threshold (0.7), stability_threshold (0.8), "
                        "nms_iou (0.5), max_covered_fraction (0.5), "
                        "e.g. '{\"points_spacing_um\": 32, \"nms_iou\": 0.7}'")
    p.add_argument("--output", required=True, type=Path, help="output folder (one sub-folder per slide)")
    m = p.add_argument_group("model (none of these: the bundled demo model, trained on synthetic slides only)")
    m.add_argument("--checkpoint", help="our .safetensors model file (it carries its configuration)")
    m.add_argument("--sam-checkpoint", help="SAM's sam_vit_*.pth or MobileSAM's mobile_sam.pt (with --hr-decoder "
                                            "and --lr-decoder, or --mode sam)")
    m.add_argument("--hr-decoder", help="reference WSI-SAM HR decoder file")
    m.add_argument("--lr-decoder", help="reference WSI-SAM LR decoder file")
    m.add_argument("--backbone", help="vit_tiny, vit_b, vit_l, vit_h: checked against --sam-checkpoint "
                                      "(default: inferred from it)")
    m.add_argument("--mode", choices=["wsi", "sam"], default="wsi", help="sam: SAM's own decoder (baseline)")
    m.add_argument("--bf16", action="store_true", help="bf16 autocast on GPUs")
    r = p.add_argument_group("resolution and outputs")
    r.add_argument("--hr-mpp", type=float, default=1.0, help="HR pixel size, µm (1.0 ~ 10x)")
    r.add_argument("--lr-mpp", type=float, default=2.0, help="LR pixel size, µm (2.0 ~ 5x)")
    r.add_argument("--context-px", type=int, default=32, help="HR pixels kept around each box in its window")
    r.add_argument("--no-completion", action="store_true",
                   help="leave masks cut by their window as they are (no LR completion, no coarser pair)")
    from ..protocol_names import PACKINGS

    r.add_argument("--packing", choices=list(PACKINGS), default=PACKINGS[0],
                   help="local-search: rarest first, then a local search that removes windows while it can "
                        "place their prompts in the others (on a dense 500-object layout 80 windows, lower bound "
                        "79); rarest-first: per cluster of prompts, the fewer windows of the row greedy and a "
                        "rarest-first set cover (84 windows); row-greedy: the row greedy alone (87). The last two "
                        "pack as older versions did: a rerun with them over their folders skips their slides. "
                        "All under a second for 10,000 prompts")
    r.add_argument("--exact-packing", action="store_true",
                   help="pack prompts into the fewest windows by exact set cover (HiGHS): on a dense 500-object "
                        "layout 79 windows instead of 80 for ~1-3 s of planning; minutes for 10,000 prompts that "
                        "form one cluster. Crowded prompts (more than 1,000 within 3 x 3 windows) are still packed on a "
                        "grid")
    r.add_argument("--slide-mpp", type=float, default=None, help="level-0 µm/px for slides without one")
    r.add_argument("--ngff", choices=["0.4", "0.5"], default="0.5", help="0.4 (zarr v2) for QuPath/tiatoolbox")
    r.add_argument("--min-area-um2", type=float, default=10.0, help="drop polygons smaller than this")
    r.add_argument("--points-extent-um", type=float, default=256.0,
                   help="assumed object size for point prompts (grid-points): decides their pyramid level; "
                        "at most the model's HR field less context to segment them at --hr-mpp")
    r.add_argument("--no-qc", action="store_true",
                   help="do not draw qc.png (thumbnail, outlines by class, prompts) in each slide folder; not a "
                        "rerun setting: finished slides are skipped with or without it")
    x = p.add_argument_group("execution")
    x.add_argument("--address", default=None, help="Ray address (default: the running cluster or embedded)")
    x.add_argument("--actors", type=int, default=None, help="model actors (default: one per GPU, else 1)")
    x.add_argument("--gpus-per-actor", type=float, default=1.0)
    x.add_argument("--cpus-per-actor", type=float, default=1.0)
    x.add_argument("--windows-per-batch", type=int, default=4)
    x.add_argument("--num-cpus", type=int, default=None, help="CPUs of an embedded Ray")
    x.add_argument("--num-gpus", type=int, default=None, help="GPUs of an embedded Ray")
    x.add_argument("--allow-cpu", action="store_true",
                   help="run on the CPU, with a warning, where Ray gives an actor a GPU torch cannot see "
                        "(default: fail)")
    x.add_argument("--no-progress", action="store_true")
    x.add_argument("--overwrite", action="store_true",
                   help="redo finished slides that were made with other settings (default: refuse the run)")
    x.add_argument("--fail-fast", action="store_true",
                   help="abort the run at the first failed slide (default: the other slides finish)")
    p.set_defaults(run=run)


def model_spec_from_args(args: argparse.Namespace):
    """The model options as a (not yet validated) ModelSpec; none of them: the demo model."""
    from ..distributed.model_spec import ModelSpec

    common = dict(mode=args.mode, amp="bf16" if args.bf16 else None, allow_cpu=args.allow_cpu)
    files = (args.checkpoint, args.backbone, args.sam_checkpoint, args.hr_decoder, args.lr_decoder)
    if all(f is None for f in files):
        return ModelSpec.demo(**common)
    return ModelSpec(checkpoint=args.checkpoint, backbone=args.backbone, sam_checkpoint=args.sam_checkpoint,
                     hr_decoder_checkpoint=args.hr_decoder, lr_decoder_checkpoint=args.lr_decoder, **common)


def detector_options(args: argparse.Namespace) -> dict:
    """``--detector-options`` as a dict (its keys are checked against the detector by get_detector)."""
    try:
        options = json.loads(args.detector_options)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--detector-options {args.detector_options!r} is not valid JSON: {exc}") from None
    if not isinstance(options, dict):
        raise ValueError(f"--detector-options must be a JSON object such as '{{\"min_area_um2\": 1000}}', "
                         f"got {args.detector_options!r}")
    if options and args.detector is None:
        raise ValueError("--detector-options needs --detector (prompts come from --prompts)")
    return options


#: Exit codes: 0 every slide done or skipped; 2 refused before any work (bad input, locked or
#: conflicting output folder, a model actor that cannot start); 3 some slides failed; 130 interrupted.
EXIT_SLIDES_FAILED = 3


def run(args: argparse.Namespace) -> int:
    import signal

    from ..api import segment_slides
    from ..distributed.stream import ActorGoneError, SlideFailedError
    from .summary import print_summary

    # `ray job stop` and schedulers send SIGTERM: end like Ctrl-C (partials removed, manifest kept).
    signal.signal(signal.SIGTERM, _interrupt)
    options = detector_options(args)
    spec = model_spec_from_args(args).validate()
    print(f"wsisam-engine segment: model: {spec.describe()}", flush=True)
    try:
        results = _segment(args, segment_slides, spec, options)
    except SlideFailedError as exc:  # --fail-fast
        print(f"wsisam-engine segment: {exc} (--fail-fast: the run stopped there)", file=sys.stderr)
        return EXIT_SLIDES_FAILED
    except ActorGoneError as exc:
        print(f"wsisam-engine segment: error: {exc}", file=sys.stderr)
        return 1
    print_summary(results, args.output)
    return EXIT_SLIDES_FAILED if any(r.status == "failed" for r in results) else 0


def _segment(args: argparse.Namespace, segment_slides, spec, options: dict):
    from ..distributed.executor import ExecutionConfig
    from ..pipeline import OutputConfig
    from ..scheduler import ScheduleConfig

    return segment_slides(
        args.slides, prompts=args.prompts, detector=args.detector,
        detector_options=options, output_dir=args.output, model=spec,
        schedule=ScheduleConfig(patch_px=spec.patch_px(), hr_mpp=args.hr_mpp, lr_mpp=args.lr_mpp,
                                context_px=args.context_px, points_extent_um=args.points_extent_um,
                                complete_cut_objects=not args.no_completion, exact_packing=args.exact_packing,
                                packing=args.packing),
        output=OutputConfig(ngff_version=args.ngff, min_area_um2=args.min_area_um2, qc=not args.no_qc),
        execution=ExecutionConfig(actors=args.actors, gpus_per_actor=args.gpus_per_actor,
                                  cpus_per_actor=args.cpus_per_actor, windows_per_batch=args.windows_per_batch,
                                  progress=not args.no_progress, fail_fast=args.fail_fast),
        address=args.address, slide_mpp=args.slide_mpp, num_cpus=args.num_cpus, num_gpus=args.num_gpus,
        overwrite=args.overwrite)


def _interrupt(signum, frame):  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt
