"""``wsisam-engine evaluate``: dice / IoU of existing predictions against ground truth."""
from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Score predictions against ground-truth polygons: dice and IoU per truth object (a missed object
scores 0), means per class and per slide, and a table laid out like the paper's Table 1 (CSV,
Markdown, PNG). Predictions: our objects.parquet (exact polygon areas), a labels.ome.zarr (pixel
counts; truth rasterised onto the label grid), a slide output folder, or a run folder of slide
folders. Matching: by prompt when --prompts names files whose prompts are called 'truth_id=<id>'
(as the experiment command writes them), else an IoU-maximal one-to-one assignment.

Several methods: repeat --pred and give one --method-name per --pred, in the same order.
"""


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="dice / IoU of predictions against ground truth (Table 1 layout)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pred", action="append", nargs="+", required=True, type=Path,
                   help="GeoParquet, labels.ome.zarr, slide output folder or run folder (repeatable)")
    p.add_argument("--truth", required=True, type=Path,
                   help="truth file (one slide) or folder with <slide_id>.geojson (QuPath GeoJSON or GeoParquet)")
    p.add_argument("--out", required=True, type=Path, help="output folder for the tables and plot")
    p.add_argument("--method-name", action="append", default=None,
                   help="table row name: once for all --pred, or once per --pred (default: the segmenter "
                        "named in summary.json, else 'predictions')")
    p.add_argument("--prompts", type=Path, default=None,
                   help="prompt file or folder the predictions came from (enables matching by prompt)")
    p.add_argument("--match", choices=("auto", "prompt", "overlap"), default="auto")
    p.add_argument("--labels", action="store_true", help="in output folders, score the label image, not the polygons")
    p.add_argument("--slide-mpp", type=float, default=None,
                   help="level-0 µm per pixel, for a label image without summary.json next to it")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluation.evaluate import evaluate_predictions
    from ..evaluation.predictions import resolve_predictions
    from ..evaluation.report import write_report

    names = args.method_name or []
    if len(names) not in (0, 1, len(args.pred)):
        raise ValueError(f"{len(args.pred)} --pred but {len(names)} --method-name: give one, or one per --pred")
    preds: dict[str, list] = {}
    for k, paths in enumerate(args.pred):
        sources = resolve_predictions(paths, prefer="labels" if args.labels else "polygons", slide_mpp=args.slide_mpp)
        if names:
            method = names[k] if len(names) > 1 else names[0]
        else:
            method = sources[0].segmenter or "predictions"
        preds.setdefault(method, []).extend(sources)
    ev = evaluate_predictions(preds, args.truth, args.prompts, args.match)
    files = write_report(ev, args.out, {"predictions": {m: [str(s.path) for s in v] for m, v in preds.items()},
                                        "truth": str(args.truth), "prompts": str(args.prompts) if args.prompts else None,
                                        "match": args.match})
    print(files.table_dice_md.read_text())
    print(f"written to {args.out}")
    return 0
