"""The `admlops` command line: one entry point, subcommands contributed by each area."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import List, Optional

# Each module defines ``add_commands(subparsers)``; every subcommand sets ``func(args) -> int``.
COMMAND_MODULES = (
    "admlops_ros.bundle.cli",
    "admlops_ros.evaluation.cli",
    "admlops_ros.deploy.cli",
    "admlops_ros.training.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand registered."""
    parser = argparse.ArgumentParser(prog="admlops", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:  # an optional area (e.g. training without torch)
            logging.getLogger(__name__).debug("commands of %s unavailable: %s", name, exc)
            continue
        module.add_commands(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run the `admlops` CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
