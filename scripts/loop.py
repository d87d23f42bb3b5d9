#!/usr/bin/env python3
"""`make loop`: one measured iteration of the data loop (admlops_ros/data/loop.py); see --help.

Prints the table AP_B(M0), AP_B(M1 mined), AP_B(M1 random), AP_A(M0), AP_A(M1) and writes
<out>/loop.json with every figure, pick and command.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("NUMBA_NUM_THREADS", "2")  # before numba is imported (voxelizer)
os.environ.setdefault("OMP_NUM_THREADS", "2")

from admlops_ros.data.loop import LoopConfig, format_table, run_loop  # noqa: E402
from admlops_ros.errors import AdmlopsError  # noqa: E402

_FIELDS = {f.name: f for f in dataclasses.fields(LoopConfig)}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    defaults = LoopConfig()
    for name in _FIELDS:
        if name == "mine_weights":
            continue
        value = getattr(defaults, name)
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):  # --skip-eval turns on, --no-gt-sampling turns off
            p.add_argument(flag if not value else "--no-" + flag[2:], dest=name,
                           action="store_const", const=not value, default=None,
                           help=f"{'turn off' if value else 'turn on'} {name}")
            continue
        kind = type(value) if value is not None else str
        p.add_argument(flag, type=kind, default=None, help=f"default {value}")
    p.add_argument("--mine-weight", action="append", default=[], metavar="NAME=W",
                   help="admlops mine component weight (default "
                        + ", ".join(f"{k}={v:g}" for k, v in defaults.mine_weights.items())
                        + ")")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    changes = {k: v for k, v in vars(args).items() if k in _FIELDS and v is not None}
    try:
        if args.mine_weight:
            from admlops_ros.data.mine import parse_weights
            weights = dict(LoopConfig().mine_weights)
            for text in args.mine_weight:  # NAME=W over the loop's defaults
                name = text.partition("=")[0].strip()
                weights[name] = parse_weights([text])[name]
            changes["mine_weights"] = weights
        cfg = dataclasses.replace(LoopConfig(), **changes)
        result = run_loop(cfg)
    except AdmlopsError as exc:
        sys.stderr.write(f"loop: error: {exc}\n")
        return 1
    if result["table"]:
        sys.stdout.write(format_table(result["table"], result["targets"]) + "\n")
    sys.stdout.write(f"wrote {Path(cfg.out) / 'loop.json'} ({result['seconds']['total']:.0f} s)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
