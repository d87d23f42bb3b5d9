#!/usr/bin/env python3
"""Engine bundles on real KITTI frames, scored as KITTI does it: the README's real-data table.

For each ``--engine`` and each labelled frame of ``--kitti`` (``velodyne/``, ``label_2/``,
``calib/``, ``image_2/``): detect on the whole scan (OpenVINO fp32, the spec's AP threshold),
keep the boxes inside image 2's view and the model's range (``evaluation.fov``, as mmdet3d does
before KITTI evaluation), write KITTI result files with the frame's own calib and score them
with ``admlops kitti-eval``'s code (AP|R40, KITTI difficulties). Also counted at the node's
operating threshold (``config/lidar_detection.yaml``, 0.3): detections per frame and **false
cars per frame** (a Car detection in the camera view whose BEV IoU with every labelled Car,
Van and Truck is below 0.3).

Usage::

    scripts/eval_real.py --kitti ../shared/data/kitti/training --engine OLD --engine NEW

Prints one table (rows: engines; columns: Car 3D / BEV E/M/H, Pedestrian and Cyclist 3D
moderate, false cars per frame, and the labelled cars found at IoU >= 0.7 in BEV / 3D by a Car
detection at the operating threshold: with a handful of frames AP|R40 moves in steps of 1/40
per object, the counts say more), writes ``--out``/<engine>/ result files and ``results.json``.
Frames used for training must not be scored here: the headline needs held-out frames.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from admlops_ros.data.kitti_dataset import image_hw  # noqa: E402
from admlops_ros.evaluation import kitti_io  # noqa: E402
from admlops_ros.evaluation.fov import FrameCalib, filter_frame  # noqa: E402
from admlops_ros.evaluation.frames import FramePred  # noqa: E402
from admlops_ros.evaluation.kitti_eval import kitti_eval, write_kitti_results  # noqa: E402
from admlops_ros.evaluation.replay import open_detector  # noqa: E402
from admlops_ros.lidar.geometry import iou_3d, rotated_iou_bev  # noqa: E402

CAR_LIKE = ("Car", "Van", "Truck")
FALSE_CAR_IOU = 0.3
NODE_THRESHOLD = 0.3  # config/lidar_detection.yaml score_threshold
DIFFS = ("easy", "moderate", "hard")


def evaluate_engine(engine: str, kitti: Path, ids: List[str], out: Path) -> Dict[str, object]:
    """Detect, FOV-filter, write results, score; returns the row's numbers."""
    out.mkdir(parents=True, exist_ok=True)
    false_cars, shown, found = [], [], [0, 0, 0]  # found: cars, BEV >= 0.7, 3D >= 0.7
    with open_detector(engine, "openvino-f32") as det:
        pc_range = det.voxelizer.point_cloud_range
        for stem in ids:
            points, objects, calib = kitti_io.read_frame(kitti, int(stem))
            frame_calib = FrameCalib.from_kitti(calib, image_hw(kitti, stem), stem)
            dets = det.detect(points)
            _, pred = filter_frame(None, FramePred.from_detections(dets, stem), frame_calib,
                                   pc_range, "camera")
            write_kitti_results(out, [pred], names=[stem], calib=calib)
            labelled = [o for o in objects if o.type in CAR_LIKE]
            gt = kitti_io.objects_to_lidar(labelled, calib)[0] if labelled else np.zeros((0, 7))
            cars = pred.boxes[(pred.names == "Car") & (pred.scores >= NODE_THRESHOLD)]
            shown.append(int((pred.scores >= NODE_THRESHOLD).sum()))
            is_car = np.array([o.type == "Car" for o in labelled], bool)
            found[0] += int(is_car.sum())
            if len(cars) and is_car.any():
                g = np.asarray(gt, np.float64)[is_car]
                found[1] += int((rotated_iou_bev(g, cars).max(axis=1) >= 0.7).sum())
                found[2] += int((iou_3d(g, cars).max(axis=1) >= 0.7).sum())
            if len(cars) and len(gt):
                best = rotated_iou_bev(cars, np.asarray(gt, np.float64)).max(axis=1)
                false_cars.append(int((best < FALSE_CAR_IOU).sum()))
            else:
                false_cars.append(len(cars))
    res = kitti_eval(kitti / "label_2", out, ids, with_bbox=False)
    row: Dict[str, object] = {"engine": engine, "frames": len(ids)}
    for metric in ("3d", "bev"):
        for d in DIFFS:
            row[f"car_{metric}_{d}"] = res.ap(metric, "Car", d)
    for cls in ("Pedestrian", "Cyclist"):
        row[f"{cls.lower()}_3d_moderate"] = res.ap("3d", cls, "moderate")
    row["false_cars_per_frame"] = float(np.mean(false_cars)) if false_cars else math.nan
    row["detections_per_frame"] = float(np.mean(shown)) if shown else math.nan
    row["num_gt_car"] = [int(v) for v in res.num_gt[res.classes.index("Car")]]
    row["cars_labelled"], row["cars_found_bev"], row["cars_found_3d"] = found
    return row


def format_table(rows: List[Dict[str, object]]) -> str:
    head = ("| engine | Car 3D E / M / H | Car BEV E / M / H | Ped 3D M | Cyc 3D M | "
            "false cars / frame | detections / frame | cars found BEV / 3D |")
    lines = [head, "|---|---|---|---|---|---|---|---|"]

    def f(v) -> str:
        return "no gt" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"
    for r in rows:
        lines.append(
            f"| {r['engine']} | {' / '.join(f(r[f'car_3d_{d}']) for d in DIFFS)} | "
            f"{' / '.join(f(r[f'car_bev_{d}']) for d in DIFFS)} | "
            f"{f(r['pedestrian_3d_moderate'])} | {f(r['cyclist_3d_moderate'])} | "
            f"{r['false_cars_per_frame']:.1f} | {r['detections_per_frame']:.1f} | "
            f"{r['cars_found_bev']} / {r['cars_found_3d']} of {r['cars_labelled']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kitti", required=True, help="KITTI object directory with label_2")
    p.add_argument("--engine", action="append", required=True, help="bundle dir (repeat)")
    p.add_argument("--ids", nargs="*", default=None, help="frame ids (default: every label)")
    p.add_argument("--out", default="build/eval_real")
    args = p.parse_args(argv)
    kitti = Path(args.kitti)
    if not (kitti / "label_2").is_dir():
        sys.stderr.write(f"eval_real: error: {kitti / 'label_2'} is not a directory; give a "
                         f"KITTI object dir with labels (--kitti)\n")
        return 1
    ids = args.ids or sorted(f.stem for f in (kitti / "label_2").glob("*.txt"))
    rows = []
    for i, engine in enumerate(args.engine):
        rows.append(evaluate_engine(engine, kitti, ids, Path(args.out) / f"{i}_{Path(engine).name}"))
    table = format_table(rows)
    sys.stdout.write(f"{len(ids)} real KITTI frames ({kitti}), AP|R40 strict (Car 0.7, "
                     f"Ped/Cyc 0.5), camera view; false cars at score >= {NODE_THRESHOLD}:\n"
                     f"{table}\n")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
