"""``wsisam-engine demo``: the offline quick start (generated slide, bundled demo model, embedded Ray)."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="segment a generated demo slide with the bundled demo model",
                       description="Generates a synthetic slide with ground truth, segments it with the bundled "
                                   "demo model (trained on synthetic slides only, not for tissue) on an embedded "
                                   "Ray, writes OME-Zarr, GeoParquet, GeoJSON and a QC picture, and prints the "
                                   "dice against the truth for WSI-SAM and the same model's SAM path.")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    p.add_argument("--seed", type=int, default=2026, help="seed of the generated slide and its prompts")
    p.add_argument("--checkpoint", default=None, help="another model (our .safetensors) instead of the demo model")
    p.add_argument("--no-sam", action="store_true", help="skip the SAM-path comparison")
    p.add_argument("--num-cpus", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..support.demo import run_demo
    from ..distributed.model_spec import ModelSpec

    model = ModelSpec(checkpoint=args.checkpoint) if args.checkpoint else None
    r = run_demo(args.out, seed=args.seed, model=model, compare_sam=not args.no_sam, num_cpus=args.num_cpus,
                 progress=not args.no_progress)
    print()
    print(r.table_text)
    for method, d in r.dice_by_method.items():
        print(f"mean per-object dice, {method}: {d:.3f}")
    print(f"slide:          {r.slide} (truth {r.truth})")
    print(f"prompts:        {r.prompts}")
    for method, path in r.outputs.items():
        print(f"{method + ':':<15} {path}/ (labels.ome.zarr, objects.parquet, objects.geojson, prompts.geojson)")
    print(f"QC picture:     {r.qc_png}")
    print(f"evaluation:     {r.table_md.parent}/")
    print("The demo model was trained on synthetic slides only: it is not a model for tissue.")
    return 0
