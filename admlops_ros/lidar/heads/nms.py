"""BEV non-maximum suppression with mmcv / mmdet3d semantics (rotated, axis-aligned, multi-class,
and CenterPoint's centre-distance ``circle_nms``).

Order on score ties: boxes are visited by score descending with ties in input order (a stable
sort, as ``torch.sort(stable=True)``); torch's default unstable sort may order exact ties
differently, which is the only way results can differ from mmdet3d.

Suppression rule: a box is dropped when its IoU with an already kept box is strictly greater
than the threshold (mmcv CUDA ``nms_rotated`` and ``nms``; mmcv's CPU ``nms_rotated`` uses >=,
which differs only for IoU exactly equal to the threshold).

Speed: exact IoU is only computed for pairs whose axis-aligned bounding rectangles overlap.
With numba the greedy loop runs compiled and lazily (only kept-vs-alive pairs, as mmcv);
the numpy path computes the overlapping pairs at once and walks only suppressing rows.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from admlops_ros.errors import AdmlopsError
from admlops_ros.lidar.geometry import (MIN_AREA, _nb_pair_intersection, _njit, bev_aabb,
                                        rotated_intersection_bev_aligned, use_numba)

__all__ = ["NMSError", "rotated_nms", "aligned_nms", "multiclass_nms", "circle_nms",
           "score_order"]


class NMSError(AdmlopsError, ValueError):
    """Raised for box / score arrays of inconsistent shapes."""


def score_order(scores: np.ndarray) -> np.ndarray:
    """Indices sorting scores descending; ties keep input order (stable)."""
    return np.argsort(-np.asarray(scores), kind="stable")


def _check_bev(boxes: np.ndarray, scores: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    b = np.asarray(boxes)
    s = np.asarray(scores).reshape(-1)
    if b.ndim == 1 and b.size == 0:
        b = b.reshape(0, 5)
    if b.ndim != 2 or b.shape[1] != 5 or len(b) != len(s):
        raise NMSError(
            f"NMS: expected boxes [N, 5] (x, y, dx, dy, yaw) and scores [N], got {b.shape} and "
            f"{np.asarray(scores).shape}")
    return b, s


def _greedy(n: int, ii: np.ndarray, jj: np.ndarray) -> np.ndarray:
    """Greedy NMS on score-sorted positions given the pairs (i < j) that overlap too much.

    Returns:
        Kept positions, ascending (= score order).
    """
    suppressed = np.zeros(n, dtype=bool)
    if len(ii):
        rows, starts = np.unique(ii, return_index=True)
        ends = np.append(starts[1:], len(ii))
        for row, start, end in zip(rows.tolist(), starts.tolist(), ends.tolist()):
            if not suppressed[row]:
                suppressed[jj[start:end]] = True
    return np.flatnonzero(~suppressed)


def _overlapping_pairs(sorted_bev: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) of sorted boxes whose axis-aligned bounding rectangles overlap."""
    r = bev_aabb(sorted_bev)
    margin = 1e-9
    hit = ((r[:, None, 0] < r[None, :, 2] + margin) & (r[None, :, 0] < r[:, None, 2] + margin)
           & (r[:, None, 1] < r[None, :, 3] + margin) & (r[None, :, 1] < r[:, None, 3] + margin))
    hit = np.triu(hit, k=1)
    return np.nonzero(hit)     # row-major: sorted by i


def rotated_iou_pairs_sorted(sorted_bev: np.ndarray, iou_threshold: float
                             ) -> Tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) of score-sorted BEV boxes with exact rotated IoU > threshold."""
    ii, jj = _overlapping_pairs(sorted_bev)
    if len(ii) == 0:
        return ii, jj
    inter = rotated_intersection_bev_aligned(sorted_bev[ii], sorted_bev[jj])
    area = sorted_bev[:, 2] * sorted_bev[:, 3]
    union = area[ii] + area[jj] - inter
    ok = (area[ii] >= MIN_AREA) & (area[jj] >= MIN_AREA) & (union > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(ok, inter / np.where(ok, union, 1.0), 0.0)
    sel = iou > iou_threshold
    return ii[sel], jj[sel]


def _max_keep(post_max_size: Optional[int], n: int) -> int:
    """How many kept boxes a greedy NMS must find: all, or the ``post_max_size`` first."""
    return n if post_max_size is None else max(0, min(int(post_max_size), n))


@_njit
def _nb_rotated_nms_sorted(bev, thr, max_keep):
    """Greedy rotated NMS on score-sorted [N, 5] float64 boxes; the first ``max_keep`` kept
    positions (numba). Stopping there is exact: a kept box depends only on earlier ones."""
    n = bev.shape[0]
    x0 = np.empty(n)
    y0 = np.empty(n)
    x1 = np.empty(n)
    y1 = np.empty(n)
    for i in range(n):
        c = abs(np.cos(bev[i, 4]))
        s = abs(np.sin(bev[i, 4]))
        hx = 0.5 * (c * bev[i, 2] + s * bev[i, 3])
        hy = 0.5 * (s * bev[i, 2] + c * bev[i, 3])
        x0[i] = bev[i, 0] - hx
        x1[i] = bev[i, 0] + hx
        y0[i] = bev[i, 1] - hy
        y1[i] = bev[i, 1] + hy
    margin = 1e-9
    suppressed = np.zeros(n, dtype=np.bool_)
    keep = np.empty(n, dtype=np.int64)
    nk = 0
    pa = np.empty((4, 2))
    pb = np.empty((4, 2))
    for i in range(n):
        if nk >= max_keep:
            break
        if suppressed[i]:
            continue
        keep[nk] = i
        nk += 1
        area_i = bev[i, 2] * bev[i, 3]
        for j in range(i + 1, n):
            if suppressed[j]:
                continue
            if (x0[i] >= x1[j] + margin or x0[j] >= x1[i] + margin
                    or y0[i] >= y1[j] + margin or y0[j] >= y1[i] + margin):
                continue
            inter = _nb_pair_intersection(bev[i], bev[j], pa, pb)
            area_j = bev[j, 2] * bev[j, 3]
            union = area_i + area_j - inter
            if area_i < MIN_AREA or area_j < MIN_AREA or union <= 0.0:
                continue
            if inter / union > thr:
                suppressed[j] = True
    return keep[:nk]


def rotated_nms(boxes_bev: np.ndarray, scores: np.ndarray, iou_threshold: float,
                pre_max_size: Optional[int] = None,
                post_max_size: Optional[int] = None, backend: str = "auto") -> np.ndarray:
    """Rotated BEV NMS (mmdet3d ``nms_bev`` -> mmcv ``nms_rotated``).

    Args:
        boxes_bev: [N, 5] (x, y, dx, dy, yaw) in the LiDAR frame; metres, radians (CCW).
        scores: [N] scores.
        iou_threshold: suppress a box whose exact rotated IoU with a kept box is > this.
        pre_max_size: consider only the this many best-scoring boxes.
        post_max_size: return at most this many indices.
        backend: "auto" (numba when installed), "numba" or "numpy".

    Returns:
        [K] int64 indices into the input, by score descending.
    """
    b, s = _check_bev(boxes_bev, scores)
    order = score_order(s)
    if pre_max_size is not None:
        order = order[:int(pre_max_size)]
    sorted_bev = np.ascontiguousarray(b[order], dtype=np.float64)
    if len(order) == 0:
        kept = np.zeros(0, np.int64)
    elif use_numba(backend):
        kept = _nb_rotated_nms_sorted(sorted_bev, float(iou_threshold),
                                      _max_keep(post_max_size, len(order)))
    else:
        ii, jj = rotated_iou_pairs_sorted(sorted_bev, float(iou_threshold))
        kept = _greedy(len(order), ii, jj)
    keep = order[kept].astype(np.int64)
    if post_max_size is not None:
        keep = keep[:int(post_max_size)]
    return keep


def aligned_nms(boxes_bev: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Axis-aligned BEV NMS ignoring yaw (mmdet3d ``nms_normal_bev`` -> mmcv ``nms``).

    The box (x - dx/2, y - dy/2, x + dx/2, y + dy/2) is used whatever the yaw; IoU is
    inter / (area_a + area_b - inter) (mmcv offset 0).

    Args:
        boxes_bev: [N, 5] (x, y, dx, dy, yaw).
        scores: [N] scores.
        iou_threshold: suppress a box whose IoU with a kept box is > this.

    Returns:
        [K] int64 indices into the input, by score descending.
    """
    b, s = _check_bev(boxes_bev, scores)
    order = score_order(s)
    sb = b[order]
    half_w = sb[:, 2] / 2
    half_h = sb[:, 3] / 2
    xyxy = np.stack([sb[:, 0] - half_w, sb[:, 1] - half_h, sb[:, 0] + half_w, sb[:, 1] + half_h],
                    axis=1).astype(np.float64)
    w = np.clip(np.minimum(xyxy[:, None, 2], xyxy[None, :, 2])
                - np.maximum(xyxy[:, None, 0], xyxy[None, :, 0]), 0.0, None)
    h = np.clip(np.minimum(xyxy[:, None, 3], xyxy[None, :, 3])
                - np.maximum(xyxy[:, None, 1], xyxy[None, :, 1]), 0.0, None)
    inter = w * h
    area = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
    union = area[:, None] + area[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    ii, jj = np.nonzero(np.triu(iou > iou_threshold, k=1))
    return order[_greedy(len(order), ii, jj)].astype(np.int64)


def multiclass_nms(boxes: np.ndarray, scores: np.ndarray, score_thr: float, nms_thr: float,
                   max_num: Optional[int], use_rotate_nms: bool = True,
                   dir_labels: Optional[np.ndarray] = None, backend: str = "auto"
                   ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Per-class BEV NMS with mmdet3d ``box3d_multiclass_nms`` semantics.

    For each class k (in order): keep boxes with ``scores[:, k] > score_thr``, run NMS on
    their (x, y, dx, dy, yaw) and append the survivors (score-descending) with label k. The
    class-major concatenation is returned as is, unless it holds more than ``max_num`` boxes:
    then it is sorted by score descending (stable) and cut to ``max_num``.

    Args:
        boxes: [N, 7+] LiDAR boxes (x, y, z, dx, dy, dz, yaw, ...).
        scores: [N, K] per-class scores (no background column).
        score_thr: per-class score threshold (strictly greater passes).
        nms_thr: IoU threshold of the NMS.
        max_num: maximum number of boxes returned (None: no limit).
        use_rotate_nms: rotated NMS (``nms_bev``) or axis-aligned (``nms_normal_bev``).
        dir_labels: optional [N] direction labels carried along.
        backend: rotated IoU backend, "auto", "numba" or "numpy".

    Returns:
        (boxes [M, 7+], scores [M], labels [M] int64, dir_labels [M] or None).
    """
    b = np.asarray(boxes)
    sc = np.asarray(scores)
    if b.ndim != 2 or b.shape[1] < 7 or sc.ndim != 2 or len(sc) != len(b):
        raise NMSError(
            f"multiclass_nms: expected boxes [N, 7+] and scores [N, K], got {b.shape} and "
            f"{sc.shape}")
    if dir_labels is not None:
        dir_labels = np.asarray(dir_labels).reshape(-1)
        if len(dir_labels) != len(b):
            raise NMSError(
                f"multiclass_nms: dir_labels must be [N] = [{len(b)}], got {dir_labels.shape}")
    use_numba(backend)                    # validate early
    sel_idx: List[np.ndarray] = []
    sel_scores: List[np.ndarray] = []
    sel_labels: List[np.ndarray] = []
    for k in range(sc.shape[1]):
        idx = np.flatnonzero(sc[:, k] > score_thr)
        if len(idx) == 0:
            continue
        cls_scores = sc[idx, k]
        bev = b[idx][:, [0, 1, 3, 4, 6]]
        if use_rotate_nms:
            keep = rotated_nms(bev, cls_scores, nms_thr, backend=backend)
        else:
            keep = aligned_nms(bev, cls_scores, nms_thr)
        sel_idx.append(idx[keep])
        sel_scores.append(cls_scores[keep])
        sel_labels.append(np.full(len(keep), k, dtype=np.int64))
    if not sel_idx:
        empty_dir = None if dir_labels is None else dir_labels[:0]
        return b[:0], np.zeros(0, dtype=sc.dtype), np.zeros(0, dtype=np.int64), empty_dir
    inds = np.concatenate(sel_idx)
    out_scores = np.concatenate(sel_scores)
    labels = np.concatenate(sel_labels)
    if max_num is not None and len(inds) > max_num:
        cut = score_order(out_scores)[:int(max_num)]
        inds, out_scores, labels = inds[cut], out_scores[cut], labels[cut]
    out_dir = None if dir_labels is None else dir_labels[inds]
    return b[inds], out_scores, labels, out_dir


@_njit
def _nb_circle_nms_sorted(x, y, thr, max_keep):
    """Greedy centre-distance NMS on score-sorted float32 centres; the first ``max_keep`` kept
    positions (numba; exact, as in ``_nb_rotated_nms_sorted``)."""
    n = x.shape[0]
    suppressed = np.zeros(n, dtype=np.bool_)
    keep = np.empty(n, dtype=np.int64)
    nk = 0
    for i in range(n):
        if nk >= max_keep:
            break
        if suppressed[i]:
            continue
        keep[nk] = i
        nk += 1
        for j in range(i + 1, n):
            if not suppressed[j]:
                dx = x[i] - x[j]
                dy = y[i] - y[j]
                if dx * dx + dy * dy <= thr:
                    suppressed[j] = True
    return keep[:nk]


def circle_nms(centres: np.ndarray, scores: np.ndarray, min_radius: float,
               post_max_size: Optional[int] = None, backend: str = "auto") -> np.ndarray:
    """CenterPoint's circle NMS (mmdet3d ``models.layers.circle_nms``).

    Visits centres by score descending and suppresses every later centre whose SQUARED BEV
    distance to a kept one is ``<= min_radius`` (mmdet3d compares the squared distance with
    the configured ``min_radius`` itself, so ``min_radius`` is in m^2). The distance is
    computed in float32 like mmdet3d's numba kernel on its float32 detections.

    Args:
        centres: [N, 2] (x, y) box centres, LiDAR frame, metres.
        scores: [N] scores.
        min_radius: squared suppression distance, m^2.
        post_max_size: return at most this many indices (mmdet3d's default is 83).
        backend: "auto" (numba when installed), "numba" or "numpy".

    Returns:
        [K] int64 indices into the input, by score descending (ties in input order; mmdet3d
        reverses an unstable ascending argsort, so exact ties may be visited differently).
    """
    c = np.asarray(centres)
    s = np.asarray(scores).reshape(-1)
    if c.ndim == 1 and c.size == 0:
        c = c.reshape(0, 2)
    if c.ndim != 2 or c.shape[1] != 2 or len(c) != len(s):
        raise NMSError(f"circle_nms: expected centres [N, 2] (x, y) and scores [N], got "
                       f"{c.shape} and {np.asarray(scores).shape}")
    order = score_order(s)
    xs = np.ascontiguousarray(c[order, 0], dtype=np.float32)
    ys = np.ascontiguousarray(c[order, 1], dtype=np.float32)
    thr = float(min_radius)
    if len(order) == 0:
        kept = np.zeros(0, np.int64)
    elif use_numba(backend):
        kept = _nb_circle_nms_sorted(xs, ys, thr, _max_keep(post_max_size, len(order)))
    else:
        dx = xs[:, None] - xs[None, :]
        dy = ys[:, None] - ys[None, :]
        close = (dx * dx + dy * dy).astype(np.float64) <= thr     # float32 distance, as mmdet3d
        ii, jj = np.nonzero(np.triu(close, k=1))
        kept = _greedy(len(order), ii, jj)
    keep = order[kept].astype(np.int64)
    if post_max_size is not None:
        keep = keep[:int(post_max_size)]
    return keep
