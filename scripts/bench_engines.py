#!/usr/bin/env python3
"""Detect time of several engine bundles on the same scan, interleaved, as ratios to the first.

    scripts/bench_engines.py engines/pointpillars_sim_3class build/distill75_bundle

Each round runs every bundle's ``LidarDetector.detect`` (and its inference alone) once on the
same 120k-point simulated HDL-64 scan (``bench.scan_120k``), so machine noise hits all bundles
alike; the table gives medians over the rounds and speed-ups against the first bundle.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import scan_120k  # noqa: E402
from benchmarking import interleaved_medians  # noqa: E402
from admlops_ros.lidar.detector import LidarDetector  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="+", help="engine bundle directories (first: baseline)")
    parser.add_argument("--backend", default="openvino", help="openvino (fp32) or onnxruntime")
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds (>= 10)")
    args = parser.parse_args()
    points = scan_120k()
    dets = [LidarDetector.from_bundle(b, backend=args.backend) for b in args.bundles]
    fns = {}
    for i, d in enumerate(dets):
        d.warmup()
        voxels = d.preprocess(points)
        fns[("detect", i)] = lambda d=d: d.detect(points)
        fns[("inference", i)] = lambda d=d, v=voxels: d.inference(v)
    ms = interleaved_medians(fns, max(10, args.rounds))
    print(f"| bundle ({args.backend}, {len(points)} points) | detect ms | speed-up | "
          f"inference ms | speed-up |")
    print("|---|---|---|---|---|")
    for i, b in enumerate(args.bundles):
        md, mi = ms[("detect", i)], ms[("inference", i)]
        print(f"| {b} | {md:.1f} | {ms[('detect', 0)] / md:.2f}x | {mi:.1f} | "
              f"{ms[('inference', 0)] / mi:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
