"""CenterHead (CenterPoint) output decoding: heatmap top-K per task, box decode, circle/rotate NMS."""
from __future__ import annotations

import math
import time
from typing import List, Optional, Sequence, Tuple

import numpy as np

from admlops_ros.bundle.spec import ModelSpec
from admlops_ros.lidar.detections import Detections
from admlops_ros.lidar.heads.anchor3d import HeadError, _as_levels, _sigmoid, select_topk
from admlops_ros.lidar.heads.nms import circle_nms, rotated_nms

__all__ = ["CenterPointDecoder"]

# Logit margin of the score-threshold prefilter: centres whose logit is below
# logit(score_threshold) - margin cannot pass the threshold after a float32 sigmoid.
_LOGIT_MARGIN = 1e-3
_PREFILTER_MAX_THR = 0.999


class CenterPointDecoder:
    """Decode mmdet3d CenterHead outputs (mmdeploy's concatenation) into LiDAR boxes.

    Exact to mmdet3d 1.x ``CenterHead.predict_by_feat`` with ``CenterPointBBoxCoder.decode``,
    per task t (classes K_t; heatmap channels offset by the earlier tasks' classes, box
    channels t * (code_size - 1), rotation channels 2t):

    1. heatmap sigmoid; the ``max_num`` best (class, cell) entries over all K_t * H * W
       (``_topk``: a per-class top-K, then the overall one, which selects the same set);
    2. x = (col + reg_x) * out_size_factor * voxel_x + range_x0, y likewise with row, reg_y;
       z = height (gravity centre), size = exp(dim) when ``norm_bbox``, yaw = atan2(sin, cos),
       velocity (vx, vy) when code_size is 9; all in float32 as mmdet3d;
    3. keep score > the coder's ``score_threshold`` (when > 0) and centres inside the coder's
       ``post_center_range`` (inclusive);
    4. NMS of the task: ``circle`` (squared centre distance <= min_radius[t], at most
       ``post_max_size``) or ``rotate`` (score >= test ``score_threshold``, class-agnostic
       rotated BEV NMS over the ``pre_max_size`` best with IoU > nms_thr, at most
       ``post_max_size``, then centres inside ``post_center_limit_range``).

    Tasks are concatenated in head order with labels offset by the earlier tasks' class counts,
    and z becomes the bottom centre (z - dz / 2) at the end, as mmdet3d's merge.

    Known differences: exact score ties are ordered by heatmap position (torch.topk and
    mmdet3d's reversed argsort leave them unspecified); a map with fewer than ``max_num``
    cells, which makes mmdet3d's ``torch.topk`` raise, keeps all of them; no
    ``post_center_range`` means no range filter (mmdet3d raises NotImplementedError).
    """

    def __init__(self, *, classes_per_task: Sequence[int], out_size_factor: int,
                 voxel_size: Sequence[float], pc_range: Sequence[float], norm_bbox: bool,
                 max_num: int, score_threshold: float,
                 post_center_range: Optional[Sequence[float]], code_size: int, nms_type: str,
                 min_radius: Optional[Sequence[float]], nms_thr: Sequence[float],
                 test_score_threshold: float, pre_max_size: int, post_max_size: int,
                 post_center_limit_range: Optional[Sequence[float]],
                 class_names: Sequence[str] = (),
                 feature_map_size: Optional[Sequence[int]] = None) -> None:
        """Build from plain numbers; :meth:`from_spec` takes them from a bundle's spec.

        Args:
            classes_per_task: K_t of each task head, in head order.
            out_size_factor: canvas cells per head-map cell.
            voxel_size: (vx, vy) metres (the voxelization's).
            pc_range: (x0, y0) metres, the point cloud range minimum.
            norm_bbox: the dim output is log(size).
            max_num: centres kept per task by score (bbox_coder.max_num).
            score_threshold: bbox_coder.score_threshold (strictly greater passes; <= 0: none).
            post_center_range: [6] coder centre range, or None.
            code_size: 9 (with velocity) or 7.
            nms_type: "circle" or "rotate".
            min_radius: circle NMS squared radius per task (m^2).
            nms_thr: rotate NMS IoU threshold, one or one per task.
            test_score_threshold: rotate path score threshold (>=; <= 0: none).
            pre_max_size: rotate NMS input size per task.
            post_max_size: boxes per task after NMS.
            post_center_limit_range: [6] rotate-path centre range, or None.
            class_names: class names in label order (all tasks).
            feature_map_size: expected [H, W] of the head maps; None accepts any.

        Raises:
            HeadError: on inconsistent parameters.
        """
        self.classes_per_task = tuple(int(k) for k in classes_per_task)
        if not self.classes_per_task or min(self.classes_per_task) < 1:
            raise HeadError(f"CenterPointDecoder: need tasks with >= 1 class each, got "
                            f"{list(self.classes_per_task)}")
        self.num_classes = sum(self.classes_per_task)
        self.class_names = tuple(class_names)
        if self.class_names and len(self.class_names) != self.num_classes:
            raise HeadError(f"CenterPointDecoder: {len(self.class_names)} class_names for "
                            f"{self.num_classes} task classes {list(self.classes_per_task)}")
        self.num_tasks = len(self.classes_per_task)
        self.out_size_factor = int(out_size_factor)
        self.voxel_size = tuple(float(v) for v in voxel_size[:2])
        self.pc_range = tuple(float(v) for v in pc_range[:2])
        self.norm_bbox = bool(norm_bbox)
        self.max_num = int(max_num)
        self._score_threshold = float(score_threshold)
        self.post_center_range = None if post_center_range is None else \
            np.asarray(post_center_range, np.float32).reshape(6)
        self.code_size = int(code_size)
        if self.code_size not in (7, 9):
            raise HeadError(f"box_coder.code_size must be 7 or 9 for CenterPoint, got "
                            f"{self.code_size}")
        if nms_type not in ("circle", "rotate"):
            raise HeadError(f"test_cfg.nms_type must be circle or rotate, got {nms_type!r}")
        self.nms_type = nms_type
        self.min_radius = None if min_radius is None else tuple(float(r) for r in min_radius)
        if nms_type == "circle" and (self.min_radius is None or
                                     len(self.min_radius) != self.num_tasks):
            raise HeadError(f"test_cfg.min_radius needs one value per task ({self.num_tasks}) "
                            f"for circle NMS, got {self.min_radius}")
        thr = tuple(float(t) for t in np.atleast_1d(np.asarray(nms_thr, float)))
        if len(thr) not in (1, self.num_tasks):
            raise HeadError(f"test_cfg.nms_thr needs 1 or {self.num_tasks} values, got "
                            f"{list(thr)}")
        self.nms_thr = thr * self.num_tasks if len(thr) == 1 else thr
        self.test_score_threshold = float(test_score_threshold)
        self.pre_max_size = int(pre_max_size)
        self.post_max_size = int(post_max_size)
        self.post_center_limit_range = None if post_center_limit_range is None else \
            np.asarray(post_center_limit_range, np.float32).reshape(6)
        self.feature_map_size = None if feature_map_size is None else \
            tuple(int(v) for v in feature_map_size)
        self._cls_offsets = np.concatenate([[0], np.cumsum(self.classes_per_task)]).astype(int)

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> "CenterPointDecoder":
        """The decoder of a bundle's spec: ``center_head``, its ``test_cfg``, ``box_coder``,
        ``voxelization`` (the coder's voxel_size and pc_range) and ``class_names``."""
        head, t, vox = spec.center_head, spec.test_cfg, spec.voxelization
        if head is None:
            raise HeadError(f"spec {spec.name!r} (family {spec.family}) has no center_head")
        return cls(classes_per_task=head.classes_per_task,
                   out_size_factor=head.out_size_factor, voxel_size=vox.voxel_size[:2],
                   pc_range=vox.point_cloud_range[:2], norm_bbox=head.norm_bbox,
                   max_num=head.max_num, score_threshold=head.score_threshold,
                   post_center_range=head.post_center_range,
                   code_size=spec.box_coder.code_size, nms_type=t.nms_type,
                   min_radius=t.min_radius, nms_thr=t.nms_thr,
                   test_score_threshold=t.score_threshold, pre_max_size=t.pre_max_size,
                   post_max_size=t.post_max_size,
                   post_center_limit_range=t.post_center_limit_range,
                   class_names=spec.class_names,
                   feature_map_size=spec.head_feature_map_sizes[0])

    @property
    def score_thr(self) -> float:
        """The coder's score threshold (a centre's heatmap sigmoid must exceed it).

        Setting it (``LidarDetector(score_threshold=...)``) replaces the spec's
        ``center_head.score_threshold``; the rotate path's ``test_cfg.score_threshold`` (>=)
        is applied as well and is not changed.
        """
        return self._score_threshold

    @score_thr.setter
    def score_thr(self, value: float) -> None:
        self._score_threshold = float(value)

    def warmup(self) -> None:
        """Compile the NMS kernels (numba, cached on disk) so the first frame does not."""
        centres = np.array([[0.0, 0.0], [0.5, 0.0]])
        scores = np.array([0.9, 0.8])
        circle_nms(centres, scores, 1.0)
        rotated_nms(np.c_[centres, [2.0, 2.0], [1.0, 1.0], [0.0, 0.3]], scores, 0.1)

    # -- decoding ------------------------------------------------------------------------

    def _candidate_threshold(self) -> float:
        thr = self._score_threshold
        if thr <= 0.0 or thr >= _PREFILTER_MAX_THR:
            return -math.inf
        return math.log(thr / (1.0 - thr)) - _LOGIT_MARGIN

    def _check(self, cls_map: np.ndarray, bbox_map: np.ndarray, dir_map: np.ndarray) -> None:
        h, w = cls_map.shape[-2:]
        box_ch = self.code_size - 1
        want = {"cls_score": (self.num_classes, h, w),
                "bbox_pred": (self.num_tasks * box_ch, h, w),
                "dir_cls_pred": (self.num_tasks * 2, h, w)}
        why = {"cls_score": f"{self.num_classes} classes over tasks "
                            f"{list(self.classes_per_task)}",
               "bbox_pred": f"{self.num_tasks} tasks x (reg 2, height 1, dim 3"
                            f"{', vel 2' if self.code_size == 9 else ''})",
               "dir_cls_pred": f"{self.num_tasks} tasks x (sin, cos)"}
        for key, arr in (("cls_score", cls_map), ("bbox_pred", bbox_map),
                         ("dir_cls_pred", dir_map)):
            if tuple(arr.shape) != want[key]:
                raise HeadError(f"{key} has shape [C, H, W] = {list(arr.shape)} but "
                                f"{why[key]} on the {h}x{w} map need {list(want[key])}: the "
                                "head outputs do not match the spec's center_head / box_coder")
        if self.feature_map_size is not None and (h, w) != self.feature_map_size:
            raise HeadError(f"head map [H, W] = {[h, w]} but the spec's voxel grid / "
                            f"center_head.out_size_factor give {list(self.feature_map_size)}: "
                            "fix the spec or the engine")

    def _logit_superset(self, flat: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Of many candidates, those whose logit is within a margin of the max_num-th largest:
        every other one has a float32 sigmoid strictly below the max_num-th score, so the top-K
        by score is among these (checked; when the sigmoid saturates all are kept)."""
        k = self.max_num
        if len(ids) <= 4 * k:
            return ids
        logits = flat[ids]
        kth = np.partition(logits, len(logits) - k)[len(logits) - k]
        cut = np.float32(kth - max(_LOGIT_MARGIN, abs(float(kth)) * 1e-5))
        if not _sigmoid(np.array([cut]))[0] < _sigmoid(np.array([kth]))[0]:
            return ids
        return ids[logits >= cut]

    def _coder_task(self, task: int, heat: np.ndarray, bbox: np.ndarray, rot: np.ndarray,
                    w: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CenterPointBBoxCoder.decode of one task: (boxes [n, code_size] float32 with z at
        the gravity centre, scores [n] float32, labels [n] int64 within the task)."""
        hw = heat.shape[1]
        flat = heat.reshape(-1)                                    # id = class * HW + cell
        cand_thr = self._candidate_threshold()
        ids = np.flatnonzero(flat > cand_thr) if cand_thr > -math.inf else np.arange(flat.size)
        ids = self._logit_superset(flat, ids)
        scores = _sigmoid(flat[ids])
        if self._score_threshold > 0.0:                            # mmdet3d: `if thr:` then >
            passing = scores > np.float32(self._score_threshold)
            ids, scores = ids[passing], scores[passing]
        # flat id = class * H * W + y * W + x: the order mmdet3d's two torch.topk calls give
        # when ties are broken by position (torch leaves them unspecified)
        sel = select_topk(scores, ids, self.max_num)
        ids, scores = ids[sel], scores[sel]
        labels = ids // hw
        cell = ids % hw
        ys = (cell // w).astype(np.float32)
        xs = (cell % w).astype(np.float32)
        b = bbox[:, cell]                                          # [code_size - 1, n]
        osf = np.float32(self.out_size_factor)
        vx, vy = (np.float32(v) for v in self.voxel_size)
        x0, y0 = (np.float32(v) for v in self.pc_range)
        boxes = np.empty((len(ids), self.code_size), np.float32)
        boxes[:, 0] = (xs + b[0]) * osf * vx + x0
        boxes[:, 1] = (ys + b[1]) * osf * vy + y0
        boxes[:, 2] = b[2]
        dims = b[3:6].T
        with np.errstate(over="ignore"):                           # inf, as torch.exp
            boxes[:, 3:6] = np.exp(dims) if self.norm_bbox else dims
        boxes[:, 6] = np.arctan2(rot[0, cell], rot[1, cell])
        if self.code_size == 9:
            boxes[:, 7:9] = b[6:8].T
        if self.post_center_range is not None:
            r = self.post_center_range
            inside = np.all((boxes[:, :3] >= r[:3]) & (boxes[:, :3] <= r[3:]), axis=1)
            boxes, scores, labels = boxes[inside], scores[inside], labels[inside]
        return boxes, scores, labels.astype(np.int64)

    def _nms_task(self, task: int, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Indices kept by the task's NMS (circle, or rotate with its filters)."""
        if self.nms_type == "circle":
            return circle_nms(boxes[:, :2], scores, self.min_radius[task], self.post_max_size)
        idx = np.arange(len(boxes))
        if self.test_score_threshold > 0.0:
            idx = idx[scores >= np.float32(self.test_score_threshold)]
        if len(idx) == 0:
            return idx
        b = boxes[idx]
        half_w, half_h = b[:, 3] / np.float32(2), b[:, 4] / np.float32(2)
        x1, y1, x2, y2 = b[:, 0] - half_w, b[:, 1] - half_h, b[:, 0] + half_w, b[:, 1] + half_h
        two = np.float32(2)
        bev = np.stack([(x1 + x2) / two, (y1 + y2) / two, x2 - x1, y2 - y1, b[:, 6]], axis=1)
        keep = idx[rotated_nms(bev, scores[idx], self.nms_thr[task], self.pre_max_size,
                               self.post_max_size)]                # xywhr -> xyxyr -> xywhr
        if self.post_center_limit_range is not None:
            r = self.post_center_limit_range
            c = boxes[keep, :3]
            keep = keep[np.all((c >= r[:3]) & (c <= r[3:]), axis=1)]
        return keep

    def decode(self, cls_scores: Sequence[np.ndarray], bbox_preds: Sequence[np.ndarray],
               dir_cls_preds: Optional[Sequence[np.ndarray]] = None) -> Detections:
        """Decode one frame of CenterHead outputs (one level).

        Args:
            cls_scores: [[1, sum K_t, H, W]] heatmap logits of all tasks (a bare array works).
            bbox_preds: [[1, T * (code_size - 1), H, W]] per task reg 2, height 1, dim 3
                [, vel 2].
            dir_cls_preds: [[1, T * 2, H, W]] per task (sin, cos) of the yaw.

        Returns:
            Detections (boxes [N, 7] float32 LiDAR frame, bottom centre; scores; labels
            into class_names; velocities [N, 2] m/s when code_size is 9) with timings_ms
            keys ``postprocess_select`` and ``postprocess_nms``.

        Raises:
            HeadError: when the maps do not match each other or the spec.
        """
        t0 = time.perf_counter()
        levels = [_as_levels(m, n) for m, n in ((cls_scores, "cls_scores"),
                                                (bbox_preds, "bbox_preds"),
                                                (dir_cls_preds, "dir_cls_preds"))]
        if any(len(lv) != 1 for lv in levels):
            raise HeadError(f"CenterHead decodes one output level of cls_scores, bbox_preds, "
                            f"dir_cls_preds; got {[len(lv) for lv in levels]}")
        cls_map, bbox_map, dir_map = (lv[0] for lv in levels)
        self._check(cls_map, bbox_map, dir_map)
        h, w = cls_map.shape[-2:]
        cls_flat = cls_map.reshape(self.num_classes, h * w)
        box_ch = self.code_size - 1
        bbox_flat = bbox_map.reshape(self.num_tasks * box_ch, h * w)
        dir_flat = dir_map.reshape(self.num_tasks * 2, h * w)
        per_task = []
        for t in range(self.num_tasks):
            c0, c1 = self._cls_offsets[t], self._cls_offsets[t + 1]
            per_task.append(self._coder_task(
                t, cls_flat[c0:c1], bbox_flat[t * box_ch:(t + 1) * box_ch],
                dir_flat[2 * t:2 * t + 2], w))
        t1 = time.perf_counter()
        parts: List[Tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for t, (boxes, scores, labels) in enumerate(per_task):
            keep = self._nms_task(t, boxes, scores)
            parts.append((boxes[keep], scores[keep], labels[keep] + self._cls_offsets[t]))
        boxes = np.concatenate([p[0] for p in parts])
        scores = np.concatenate([p[1] for p in parts])
        labels = np.concatenate([p[2] for p in parts])
        out = boxes[:, :7].copy()
        out[:, 2] = boxes[:, 2] - boxes[:, 5] * np.float32(0.5)   # gravity -> bottom centre
        velocities = boxes[:, 7:9] if self.code_size == 9 else None
        t2 = time.perf_counter()
        names = self.class_names or tuple(str(i) for i in range(self.num_classes))
        return Detections(out, scores, labels, names,
                          {"postprocess_select": (t1 - t0) * 1e3,
                           "postprocess_nms": (t2 - t1) * 1e3}, velocities)
