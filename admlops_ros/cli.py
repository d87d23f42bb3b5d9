"""The `admlops` command line: one entry point, subcommands contributed by each area.

Error policy: a subcommand raises; this module prints. An ``AdmlopsError`` (or an OSError: a
missing or unwritable file) is the user's to fix: ``admlops <command>: error: <message>`` on
stderr, exit 1 (2 for a ``UsageError``, as argparse's own usage errors). Ctrl-C exits 130.
Anything else is a bug and keeps its traceback; ``-v`` shows the traceback of every error.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from typing import List, Optional

from admlops_ros import interrupts
from admlops_ros.errors import AdmlopsError, UsageError

# Each module defines ``add_commands(subparsers)``; every subcommand sets ``func(args) -> int``.
COMMAND_MODULES = (
    "admlops_ros.bundle.cli",
    "admlops_ros.evaluation.cli",
    "admlops_ros.deploy.cli",
    "admlops_ros.ros.cli",
    "admlops_ros.training.cli",
    "admlops_ros.data.record_cli",
    "admlops_ros.data.export_cli",
    "admlops_ros.data.analyze_cli",
    "admlops_ros.data.mine_cli",
    "admlops_ros.data.insert_cli",
)
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand registered."""
    parser = argparse.ArgumentParser(prog="admlops", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and the traceback of any error")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:  # an optional area (e.g. training without torch)
            logging.getLogger(__name__).debug("commands of %s unavailable: %s", name, exc)
            continue
        module.add_commands(subparsers)
    return parser


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def main(argv: Optional[List[str]] = None) -> int:
    """Run the `admlops` CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    previous_handlers = interrupts.install()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if previous_handlers:  # handled: a retry now would land after the handlers are back
            interrupts.stop_retries()
        sys.stderr.write(f"admlops {args.command}: interrupted\n")
        return EXIT_INTERRUPTED
    except (AdmlopsError, OSError) as exc:
        if args.verbose:
            traceback.print_exc()
        # stderr directly: rospy.init_node (eval --online) takes over the logging handlers
        sys.stderr.write(f"admlops {args.command}: error: {_one_line(exc)}\n")
        return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_ERROR
    finally:
        interrupts.restore(previous_handlers)


if __name__ == "__main__":
    sys.exit(main())
