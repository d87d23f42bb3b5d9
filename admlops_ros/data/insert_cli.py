"""`admlops pseudo-label` (engine labels for unlabelled scans) and `admlops insert-preview`."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from admlops_ros.argtypes import FRACTION, NON_NEGATIVE_INT, POSITIVE_INT
from admlops_ros.errors import UsageError


def cmd_pseudo_label(args: argparse.Namespace) -> int:
    from admlops_ros.data.pseudo_labels import pseudo_label
    summary = pseudo_label(args.scans, args.output, engine=args.engine, backend=args.backend,
                           threshold=args.threshold, min_score=args.min_score,
                           limit=args.limit)
    sys.stdout.write(summary.line() + "\n")
    return 0


def cmd_insert_preview(args: argparse.Namespace) -> int:
    from admlops_ros.data.insert_preview import render_insert_preview
    from admlops_ros.data.insertion import RealBackgrounds, insert_into
    bgs = RealBackgrounds(args.dataset, fov_only=not args.all_points,
                          score_threshold=args.score_threshold)
    ids = bgs.frame_ids
    frame = args.frame if args.frame is not None else ids[0]
    if frame not in ids:
        raise UsageError(f"--frame {frame}: not a labelled frame of {args.dataset} "
                         f"(it has {ids[0]}..{ids[-1]})")
    bg = bgs[ids.index(frame)]
    out = insert_into(bg, args.seed)
    path = render_insert_preview(bg, out, args.output)
    ins = out.inserted
    sys.stdout.write(
        f"{path}: frame {frame}, seed {args.seed}: {int(ins.sum())} objects inserted "
        f"({', '.join(f'{n} {int(p)} pts' for n, p, i in zip(out.names, out.num_points, ins) if i)}),"
        f" {int(out.removed_shadow.sum())} shadow points and "
        f"{int((~out.removed_shadow).sum())} points inside boxes removed\n")
    return 0


def add_commands(subparsers: Any) -> None:
    """Register ``pseudo-label`` and ``insert-preview``."""
    p = subparsers.add_parser(
        "pseudo-label", help="engine detections on unlabelled KITTI scans -> label_2 with "
                             "scores (self-training; DontCare below the threshold)")
    p.add_argument("scans", metavar="SCANS_DIR",
                   help="KITTI-format directory with velodyne/ (and calib/), e.g. "
                        "../shared/data/kitti/testing")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR",
                   help="writes OUT_DIR/label_2 and links velodyne/, calib/, image_2/")
    p.add_argument("--engine", help="engine bundle (default: the shipped one)")
    p.add_argument("--backend", default="auto", help="backend of --engine (default auto)")
    p.add_argument("--threshold", type=FRACTION, default=0.5,
                   help="score from which a detection is a label (default 0.5)")
    p.add_argument("--min-score", type=FRACTION, default=0.1,
                   help="detections from this score up to --threshold are written as "
                        "DontCare with their 3D box: no insertion there (default 0.1)")
    p.add_argument("--limit", type=POSITIVE_INT, default=None, help="only the first N scans")
    p.set_defaults(func=cmd_pseudo_label)

    p = subparsers.add_parser(
        "insert-preview", help="BEV PNG of a real scan before / after simulated objects are "
                               "inserted (shadow points removed in red)")
    p.add_argument("dataset", metavar="DATASET_DIR",
                   help="KITTI-format directory with labels or pseudo-labels")
    p.add_argument("--frame", help="frame id (default: the first labelled one)")
    p.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="insertion seed")
    p.add_argument("-o", "--output", default="build/insert_preview.png", help="PNG path "
                   "(default build/insert_preview.png)")
    p.add_argument("--all-points", action="store_true",
                   help="keep the points outside the camera view (default: only the view, as "
                        "the trainer)")
    p.add_argument("--score-threshold", type=FRACTION, default=None,
                   help="label lines scored below it block insertion instead of being labels")
    p.set_defaults(func=cmd_insert_preview)
