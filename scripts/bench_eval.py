#!/usr/bin/env python3
"""Benchmark: KITTI-style evaluation of N synthetic frames (median wall time of a few runs)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from admlops_ros.evaluation.frames import FrameGT, FramePred  # noqa: E402
from admlops_ros.evaluation.matching import _flatten  # noqa: E402
from admlops_ros.evaluation.metrics import evaluate  # noqa: E402
from admlops_ros.evaluation.protocol import EvalConfig  # noqa: E402

SIZES = {"Car": (3.9, 1.6, 1.56), "Pedestrian": (0.8, 0.6, 1.73), "Cyclist": (1.76, 0.6, 1.73)}


def synthetic(frames: int, seed: int, gt_per_frame: int, fp_per_frame: int):
    """Frames of random non-overlapping gt boxes; predictions = noisy 90 % of them + FPs."""
    rng = np.random.default_rng(seed)
    names = np.array(list(SIZES))
    gts, preds = [], []
    for f in range(frames):
        cls = rng.choice(names, gt_per_frame, p=[0.6, 0.25, 0.15])
        grid = rng.choice(400, gt_per_frame, replace=False)
        xy = np.stack([2 + (grid % 20) * 3.4, -34 + (grid // 20) * 3.4], 1)
        dims = np.array([SIZES[c] for c in cls])
        boxes = np.column_stack([xy, np.full(len(cls), -1.7), dims,
                                 rng.uniform(-np.pi, np.pi, len(cls))])
        gts.append(FrameGT(boxes, cls, frame_id=str(f)))
        keep = rng.random(len(cls)) < 0.9
        pb = boxes[keep].copy()
        pb[:, :2] += rng.normal(0, 0.15, (len(pb), 2))
        pb[:, 6] += rng.normal(0, 0.05, len(pb))
        fp = np.column_stack([rng.uniform(0, 70, (fp_per_frame, 1)),
                              rng.uniform(-40, 40, (fp_per_frame, 1)),
                              np.full((fp_per_frame, 1), -1.7),
                              np.tile(SIZES["Car"], (fp_per_frame, 1)),
                              rng.uniform(-np.pi, np.pi, (fp_per_frame, 1))])
        pn = list(cls[keep]) + list(rng.choice(names, fp_per_frame))
        preds.append(FramePred(np.concatenate([pb, fp]), rng.random(len(pn)), pn,
                               frame_id=str(f)))
    return gts, preds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--gt", type=int, default=15, help="ground-truth boxes per frame")
    parser.add_argument("--fp", type=int, default=15, help="extra false positives per frame")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    gts, preds = synthetic(args.frames, 0, args.gt, args.fp)
    evaluate(gts[:5], preds[:5])  # compile the numba kernels outside the timing
    rows = []
    for metrics in (("bev", "3d"), ("3d",)):
        times, times_ov = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            _flatten(gts, preds, metrics, "distance")
            t1 = time.perf_counter()
            res = evaluate(gts, preds, EvalConfig(metrics=metrics))
            t2 = time.perf_counter()
            times_ov.append(t1 - t0)
            times.append(t2 - t1)
        rows.append(("+".join(metrics), np.median(times_ov), np.median(times),
                     res.mean_ap("3d")))
    print(f"evaluate(): {args.frames} frames, {args.gt} gt + ~{args.gt * 0.9 + args.fp:.0f} "
          f"predictions per frame, 3 classes x 4 difficulty levels x 2 IoU sets; "
          f"median of {args.repeat}")
    print(f"{'metrics':<10}{'overlaps s':>12}{'total s':>10}{'frames/s':>10}{'mAP3d R40':>11}")
    for name, t_ov, t, ap in rows:
        print(f"{name:<10}{t_ov:>12.2f}{t:>10.2f}{args.frames / t:>10.0f}{ap:>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
