"""``wsisam-engine bench``: measurements printed as a Markdown table from one run (never timed tests).

Suites (one module each under ``engine/bench/``): ``model`` (encoder s/pair, decoder ms/prompt),
``engine`` (objects/s vs the reference demo's way), ``passes`` (encoder passes per prompt),
``stages`` (wall-time shares of a single-process run), ``flops`` (achieved FLOP/s vs matmul peak),
``memory`` (peak RSS vs slide size), ``read`` (CPU per 1024 px HR + LR pair read from 40x
slides, against tiatoolbox and the raw tile decode), ``capacity`` (the engine's CPU per window and
per object outside the model at 1024 px, with a bench instrument in place of the model, and the
cores per GPU that implies), ``scaling`` (1 vs 2 Ray model actors), ``e2e`` (the real
``segment`` command on embedded Ray vs the in-process pipeline: time to first batch, model busy
share, stage split, peak PSS of all processes; ``--e2e-cohort 2,20`` adds a cohort memory row),
``completion`` (per-object dice with window-border completion against ``--no-completion``, box and
point prompts, demo model), and ``all`` (all of them, then one headline table).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import time
from pathlib import Path

#: suite name -> module under engine.bench, in the order ``all`` runs them
SUITES = {
    "engine": "engine_bench",
    "passes": "passes_bench",
    "stages": "stages_bench",
    "flops": "flops_bench",
    "memory": "memory_bench",
    "scaling": "scaling_bench",
    "e2e": "e2e_bench",
    "read": "read_bench",
    "capacity": "capacity_bench",
    "completion": "completion_bench",
}


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="benchmarks; prints ratios measured in one run",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("suite", choices=["model", *SUITES, "all"], help="which suite (all: every suite but model)")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    p.add_argument("--md", type=Path, default=None, help="also write the Markdown tables here")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--repeats", type=int, default=None, help="best-of repeats for per-call timings")
    p.add_argument("--skip", default="", help="with all: suites to leave out, comma-separated (e.g. scaling)")
    g = p.add_argument_group("model suite")
    g.add_argument("--backbones", default="vit_test,vit_tiny", help="comma-separated backbone names")
    g.add_argument("--prompts", default="1,8,64", help="prompts per patch pair, comma-separated")
    g.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    g = p.add_argument_group("engine, passes, stages, flops, memory, scaling suites")
    g.add_argument("--backbone", default=None, help="model size, random weights (default vit_tiny; --quick: "
                   "vit_test; e2e: default the bundled demo model)")
    g.add_argument("--quick", action="store_true", help="small sizes: `all` in a few minutes on a CPU")
    g.add_argument("--cache-dir", type=Path, default=None, help="generated slides are kept here for reruns "
                   "(default ~/.cache/wsisam-engine/bench)")
    g.add_argument("--work-dir", type=Path, default=None, help="keep run outputs here (default: a temporary folder)")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--densities", default=None, help="engine: prompts per window, comma-separated (default 1,8,32)")
    g.add_argument("--windows", type=int, default=None, help="engine: windows per density (default 2)")
    g.add_argument("--naive-prompts", type=int, default=None,
                   help="engine: prompts per density run the naive way (default 3)")
    g.add_argument("--stage-density", type=int, default=None, help="stages/flops: prompts per window (default 8)")
    g.add_argument("--stage-windows", type=int, default=None, help="stages: windows (default 4)")
    g.add_argument("--memory-sizes", default=None,
                   help="memory: square slide sides in px at 0.5 µm/px (default 10000,25000,50000,100000)")
    g.add_argument("--memory-prompts", type=int, default=None, help="memory: prompts on every slide (default 16)")
    g.add_argument("--scaling-actors", default=None, help="scaling: actor counts (default 1,2)")
    g.add_argument("--scaling-windows", type=int, default=None, help="scaling: windows (default 4)")
    g.add_argument("--scaling-density", type=int, default=None, help="scaling: prompts per window (default 4)")
    g = p.add_argument_group("read and capacity suites")
    g.add_argument("--read-side-px", type=int, default=None, help="40x slides' side, level-0 px (default 16384; "
                   "--quick: 8192)")
    g.add_argument("--read-windows", type=int, default=None, help="windows read per slide (default 16; --quick: 8)")
    g.add_argument("--capacity-glands", type=int, default=None, help="capacity: gland-sized box prompts on each "
                   "40x slide (default 300; --quick: 60)")
    g.add_argument("--capacity-nuclei", type=int, default=None, help="capacity: nucleus-sized box prompts (default "
                   "3000; --quick: 600)")
    g.add_argument("--capacity-slides", type=int, default=None, help="capacity: copies of the slide in the Ray "
                   "cohort (default 6; --quick: 2)")
    g = p.add_argument_group("e2e suite")
    g.add_argument("--e2e-side-px", type=int, default=None, help="square slide side, level-0 px at 0.5 µm/px "
                   "(default 8192; --quick: 2048)")
    g.add_argument("--e2e-prompts", type=int, default=None, help="truth objects = noisy box prompts (default 80)")
    g.add_argument("--e2e-cohort", default=None, help="cohort row: slide counts, comma-separated (e.g. 2,20)")
    g.add_argument("--e2e-cohort-side-px", type=int, default=None, help="cohort slides' side (default 1024)")
    g.add_argument("--e2e-cohort-prompts", type=int, default=None, help="prompts per cohort slide (default 4)")
    g = p.add_argument_group("completion suite")
    g.add_argument("--completion-seeds", default=None, help="one generated slide per seed, comma-separated "
                   "(default 0,1,2; --quick: 0)")
    p.set_defaults(run=run)


def options_from_args(args: argparse.Namespace):
    from ..bench.common import BenchOptions

    over = {}
    for field, conv in (("backbone", None), ("device", None), ("seed", None), ("cache_dir", None),
                        ("work_dir", None), ("repeats", None), ("densities", _ints), ("windows", None),
                        ("naive_prompts", None), ("stage_density", None), ("stage_windows", None),
                        ("memory_sizes", _ints), ("memory_prompts", None), ("scaling_actors", _ints),
                        ("scaling_windows", None), ("scaling_density", None), ("e2e_side_px", None),
                        ("e2e_prompts", None), ("e2e_cohort", _ints), ("e2e_cohort_side_px", None),
                        ("e2e_cohort_prompts", None), ("read_side_px", None), ("read_windows", None),
                        ("capacity_glands", None), ("capacity_nuclei", None), ("capacity_slides", None),
                        ("completion_seeds", _ints)):
        v = getattr(args, field, None)
        if v is not None:
            over[field] = conv(v) if conv else v
    if args.backbone is not None and args.suite == "e2e":  # e2e alone: the demo model unless a backbone is named
        over["e2e_backbone"] = args.backbone
    opts = BenchOptions.quick_defaults(**over) if args.quick else dataclasses.replace(BenchOptions(), **over)
    if not opts.densities or not opts.memory_sizes or not opts.scaling_actors:
        raise ValueError("--densities, --memory-sizes and --scaling-actors need at least one value")
    if opts.e2e_side_px < 256 or opts.e2e_prompts < 1 or opts.e2e_cohort_side_px < 256 or opts.e2e_cohort_prompts < 1 \
            or any(n < 1 for n in opts.e2e_cohort):
        raise ValueError("--e2e-side-px and --e2e-cohort-side-px must be >= 256, --e2e-prompts, "
                         "--e2e-cohort-prompts and --e2e-cohort counts >= 1")
    return opts


def run_suites(names: list[str], opts) -> tuple[list, dict]:
    """Run suites in order; returns their results and the JSON document."""
    results = []
    t0 = time.perf_counter()
    for name in names:
        module = importlib.import_module(f"engine.bench.{SUITES[name]}")
        print(f"[bench] {name} ...", flush=True)
        r = module.run(opts)
        print(f"[bench] {name} done in {r.seconds:.0f} s", flush=True)
        results.append(r)
    doc = {"options": opts.to_json(), "wall_s": time.perf_counter() - t0,
           "headline": [{"suite": r.suite, **h} for r in results for h in r.headline],
           "suites": {r.suite: r.to_json() for r in results}}
    return results, doc


def markdown(results: list, wall_s: float, command: str) -> str:
    from ..bench.common import headline_markdown

    parts = [f"## wsisam-engine bench ({wall_s / 60:.1f} min)", "", f"`{command}`", "", headline_markdown(results)]
    for r in results:
        parts += ["", r.markdown()]
    return "\n".join(parts) + "\n"


def run(args: argparse.Namespace) -> int:
    if args.suite == "model":
        return run_model(args)
    import sys

    opts = options_from_args(args)
    skip = {x.strip() for x in args.skip.split(",") if x.strip()}
    if skip - set(SUITES):
        raise ValueError(f"--skip: unknown suite(s) {sorted(skip - set(SUITES))}; choose from {', '.join(SUITES)}")
    names = [n for n in SUITES if n not in skip] if args.suite == "all" else [args.suite]
    results, doc = run_suites(names, opts)
    command = "wsisam-engine " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("wsisam-engine") \
        else f"wsisam-engine bench {args.suite}" + (" --quick" if args.quick else "")
    doc["command"] = command
    md = markdown(results, doc["wall_s"], command)
    print(md)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2, default=str))
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(md)
    return 0


def run_model(args: argparse.Namespace) -> int:
    import torch

    from ..bench.model_bench import bench_model, format_rows, rows_to_json

    counts = tuple(int(x) for x in args.prompts.split(","))
    rows = [bench_model(b.strip(), counts, args.repeats or 3, args.device, torch.bfloat16 if args.bf16 else None)
            for b in args.backbones.split(",")]
    table = format_rows(rows)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(rows_to_json(rows), indent=2))
    if args.md:
        args.md.write_text(table + "\n")
    return 0
