"""`admlops mine`: rank unlabelled frames worth labelling; export the top K as a labelling batch."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Dict, List

from admlops_ros.argtypes import FRACTION, POSITIVE, POSITIVE_INT, float_in

LOG = logging.getLogger("admlops.mine")


def _export(args: argparse.Namespace, chosen: List[Any], out: Path) -> Dict[str, Any]:
    from admlops_ros.data.mine import MineError, stamps_by_bag
    from admlops_ros.parallel import from_args
    try:
        from admlops_ros.data.export import export_dataset
    except ImportError as exc:
        raise MineError(f"--budget / --random export needs admlops_ros.data.export ({exc}); "
                        f"the ranking is written, export it later with 'admlops export'") from exc
    stamps = stamps_by_bag(chosen)
    summary = export_dataset(sorted(stamps), out, labels=args.labels, stamps=stamps,
                             engine=args.engine, backend=args.backend,
                             points_topic=args.points_topic, **from_args(args))
    sys.stdout.write(f"labelling batch ({args.labels} labels): {summary.line()}\n")
    return {"dir": str(out), "labels": args.labels, "frames": len(summary.frames),
            "failed": dict(summary.failed), "problems": list(summary.problems)}


def cmd_mine(args: argparse.Namespace) -> int:
    from admlops_ros.data import mine as m
    from admlops_ros.parallel import from_args
    from admlops_ros.evaluation.cli import bag_list, write_json
    bags = bag_list(args.bags)
    threshold = m.node_threshold() if args.threshold is None else args.threshold
    config = m.MineConfig(threshold=threshold, band=args.band, gate_m=args.gate,
                          edge_margin_m=args.edge_margin, agree_iou=args.agree_iou,
                          gt_iou=args.gt_iou, max_gap_s=args.max_gap)
    weights = m.parse_weights(args.weight or [])
    tasks = [m.MineTask(str(b), args.engine, args.backend, args.engine_b, args.backend_b,
                        config, args.with_gt, args.points_topic, args.gt_topic, args.limit)
             for b in bags]
    result = m.mine(tasks, weights, **from_args(args))
    out = Path(args.out)
    doc = m.ranking_json(result.ranked, result.bags, weights, config, result.errors)
    chosen, method = [], None
    if args.budget:
        chosen, method = result.ranked[:args.budget], "top"
    elif args.random:
        chosen, method = m.pick_random(result.ranked, args.random, args.seed), "random"
    if method:
        doc["selection"] = {"method": method, "k": len(chosen), "seed": args.seed,
                            "frames": [{"bag": f.bag, "stamp_ns": f.stamp_ns,
                                        "frame_index": f.index} for f in chosen]}
    write_json(out / "ranking.json", doc)
    m.write_csv(out / "ranking.csv", result.ranked)
    used = [c for c in m.COMPONENTS if any(f.raw.get(c) is not None for f in result.ranked)]
    sys.stdout.write(f"{len(result.ranked)} frames from {len(result.bags)} bags ranked by "
                     f"{', '.join(f'{weights[c]:g} x {c}' for c in used)} (each / its max)\n"
                     f"{m.table(result.ranked, args.top)}\n")
    for e in result.errors:
        sys.stdout.write(f"skipped bag {e}\n")
    LOG.info("wrote %s and %s", out / "ranking.json", out / "ranking.csv")
    if method:
        doc["export"] = _export(args, chosen, Path(args.batch or out / "batch"))
        write_json(out / "ranking.json", doc)
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `mine`."""
    from admlops_ros.parallel import add_parallel_arguments
    p = subparsers.add_parser(
        "mine", help="rank unlabelled frames (uncertainty, flicker, engine disagreement, "
                     "gt errors); --budget K exports the top K as a labelling batch",
        description="Score every frame of the bags with an engine run and rank them. "
                    "Components: uncertainty (scores near the threshold), temporal (unexplained "
                    "births / deaths / class switches between frames), disagreement (with "
                    "--engine-b / --backend-b), misses and false_positives (--with-gt). Each is "
                    "divided by its maximum over all frames; the total is their weighted sum.")
    p.add_argument("bags", nargs="+", help="bags, or directories of *.bag")
    p.add_argument("--engine", help="engine bundle directory (default: the shipped one)")
    p.add_argument("--backend", default="auto",
                   help="auto, onnxruntime, openvino[-f32|-bf16], tensorrt")
    p.add_argument("--engine-b", default=None,
                   help="second engine for the disagreement score (default: --engine)")
    p.add_argument("--backend-b", default=None,
                   help="backend of the second engine, e.g. openvino-bf16 against "
                        "--backend openvino-f32 (default: --backend)")
    p.add_argument("--with-gt", action="store_true",
                   help="score misses and false positives against the bag's ground truth")
    p.add_argument("--threshold", type=FRACTION, default=None,
                   help="operating score threshold (default: the node's, "
                        "config/lidar_detection.yaml)")
    p.add_argument("--band", type=POSITIVE, default=0.2,
                   help="uncertainty: scores within threshold +- band count, 1 at the "
                        "threshold falling to 0 at the band's edge (default 0.2)")
    p.add_argument("--gate", type=POSITIVE, default=2.0,
                   help="temporal: centre distance (m) within which boxes of consecutive "
                        "frames are the same object (default 2.0)")
    p.add_argument("--edge-margin", type=float_in(0.0), default=2.0,
                   help="temporal: births / deaths this close (m) to the range edge are "
                        "explained (default 2.0)")
    p.add_argument("--max-gap", type=POSITIVE, default=0.25,
                   help="temporal: clouds further apart than this (s) are not compared: a gap "
                        "in the recording starts a new sequence (default 0.25)")
    p.add_argument("--agree-iou", type=float_in(0.0, 1.0, lo_open=True), default=0.5,
                   help="disagreement: BEV IoU for the same object (default 0.5)")
    p.add_argument("--gt-iou", choices=("loose", "strict"), default="loose",
                   help="--with-gt: KITTI IoU set per class (default loose: Car 0.5, "
                        "Pedestrian / Cyclist 0.25)")
    p.add_argument("--weight", action="append", metavar="NAME=W",
                   help="weight of a component (repeatable; default 1 each): uncertainty, "
                        "temporal, disagreement, misses, false_positives")
    p.add_argument("--out", default="mine_out",
                   help="output directory: ranking.json, ranking.csv (default mine_out)")
    p.add_argument("--top", type=POSITIVE_INT, default=10, help="rows printed (default 10)")
    pick = p.add_mutually_exclusive_group()
    pick.add_argument("--budget", type=POSITIVE_INT, default=None,
                      help="export the top K frames as a labelling batch")
    pick.add_argument("--random", type=POSITIVE_INT, default=None,
                      help="export K frames picked uniformly at random (the control)")
    p.add_argument("--seed", type=int, default=0, help="--random: seed (default 0)")
    p.add_argument("--labels", choices=("engine", "gt"), default="engine",
                   help="labels of the exported batch: engine (pre-annotations of --engine, "
                        "default) or gt (the bag's ground truth)")
    p.add_argument("--batch", default=None,
                   help="directory of the exported batch (default OUT/batch)")
    p.add_argument("--points-topic", default=None)
    p.add_argument("--gt-topic", default=None)
    p.add_argument("--limit", type=POSITIVE_INT, default=None,
                   help="first N clouds of each bag only")
    add_parallel_arguments(p)
    p.set_defaults(func=cmd_mine)


__all__ = ("add_commands", "cmd_mine")
