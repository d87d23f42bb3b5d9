#!/usr/bin/env python3
"""Benchmark the preprocess stage (PointCloud2 -> array, voxelize) against in-process baselines.

Usage:
    .venv/bin/python scripts/bench_preprocess.py [CLOUD.npy|CLOUD.bin] [--runs 20] [--json OUT]

Without a path, 120,000 random points in the KITTI PointPillars range are used (a worst case
for voxelize: they occupy more than max_voxels cells). A .bin is KITTI velodyne float32 x 4.
Then LidarDetector.preprocess of the shipped model on 120k, 1M and 2M points (copies of a
simulated scan), against the two-step path it replaced (shuffled copy, then voxelize).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarking import median_ms  # noqa: E402
from admlops_ros.lidar.pointcloud import array_to_pointcloud2, pointcloud2_to_array  # noqa: E402
from admlops_ros.lidar.voxelize import HAVE_NUMBA, Voxelizer, Voxels  # noqa: E402

LOGGER = logging.getLogger("bench_preprocess")

# KITTI PointPillars numbers, only for synthetic clouds and the default benchmark; the runtime
# reads them from the engine bundle's spec.yaml.
KITTI_VOXEL_SIZE = (0.16, 0.16, 4.0)
KITTI_RANGE = (0.0, -39.68, -3.0, 69.12, 39.68, 1.0)
KITTI_MAX_POINTS = 32
KITTI_MAX_VOXELS = 40000
SHIPPED_SIZES = (120_000, 1_000_000, 2_000_000)


def random_kitti_cloud(num: int = 120000, seed: int = 0) -> np.ndarray:
    """(num, 4) float32 uniform in the KITTI range, intensity in [0, 1)."""
    rng = np.random.default_rng(seed)
    lo = np.asarray(KITTI_RANGE[:3], np.float32)
    hi = np.asarray(KITTI_RANGE[3:], np.float32)
    pts = np.empty((num, 4), np.float32)
    pts[:, :3] = lo + (hi - lo) * rng.random((num, 3), dtype=np.float32)
    pts[:, 3] = rng.random(num, dtype=np.float32)
    return pts


def load_cloud(path: Path) -> np.ndarray:
    """Load an (N, 4) float32 cloud from .npy or KITTI .bin."""
    if path.suffix == ".npy":
        pts = np.load(path)
    else:
        pts = np.fromfile(path, np.float32).reshape(-1, 4)
    return np.ascontiguousarray(pts[:, :4], dtype=np.float32)


def _padded_msg(points: np.ndarray):
    """Same cloud with a 32-byte point_step (x, y, z, intensity + 16 bytes of other fields)."""
    msg = array_to_pointcloud2(points, None)
    rec = np.zeros((len(points), 8), np.float32)
    rec[:, :4] = points
    msg.data = rec.tobytes()
    msg.point_step = 32
    msg.row_step = 32 * len(points)
    return msg


def tiled_scan(num: int, seed: int = 0) -> np.ndarray:
    """(num, 4) float32: copies of a simulated scan (131k points), each moved by a few cm."""
    from admlops_ros.simulation import simulate_frame

    scan = simulate_frame(seed).points
    rng = np.random.default_rng(seed)
    reps = -(-num // len(scan))
    shifts = (rng.standard_normal((reps, 1, 4)) * [0.05, 0.05, 0.02, 0.0]).astype(np.float32)
    return (scan[None] + shifts).reshape(-1, 4)[:num].copy()


def two_step_preprocess(detector, points: np.ndarray) -> Voxels:
    """LidarDetector.preprocess before voxelize_scan: filter, shuffled copy, scale, voxelize."""
    points = points.astype(np.float32, copy=False)
    if not np.isfinite(points).all():
        points = points[np.isfinite(points).all(axis=1)]
    column = detector.point_features.index("intensity")
    scale = detector.intensity_scale != 1.0
    if detector.shuffler is not None:
        points = detector.shuffler(points)
    elif scale:
        points = points.copy()
    if scale:
        points[:, column] *= detector.intensity_scale
    return detector.voxelizer(points)


def paired_medians_ms(ours: Callable[[], object], base: Callable[[], object],
                      runs: int) -> Tuple[float, float]:
    """Medians (ms) of two functions timed alternately, so both see the same machine state."""
    for fn in (ours, base, ours, base):  # warm-up
        fn()
    times: Tuple[List[float], List[float]] = ([], [])
    for _ in range(max(1, runs)):
        for fn, out in zip((ours, base), times):
            start = time.perf_counter()
            fn()
            out.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times[0])), float(np.median(times[1]))


def _same_voxels(a: Voxels, b: Voxels) -> bool:
    return all(getattr(a, k).tobytes() == getattr(b, k).tobytes()
               for k in ("voxels", "num_points", "coors")) and \
        (a.dropped_voxels, a.num_points_in_range, a.dropped_points) == \
        (b.dropped_voxels, b.num_points_in_range, b.dropped_points)


def run_shipped(runs: int = 20, sizes: Sequence[int] = SHIPPED_SIZES) -> List[Dict[str, object]]:
    """LidarDetector.preprocess of the shipped model against the two-step path, per cloud size.

    Returns:
        one dict per size: num_points, num_voxels, preprocess_ms, two_step_ms, their ratio
        and identical (the two give bit-identical Voxels).
    """
    from admlops_ros.lidar.detector import LidarDetector

    rows = []
    with LidarDetector.from_bundle(None, backend="onnxruntime") as detector:
        detector.voxelizer.warmup()
        for num in sizes:
            points = tiled_scan(num)
            voxels = detector.preprocess(points)
            same = _same_voxels(voxels, two_step_preprocess(detector, points))
            ours, base = paired_medians_ms(lambda: detector.preprocess(points),
                                           lambda: two_step_preprocess(detector, points), runs)
            rows.append({"num_points": int(num), "num_voxels": voxels.num_voxels,
                         "preprocess_ms": ours, "two_step_ms": base,
                         "two_step_over_preprocess": base / ours, "identical": same})
        summary = {"model": detector.bundle.spec.name,
                   "shuffle_points": detector.shuffler is not None}
    for row in rows:
        row.update(summary)
    return rows


def run(points: Optional[np.ndarray] = None, runs: int = 20,
        shipped_sizes: Sequence[int] = SHIPPED_SIZES) -> Dict[str, object]:
    """Measure the preprocess stage on one cloud, then the shipped model's preprocess.

    Args:
        points: (N, 4) float32 x, y, z, intensity; None -> 120,000 random KITTI-range points.
        runs: timed runs per row (median reported), after 2 warm-up calls.
        shipped_sizes: cloud sizes for the shipped model's rows (see `run_shipped`).

    Returns:
        dict with medians in ms (keys ending in _ms; baselines None when unavailable), ratios
        baseline / ours, the cloud's size and voxel count, and ``shipped_preprocess`` (rows
        of `run_shipped`).
    """
    if points is None:
        points = random_kitti_cloud()
    points = np.ascontiguousarray(points, dtype=np.float32)
    msg16 = array_to_pointcloud2(points, None)
    msg32 = _padded_msg(points)
    voxelizer = Voxelizer(KITTI_VOXEL_SIZE, KITTI_RANGE, KITTI_MAX_POINTS, KITTI_MAX_VOXELS)
    voxelizer.warmup()
    fallback = Voxelizer(KITTI_VOXEL_SIZE, KITTI_RANGE, KITTI_MAX_POINTS, KITTI_MAX_VOXELS,
                         backend="numpy")
    result: Dict[str, object] = {
        "num_points": int(len(points)),
        "runs": int(runs),
        "voxelize_backend": voxelizer.backend,
    }
    result["pointcloud2_to_array_ms"] = median_ms(lambda: pointcloud2_to_array(msg16), runs)
    result["pointcloud2_to_array_step32_ms"] = median_ms(lambda: pointcloud2_to_array(msg32),
                                                         runs)
    result["read_points_ms"] = None
    if type(msg16).__name__ == "PointCloud2":  # read_points needs a real ROS message
        from sensor_msgs import point_cloud2

        fields = ["x", "y", "z", "intensity"]
        result["read_points_ms"] = median_ms(
            lambda: np.array(list(point_cloud2.read_points(msg16, fields, skip_nans=True)),
                             np.float32), runs, warmup=1)
    result["array_to_pointcloud2_ms"] = median_ms(lambda: array_to_pointcloud2(points, None),
                                                  runs)
    voxels = voxelizer(points)
    result["num_voxels"] = voxels.num_voxels
    result["dropped_voxels"] = voxels.dropped_voxels
    result["voxelize_ms"] = median_ms(lambda: voxelizer(points), runs)
    result["voxelize_numpy_ms"] = median_ms(lambda: fallback(points), runs)
    if result["read_points_ms"] is not None:
        result["read_points_over_pointcloud2_to_array"] = (
            result["read_points_ms"] / result["pointcloud2_to_array_ms"])
    result["voxelize_numpy_over_voxelize"] = (
        result["voxelize_numpy_ms"] / result["voxelize_ms"])
    result["shipped_preprocess"] = run_shipped(runs, shipped_sizes)
    return result


def format_table(result: Dict[str, object]) -> str:
    """Text table of the medians with baselines and ratios."""
    rows = [
        ("pointcloud2_to_array (point_step 16)", "pointcloud2_to_array_ms", "read_points_ms"),
        ("pointcloud2_to_array (point_step 32)", "pointcloud2_to_array_step32_ms", None),
        ("array_to_pointcloud2", "array_to_pointcloud2_ms", None),
        ("voxelize (%s)" % result["voxelize_backend"], "voxelize_ms", "voxelize_numpy_ms"),
    ]
    lines = [
        "preprocess: %d points, %d voxels (%d dropped at max_voxels), median of %d runs"
        % (result["num_points"], result["num_voxels"], result["dropped_voxels"], result["runs"]),
        "%-40s %10s  %-28s %10s %8s" % ("stage", "ours ms", "baseline", "base ms", "ratio"),
    ]
    names = {"read_points_ms": "sensor_msgs read_points",
             "voxelize_numpy_ms": "numpy fallback voxelize"}
    for label, key, base in rows:
        ours = result[key]
        base_ms = result.get(base) if base else None
        ratio = "%7.1fx" % (base_ms / ours) if base_ms else ""
        lines.append("%-40s %10.3f  %-28s %10s %8s" % (
            label, ours, names.get(base, "-") if base else "-",
            "%.3f" % base_ms if base_ms else "-", ratio))
    shipped = result.get("shipped_preprocess") or []
    if shipped:
        lines += [
            "",
            "LidarDetector.preprocess, shipped model %s (shuffle_points %s), copies of a "
            "simulated scan, median of %d runs" % (shipped[0]["model"],
                                                   shipped[0]["shuffle_points"], result["runs"]),
            "%-10s %8s %10s  %-28s %10s %8s  %s" % ("points", "voxels", "ours ms", "baseline",
                                                    "base ms", "ratio", "identical"),
        ]
        for row in shipped:
            lines.append("%-10d %8d %10.3f  %-28s %10.3f %7.1fx  %s" % (
                row["num_points"], row["num_voxels"], row["preprocess_ms"],
                "shuffled copy, then voxelize", row["two_step_ms"],
                row["two_step_over_preprocess"], row["identical"]))
    if not HAVE_NUMBA:
        lines.append("numba is not installed: voxelize ran the numpy path")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cloud", nargs="?", type=Path, help=".npy (N, >=4) or KITTI .bin")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per row (>= 20)")
    parser.add_argument("--json", type=Path, help="also write the result dict here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    points = load_cloud(args.cloud) if args.cloud else None
    result = run(points, runs=max(args.runs, 1))
    print(format_table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
