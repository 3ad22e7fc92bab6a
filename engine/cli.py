"""The ``wsisam-engine`` command line: one subcommand per module in ``engine/commands/``.

Each command module has ``add_parser(subparsers, name)``, which registers its arguments and sets
``run(args) -> int`` as the parser default. Modules are imported when the parser is built; they
import torch, ray and tiatoolbox only inside ``run``, so ``--help`` and argument errors are fast.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# command name -> module under engine.commands
COMMANDS = {
    "segment": "segment_cmd",
    "train": "train_cmd",
    "evaluate": "evaluate_cmd",
    "experiment": "experiment_cmd",
    "bench": "bench_cmd",
    "demo": "demo_cmd",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsisam-engine", description="Slide-scale WSI-SAM segmentation.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_name in COMMANDS.items():
        # Command modules import only argparse-level things at the top, so `--help` stays fast.
        importlib.import_module(f"engine.commands.{module_name}").add_parser(sub, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError, PermissionError) as exc:
        print(f"wsisam-engine {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"wsisam-engine {args.command}: interrupted; unfinished slides' partial outputs were removed, "
              "finished slides are kept (rerun to go on)", file=sys.stderr)
        return 130


def console_main(argv: list[str] | None = None) -> None:
    """The ``wsisam-engine`` program: :func:`main`, then exit at once. By then every output is
    written and closed, and an embedded Ray is shut down; tearing the interpreter down after a
    command that loaded torch, tiatoolbox and Ray takes 1.5-2.5 s more (2-core machine), which
    ``wsisam-engine segment`` would add to every run. Nor does the teardown race the threads Ray
    leaves running after ``ray.shutdown()`` (its gRPC and core worker IO threads). A command that
    raised exits the usual way."""
    code = main(argv)
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():  # joined a cluster: disconnect, as at a normal exit
        from .distributed.cluster import stop_ray

        stop_ray()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    console_main()
