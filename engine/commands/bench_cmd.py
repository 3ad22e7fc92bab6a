"""``wsisam-engine bench``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="benchmarks; prints ratios measured in one run")
    p.add_argument("suite", choices=["model"], help="model: encoder s/pair and decoder ms/prompt")
    p.add_argument("--backbones", default="vit_test,vit_tiny", help="comma-separated backbone names")
    p.add_argument("--prompts", default="1,8,64", help="prompts per patch pair, comma-separated")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..bench.model_bench import bench_model, format_rows, rows_to_json

    counts = tuple(int(x) for x in args.prompts.split(","))
    rows = [bench_model(b.strip(), counts, args.repeats, args.device, torch.bfloat16 if args.bf16 else None)
            for b in args.backbones.split(",")]
    print(format_rows(rows))
    if args.json:
        args.json.write_text(json.dumps(rows_to_json(rows), indent=2))
    return 0
