"""argparse types of the `admlops` options: a bad number is a usage error naming the value."""
from __future__ import annotations

import argparse
import math
from typing import Callable, Optional


def _number(text: str, kind: type) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'}"
                                         f", got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def int_at_least(lo: int) -> Callable[[str], int]:
    """An integer >= lo (e.g. --limit, --count: at least 1)."""
    def parse(text: str) -> int:
        value = int(_number(text, int))
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be an integer >= {lo}, got {text!r}")
        return value
    parse.__name__ = f"integer >= {lo}"
    return parse


def float_in(lo: float, hi: Optional[float] = None,
             lo_open: bool = False) -> Callable[[str], float]:
    """A finite number in [lo, hi] (or (lo, hi] with ``lo_open``)."""
    bounds = f"{'>' if lo_open else '>='} {lo}" + (f" and <= {hi}" if hi is not None else "")

    def parse(text: str) -> float:
        value = _number(text, float)
        if (value <= lo if lo_open else value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be a number {bounds}, got {text!r}")
        return value
    parse.__name__ = f"number {bounds}"
    return parse


POSITIVE_INT = int_at_least(1)
NON_NEGATIVE_INT = int_at_least(0)
POSITIVE = float_in(0.0, lo_open=True)
FRACTION = float_in(0.0, 1.0)
