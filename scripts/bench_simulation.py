#!/usr/bin/env python3
"""Simulator throughput on one core: frames/s and points/frame per sensor preset (medians)."""
from __future__ import annotations

import os

os.environ["NUMBA_NUM_THREADS"] = "1"   # before numba is imported: one core

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Dict, Sequence  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from admlops_ros.simulation import SensorConfig, generate_scene, simulate_frame  # noqa: E402
from admlops_ros.simulation.frame import cast  # noqa: E402

WARMUP = 2
FIRST_SEED = 1000


def _bench_preset(preset: str, frames: int) -> Dict[str, float]:
    sensor = SensorConfig.preset(preset)
    for seed in range(WARMUP):
        simulate_frame(FIRST_SEED + seed, sensor=sensor)
    total, scene_ms, cast_ms, points = [], [], [], []
    for seed in range(FIRST_SEED + WARMUP, FIRST_SEED + WARMUP + frames):
        t0 = time.perf_counter()
        frame = simulate_frame(seed, sensor=sensor)
        total.append(time.perf_counter() - t0)
        points.append(len(frame.points))
        t0 = time.perf_counter()
        scene = generate_scene(seed, mount_height=sensor.mount_height)
        t1 = time.perf_counter()
        cast(scene, sensor, seed)
        t2 = time.perf_counter()
        scene_ms.append((t1 - t0) * 1e3)
        cast_ms.append((t2 - t1) * 1e3)
    med = statistics.median(total)
    return {"preset": preset, "beams": sensor.num_beams, "rays": sensor.num_rays,
            "frames": frames, "frame_ms": med * 1e3, "fps": 1.0 / med,
            "scene_ms": statistics.median(scene_ms), "cast_ms": statistics.median(cast_ms),
            "points": statistics.median(points)}


def run(frames: int = 10, presets: Sequence[str] = ("hdl64",)) -> dict:
    """Benchmarks `simulate_frame` (scene + ray cast + labels) for each preset.

    Args:
        frames: timed frames per preset (median over them, after warm-up frames).
        presets: sensor preset names; ``hdl64`` is the default 120k-point scan.

    Returns:
        ``{"numba_threads": 1, "results": [{preset, beams, rays, frames, frame_ms, fps,
        scene_ms, cast_ms, points}, ...]}``.
    """
    return {"numba_threads": int(os.environ["NUMBA_NUM_THREADS"]),
            "results": [_bench_preset(p, frames) for p in presets]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--presets", nargs="+", default=["hdl64"],
                        help="sensor presets (hdl64 hdl32 pandar40 vls128)")
    parser.add_argument("--json", help="also write the result dict here")
    args = parser.parse_args()
    result = run(args.frames, args.presets)
    print(f"simulate_frame, one core (NUMBA_NUM_THREADS={result['numba_threads']}), "
          f"median over {args.frames} frames after {WARMUP} warm-up")
    print(f"{'preset':<10}{'beams':>6}{'rays':>9}{'points/frame':>14}{'scene ms':>10}"
          f"{'cast ms':>9}{'frame ms':>10}{'frames/s':>10}")
    for r in result["results"]:
        print(f"{r['preset']:<10}{r['beams']:>6}{r['rays']:>9}{r['points']:>14.0f}"
              f"{r['scene_ms']:>10.1f}{r['cast_ms']:>9.1f}{r['frame_ms']:>10.1f}{r['fps']:>10.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
