#!/usr/bin/env python3
"""Benchmark multi-sweep accumulation (SweepAccumulator) on nuScenes-like clouds.

Usage: .venv/bin/python scripts/bench_sweeps.py [--runs 50] [--points 34720] [--json OUT]
Clouds: 32 rings x 1085 azimuths (a 20 Hz HDL-32E), x, y, z, intensity, time; the ego drives at
10 m/s turning 0.2 rad/s. Each timed call is one ``add`` of a new cloud: merge it with the
stored past sweeps (ego-motion transform, time lag, output buffer) and store it. The baseline
is the straightforward numpy version that redoes everything every frame (remove-close and
transform of every past sweep from its pose, then a concatenation), as mmdet3d's loader does.
Prints a table of medians; ``run()`` returns the same numbers as a dict.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarking import median_ms  # noqa: E402
from admlops_ros.lidar.sweeps import REMOVE_CLOSE_M, SensorPose, SweepAccumulator  # noqa: E402

FEATURES = ("x", "y", "z", "intensity", "time")
PERIOD_S = 0.05       # 20 Hz
SPEED_MPS, YAW_RATE = 10.0, 0.2


def make_cloud(rng: np.random.Generator, points: int) -> np.ndarray:
    """A ring-structured cloud: (points, 5) float32, ranges 1..70 m, time column 0."""
    az = rng.uniform(-math.pi, math.pi, points)
    elev = np.deg2rad(rng.uniform(-30.67, 10.67, points))
    rng_m = rng.uniform(1.0, 70.0, points)
    cloud = np.column_stack([rng_m * np.cos(elev) * np.cos(az), rng_m * np.cos(elev) * np.sin(az),
                             rng_m * np.sin(elev) + 1.8, rng.uniform(0, 255, points),
                             np.zeros(points)])
    return cloud.astype(np.float32)


def ego_pose(k: int) -> SensorPose:
    """Sensor pose in odom at frame k (a circle driven at SPEED_MPS, far from odom's origin)."""
    yaw = YAW_RATE * k * PERIOD_S
    radius = SPEED_MPS / YAW_RATE
    return SensorPose((5000.0 + radius * math.sin(yaw), -3000.0 + radius * (1 - math.cos(yaw)),
                       1.8), (0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)))


def baseline_merge(history: List[Tuple[np.ndarray, float, np.ndarray]], sweeps: int
                   ) -> np.ndarray:
    """Everything every frame: newest + (sweeps - 1) past, each filtered and transformed anew."""
    newest, stamp, pose = history[-1]
    out = [np.concatenate([newest[:, :4], np.zeros((len(newest), 1), np.float32)], axis=1)]
    inverse = np.linalg.inv(pose)
    for past, past_stamp, past_pose in reversed(history[-sweeps:-1]):
        keep = ~((np.abs(past[:, 0]) < REMOVE_CLOSE_M) & (np.abs(past[:, 1]) < REMOVE_CLOSE_M))
        kept = past[keep]
        rel = inverse @ past_pose
        xyz = kept[:, :3] @ rel[:3, :3].T.astype(np.float32) + rel[:3, 3].astype(np.float32)
        lag = np.full((len(kept), 1), stamp - past_stamp, np.float32)
        out.append(np.concatenate([xyz, kept[:, 3:4], lag], axis=1))
    return np.concatenate(out, axis=0)


def run(runs: int = 50, points: int = 34720, seed: int = 0) -> Dict[str, object]:
    """Median ms of one ``add`` per window length, the baseline, and baseline / ours.

    Returns:
        dict with ``median_ms`` per case, ``ratios``, ``points_out`` per window and ``runs``.
    """
    rng = np.random.default_rng(seed)
    pool = [make_cloud(rng, points) for _ in range(12)]
    med: Dict[str, float] = {}
    sizes: Dict[str, int] = {}
    for sweeps in (2, 10, 11):
        acc = SweepAccumulator.for_features(sweeps, FEATURES)
        state = {"k": 0}

        def step(acc=acc, state=state):
            k = state["k"]
            state["k"] = k + 1
            return acc.add(pool[k % len(pool)], 1000.0 + k * PERIOD_S, ego_pose(k), "lidar_top")

        for _ in range(sweeps):  # fill the window before timing
            step()
        med[f"ours: {sweeps} sweeps (SweepAccumulator.add)"] = median_ms(step, runs)
        sizes[str(sweeps)] = len(step().points)
    history = [(pool[k % len(pool)], 1000.0 + k * PERIOD_S, ego_pose(k).matrix())
               for k in range(10)]
    med["baseline: 10 sweeps, all re-filtered and re-transformed"] = median_ms(
        lambda: baseline_merge(history, 10), runs)
    ratios = {"10 sweeps: baseline / ours": med["baseline: 10 sweeps, all re-filtered and "
                                                "re-transformed"]
              / med["ours: 10 sweeps (SweepAccumulator.add)"]}
    return {"runs": runs, "points_per_cloud": points, "points_out": sizes, "median_ms": med,
            "ratios": ratios}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--points", type=int, default=34720, help="points per cloud")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the result dict here")
    args = parser.parse_args(argv)
    res = run(args.runs, args.points, args.seed)
    print(f"multi-sweep accumulation, {res['points_per_cloud']} points per cloud (x, y, z, "
          f"intensity, time), median of {res['runs']} runs; points out: {res['points_out']}")
    width = max(len(k) for k in list(res["median_ms"]) + list(res["ratios"]))
    print(f"{'case':<{width}}  median ms")
    for name, ms in res["median_ms"].items():
        print(f"{name:<{width}}  {ms:9.3f}")
    for name, ratio in res["ratios"].items():
        print(f"{name:<{width}}  {ratio:8.1f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
