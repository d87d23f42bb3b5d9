#!/usr/bin/env python3
"""AP50 of a camera bundle on the held-out rendered frames and (information) on KITTI images.

    .venv/bin/python scripts/eval_camera.py --bundle engines/camera_sim_3class \
        --kitti ../shared/data/kitti/training
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from admlops_ros.camera.detector import CameraDetector  # noqa: E402
from admlops_ros.evaluation.kitti_io import read_label  # noqa: E402
from admlops_ros.simulation.camera import CameraConfig  # noqa: E402
from admlops_ros.training import camera_data as cd  # noqa: E402
from admlops_ros.training.camera_train import EVAL_MIN_HEIGHT, ap50  # noqa: E402


def _kitti_targets(path: Path, min_height: float):
    """(gt, labels, ignore, ignore labels) of a KITTI label file, as `split_targets`."""
    objs = read_label(path)
    lab = cd.FrameLabels(boxes=np.array([o.bbox for o in objs], np.float32).reshape(-1, 4),
                         names=[o.type for o in objs],
                         occlusion_level=np.array([o.occluded for o in objs], np.int32),
                         truncation=np.array([o.truncated for o in objs], np.float32))
    gb, gl, ib, il = cd.split_targets(lab, min_height)
    dc = np.array([o.bbox for o in objs if o.type == "DontCare"], np.float32).reshape(-1, 4)
    # DontCare regions ignore detections of every class
    ib = np.concatenate([ib] + [dc] * 3)
    il = np.concatenate([il] + [np.full(len(dc), c, np.int64) for c in range(3)])
    return gb, gl, ib, il


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", default="engines/camera_sim_3class")
    p.add_argument("--backend", default="openvino")
    p.add_argument("--cache", default="build/camera/heldout_1242x375")
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--kitti", default=None, help="KITTI training dir with image_2/, label_2/")
    p.add_argument("--score-threshold", type=float, default=0.05)
    p.add_argument("--out", default=None, help="write the results here (json)")
    args = p.parse_args(argv)
    cache = Path(args.cache)
    if not (cache / "meta.json").exists():
        cd.render_cache(cache, range(cd.EVAL_SEED_BASE, cd.EVAL_SEED_BASE + args.frames),
                        CameraConfig(), None)
    cc = cd.CameraCache(cache)
    res = {}
    with CameraDetector.from_bundle(args.bundle, backend=args.backend,
                                    score_threshold=args.score_threshold) as det:
        det.warmup()
        dets, gts, totals = [], [], []
        n = min(args.frames, len(cc))
        for i in range(n):
            out = det.detect(np.asarray(cc.images[i]))
            totals.append(out.timings_ms["total"])
            dets.append((out.boxes, out.scores, out.labels))
            gts.append(cd.split_targets(cc.labels(i), EVAL_MIN_HEIGHT))
        aps = ap50(dets, gts, 3)
        res["heldout"] = {"frames": n, "seeds": [cc.seeds[0], cc.seeds[n - 1]],
                          **{f"{c}_AP50": round(a, 2) for c, a in zip(cd.CAMERA_CLASSES, aps)},
                          "total_ms_median": round(float(np.median(totals)), 2)}
        # all visible objects >= 12 px tall scored (information)
        gts_all = [cd.split_targets(cc.labels(i), 12.0, 3) for i in range(n)]
        res["heldout_all_12px"] = {f"{c}_AP50": round(a, 2) for c, a in
                                   zip(cd.CAMERA_CLASSES, ap50(dets, gts_all, 3))}
        if args.kitti:
            root = Path(args.kitti)
            kd, kg = [], []
            for img_path in sorted((root / "image_2").glob("*.png")):
                lab = root / "label_2" / (img_path.stem + ".txt")
                if not lab.exists():
                    continue
                out = det.detect(cv2.imread(str(img_path)))
                kd.append((out.boxes, out.scores, out.labels))
                kg.append(_kitti_targets(lab, EVAL_MIN_HEIGHT))
            kaps = ap50(kd, kg, 3)
            res["kitti"] = {"images": len(kd), "gt": {c: int(sum((g[1] == i).sum() for g in kg))
                                                      for i, c in enumerate(cd.CAMERA_CLASSES)},
                            **{f"{c}_AP50": round(a, 2) for c, a in zip(cd.CAMERA_CLASSES, kaps)}}
    text = json.dumps(res, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
