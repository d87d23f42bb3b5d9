#!/usr/bin/env python3
"""Benchmark PointPillars KITTI post-processing (decode + NMS) against naive baselines.

Usage: .venv/bin/python scripts/bench_postprocess.py [--runs 30] [--hot 200] [--seed 0]
Prints a table of median milliseconds; ``run()`` returns the same numbers as a dict.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Dict

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarking import median_ms  # noqa: E402
from admlops_ros.lidar.heads import Anchor3DDecoder, aligned_anchors, decode, multiclass_nms  # noqa: E402
from admlops_ros.lidar.heads.nms import score_order  # noqa: E402
from admlops_ros.lidar.geometry import limit_period, rotated_iou_bev_aligned  # noqa: E402
from admlops_ros.training.configs import KITTI_3CLASS, to_model_spec  # noqa: E402 (torch-free)

# mmdet3d's KITTI 3-class PointPillars: anchors, head and test_cfg of its bundle spec.
KITTI_SPEC = to_model_spec(KITTI_3CLASS)


def make_outputs(seed: int = 0, hot: int = 200, objects: int = 20):
    """Random KITTI-shaped head outputs; ``hot`` logits exceed score_thr, clustered on objects."""
    rng = np.random.default_rng(seed)
    h, w, a_n, k_n = 248, 216, 6, 3
    cls = rng.normal(-7.0, 1.0, (1, a_n * k_n, h, w)).astype(np.float32)
    centres = np.c_[rng.integers(2, h - 2, objects), rng.integers(2, w - 2, objects)]
    pick = centres[rng.integers(0, objects, hot)] + rng.integers(-2, 3, (hot, 2))
    chan = rng.integers(0, a_n * k_n, hot)
    cls[0, chan, pick[:, 0], pick[:, 1]] = rng.uniform(-2.0, 3.0, hot)
    bbox = rng.normal(0, 0.1, (1, a_n * 7, h, w)).astype(np.float32)
    dirp = rng.normal(0, 1, (1, a_n * 2, h, w)).astype(np.float32)
    return cls, bbox, dirp


def naive_select(cls, bbox, dirp, anchors, nms_pre):
    """Baseline: sigmoid over all anchors, permute, top-k on scores, decode (mmdet3d in numpy)."""
    scores = (1.0 / (1.0 + np.exp(-cls[0]))).transpose(1, 2, 0).reshape(-1, 3)
    deltas = bbox[0].transpose(1, 2, 0).reshape(-1, 7)
    dirs = dirp[0].transpose(1, 2, 0).reshape(-1, 2).argmax(axis=1)
    best = np.maximum(np.maximum(scores[:, 0], scores[:, 1]), scores[:, 2])
    top = np.argpartition(-best, nms_pre)[:nms_pre]
    top = top[np.argsort(-best[top], kind="stable")]
    return decode(anchors[top], deltas[top]), scores[top], dirs[top]


def pairwise_nms(bev, scores, thr):
    """Baseline: greedy NMS computing exact IoU of each kept box vs all remaining (no prefilter)."""
    order = score_order(scores)
    keep = []
    alive = np.ones(len(order), bool)
    for pos in range(len(order)):
        if not alive[pos]:
            continue
        keep.append(order[pos])
        rest = np.flatnonzero(alive[pos + 1:]) + pos + 1
        if len(rest):
            iou = rotated_iou_bev_aligned(np.repeat(bev[order[pos]][None], len(rest), 0),
                                          bev[order[rest]])
            alive[rest[iou > thr]] = False
    return np.array(keep, np.int64)


def naive_multiclass(boxes, scores, dirs, cfg, head):
    out_b, out_s = [], []
    for k in range(scores.shape[1]):
        idx = np.flatnonzero(scores[:, k] > cfg.score_thr)
        if len(idx) == 0:
            continue
        keep = pairwise_nms(boxes[idx][:, [0, 1, 3, 4, 6]].astype(np.float64),
                            scores[idx, k], cfg.nms_thr)
        out_b.append(boxes[idx[keep]])
        out_s.append(scores[idx[keep], k])
    if not out_b:
        return np.zeros((0, 7), np.float32)
    b = np.concatenate(out_b)
    s = np.concatenate(out_s)
    if len(b) > cfg.max_num:
        b = b[score_order(s)[:cfg.max_num]]
    b = b.copy()
    b[:, 6] = limit_period(b[:, 6] - head.dir_offset, head.dir_limit_offset, np.pi) \
        + head.dir_offset
    return b


def run(runs: int = 30, hot: int = 200, seed: int = 0) -> Dict[str, object]:
    """Time decode + NMS for the full KITTI PointPillars output shapes.

    Returns:
        dict with ``median_ms`` per case, ``ratios`` (baseline / ours), ``n_above_thr`` (class
        logits above score_thr), ``n_detections`` and ``runs``.
    """
    cls, bbox, dirp = make_outputs(seed, hot)
    dec = Anchor3DDecoder.from_spec(KITTI_SPEC)
    cfg, head, a = KITTI_SPEC.test_cfg, KITTI_SPEC.head, KITTI_SPEC.anchors
    anchors = aligned_anchors(a.feature_map_size, a.ranges, a.sizes, a.rotations)
    det = dec.decode([cls], [bbox], [dirp])
    sel_boxes, sel_scores, sel_dirs = naive_select(cls, bbox, dirp, anchors, cfg.nms_pre)

    def ours_select():
        return dec.select([cls], [bbox], [dirp])

    def ours_nms():
        return multiclass_nms(sel_boxes, sel_scores, cfg.score_thr, cfg.nms_thr,
                              cfg.max_num, True, sel_dirs)

    med = {
        "ours: decode + NMS (Anchor3DDecoder.decode)": median_ms(
            lambda: dec.decode([cls], [bbox], [dirp]), runs),
        "ours: top-k select + box decode": median_ms(ours_select, runs),
        "ours: multiclass NMS (AABB prefilter)": median_ms(ours_nms, runs),
        "ours: multiclass NMS, numpy backend (no numba)": median_ms(
            lambda: multiclass_nms(sel_boxes, sel_scores, cfg.score_thr, cfg.nms_thr,
                                   cfg.max_num, True, sel_dirs, backend="numpy"), runs),
        "baseline: sigmoid all + top-k + box decode": median_ms(
            lambda: naive_select(cls, bbox, dirp, anchors, cfg.nms_pre), runs),
        "baseline: multiclass NMS, pairwise IoU (no prefilter)": median_ms(
            lambda: naive_multiclass(sel_boxes, sel_scores, sel_dirs, cfg, head), runs),
    }
    med["baseline: full (sigmoid all + pairwise NMS)"] = (
        med["baseline: sigmoid all + top-k + box decode"]
        + med["baseline: multiclass NMS, pairwise IoU (no prefilter)"])
    ratios = {
        "select: baseline / ours": med["baseline: sigmoid all + top-k + box decode"]
        / med["ours: top-k select + box decode"],
        "nms: baseline / ours": med["baseline: multiclass NMS, pairwise IoU (no prefilter)"]
        / med["ours: multiclass NMS (AABB prefilter)"],
        "full: baseline / ours": med["baseline: full (sigmoid all + pairwise NMS)"]
        / med["ours: decode + NMS (Anchor3DDecoder.decode)"],
    }
    logit_thr = math.log(cfg.score_thr / (1 - cfg.score_thr))
    return {
        "runs": runs,
        "shapes": {"cls_score": cls.shape, "bbox_pred": bbox.shape, "dir_cls_pred": dirp.shape},
        "n_above_thr": int((cls > logit_thr).sum()),
        "n_detections": len(det),
        "median_ms": med,
        "ratios": ratios,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--hot", type=int, default=200, help="logits above score_thr")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    res = run(max(args.runs, 20), args.hot, args.seed)
    print(f"KITTI PointPillars post-processing, shapes {res['shapes']}")
    print(f"class logits above score_thr: {res['n_above_thr']}, detections: "
          f"{res['n_detections']}, median of {res['runs']} runs")
    width = max(len(k) for k in res["median_ms"])
    print(f"{'case':<{width}}  median ms")
    for name, ms in res["median_ms"].items():
        print(f"{name:<{width}}  {ms:9.3f}")
    for name, ratio in res["ratios"].items():
        print(f"{name:<{width}}  {ratio:8.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
