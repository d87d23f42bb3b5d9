"""Anchor3DHead (PointPillars / SECOND) output decoding: top-k, box decode, direction, BEV NMS."""
from __future__ import annotations

import logging
import math
import time
from typing import List, Optional, Sequence, Tuple

import numpy as np

from admlops_ros.bundle.spec import ModelSpec
from admlops_ros.errors import AdmlopsError
from admlops_ros.lidar.detections import Detections
from admlops_ros.lidar.geometry import limit_period
from admlops_ros.lidar.heads import box_coder
from admlops_ros.lidar.heads.anchors import AnchorError, aligned_anchors
from admlops_ros.lidar.heads.nms import multiclass_nms

__all__ = ["HeadError", "Anchor3DDecoder", "select_topk"]

LOG = logging.getLogger(__name__)

# Logit margin of the score_thr prefilter: anchors whose best logit is below
# logit(score_thr) - margin cannot pass score_thr after a float32 sigmoid.
_LOGIT_MARGIN = 1e-3
_PREFILTER_MAX_THR = 0.999


class HeadError(AdmlopsError, ValueError):
    """Raised for head outputs or head parameters that do not fit together."""


def _sigmoid(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    one = np.float32(1.0)
    return one / (one + np.exp(-x))


def select_topk(values: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k largest values, ordered by value descending then id ascending.

    Args:
        values: [N] values (e.g. best class logit per candidate anchor).
        ids: [N] int ids breaking ties (e.g. anchor index; smaller first).
        k: how many to keep; all are kept (in the same order) when k <= 0 or k >= N.

    Returns:
        [min(k, N)] int64 positions into ``values``.
    """
    n = len(values)
    if 0 < k < n:
        kth = np.partition(values, n - k)[n - k]            # k-th largest value
        above = np.flatnonzero(values > kth)
        ties = np.flatnonzero(values == kth)
        ties = ties[np.argsort(ids[ties], kind="stable")][:k - len(above)]
        pos = np.concatenate([above, ties])
    else:
        pos = np.arange(n)
    return pos[np.lexsort((ids[pos], -values[pos]))].astype(np.int64)


def _as_levels(maps, name: str) -> List[np.ndarray]:
    if maps is None:
        return []
    if isinstance(maps, np.ndarray):
        maps = [maps]
    out = []
    for i, m in enumerate(maps):
        arr = np.asarray(m)
        if arr.ndim == 4:
            if arr.shape[0] != 1:
                raise HeadError(f"{name}[{i}]: batch size must be 1, got shape {arr.shape}")
            arr = arr[0]
        if arr.ndim != 3:
            raise HeadError(f"{name}[{i}]: expected [1, C, H, W] or [C, H, W], got {arr.shape}")
        out.append(arr)
    return out


class Anchor3DDecoder:
    """Decode mmdet3d Anchor3DHead outputs into LiDAR boxes (``predict_by_feat_single``).

    Steps per feature level: best class logit per anchor -> top ``nms_pre`` anchors (done on
    raw logits, sigmoid only for the selected ones; anchors that cannot pass ``score_thr``
    are skipped first, which does not change the result) -> DeltaXYZWLHR decode of the
    selected anchors -> direction label = argmax of the two direction logits. Levels are
    concatenated, then per-class BEV NMS (``box3d_multiclass_nms``) and
    ``yaw = limit_period(yaw - dir_offset, dir_limit_offset, pi) + dir_offset + pi * dir_label``.

    Channel layout per cell (mmdet3d): anchor a = size * n_rot + rot; cls channel a * K + k,
    box channel a * code_size + j, direction channel a * 2 + d; anchors ordered (H, W, a).
    Without a direction classifier the decoded yaw is returned unchanged.
    """

    def __init__(self, *, ranges: Sequence[Sequence[float]], sizes: Sequence[Sequence[float]],
                 rotations: Sequence[float], align_corner: bool,
                 feature_map_size: Optional[Sequence], scales: Optional[Sequence[float]],
                 nms_thr: float, max_num: int, use_rotate_nms: bool, nms_pre: int,
                 score_thr: float, dir_offset: float, dir_limit_offset: float,
                 use_direction_classifier: bool, code_size: int,
                 class_names: Sequence[str] = (), num_classes: Optional[int] = None) -> None:
        """Build from plain numbers; :meth:`from_spec` takes them from a bundle's spec (the
        defaults of every one of them live in ``bundle.spec``, not here).

        Args:
            ranges: anchor ranges [S or 1, 6] (metres, LiDAR frame).
            sizes: anchor sizes [S, 3] (dx, dy, dz) in metres.
            rotations: anchor yaws [R] in radians.
            nms_thr: BEV IoU threshold of the NMS.
            max_num: maximum number of detections.
            use_rotate_nms: rotated (True) or axis-aligned BEV NMS.
            class_names: class names, label order; length gives num_classes.
            num_classes: number of classes when class_names is empty.
            feature_map_size: expected [H, W] (or a list per level); None accepts any size.
            align_corner: anchor centres on grid corners.
            scales: anchor size scale per level (default 1 per level).
            dir_offset: direction offset in radians.
            dir_limit_offset: limit_period offset of the direction step.
            use_direction_classifier: apply the direction classifier.
            nms_pre: anchors kept per level before NMS (<= 0: all).
            score_thr: class score threshold (strictly greater passes).
            code_size: box code size (7; more for custom values, decoded additively).

        Raises:
            HeadError: on inconsistent parameters.
        """
        self.class_names: Tuple[str, ...] = tuple(class_names)
        if num_classes is None:
            num_classes = len(self.class_names)
        if num_classes <= 0:
            raise HeadError("Anchor3DDecoder: need class_names or num_classes > 0")
        if self.class_names and len(self.class_names) != num_classes:
            raise HeadError(
                f"Anchor3DDecoder: num_classes={num_classes} but {len(self.class_names)} "
                f"class_names {list(self.class_names)}")
        self.num_classes = int(num_classes)
        self.ranges = [list(map(float, r)) for r in np.asarray(ranges, float).reshape(-1, 6)]
        self.sizes = [list(map(float, s)) for s in np.asarray(sizes, float).reshape(-1, 3)]
        self.rotations = [float(r) for r in np.asarray(rotations, float).reshape(-1)]
        if len(self.ranges) not in (1, len(self.sizes)):
            raise HeadError(
                f"anchors.ranges: need 1 or {len(self.sizes)} ranges (one per size), got "
                f"{len(self.ranges)}")
        self.num_anchors = len(self.sizes) * len(self.rotations)
        if self.num_anchors == 0:
            raise HeadError("anchors: need at least one size and one rotation")
        self.feature_map_sizes = self._parse_fms(feature_map_size)
        self.align_corner = bool(align_corner)
        self.scales = None if scales is None else [float(s) for s in scales]
        self.dir_offset = float(dir_offset)
        self.dir_limit_offset = float(dir_limit_offset)
        self.use_direction_classifier = bool(use_direction_classifier)
        self.nms_pre = int(nms_pre) if nms_pre is not None else -1
        self.score_thr = float(score_thr)
        self.nms_thr = float(nms_thr)
        self.max_num = int(max_num)
        self.use_rotate_nms = bool(use_rotate_nms)
        self.code_size = int(code_size)
        if self.code_size < 7:
            raise HeadError(f"box_coder.code_size must be >= 7, got {self.code_size}")

    @staticmethod
    def _parse_fms(fms) -> Optional[List[Tuple[int, int]]]:
        if fms is None:
            return None
        arr = np.asarray(fms)
        if arr.ndim == 1 and arr.size == 2:
            arr = arr.reshape(1, 2)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise HeadError(
                f"anchors.feature_map_size: expected [H, W] or a list of [H, W], got {fms!r}")
        return [(int(h), int(w)) for h, w in arr]

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> "Anchor3DDecoder":
        """The decoder of a bundle's spec: its ``anchors``, ``head``, ``test_cfg``,
        ``box_coder`` and ``class_names``."""
        a, head, t = spec.anchors, spec.head, spec.test_cfg
        return cls(ranges=a.ranges, sizes=a.sizes, rotations=a.rotations,
                   align_corner=a.align_corner, feature_map_size=a.feature_map_sizes,
                   scales=a.scales, nms_thr=t.nms_thr, max_num=t.max_num,
                   use_rotate_nms=t.use_rotate_nms, nms_pre=t.nms_pre, score_thr=t.score_thr,
                   dir_offset=head.dir_offset, dir_limit_offset=head.dir_limit_offset,
                   use_direction_classifier=head.use_direction_classifier,
                   code_size=spec.box_coder.code_size, class_names=spec.class_names)

    def warmup(self) -> None:
        """Build the anchors of the configured feature maps and compile the NMS kernels.

        Call once at start-up so the first frame does not pay for anchor generation
        (~30 ms for KITTI) or numba compilation (seconds when the on-disk cache is cold).
        """
        if self.feature_map_sizes is not None:
            n = len(self.feature_map_sizes)
            for level, fms in enumerate(self.feature_map_sizes):
                self.anchors_for(level, fms, n)
        bev = np.array([[0.0, 0.0, 2.0, 1.0, 0.0], [0.5, 0.0, 2.0, 1.0, 0.3]])
        boxes = np.c_[bev[:, :2], np.zeros(2), bev[:, 2:4], np.ones(2), bev[:, 4]]
        multiclass_nms(boxes, np.array([[0.9], [0.8]]), 0.1, 0.1, 10, self.use_rotate_nms)

    # -- anchors -------------------------------------------------------------------------

    def anchors_for(self, level: int, feature_map_size: Tuple[int, int],
                    num_levels: int) -> np.ndarray:
        """Anchors [H * W * A, code_size] float32 of one level (checked against the spec)."""
        if self.feature_map_sizes is not None:
            if len(self.feature_map_sizes) != num_levels:
                raise HeadError(
                    f"head outputs have {num_levels} levels but anchors.feature_map_size lists "
                    f"{len(self.feature_map_sizes)}: {self.feature_map_sizes}")
            expected = self.feature_map_sizes[level]
            if tuple(expected) != tuple(feature_map_size):
                raise HeadError(
                    f"head output level {level} has feature map [H, W] = "
                    f"{list(feature_map_size)} but anchors.feature_map_size is "
                    f"{list(expected)}: fix the spec or the engine")
        scales = self.scales if self.scales is not None else [1.0] * num_levels
        if len(scales) != num_levels:
            raise HeadError(
                f"head outputs have {num_levels} levels but anchors.scales has {len(scales)}")
        try:
            anchors = aligned_anchors(feature_map_size, self.ranges, self.sizes, self.rotations,
                                      self.align_corner, scales[level])
        except AnchorError as exc:
            raise HeadError(str(exc)) from exc
        if self.code_size > 7:
            pad = np.zeros((len(anchors), self.code_size - 7), np.float32)
            anchors = np.concatenate([anchors, pad], axis=1)
        return anchors

    # -- decoding ------------------------------------------------------------------------

    def _candidate_threshold(self) -> float:
        """Logit below which an anchor's best class cannot pass score_thr (-inf: none)."""
        thr = self.score_thr
        if thr <= 0.0 or thr >= _PREFILTER_MAX_THR:
            return -math.inf
        return math.log(thr / (1.0 - thr)) - _LOGIT_MARGIN

    def _select_level(self, level: int, num_levels: int, cls_map: np.ndarray,
                      bbox_map: np.ndarray, dir_map: Optional[np.ndarray]
                      ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-k anchors of one level -> (boxes [n, C], scores [n, K], dir labels [n])."""
        a_n, k_n, c_n = self.num_anchors, self.num_classes, self.code_size
        h, w = cls_map.shape[-2:]
        channels = {"cls_score": k_n, "bbox_pred": c_n, "dir_cls_pred": 2}
        maps = {"cls_score": cls_map, "bbox_pred": bbox_map, "dir_cls_pred": dir_map}
        for key, per_anchor in channels.items():
            if maps[key] is None:
                continue
            expect = (a_n * per_anchor, h, w)
            if tuple(maps[key].shape) != expect:
                raise HeadError(
                    f"{key}[{level}] has shape [C, H, W] = {list(maps[key].shape)} but "
                    f"{a_n} anchors/cell x {per_anchor} channels on the {h}x{w} map need "
                    f"{list(expect)}: the head outputs do not match the spec's anchors section")
        anchors = self.anchors_for(level, (h, w), num_levels)
        if len(anchors) != a_n * h * w:
            raise HeadError(
                f"anchors shape {anchors.shape} does not match cls_score[{level}] shape "
                f"{cls_map.shape}")
        hw = h * w
        logits = cls_map.reshape(a_n, k_n, hw)
        best = logits[:, 0].copy()
        for k in range(1, k_n):
            np.maximum(best, logits[:, k], out=best)
        flat = best.reshape(-1)                                  # position = a * HW + hw
        cand_thr = self._candidate_threshold()
        pos = np.flatnonzero(flat > cand_thr) if cand_thr > -math.inf else np.arange(flat.size)
        anchor_ids = (pos % hw) * a_n + pos // hw
        if 0 < self.nms_pre < len(anchors):
            order = select_topk(flat[pos], anchor_ids, self.nms_pre)
        else:                                                    # mmdet3d keeps anchor order
            order = np.argsort(anchor_ids, kind="stable")
        ids = anchor_ids[order]
        cell = ids // a_n
        a_idx = ids % a_n
        cls_flat = cls_map.reshape(a_n * k_n, hw)
        scores = _sigmoid(cls_flat[a_idx[:, None] * k_n + np.arange(k_n), cell[:, None]])
        box_flat = bbox_map.reshape(a_n * c_n, hw)
        deltas = box_flat[a_idx[:, None] * c_n + np.arange(c_n), cell[:, None]].astype(np.float32)
        boxes = box_coder.decode(anchors[ids], deltas)
        if dir_map is not None:
            dir_flat = dir_map.reshape(a_n * 2, hw)
            d0 = dir_flat[a_idx * 2, cell]
            d1 = dir_flat[a_idx * 2 + 1, cell]
            dir_labels = (d1 > d0).astype(np.int64)            # argmax, first on ties
        else:
            dir_labels = np.zeros(len(ids), np.int64)
        return boxes, scores, dir_labels

    def select(self, cls_scores: Sequence[np.ndarray], bbox_preds: Sequence[np.ndarray],
               dir_cls_preds: Optional[Sequence[np.ndarray]] = None
               ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-k anchors of all levels, decoded, before NMS (first half of ``decode``).

        Args:
            cls_scores, bbox_preds, dir_cls_preds: as for ``decode``.

        Returns:
            (boxes [N, code_size] float32 bottom-centre with the raw decoded yaw,
            scores [N, K] float32 sigmoid, dir_labels [N] int64).

        Raises:
            HeadError: when shapes do not match each other or the anchors.
        """
        cls_l = _as_levels(cls_scores, "cls_scores")
        box_l = _as_levels(bbox_preds, "bbox_preds")
        dir_l: List[Optional[np.ndarray]] = list(_as_levels(dir_cls_preds, "dir_cls_preds"))
        if self.use_direction_classifier and not dir_l:
            raise HeadError("dir_cls_preds missing but head.use_direction_classifier is true")
        if not self.use_direction_classifier:
            dir_l = [None] * len(cls_l)
        if not cls_l or len(cls_l) != len(box_l) or len(cls_l) != len(dir_l):
            raise HeadError(
                f"need the same number of levels of cls_scores, bbox_preds, dir_cls_preds; got "
                f"{len(cls_l)}, {len(box_l)}, {len(dir_l)}")
        parts = [self._select_level(i, len(cls_l), c, b, d)
                 for i, (c, b, d) in enumerate(zip(cls_l, box_l, dir_l))]
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                np.concatenate([p[2] for p in parts]))

    def decode(self, cls_scores: Sequence[np.ndarray], bbox_preds: Sequence[np.ndarray],
               dir_cls_preds: Optional[Sequence[np.ndarray]] = None) -> Detections:
        """Decode one frame of head outputs.

        Args:
            cls_scores: per level [1, A * K, H, W] class logits (a bare array = one level).
            bbox_preds: per level [1, A * code_size, H, W] box deltas.
            dir_cls_preds: per level [1, A * 2, H, W] direction logits (required when
                use_direction_classifier).

        Returns:
            Detections (boxes [N, 7] float32 LiDAR frame, bottom centre; scores; labels) with
            timings_ms keys ``postprocess_select`` and ``postprocess_nms``.

        Raises:
            HeadError: when shapes do not match each other or the anchors.
        """
        t0 = time.perf_counter()
        boxes, scores, dir_labels = self.select(cls_scores, bbox_preds, dir_cls_preds)
        t1 = time.perf_counter()
        boxes, scores, labels, dir_labels = multiclass_nms(
            boxes, scores, self.score_thr, self.nms_thr, self.max_num, self.use_rotate_nms,
            dir_labels)
        velocities = boxes[:, 7:9].astype(np.float32) if self.code_size >= 9 else None
        boxes = boxes[:, :7].astype(np.float32, copy=True)
        if self.use_direction_classifier and len(boxes):
            pi = np.float32(np.pi)
            offset = np.float32(self.dir_offset)
            rot = limit_period(boxes[:, 6] - offset, np.float32(self.dir_limit_offset), pi)
            boxes[:, 6] = rot + offset + pi * dir_labels.astype(np.float32)
        t2 = time.perf_counter()
        names = self.class_names or tuple(str(i) for i in range(self.num_classes))
        return Detections(boxes, scores, labels, names,
                          {"postprocess_select": (t1 - t0) * 1e3,
                           "postprocess_nms": (t2 - t1) * 1e3}, velocities)
