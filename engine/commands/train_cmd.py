"""``wsisam-engine train``: train WSI-SAM (stage ``wsi``), the small SAM inside it (stage ``sam``),
or both in turn, on slides with polygon annotations.

Writes ``DIR/model.safetensors`` (our format) and ``DIR/train_log.jsonl`` (one JSON line per
epoch: stage, losses, validation dice, seconds). With ``--stage both`` each stage keeps its own
checkpoints in ``DIR/stage_sam`` and ``DIR/stage_wsi`` and the final model is copied to DIR.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="train WSI-SAM on slides with polygon annotations")
    p.add_argument("--slides", nargs="+", required=True, type=Path, help="slide files")
    p.add_argument("--annotations", nargs="+", required=True, type=Path,
                   help="one annotation file per slide, same order (QuPath GeoJSON or GeoParquet, level-0 px)")
    p.add_argument("--val-slides", nargs="*", default=[], type=Path, help="validation slides (default: hold out objects)")
    p.add_argument("--val-annotations", nargs="*", default=[], type=Path)
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of the objects held out for validation when no --val-slides are given")
    p.add_argument("--backbone", default="vit_test", help="model configuration name (see wsisam.CONFIGS)")
    p.add_argument("--init", type=Path, default=None, help="start from this checkpoint (our .safetensors)")
    p.add_argument("--sam-checkpoint", type=Path, default=None, help="SAM/MobileSAM weights for the SAM parts")
    p.add_argument("--stage", choices=["sam", "wsi", "both"], default="wsi")
    p.add_argument("--epochs", type=int, default=20, help="epochs per stage")
    p.add_argument("--sam-epochs", type=int, default=None, help="epochs of stage sam with --stage both")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant")
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--lambda-hr", type=float, default=0.5, help="weight of the HR loss (LR: 1 - this)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--prompt-kinds", default="box,points,mask", help="kinds drawn per sample, comma-separated")
    p.add_argument("--num-points", type=int, default=10)
    p.add_argument("--add-sam-logits", choices=["train", "infer", "both", "none"], default=None,
                   help="where SAM's HR logits are added to the WSI mask (default: the model's own setting at "
                        "inference, WSI masks alone in training)")
    p.add_argument("--hr-mpp", type=float, default=1.0)
    p.add_argument("--lr-mpp", type=float, default=2.0)
    p.add_argument("--samples-per-object", type=int, default=1)
    p.add_argument("--samples-per-class", nargs="*", default=[], metavar="CLASS=N",
                   help="windows per object for some classes, e.g. dcis=10 (others: --samples-per-object)")
    p.add_argument("--jitter", type=float, default=0.25, help="window-centre jitter, share of the HR field")
    p.add_argument("--scheduler-levels", type=int, default=-1, metavar="CONTEXT_PX",
                   help="read each object at the level the engine's scheduler gives it with this --context-px "
                        "(objects bigger than the HR window at coarser pairs); -1: always --hr-mpp/--lr-mpp")
    p.add_argument("--jitter-in-box", action="store_true",
                   help="draw window centres anywhere in an object's box when that is wider than the jitter")
    p.add_argument("--cache-dir", type=Path, default=None, help="sample cache (default: DIR/cache)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--fp16-weights", action="store_true", help="store the final model's weights as fp16")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", type=Path, required=True, help="output folder DIR")
    p.add_argument("--resume", action="store_true", help="continue the run in DIR from its last epoch")
    p.set_defaults(run=run)


def _samples(slides: list[Path], annotations: list[Path], cfg, cache_dir: Path, progress: bool):
    from ..support.training_data import SampleSet, load_samples

    if len(slides) != len(annotations):
        raise ValueError(f"{len(slides)} slides but {len(annotations)} annotation files: give one per slide")
    return SampleSet.concat([load_samples(s, a, cfg, cache_dir, progress=progress) for s, a in zip(slides, annotations)])


def run(args: argparse.Namespace) -> int:
    import torch

    import wsisam
    from wsisam.training import PromptSamplingConfig, TrainConfig, Trainer

    from ..support.training_data import PatchPairDataset, SampleConfig, split_by_object

    if args.threads:
        torch.set_num_threads(args.threads)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    if args.init is not None:
        model = wsisam.load_wsisam(args.init)
    else:
        model = wsisam.build_wsisam(args.backbone, sam_checkpoint=args.sam_checkpoint)
    add = args.add_sam_logits
    if add is not None:
        model = _with_config(model, add_sam_logits=add in ("infer", "both"))
    progress = not args.no_progress
    t0 = time.perf_counter()
    cfg = SampleConfig(patch_px=model.config.img_size, hr_mpp=args.hr_mpp, lr_mpp=args.lr_mpp,
                       samples_per_object=args.samples_per_object,
                       samples_per_class=tuple(_class_count(x) for x in args.samples_per_class), jitter_fraction=args.jitter,
                       jitter_in_box=args.jitter_in_box, seed=args.seed, scheduler_context_px=args.scheduler_levels)
    cache = args.cache_dir or out / "cache"
    samples = _samples(args.slides, args.annotations, cfg, cache, progress)
    if args.val_slides:
        val = _samples(args.val_slides, args.val_annotations, dataclasses.replace(cfg, seed=cfg.seed + 1), cache, progress)
        train = samples
    else:
        tr, va = split_by_object(samples, args.val_fraction, args.seed)
        train, val = samples.select(tr), samples.select(va)
    print(f"train: {len(train)} samples, validation: {len(val)} samples "
          f"({time.perf_counter() - t0:.0f} s to read)", flush=True)
    train_set = PatchPairDataset(train, augment=True, seed=args.seed)
    val_set = PatchPairDataset(val, augment=False)
    prompts = PromptSamplingConfig(kinds=tuple(k.strip() for k in args.prompt_kinds.split(",")),
                                   num_points=args.num_points)
    stages = ["sam", "wsi"] if args.stage == "both" else [args.stage]
    log = []
    for stage in stages:
        epochs = args.sam_epochs if stage == "sam" and args.sam_epochs and args.stage == "both" else args.epochs
        tc = TrainConfig(stage=stage, epochs=epochs, lr=args.lr, weight_decay=args.weight_decay,
                         lambda_hr=args.lambda_hr, batch_size=args.batch_size, seed=args.seed, prompts=prompts,
                         lr_schedule=args.lr_schedule, warmup_steps=args.warmup_steps,
                         add_sam_logits=add in ("train", "both"), device=args.device, progress=progress)
        stage_dir = out / f"stage_{stage}" if len(stages) > 1 else out
        trainer = Trainer(model, tc, train_set, val_set, out_dir=stage_dir)
        log += trainer.fit(resume=args.resume)
        if stage_dir != out:
            shutil.copyfile(stage_dir / "model.safetensors", out / "model.safetensors")
    if len(stages) > 1:
        (out / "train_log.jsonl").write_text("".join(json.dumps(r.__dict__) + "\n" for r in log))
    if args.fp16_weights:
        wsisam.save_wsisam(model.half(), out / "model.safetensors")
    print(f"wrote {out / 'model.safetensors'} ({time.perf_counter() - t0:.0f} s in all)", flush=True)
    return 0


def _class_count(text: str) -> tuple[str, int]:
    name, sep, count = text.rpartition("=")
    if not sep or not name or not count.isdigit():
        raise ValueError(f"--samples-per-class takes CLASS=N, got {text!r}")
    return name, int(count)


def _with_config(model, **changes):
    """The same weights under a configuration with some inference fields changed."""
    import wsisam

    new = wsisam.WsiSam(model.config.replace(**changes))
    new.load_state_dict(model.state_dict())
    return new
