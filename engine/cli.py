"""The ``wsisam-engine`` command line: one subcommand per module under ``engine.commands``."""
from __future__ import annotations

import argparse
import sys

from .commands import bench_cmd

COMMANDS = {"bench": bench_cmd}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsisam-engine", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        module.add_parser(sub, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError, PermissionError) as exc:
        print(f"wsisam-engine {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
