"""Anchor targets as mmdet3d Anchor3DHead (assign_per_class, MaxIoUAssigner, nearest BEV IoU)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np

from admlops_ros.errors import AdmlopsError
from admlops_ros.lidar.geometry import limit_period, nearest_bev_iou
from admlops_ros.lidar.heads.anchors import aligned_anchors
from admlops_ros.lidar.heads.box_coder import encode
from admlops_ros.training.configs import AssignerConfig, PointPillarsConfig

__all__ = [
    "TargetError",
    "AnchorTargets",
    "anchor_grid",
    "max_iou_assign",
    "direction_target",
    "assign_targets",
    "class_indices",
]


class TargetError(AdmlopsError, ValueError):
    """Inconsistent inputs to target assignment (shapes, labels out of range)."""


@dataclass
class AnchorTargets:
    """Per-anchor training targets, anchors ordered (H, W, a) as the head channels.

    Attributes:
        labels: [N] int64 class index, ``num_classes`` for background.
        label_weights: [N] float32, 1 for positives and negatives, 0 for ignored anchors.
        bbox_targets: [N, 7] float32 DeltaXYZWLHR deltas (zero except positives).
        pos_mask: [N] bool positive anchors (bbox / direction loss weight 1).
        dir_targets: [N] int64 direction bin (0 / 1) of positives.
        num_pos: number of positives.
    """

    labels: np.ndarray
    label_weights: np.ndarray
    bbox_targets: np.ndarray
    pos_mask: np.ndarray
    dir_targets: np.ndarray
    num_pos: int


def anchor_grid(config: PointPillarsConfig) -> np.ndarray:
    """All anchors of the head map as [H, W, K, R, 7] float32 (mmdet3d order).

    K = number of anchor sizes (= classes), R = rotations; flattening gives the (H, W, a)
    order with a = k * R + r.
    """
    h, w = config.feature_map_size
    flat = aligned_anchors((h, w), config.anchor_ranges, config.anchor_sizes,
                           config.anchor_rotations)
    return flat.reshape(h, w, len(config.anchor_sizes), len(config.anchor_rotations), 7)


def max_iou_assign(overlaps: np.ndarray, thr: AssignerConfig,
                   gt_max_assign_all: bool = True) -> np.ndarray:
    """mmdet ``MaxIoUAssigner.assign_wrt_overlaps`` (match_low_quality=True).

    Args:
        overlaps: [G, N] IoU of G gts with N anchors.
        thr: positive / negative / min-positive thresholds.
        gt_max_assign_all: every anchor tying the gt's best IoU gets it (mmdet default).

    Returns:
        [N] int64: -1 ignore, 0 negative, i + 1 assigned to gt i.
    """
    g, n = overlaps.shape
    if g == 0:
        return np.zeros(n, np.int64)
    assigned = np.full(n, -1, np.int64)
    max_ov = overlaps.max(axis=0)
    argmax = overlaps.argmax(axis=0)
    assigned[(max_ov >= 0) & (max_ov < thr.neg_iou_thr)] = 0
    pos = max_ov >= thr.pos_iou_thr
    assigned[pos] = argmax[pos] + 1
    gt_max = overlaps.max(axis=1)
    for i in range(g):  # sequential: a later gt wins a tie, as in mmdet
        if gt_max[i] >= thr.min_pos_iou:
            if gt_max_assign_all:
                assigned[overlaps[i] == gt_max[i]] = i + 1
            else:
                assigned[overlaps[i].argmax()] = i + 1
    return assigned


def direction_target(anchors: np.ndarray, deltas: np.ndarray, dir_offset: float,
                     num_bins: int = 2) -> np.ndarray:
    """mmdet3d ``get_direction_target`` (one_hot=False): bin of the gt yaw minus dir_offset."""
    rot_gt = deltas[..., 6] + anchors[..., 6]
    offset_rot = limit_period(rot_gt - dir_offset, 0, 2 * np.pi)
    bins = np.floor(offset_rot / (2 * np.pi / num_bins)).astype(np.int64)
    return np.clip(bins, 0, num_bins - 1)


def assign_targets(config: PointPillarsConfig, anchors: np.ndarray, gt_boxes: np.ndarray,
                   gt_labels: np.ndarray,
                   ignore_boxes: Optional[Dict[int, np.ndarray]] = None) -> AnchorTargets:
    """Targets of one sample, per class as mmdet3d ``anchor_target_3d`` with assign_per_class.

    Anchors of size k are matched only with gts of class k using that class's assigner.
    Anchors that are negative for class k but overlap an ignore box of class k with IoU >=
    the class's neg_iou_thr are ignored (e.g. Vans for Car, unlabelled / too-hard objects).

    Args:
        config: model config (classes, assigners, dir_offset).
        anchors: [H, W, K, R, 7] anchors (a crop of :func:`anchor_grid` is fine).
        gt_boxes: [G, 7] LiDAR boxes, bottom centre.
        gt_labels: [G] int class indices (0..K-1).
        ignore_boxes: class index -> [I, 7] boxes to ignore for that class.

    Returns:
        AnchorTargets with N = H * W * K * R.
    """
    if anchors.ndim != 5 or anchors.shape[2] != config.num_classes or anchors.shape[4] != 7:
        raise TargetError(f"anchors: expected [H, W, {config.num_classes}, R, 7], got "
                          f"{anchors.shape}")
    gt_boxes = np.asarray(gt_boxes, np.float32).reshape(-1, 7)
    gt_labels = np.asarray(gt_labels, np.int64).reshape(-1)
    if len(gt_labels) != len(gt_boxes) or (gt_labels.size and (
            gt_labels.min() < 0 or gt_labels.max() >= config.num_classes)):
        raise TargetError(f"gt_labels: need {len(gt_boxes)} labels in 0..{config.num_classes - 1}"
                          f", got {gt_labels.tolist()}")
    h, w, k_num, r_num, _ = anchors.shape
    cells = h * w
    labels = np.full((cells, k_num, r_num), config.num_classes, np.int64)
    weights = np.zeros((cells, k_num, r_num), np.float32)
    bbox_t = np.zeros((cells, k_num, r_num, 7), np.float32)
    dir_t = np.zeros((cells, k_num, r_num), np.int64)
    pos_all = np.zeros((cells, k_num, r_num), bool)
    ignore_boxes = ignore_boxes or {}
    for k in range(k_num):
        anc = anchors[:, :, k].reshape(-1, 7)
        thr = config.assigners[k]
        sel = gt_labels == k
        gts = gt_boxes[sel]
        assigned = max_iou_assign(nearest_bev_iou(gts, anc) if len(gts) else
                                  np.zeros((0, len(anc))), thr)
        ign = ignore_boxes.get(k)
        if ign is not None and len(ign):
            ign_iou = nearest_bev_iou(np.asarray(ign, np.float32).reshape(-1, 7), anc).max(axis=0)
            assigned[(assigned == 0) & (ign_iou >= thr.neg_iou_thr)] = -1
        pos = assigned > 0
        lab = labels[:, k].reshape(-1)
        wgt = weights[:, k].reshape(-1)
        wgt[assigned >= 0] = 1.0
        if pos.any():
            lab[pos] = k
            matched = gts[assigned[pos] - 1]
            deltas = encode(anc[pos], matched)
            bt = bbox_t[:, k].reshape(-1, 7)
            bt[pos] = deltas
            bbox_t[:, k] = bt.reshape(cells, r_num, 7)
            dt = dir_t[:, k].reshape(-1)
            dt[pos] = direction_target(anc[pos], deltas, config.dir_offset)
            dir_t[:, k] = dt.reshape(cells, r_num)
        labels[:, k] = lab.reshape(cells, r_num)
        weights[:, k] = wgt.reshape(cells, r_num)
        pos_all[:, k] = pos.reshape(cells, r_num)
    return AnchorTargets(labels=labels.reshape(-1), label_weights=weights.reshape(-1),
                         bbox_targets=bbox_t.reshape(-1, 7), pos_mask=pos_all.reshape(-1),
                         dir_targets=dir_t.reshape(-1), num_pos=int(pos_all.sum()))


def class_indices(names: Sequence[str], class_names: Sequence[str]) -> np.ndarray:
    """[M] int64 index of each name in class_names, -1 when absent."""
    lookup = {n: i for i, n in enumerate(class_names)}
    return np.array([lookup.get(n, -1) for n in names], np.int64)
