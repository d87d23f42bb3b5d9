"""`admlops export` (bags -> KITTI dataset + mmdet3d infos) and `admlops import-labels`."""
from __future__ import annotations

import argparse
import sys
from typing import Any


def cmd_export(args: argparse.Namespace) -> int:
    from admlops_ros.data.export import export_dataset
    from admlops_ros.parallel import from_args
    summary = export_dataset(
        args.bags, args.output, labels=args.labels, detections_topic=args.detections_topic,
        engine=args.engine, backend=args.backend, points_topic=args.points_topic,
        image_topic=args.image_topic, val_fraction=args.split_ratio, seed=args.seed,
        fov=args.fov, calib=args.calib, **from_args(args))
    sys.stdout.write(summary.line() + "\n")
    return 0 if summary.ok else 1


def cmd_import_labels(args: argparse.Namespace) -> int:
    from admlops_ros.data.export import import_labels
    summary = import_labels(args.label_dir, args.dataset)
    sys.stdout.write(summary.line() + "\n")
    return 0 if summary.ok else 1


def add_commands(subparsers: Any) -> None:
    """Register ``export`` and ``import-labels``."""
    from admlops_ros.parallel import add_parallel_arguments
    p = subparsers.add_parser(
        "export", help="bags -> KITTI-format dataset (velodyne, label_2, calib, image_2, "
                       "ImageSets), mmdet3d info files and per-frame lineage")
    p.add_argument("bags", nargs="+", metavar="BAG", help="bags; frames numbered in this order")
    p.add_argument("-o", "--output", required=True, metavar="DATASET_DIR",
                   help="dataset directory to create")
    p.add_argument("--labels", choices=("gt", "detections", "engine", "none"), default="gt",
                   help="gt: the bag's /ground_truth/objects (default); detections: "
                        "pre-annotations from a detections topic; engine: from running "
                        "--engine on each cloud; none: empty label files")
    p.add_argument("--detections-topic",
                   help="DetectedObjectArray topic for --labels detections (default: the "
                        "lidar node's objects_topic, else the bag's only one)")
    p.add_argument("--engine", help="engine bundle for --labels engine (default: shipped)")
    p.add_argument("--backend", default="auto", help="backend for --engine (default auto)")
    p.add_argument("--points-topic", help="cloud topic (default /points_raw or the only one)")
    p.add_argument("--image-topic", help="camera topic (default /camera/image_raw, its "
                                         "/compressed or the only image topic)")
    p.add_argument("--fov", choices=("all", "camera"), default="all",
                   help="all (default): every object; camera: only those image 2 sees, "
                        "as KITTI labels")
    p.add_argument("--calib", help="KITTI calib file for every frame (default: the bag's "
                                   "CameraInfo P with the nominal extrinsic, else nominal)")
    p.add_argument("--split-ratio", type=float, default=0.0, metavar="VAL_FRACTION",
                   help="fraction of frames drawn into ImageSets/val.txt (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the val draw (default 0)")
    add_parallel_arguments(p)
    p.set_defaults(func=cmd_export)

    p = subparsers.add_parser(
        "import-labels", help="labels in KITTI label_2 form (from a labelling company) -> "
                              "an exported dataset's label_2, info files and lineage")
    p.add_argument("label_dir", metavar="LABEL_DIR", help="directory of NNNNNN.txt files")
    p.add_argument("-d", "--dataset", required=True, metavar="DATASET_DIR",
                   help="dataset written by admlops export")
    p.set_defaults(func=cmd_import_labels)
