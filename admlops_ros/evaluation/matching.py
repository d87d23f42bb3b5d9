"""KITTI devkit matching kernels (numba), box overlaps and the flat all-frames layout they read."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from admlops_ros.evaluation.frames import FrameGT, FramePred

try:  # numba is a runtime requirement; the pure-Python fallback gives the same numbers, slowly
    from numba import njit
except ImportError:  # pragma: no cover - exercised only without numba
    def njit(*args, **kwargs):  # type: ignore[no-redef]
        """No-op stand-in for numba.njit."""
        if args and callable(args[0]):
            return args[0]
        return lambda f: f


# ---------------------------------------------------------------------------------------------
# Matching kernels (compute_statistics_jit semantics). Flat arrays over all frames:
# overlaps of frame f are ov[ov_off[f]:ov_off[f+1]] reshaped [D_f, G_f] (det x gt).
# ignored_gt / ignored_dt: 0 valid, 1 ignored (neighbour class / outside difficulty), -1 other.

_NO_DETECTION = -10000000.0


@njit(cache=False)
def match_frame(ov, ig, idt, sc, dcov, n_dc, min_overlap, thresh, compute_fp, match):
    """Devkit matching on one frame; writes match[g] = det index of TPs; returns tp, fp, fn."""
    n_dt = idt.shape[0]
    n_gt = ig.shape[0]
    assigned = np.zeros(n_dt, np.bool_)
    below = np.zeros(n_dt, np.bool_)
    if compute_fp:
        for j in range(n_dt):
            below[j] = sc[j] < thresh
    tp = 0
    fp = 0
    fn = 0
    for i in range(n_gt):
        match[i] = -1
        if ig[i] == -1:
            continue
        det_idx = -1
        valid = _NO_DETECTION
        max_overlap = 0.0
        assigned_ignored = False
        for j in range(n_dt):
            if idt[j] == -1 or assigned[j] or below[j]:
                continue
            o = ov[j, i]
            if not compute_fp:
                if o > min_overlap and sc[j] > valid:
                    det_idx = j
                    valid = sc[j]
            elif o > min_overlap and (o > max_overlap or assigned_ignored) and idt[j] == 0:
                max_overlap = o
                det_idx = j
                valid = 1.0
                assigned_ignored = False
            elif o > min_overlap and valid == _NO_DETECTION and idt[j] == 1:
                det_idx = j
                valid = 1.0
                assigned_ignored = True
        if valid == _NO_DETECTION:
            if ig[i] == 0:
                fn += 1
        elif ig[i] == 1 or idt[det_idx] == 1:
            assigned[det_idx] = True
        else:
            tp += 1
            match[i] = det_idx
            assigned[det_idx] = True
    if compute_fp:
        for j in range(n_dt):
            if not (assigned[j] or idt[j] != 0 or below[j]):
                fp += 1
        nstuff = 0
        for k in range(n_dc):
            for j in range(n_dt):
                if assigned[j] or idt[j] != 0 or below[j]:
                    continue
                if dcov[j, k] > min_overlap:
                    assigned[j] = True
                    nstuff += 1
        fp -= nstuff
    return tp, fp, fn


@njit(cache=False)
def _run_frames(ov, ov_off, gt_off, dt_off, dcov, dcov_off, dc_off, ig, idt, sc, min_overlap,
                thresh, compute_fp, match):
    """:func:`match_frame` over all frames; match[g] is a flat det index (or -1)."""
    tp = 0
    fp = 0
    fn = 0
    for f in range(gt_off.shape[0] - 1):
        g0, g1 = gt_off[f], gt_off[f + 1]
        d0, d1 = dt_off[f], dt_off[f + 1]
        if g1 == g0 and d1 == d0:
            continue
        n_dc = dc_off[f + 1] - dc_off[f]
        o = ov[ov_off[f]:ov_off[f + 1]].reshape((d1 - d0, g1 - g0))
        dc = dcov[dcov_off[f]:dcov_off[f + 1]].reshape((d1 - d0, n_dc))
        m = match[g0:g1]
        a, b, c = match_frame(o, ig[g0:g1], idt[d0:d1], sc[d0:d1], dc, n_dc, min_overlap,
                               thresh, compute_fp, m)
        for i in range(g1 - g0):
            if m[i] >= 0:
                m[i] += d0
        tp += a
        fp += b
        fn += c
    return tp, fp, fn


@njit(cache=False)
def _pr_counts(ov, ov_off, gt_off, dt_off, dcov, dcov_off, dc_off, ig, idt, sc, min_overlap,
               thresholds):
    """[T, 3] (tp, fp, fn) summed over frames at each score threshold."""
    out = np.zeros((thresholds.shape[0], 3), np.int64)
    match = np.empty(ig.shape[0], np.int64)
    for t in range(thresholds.shape[0]):
        tp, fp, fn = _run_frames(ov, ov_off, gt_off, dt_off, dcov, dcov_off, dc_off, ig, idt,
                                 sc, min_overlap, thresholds[t], True, match)
        out[t, 0] = tp
        out[t, 1] = fp
        out[t, 2] = fn
    return out


@njit(cache=False)
def _sample_thresholds(scores_desc, num_gt, num_sample_pts):
    """Devkit get_thresholds: scores at which recall passes each of the sample points."""
    out = np.empty(scores_desc.shape[0], np.float64)
    k = 0
    current = 0.0
    n = scores_desc.shape[0]
    for i in range(n):
        l_recall = (i + 1) / num_gt
        r_recall = (i + 2) / num_gt if i < n - 1 else l_recall
        if (r_recall - current) < (current - l_recall) and i < n - 1:
            continue
        out[k] = scores_desc[i]
        k += 1
        current += 1.0 / (num_sample_pts - 1.0)
    return out[:k]


# ---------------------------------------------------------------------------------------------
# Preparation: flatten frames and overlaps per metric into the kernels' flat layout.

def image_box_overlap(a: np.ndarray, b: np.ndarray, criterion: int = -1) -> np.ndarray:
    """Axis-aligned 2D overlap [len(a), len(b)] of image boxes (left, top, right, bottom).

    criterion -1: IoU; 0: intersection / area of a (devkit's DontCare rule); 1: / area of b.
    """
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    area_a = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None]
    area_b = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None, :]
    if criterion == -1:
        denom = area_a + area_b - inter
    elif criterion == 0:
        denom = np.broadcast_to(area_a, inter.shape)
    else:
        denom = np.broadcast_to(area_b, inter.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter > 0, inter / denom, 0.0)


def box_overlaps(metric: str, dt_boxes: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """[D, G] overlap for "bev" or "3d" from lidar.geometry (exact rotated rectangles)."""
    if len(dt_boxes) == 0 or len(gt_boxes) == 0:
        return np.zeros((len(dt_boxes), len(gt_boxes)))
    from admlops_ros.lidar import geometry
    fn = geometry.rotated_iou_bev if metric == "bev" else geometry.iou_3d
    return np.asarray(fn(dt_boxes, gt_boxes), np.float64).reshape(len(dt_boxes), len(gt_boxes))


@dataclass
class _Flat:
    """All frames concatenated; per-frame offsets into each array."""

    gt_off: np.ndarray
    dt_off: np.ndarray
    gt_names: np.ndarray
    dt_names: np.ndarray
    gt_boxes: np.ndarray
    dt_boxes: np.ndarray
    scores: np.ndarray
    gt_ignore: np.ndarray
    ov: Dict[str, np.ndarray]
    ov_off: np.ndarray
    dc_off: np.ndarray
    dcov: np.ndarray
    dcov_off: np.ndarray
    gt_height: Optional[np.ndarray] = None
    dt_height: Optional[np.ndarray] = None
    occluded: Optional[np.ndarray] = None
    truncated: Optional[np.ndarray] = None
    difficulty: Optional[np.ndarray] = None


def _offsets(counts: Sequence[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.asarray(counts, np.int64))]).astype(np.int64)


def _cat(arrays: List[np.ndarray], width: int = 0, dtype=np.float64) -> np.ndarray:
    if not arrays:
        return np.zeros((0, width) if width else 0, dtype)
    return np.concatenate([np.asarray(a, dtype).reshape((-1, width) if width else -1)
                           for a in arrays])


def _flatten(gts: Sequence[FrameGT], preds: Sequence[FramePred], metrics: Sequence[str],
             mode: str) -> _Flat:
    n_gt = [len(g) for g in gts]
    n_dt = [len(p) for p in preds]
    ov: Dict[str, List[np.ndarray]] = {m: [] for m in metrics}
    dcov: List[np.ndarray] = []
    for g, p in zip(gts, preds):
        for m in metrics:
            if m == "bbox":
                o = image_box_overlap(p.bbox2d, g.bbox2d)
            else:
                o = box_overlaps(m, p.boxes, g.boxes)
            ov[m].append(o.reshape(-1))
        if "bbox" in metrics:
            dcov.append(image_box_overlap(p.bbox2d, g.dontcare_bbox2d, 0).reshape(-1))
    n_dc = [len(g.dontcare_bbox2d) if "bbox" in metrics else 0 for g in gts]
    flat = _Flat(
        gt_off=_offsets(n_gt), dt_off=_offsets(n_dt),
        gt_names=np.char.lower(_cat([g.names for g in gts], dtype=str)),
        dt_names=np.char.lower(_cat([p.names for p in preds], dtype=str)),
        gt_boxes=_cat([g.boxes for g in gts], 7), dt_boxes=_cat([p.boxes for p in preds], 7),
        scores=_cat([p.scores for p in preds]),
        gt_ignore=_cat([np.zeros(len(g), bool) if g.ignore is None else g.ignore for g in gts],
                       dtype=bool),
        ov={m: _cat(v) for m, v in ov.items()},
        ov_off=_offsets([a * b for a, b in zip(n_gt, n_dt)]),
        dc_off=_offsets(n_dc), dcov=_cat(dcov),
        dcov_off=_offsets([a * b for a, b in zip(n_dt, n_dc)]))
    if mode == "kitti":
        flat.gt_height = _cat([g.bbox2d[:, 3] - g.bbox2d[:, 1] for g in gts])
        flat.dt_height = _cat([np.abs(p.bbox2d[:, 3] - p.bbox2d[:, 1]) if p.bbox2d is not None
                               else np.full(len(p), np.inf) for p in preds])
        flat.occluded = _cat([g.occluded for g in gts], dtype=np.int64)
        flat.truncated = _cat([g.truncated for g in gts])
    elif mode == "labels":
        flat.difficulty = _cat([g.difficulty for g in gts], dtype=np.int64)
    if len(flat.gt_names) == 0:
        flat.gt_names = np.zeros(0, dtype="<U1")
    if len(flat.dt_names) == 0:
        flat.dt_names = np.zeros(0, dtype="<U1")
    return flat


__all__: Sequence[str] = ("image_box_overlap", "box_overlaps")
