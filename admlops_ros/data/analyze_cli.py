"""`admlops analyze`: what a dataset holds and, with --compare, how far the field data shifts from it."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from admlops_ros.argtypes import FRACTION, POSITIVE_INT
from admlops_ros.data.analyze import DEFAULT_CHUNK, DEFAULT_MAX_RATIO, DEFAULT_MIN_COUNT

LOG = logging.getLogger("admlops.analyze")


def cmd_analyze(args: argparse.Namespace) -> int:
    from admlops_ros.data import analyze, analyze_report
    from admlops_ros.parallel import from_args
    from admlops_ros.evaluation.cli import write_json
    sets = [args.dataset] + ([args.compare] if args.compare else [])
    stats = analyze.analyze_sets(
        sets, split=[args.split, args.compare_split], fov_only=args.fov_only, chunk=args.chunk,
        points_topic=args.points_topic, gt_topic=args.gt_topic, **from_args(args))
    settings = {"split": args.split, "compare_split": args.compare_split,
                "fov_only": args.fov_only, "chunk": args.chunk,
                "points_topic": args.points_topic, "gt_topic": args.gt_topic}
    result = analyze.analysis(stats[0], stats[1] if len(stats) > 1 else None,
                              min_count=args.min_count, max_ratio=args.max_ratio,
                              settings=settings)
    out = Path(args.out)
    write_json(out / "analysis.json", result)
    analyze_report.write_html(out / "analysis.html", result)
    sys.stdout.write(analyze_report.summary_text(result) + "\n")
    LOG.info("wrote %s and %s", out / "analysis.json", out / "analysis.html")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `analyze`."""
    from admlops_ros.parallel import add_parallel_arguments
    p = subparsers.add_parser(
        "analyze", help="dataset statistics (classes, distance, heading, size, points per box, "
                        "occlusion, difficulty, scans); --compare: shift and under-covered bins")
    p.add_argument("dataset", nargs="+", metavar="DATASET",
                   help="KITTI-format directories (velodyne/, label_2/, calib/), bags with "
                        "ground truth, or directories of *.bag; several merge")
    p.add_argument("--compare", nargs="+", metavar="OTHER",
                   help="the other data (e.g. what the vehicle recorded), same kinds of inputs")
    p.add_argument("--out", required=True, help="output directory (analysis.json, .html)")
    p.add_argument("--split", help="ImageSets file or name (e.g. train) for the DATASET dirs")
    p.add_argument("--compare-split", help="ImageSets file or name for the OTHER dirs")
    p.add_argument("--fov-only", action="store_true",
                   help="KITTI dirs: keep only points in image 2's view, as the trainer does "
                        "(default: the whole scan)")
    p.add_argument("--points-topic", help="bags: cloud topic (default /points_raw)")
    p.add_argument("--gt-topic", help="bags: ground-truth topic (default /ground_truth/objects)")
    p.add_argument("--min-count", type=POSITIVE_INT, default=DEFAULT_MIN_COUNT,
                   help="under-covered: bins where OTHER has at least this many objects "
                        f"(default {DEFAULT_MIN_COUNT})")
    p.add_argument("--max-ratio", type=FRACTION, default=DEFAULT_MAX_RATIO,
                   help="under-covered: reference frequency / other frequency below this "
                        f"(default {DEFAULT_MAX_RATIO})")
    p.add_argument("--chunk", type=POSITIVE_INT, default=DEFAULT_CHUNK,
                   help=f"dataset frames per task (default {DEFAULT_CHUNK}); one task per bag")
    add_parallel_arguments(p)
    p.set_defaults(func=cmd_analyze)
