"""Timing helper shared by the benchmark scripts (medians after warm-up)."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, Hashable, List


def median_ms(fn: Callable[[], object], runs: int, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``runs`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, runs)):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def interleaved_medians(fns: Dict[Hashable, Callable[[], object]], runs: int
                        ) -> Dict[Hashable, float]:
    """Median ms of each function, timed in rounds (one call of each per round, after one
    warm-up call) so that load from other jobs hits all of them alike."""
    times: Dict[Hashable, List[float]] = {key: [] for key in fns}
    for fn in fns.values():
        fn()
    for _ in range(max(1, runs)):
        for key, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[key].append((time.perf_counter() - start) * 1e3)
    return {key: statistics.median(t) for key, t in times.items()}
