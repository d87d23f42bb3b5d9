"""evaluate(): KITTI-style 3D / BEV / 2D AP with the devkit's matching, plus TP errors."""
from __future__ import annotations

import logging
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from admlops_ros.evaluation.frames import FrameGT, FramePred, MetricsError
from admlops_ros.evaluation.matching import (_Flat, _flatten, _pr_counts, _run_frames,
                                             _sample_thresholds)
from admlops_ros.evaluation.protocol import (IOU_SETS, KITTI_DIFFICULTIES, KITTI_MAX_OCCLUSION,
                                             KITTI_MAX_TRUNCATION, KITTI_MIN_HEIGHT_PX, METRICS,
                                             N_SAMPLE_PTS, NEIGHBOUR_CLASS, EvalConfig)
from admlops_ros.evaluation.results import EvalResult

LOG = logging.getLogger(__name__)


def _levels(mode: str, bands: Sequence[Tuple[float, float]]) -> Tuple[List[str], str]:
    if mode in ("kitti", "labels"):
        return list(KITTI_DIFFICULTIES), "moderate"
    names = [f"{lo:g}m+" if math.isinf(hi) else f"{lo:g}-{hi:g}m" for lo, hi in bands]
    return names + ["all"], "all"


def _ignore_flags(flat: _Flat, cls: str, mode: str, level: int,
                  bands: Sequence[Tuple[float, float]]) -> Tuple[np.ndarray, np.ndarray]:
    """(ignored_gt, ignored_dt) int64 arrays as the devkit's clean_data, per difficulty mode."""
    name = cls.lower()
    neighbour = NEIGHBOUR_CLASS.get(name, "\0")
    same = flat.gt_names == name
    valid_class = np.where(same, 1, np.where(flat.gt_names == neighbour, 0, -1))
    dt_same = flat.dt_names == name
    if mode == "kitti":
        outside = ((flat.occluded > KITTI_MAX_OCCLUSION[level])
                   | (flat.truncated > KITTI_MAX_TRUNCATION[level])
                   | (flat.gt_height <= KITTI_MIN_HEIGHT_PX[level]))
        ig_dt = np.where(flat.dt_height < KITTI_MIN_HEIGHT_PX[level], 1, np.where(dt_same, 0, -1))
    elif mode == "labels":
        outside = (flat.difficulty > level) | (flat.difficulty < 0)
        ig_dt = np.where(dt_same, 0, -1)
    else:
        if level < len(bands):
            lo, hi = bands[level]
            gd = np.hypot(flat.gt_boxes[:, 0], flat.gt_boxes[:, 1])
            dd = np.hypot(flat.dt_boxes[:, 0], flat.dt_boxes[:, 1])
            outside = (gd < lo) | (gd >= hi)
            dt_out = (dd < lo) | (dd >= hi)
        else:
            outside = np.zeros(len(flat.gt_names), bool)
            dt_out = np.zeros(len(flat.dt_names), bool)
        ig_dt = np.where(dt_same, np.where(dt_out, 1, 0), -1)
    outside = outside | flat.gt_ignore
    ig_gt = np.where((valid_class == 1) & ~outside, 0,
                     np.where(valid_class >= 0, 1, -1))
    return ig_gt.astype(np.int64), ig_dt.astype(np.int64)


def _resolve_mode(gts: Sequence[FrameGT], mode: str, metrics: Sequence[str],
                  preds: Sequence[FramePred]) -> str:
    if mode == "auto":
        mode = "kitti" if gts and all(g.has_kitti_difficulty for g in gts) else "distance"
    if mode == "kitti" and not all(g.has_kitti_difficulty for g in gts):
        bad = next(g.frame_id for g in gts if not g.has_kitti_difficulty)
        raise MetricsError(f"difficulty_mode 'kitti' needs bbox2d, occluded and truncated on "
                           f"every ground-truth frame; frame {bad!r} lacks them (use 'distance')")
    if mode == "labels" and not all(g.difficulty is not None for g in gts):
        raise MetricsError("difficulty_mode 'labels' needs FrameGT.difficulty on every frame")
    if mode not in ("kitti", "distance", "labels"):
        raise MetricsError(f"difficulty_mode {mode!r} unknown; use auto, kitti, distance, labels")
    if "bbox" in metrics:
        if not all(g.bbox2d is not None for g in gts) or not all(
                p.bbox2d is not None for p in preds):
            raise MetricsError("metric 'bbox' needs bbox2d on every FrameGT and FramePred")
    return mode


def _average_precision(precision: np.ndarray) -> Tuple[float, float]:
    """(AP|R40, AP|R11) in percent from the 41-point interpolated precision."""
    r40 = precision[1:].sum() / 40.0 * 100.0
    r11 = precision[::4].sum() / 11.0 * 100.0
    return float(r40), float(r11)


def tp_errors(dt_boxes: np.ndarray, gt_boxes: np.ndarray) -> Dict[str, np.ndarray]:
    """Per-pair errors of matched boxes (nuScenes TP metrics, LiDAR frame).

    Returns:
        ``translation_m``: BEV centre distance (m); ``scale``: 1 - 3D IoU after aligning
        centre and yaw; ``orientation_rad``: smallest yaw difference in [0, pi].
    """
    dt_boxes = np.asarray(dt_boxes, np.float64).reshape(-1, 7)
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 7)
    trans = np.hypot(dt_boxes[:, 0] - gt_boxes[:, 0], dt_boxes[:, 1] - gt_boxes[:, 1])
    dims_d = np.maximum(dt_boxes[:, 3:6], 0.0)
    dims_g = np.maximum(gt_boxes[:, 3:6], 0.0)
    inter = np.prod(np.minimum(dims_d, dims_g), axis=1)
    union = np.prod(dims_d, axis=1) + np.prod(dims_g, axis=1) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = 1.0 - np.where(union > 0, inter / union, 0.0)
    dyaw = np.abs((dt_boxes[:, 6] - gt_boxes[:, 6] + np.pi) % (2 * np.pi) - np.pi)
    return {"translation_m": trans, "scale": scale, "orientation_rad": dyaw}


def _operating_point(flat: _Flat, metric: str, ig: np.ndarray, idt: np.ndarray,
                     min_overlap: float, thresh: float,
                     dc: Tuple[np.ndarray, np.ndarray, np.ndarray]) -> Dict[str, float]:
    match = np.empty(len(ig), np.int64)
    tp, fp, fn = _run_frames(flat.ov[metric], flat.ov_off, flat.gt_off, flat.dt_off, dc[0],
                             dc[1], dc[2], ig, idt, flat.scores, min_overlap, thresh, True,
                             match)
    hit = match >= 0
    err = tp_errors(flat.dt_boxes[match[hit]], flat.gt_boxes[hit])
    nan = math.nan
    return {
        "score_threshold": float(thresh), "tp": int(tp), "fp": int(fp), "fn": int(fn),
        "precision": tp / (tp + fp) if tp + fp else nan,
        "recall": tp / (tp + fn) if tp + fn else nan,
        "mean_translation_error_m": float(err["translation_m"].mean()) if tp else nan,
        "mean_scale_error": float(err["scale"].mean()) if tp else nan,
        "mean_orientation_error_rad": float(err["orientation_rad"].mean()) if tp else nan,
    }


def _zero_off(flat: _Flat) -> np.ndarray:
    return np.zeros(len(flat.gt_off), np.int64)


def evaluate(gts: Sequence[FrameGT], preds: Sequence[FramePred],
             config: Optional[EvalConfig] = None) -> EvalResult:
    """KITTI-protocol AP of predictions against ground truth, frame by frame.

    Matching follows the KITTI devkit (mmdet3d ``kitti_utils/eval.py``): per frame and class,
    each ground truth takes the highest-scoring unassigned detection with overlap strictly
    above the class threshold to collect true-positive scores; the 41 recall sample points
    pick score thresholds from those; at each threshold each ground truth takes the
    best-overlapping valid detection (ignored detections only as a fallback). Neighbouring
    classes (Van for Car, Person_sitting for Pedestrian), ground truth outside the difficulty
    and ``FrameGT.ignore`` boxes are ignored: their matches are neither TP nor FP. Detections
    outside the difficulty (2D height, or distance band) are ignored likewise.

    Args:
        gts: ground truth per frame.
        preds: predictions per frame, same order and length (empty FramePred for none).
        config: what to evaluate; defaults to :class:`EvalConfig`.

    Returns:
        EvalResult with AP|R40, AP|R11 (percent; nan where a class has no valid ground truth,
        0 where it has ground truth but no prediction matches), PR curves and operating-point
        precision / recall / TP errors (3D metric when evaluated, else the first metric; at the
        headline difficulty).

    Raises:
        MetricsError: lengths differ, frame ids disagree, or the difficulty mode / metric needs
            fields the frames lack.
    """
    config = config or EvalConfig()
    if len(gts) != len(preds):
        raise MetricsError(f"{len(gts)} ground-truth frames but {len(preds)} prediction frames")
    for g, p in zip(gts, preds):
        if g.frame_id and p.frame_id and g.frame_id != p.frame_id:
            raise MetricsError(f"frame order differs: gt {g.frame_id!r} vs pred {p.frame_id!r}")
    metrics = [m for m in METRICS if m in config.metrics]
    unknown = set(config.metrics) - set(METRICS)
    if unknown:
        raise MetricsError(f"unknown metrics {sorted(unknown)}; use {list(METRICS)}")
    mode = _resolve_mode(gts, config.difficulty_mode, metrics, preds)
    flat = _flatten(gts, preds, metrics, mode)
    levels, headline = _levels(mode, config.distance_bands)
    classes = list(config.classes)
    shape = (len(metrics), len(IOU_SETS), len(classes), len(levels))
    ap40 = np.full(shape, np.nan)
    ap11 = np.full(shape, np.nan)
    prec = np.zeros(shape + (N_SAMPLE_PTS,))
    rec = np.zeros(shape + (N_SAMPLE_PTS,))
    thr = np.full(shape + (N_SAMPLE_PTS,), np.nan)
    num_gt = np.zeros((len(classes), len(levels)), np.int64)
    operating: Dict[str, Dict[str, Dict[str, float]]] = {s: {} for s in IOU_SETS}
    op_metric = "3d" if "3d" in metrics else metrics[0]
    no_dc = np.zeros(0)
    zero = _zero_off(flat)
    for ci, cls in enumerate(classes):
        for li in range(len(levels)):
            ig, idt = _ignore_flags(flat, cls, mode, li, config.distance_bands)
            n_valid = int((ig == 0).sum())
            num_gt[ci, li] = n_valid
            for mi, metric in enumerate(metrics):
                dcov, dcov_off, dc_off = ((flat.dcov, flat.dcov_off, flat.dc_off)
                                          if metric == "bbox" else (no_dc, zero, zero))
                for si, iou_set in enumerate(IOU_SETS):
                    min_ov = config.min_overlap(metric, iou_set, cls)
                    if li == levels.index(headline) and metric == op_metric:
                        operating[iou_set][cls] = _operating_point(
                            flat, metric, ig, idt, min_ov, config.score_threshold,
                            (dcov, dcov_off, dc_off))
                    if n_valid == 0:
                        continue
                    match = np.empty(len(ig), np.int64)
                    _run_frames(flat.ov[metric], flat.ov_off, flat.gt_off, flat.dt_off, dcov,
                                dcov_off, dc_off, ig, idt, flat.scores, min_ov, 0.0, False,
                                match)
                    tp_scores = np.sort(flat.scores[match[match >= 0]])[::-1].copy()
                    thresholds = _sample_thresholds(tp_scores, float(n_valid),
                                                    N_SAMPLE_PTS)[:N_SAMPLE_PTS]
                    idx = (mi, si, ci, li)
                    if len(thresholds):
                        pr = _pr_counts(flat.ov[metric], flat.ov_off, flat.gt_off, flat.dt_off,
                                        dcov, dcov_off, dc_off, ig, idt, flat.scores, min_ov,
                                        thresholds).astype(np.float64)
                        t = len(thresholds)
                        with np.errstate(divide="ignore", invalid="ignore"):
                            r = pr[:, 0] / (pr[:, 0] + pr[:, 2])
                            p = pr[:, 0] / (pr[:, 0] + pr[:, 1])
                        # devkit: running max from the right (interpolated precision)
                        prec[idx][:t] = np.maximum.accumulate(np.nan_to_num(p)[::-1])[::-1]
                        rec[idx][:t] = np.maximum.accumulate(np.nan_to_num(r)[::-1])[::-1]
                        thr[idx][:t] = thresholds
                    ap40[idx], ap11[idx] = _average_precision(prec[idx])
    min_overlaps = {m: {s: {c: config.min_overlap(m, s, c) for c in classes} for s in IOU_SETS}
                    for m in metrics}
    return EvalResult(classes=classes, difficulties=levels, metrics=metrics,
                      iou_sets=list(IOU_SETS), min_overlaps=min_overlaps, ap_r40=ap40,
                      ap_r11=ap11, precision=prec, recall=rec, thresholds=thr, num_gt=num_gt,
                      headline_difficulty=headline, difficulty_mode=mode, operating=operating,
                      num_frames=len(gts))


__all__: Sequence[str] = ("evaluate", "tp_errors")
