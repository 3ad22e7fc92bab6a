"""``wsisam-engine experiment``: prompts from truth -> WSI-SAM and SAM -> dice table (the paper's Table 1).

With the official WSI-SAM weights and the DCIS / CAMELYON16 slides and annotations, this is how
the paper's zero-shot comparisons (Tables 1, 2 and 4) are reproduced; see
:mod:`engine.evaluation.experiment` for the outputs and :mod:`engine.evaluation.protocols` for the
exact prompt protocols and noise model.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..protocol_names import PROTOCOL_NAMES

DESCRIPTION = """\
Make prompts from ground truth with a seeded protocol, segment every slide with WSI-SAM (mode "wsi")
and with SAM (mode "sam", the same weights' frozen SAM decoder on the HR patch), and write a table
laid out like the paper's Table 1 (a row per method, a column per class, plus avg; dice in %) as
CSV, Markdown and PNG, with per-object and per-slide CSVs.

Reproducing the paper (Tables 1, 2 and 4): use the official weights
  --backbone vit_tiny --sam-checkpoint mobile_sam.pt --hr-decoder <hr.pth> --lr-decoder <lr.pth>
with the DCIS / CAMELYON16 slides and their annotations (classes as the truth files name them), and
  --protocol boxes                 noisy ground-truth boxes (Table 1)
  --protocol points3|points5|points10   positive points per object
  --protocol detector --coarse-mask '<dir>/{slide_id}.png' --coarse-mask-mpp <um/px>   nnU-Net boxes

Box noise (the reference training noise): centre shift up to +-10% of the box width/height, width and
height change up to +-20%, uniform, drawn per object from a generator seeded by (seed, slide, object).
"""


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="zero-shot WSI-SAM vs SAM on slides with ground truth (the paper's Table 1)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slides", nargs="+", required=True, type=Path, help="slide files (slide id = file stem)")
    p.add_argument("--truth", nargs="+", required=True, type=Path,
                   help="truth polygons (QuPath GeoJSON or GeoParquet, level-0 px): one per slide in the same "
                        "order, or one folder with <slide_id>.geojson")
    p.add_argument("--protocol", required=True, choices=PROTOCOL_NAMES, help="how prompts are made from the truth")
    p.add_argument("--checkpoint", default=None, help="our .safetensors model file")
    p.add_argument("--backbone", default=None, help="backbone name (vit_tiny, vit_b, ...) for reference weights")
    p.add_argument("--sam-checkpoint", default=None, help="SAM's sam_vit_*.pth or MobileSAM's mobile_sam.pt")
    p.add_argument("--hr-decoder", default=None, help="reference WSI-SAM HR decoder file")
    p.add_argument("--lr-decoder", default=None, help="reference WSI-SAM LR decoder file")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="protocol seed (default 0)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    p.add_argument("--context-px", type=int, default=None, help="HR pixels kept around each box in its window")
    p.add_argument("--box-centre-shift", type=float, default=0.1, help="boxes: max centre shift / box size (0.1)")
    p.add_argument("--box-size-change", type=float, default=0.2, help="boxes: max relative size change (0.2)")
    p.add_argument("--coarse-mask", default=None,
                   help="detector: coarse segmentation per slide, path with {slide_id} (.png/.tif/.npy; value = class)")
    p.add_argument("--coarse-mask-mpp", type=float, default=None, help="detector: µm per coarse-mask pixel")
    p.add_argument("--coarse-mpp", type=float, default=8.0,
                   help="detector without --coarse-mask: µm per pixel of the coarse mask made from the truth (8)")
    p.add_argument("--boundary-noise-um", type=float, default=8.0,
                   help="detector without --coarse-mask: max grow/shrink of each object before rasterising (8 µm)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from ..evaluation.experiment import ModelFiles, model_methods, run_experiment
    from ..evaluation.protocols import BoxNoise, get_protocol
    from ..scheduler import ScheduleConfig

    files = ModelFiles(args.checkpoint, args.backbone, args.sam_checkpoint, args.hr_decoder, args.lr_decoder)
    for f in (args.checkpoint, args.sam_checkpoint, args.hr_decoder, args.lr_decoder):
        if f is not None and not Path(f).is_file():
            raise FileNotFoundError(f"model file {f} not found")
    protocol = get_protocol(args.protocol, BoxNoise(args.box_centre_shift, args.box_size_change),
                            coarse_mpp=args.coarse_mpp, boundary_noise_um=args.boundary_noise_um,
                            mask=args.coarse_mask, mask_mpp=args.coarse_mask_mpp)
    methods, patch_px = model_methods(files.build(), args.device, torch.bfloat16 if args.bf16 else None)
    schedule = ScheduleConfig(patch_px=patch_px)
    if args.context_px is not None:
        schedule = dataclasses.replace(schedule, context_px=args.context_px)
    result = run_experiment(args.slides, args.truth, protocol, methods, args.out, seed=args.seed, schedule=schedule,
                            description={"model": dataclasses.asdict(files)})
    print(result.report.table_dice_md.read_text())
    print(f"written to {result.out_dir}")
    return 0
