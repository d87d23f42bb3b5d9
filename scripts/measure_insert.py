#!/usr/bin/env python3
"""Simulated objects inserted into real KITTI scans, measured (admlops_ros.data.insertion).

- points on cars by distance (0-20, 20-40, 40-70 m): inserted cars (every labelled real frame
  of ``<kitti>/training`` and the pseudo-labelled ``--pseudo`` directory, ``--seeds`` seeds
  each) against the simulator's cars (``--sim-frames`` frames of ``hdl64e_s2_kitti`` with
  ``kitti_streets``, seeds from 5,000,000, cars ahead within +-45 deg as the inserted ones)
  and the real labelled cars; cars with at least 5 points (the insertion's ``min_points``),
  counted by ``points_in_boxes`` in the camera view the trainer keeps;
- real points removed per inserted object: shadowed (behind it along its rays) and inside
  its box, per class;
- the time per inserted frame (``insert_into``, the frame already read);
- the ground: |box bottom - median z of the real points within 0.75 m of the footprint circle
  lower than 0.3 m above the bottom| (the check of tests/data/test_insertion.py);
- with ``--engine``: the pseudo-labels' quality on the labelled frames (Car, BEV IoU >= 0.5
  against the real labels, camera view) at a few thresholds.

Prints markdown tables; ``--json`` writes the numbers. Small: 12 real scans x seeds.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BANDS = ((0.0, 20.0), (20.0, 40.0), (40.0, 70.0))
MIN_POINTS = 5


def _band_rows(dist: np.ndarray, pts: np.ndarray) -> List[str]:
    out = []
    for lo, hi in BANDS:
        sel = (dist >= lo) & (dist < hi) & (pts >= MIN_POINTS)
        out.append(f"{int(np.median(pts[sel]))} (n={int(sel.sum())})" if sel.any() else "- (n=0)")
    return out


def _ground_error(points: np.ndarray, box: np.ndarray) -> float:
    d = np.hypot(points[:, 0] - box[0], points[:, 1] - box[1])
    near = points[(d < 0.5 * np.hypot(box[3], box[4]) + 0.75) & (points[:, 2] < box[2] + 0.3)]
    return abs(float(box[2]) - float(np.median(near[:, 2]))) if len(near) else float("nan")


def measure_inserted(roots: List[str], seeds: int, labelled: str) -> Dict:
    from admlops_ros.data.insertion import RealBackgrounds, insert_into
    from admlops_ros.lidar.geometry import points_in_boxes
    rec: Dict[str, list] = {k: [] for k in ("dist", "pts", "name", "shadow", "inside", "ground")}
    real = {"dist": [], "pts": []}
    times = []
    for root in roots:
        bgs = RealBackgrounds(root)
        for i in range(len(bgs)):
            bg = bgs[i]
            fr0 = bg.frame
            if root == labelled:   # real labels (not pseudo-labels): the real cars
                cars = [j for j, n in enumerate(fr0.names) if n == "Car"]
                if cars:
                    real["dist"] += np.hypot(fr0.boxes[cars, 0], fr0.boxes[cars, 1]).tolist()
                    real["pts"] += points_in_boxes(fr0.points, fr0.boxes[cars]).sum(0).tolist()
            for seed in range(seeds):
                t0 = time.perf_counter()
                fr = insert_into(bg, 1000 * i + seed)
                times.append(time.perf_counter() - t0)
                ins = np.flatnonzero(fr.inserted)
                # inside-box removals per object: removed points not shadowed, by box
                rem_in = fr.removed_points[~fr.removed_shadow]
                idx = (points_in_boxes(rem_in, fr.boxes[ins], return_index=True)
                       if len(ins) and len(rem_in) else np.full(len(rem_in), -1))
                inside = np.bincount(idx[idx >= 0], minlength=len(ins))[:len(ins)]
                for k, j in enumerate(ins):
                    rec["dist"].append(float(np.hypot(*fr.boxes[j, :2])))
                    rec["pts"].append(int(fr.num_points[j]))
                    rec["name"].append(fr.names[j])
                    rec["shadow"].append(int(fr.shadow_removed[j]))
                    rec["inside"].append(int(inside[k]))
                    rec["ground"].append(_ground_error(fr0.points, fr.boxes[j]))
    return {"objects": rec, "real_cars": real, "times_s": times}


def measure_simulated(frames: int) -> Dict:
    from admlops_ros.evaluation import kitti_io
    from admlops_ros.data.kitti_dataset import fov_mask
    from admlops_ros.lidar.geometry import points_in_boxes
    from admlops_ros.simulation import SceneConfig, SensorConfig, simulate_frame
    sensor, scene = SensorConfig.preset("hdl64e_s2_kitti"), SceneConfig.kitti_streets()
    calib = kitti_io.nominal_calib()
    dist, pts = [], []
    for s in range(frames):
        fr = simulate_frame(5_000_000 + s, scene, sensor)
        cars = np.array([n == "Car" for n in fr.names], bool)
        boxes = fr.boxes[cars]
        ahead = np.abs(np.degrees(np.arctan2(boxes[:, 1], boxes[:, 0]))) < 45.0
        boxes = boxes[ahead & fov_mask(boxes[:, :3] + [0, 0, 0.75], calib)]
        if len(boxes) == 0:
            continue
        view = fr.points[fov_mask(fr.points, calib)]
        dist += np.hypot(boxes[:, 0], boxes[:, 1]).tolist()
        pts += points_in_boxes(view, boxes).sum(0).tolist()
    return {"dist": dist, "pts": pts}


def measure_pseudo(training: str, engine: str, backend: str) -> List[Dict]:
    from admlops_ros.data.kitti_dataset import KittiDataset
    from admlops_ros.data.pseudo_labels import pseudo_objects
    from admlops_ros.evaluation import kitti_io
    from admlops_ros.evaluation.replay import open_detector
    from admlops_ros.lidar.geometry import rotated_iou_bev
    det = open_detector(engine, backend, score_threshold=0.1)
    ds = KittiDataset(training)
    raw = []
    for i in range(len(ds)):
        fr = ds[i]
        calib = kitti_io.read_calib(Path(training) / "calib" / f"{fr.frame_id}.txt")
        points = kitti_io.read_velodyne(Path(training) / "velodyne" / f"{fr.frame_id}.bin")
        d = det.detect(points)
        objs = pseudo_objects(d.boxes, d.label_names(), d.scores, calib, 0.0)
        cars = [o for o in objs if o.type == "Car"]
        boxes = (kitti_io.boxes_camera_to_lidar(kitti_io.objects_to_camera_boxes(cars), calib)
                 if cars else np.zeros((0, 7)))
        gt = fr.boxes[[n == "Car" for n in fr.names]]
        raw.append((boxes, np.array([o.score for o in cars]), gt))
    rows = []
    for thr in (0.3, 0.5, 0.7):
        tp = n_det = n_gt = found = 0
        for boxes, scores, gt in raw:
            b = boxes[scores >= thr]
            n_det += len(b)
            n_gt += len(gt)
            if len(b) and len(gt):
                iou = rotated_iou_bev(b, gt)
                tp += int((iou.max(axis=1) >= 0.5).sum())
                found += int((iou.max(axis=0) >= 0.5).sum())
        rows.append({"threshold": thr, "cars_per_frame": n_det / len(raw),
                     "precision": tp / max(n_det, 1), "recall": found / max(n_gt, 1),
                     "labelled_cars": n_gt})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kitti", default=str(ROOT.parent / "shared" / "data" / "kitti"))
    parser.add_argument("--pseudo", default="build/pseudo_testing",
                        help="pseudo-labelled testing scans (admlops pseudo-label); skipped "
                             "when absent")
    parser.add_argument("--seeds", type=int, default=5, help="insertion seeds per scan")
    parser.add_argument("--sim-frames", type=int, default=30)
    parser.add_argument("--engine", default=None, help="engine bundle for the pseudo-label "
                                                       "table (e.g. engines/pointpillars_sim_3class)")
    parser.add_argument("--backend", default="openvino")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    training = str(Path(args.kitti) / "training")
    roots = [training] + ([args.pseudo] if Path(args.pseudo, "label_2").is_dir() else [])
    ins = measure_inserted(roots, args.seeds, training)
    sim = measure_simulated(args.sim_frames)
    o = {k: np.asarray(v) for k, v in ins["objects"].items()}
    real = {k: np.asarray(v) for k, v in ins["real_cars"].items()}
    car = o["name"] == "Car"
    print(f"backgrounds: {', '.join(roots)}; {args.seeds} seeds each; "
          f"{len(o['pts'])} objects inserted in {len(ins['times_s'])} frames\n")
    print("| points on cars (median, cars >= 5 pts) | 0-20 m | 20-40 m | 40-70 m |")
    print("|---|---|---|---|")
    print("| inserted (hdl64e_s2_kitti cast into real scans) | "
          + " | ".join(_band_rows(o["dist"][car], o["pts"][car])) + " |")
    print(f"| simulator (hdl64e_s2_kitti, kitti_streets, {args.sim_frames} frames) | "
          + " | ".join(_band_rows(np.asarray(sim["dist"]), np.asarray(sim["pts"]))) + " |")
    print("| real labelled cars (training) | "
          + " | ".join(_band_rows(real["dist"], real["pts"])) + " |")
    print("\n| real points removed per object | n | shadow median | shadow mean | "
          "inside median | points median |")
    print("|---|---|---|---|---|---|")
    for name in ("Car", "Pedestrian", "Cyclist"):
        sel = o["name"] == name
        if sel.any():
            print(f"| {name} | {int(sel.sum())} | {int(np.median(o['shadow'][sel]))} | "
                  f"{o['shadow'][sel].mean():.0f} | {int(np.median(o['inside'][sel]))} | "
                  f"{int(np.median(o['pts'][sel]))} |")
    t = np.asarray(ins["times_s"]) * 1e3
    g = o["ground"][np.isfinite(o["ground"])]
    print(f"\ntime per inserted frame: median {np.median(t):.0f} ms, p90 "
          f"{np.percentile(t, 90):.0f} ms ({len(t)} frames, frame already read)")
    print(f"ground: |bottom - real ground around| median {np.median(g):.3f} m, p99 "
          f"{np.percentile(g, 99):.3f} m, max {g.max():.3f} m")
    out = {"inserted": {k: v.tolist() for k, v in o.items()}, "simulated_cars": sim,
           "real_cars": {k: v.tolist() for k, v in real.items()},
           "times_ms": t.tolist()}
    if args.engine:
        rows = measure_pseudo(training, args.engine, args.backend)
        print("\n| pseudo-labels on the labelled frames (Car, BEV IoU >= 0.5) | cars per frame "
              "| precision | recall |")
        print("|---|---|---|---|")
        for r in rows:
            print(f"| score >= {r['threshold']} | {r['cars_per_frame']:.1f} | "
                  f"{r['precision']:.2f} | {r['recall']:.2f} ({r['labelled_cars']} cars) |")
        out["pseudo_labels"] = rows
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
