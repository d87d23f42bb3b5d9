"""Training augmentation as mmdet3d: BEV flip, global rotation/scaling, ground-truth sampling."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import numpy as np

from admlops_ros.lidar.geometry import limit_period, points_in_boxes, rotated_iou_bev

__all__ = [
    "AugmentConfig",
    "random_flip",
    "global_rot_scale",
    "range_filter",
    "GTSampler",
]

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class AugmentConfig:
    """mmdet3d KITTI 3-class PointPillars train pipeline numbers."""

    flip_ratio: float = 0.5  # RandomFlip3D flip_ratio_bev_horizontal
    rot_range: Tuple[float, float] = (-0.78539816, 0.78539816)  # GlobalRotScaleTrans
    scale_range: Tuple[float, float] = (0.95, 1.05)
    gt_sampling: bool = True  # ObjectSample
    sample_groups: Dict[str, int] = field(
        default_factory=lambda: {"Car": 15, "Pedestrian": 15, "Cyclist": 15})
    min_points: int = 5  # db filter_by_min_points


def random_flip(points: np.ndarray, boxes: np.ndarray, rng: np.random.Generator,
                ratio: float) -> Tuple[np.ndarray, np.ndarray]:
    """Horizontal BEV flip with probability ``ratio``: y -> -y, yaw -> -yaw (LiDAR boxes)."""
    if rng.random() >= ratio:
        return points, boxes
    points = points.copy()
    boxes = boxes.copy()
    points[:, 1] = -points[:, 1]
    boxes[:, 1] = -boxes[:, 1]
    boxes[:, 6] = -boxes[:, 6]
    return points, boxes


def global_rot_scale(points: np.ndarray, boxes: np.ndarray, rng: np.random.Generator,
                     rot_range: Sequence[float], scale_range: Sequence[float]
                     ) -> Tuple[np.ndarray, np.ndarray]:
    """Rotate about +z by U(rot_range) (counter-clockwise, yaw += angle), then scale xyz/sizes."""
    angle = rng.uniform(rot_range[0], rot_range[1])
    scale = rng.uniform(scale_range[0], scale_range[1])
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]], np.float32)
    points = points.copy()
    boxes = boxes.copy()
    points[:, :2] = points[:, :2] @ rot.T
    boxes[:, :2] = boxes[:, :2] @ rot.T
    boxes[:, 6] = limit_period(boxes[:, 6] + angle, 0.5, 2 * np.pi)
    points[:, :3] *= scale
    boxes[:, :6] *= scale
    return points, boxes


def range_filter(points: np.ndarray, boxes: np.ndarray, point_cloud_range: Sequence[float]
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """PointsRangeFilter + ObjectRangeFilter: points inside the range, boxes whose BEV centre is.

    Returns:
        (points [N', C], box_keep [M] bool).
    """
    r = point_cloud_range
    p = points
    keep_p = ((p[:, 0] > r[0]) & (p[:, 1] > r[1]) & (p[:, 2] > r[2])
              & (p[:, 0] < r[3]) & (p[:, 1] < r[4]) & (p[:, 2] < r[5]))
    keep_b = ((boxes[:, 0] > r[0]) & (boxes[:, 1] > r[1])
              & (boxes[:, 0] < r[3]) & (boxes[:, 1] < r[4]))
    return points[keep_p], keep_b


class GTSampler:
    """mmdet3d ObjectSample: paste objects (points + box) from a database into a scene.

    The database holds, per class, the points inside each labelled box of the training
    frames that have at least ``min_points`` points and a difficulty >= 0. Pasted boxes must not
    overlap (rotated BEV IoU > 0) any existing or already pasted box; scene points inside the
    pasted boxes are removed and the pasted points are put first (as mmdet3d).
    """

    def __init__(self, frames: Sequence, class_names: Sequence[str],
                 sample_groups: Dict[str, int], min_points: int) -> None:
        self.class_names = tuple(class_names)
        self.sample_groups = {k: v for k, v in sample_groups.items() if k in self.class_names}
        self.db: Dict[str, List[Tuple[np.ndarray, np.ndarray]]] = {n: [] for n in class_names}
        for fr in frames:
            boxes = np.asarray(fr.boxes, np.float32).reshape(-1, 7)
            if len(boxes) == 0:
                continue
            owner = getattr(fr, "point_owner", None)  # simulator: box index each point hit
            if owner is not None and len(owner) == len(fr.points):
                idx = np.asarray(owner)
            else:
                idx = points_in_boxes(fr.points, boxes, return_index=True)
            for j, name in enumerate(fr.names):
                if name not in self.db or int(fr.difficulty[j]) < 0:
                    continue
                pts = fr.points[idx == j]
                if len(pts) >= min_points:
                    self.db[name].append((pts.astype(np.float32), boxes[j].copy()))
        LOG.info("gt database: %s", {k: len(v) for k, v in self.db.items()})

    def __call__(self, points: np.ndarray, boxes: np.ndarray, names: List[str],
                 rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, List[str]]:
        """Paste objects so that each class reaches its sample_groups count.

        Returns:
            (points, boxes, names) with the pasted objects appended to boxes / names.
        """
        new_pts: List[np.ndarray] = []
        new_boxes: List[np.ndarray] = []
        new_names: List[str] = []
        existing = boxes.reshape(-1, 7)
        for name, want in self.sample_groups.items():
            have = sum(1 for n in names if n == name) + sum(1 for n in new_names if n == name)
            entries = self.db.get(name) or []
            n = min(max(want - have, 0), len(entries))
            if n == 0:
                continue
            picks = rng.choice(len(entries), size=n, replace=False)
            cand = np.stack([entries[i][1] for i in picks])
            all_boxes = np.concatenate([existing] + [b[None] for b in new_boxes]) \
                if new_boxes else existing
            ok = np.ones(n, bool)
            if len(all_boxes):
                ok &= rotated_iou_bev(cand, all_boxes).max(axis=1) <= 0
            for i in range(n):  # candidates must not overlap each other either
                if not ok[i]:
                    continue
                if i + 1 < n:
                    later = rotated_iou_bev(cand[i:i + 1], cand[i + 1:])[0] > 0
                    ok[i + 1:] &= ~later
            for i in np.flatnonzero(ok):
                new_pts.append(entries[picks[i]][0])
                new_boxes.append(cand[i])
                new_names.append(name)
        if not new_boxes:
            return points, boxes, names
        pasted = np.stack(new_boxes)
        inside = _points_in_any_box(points, pasted)
        points = np.concatenate(new_pts + [points[~inside]]).astype(np.float32)
        return points, np.concatenate([existing, pasted]).astype(np.float32), \
            list(names) + new_names


def _points_in_any_box(points: np.ndarray, boxes: np.ndarray, cell: float = 1.0) -> np.ndarray:
    """[N] bool: point inside any box; exact test only for points in cells near a box."""
    half = 0.5 * np.hypot(boxes[:, 3], boxes[:, 4])  # BEV circumradius, metres
    lo = np.floor((boxes[:, :2] - half[:, None]) / cell).astype(np.int64)
    hi = np.floor((boxes[:, :2] + half[:, None]) / cell).astype(np.int64)
    origin = lo.min(axis=0)
    shape = hi.max(axis=0) - origin + 1
    grid = np.zeros((int(shape[0]), int(shape[1])), bool)
    for (x0, y0), (x1, y1) in zip(lo - origin, hi - origin):
        grid[x0:x1 + 1, y0:y1 + 1] = True
    ij = np.floor(points[:, :2] / cell).astype(np.int64) - origin
    ok = (ij[:, 0] >= 0) & (ij[:, 1] >= 0) & (ij[:, 0] < shape[0]) & (ij[:, 1] < shape[1])
    near = np.flatnonzero(ok)
    near = near[grid[ij[near, 0], ij[near, 1]]]
    inside = np.zeros(len(points), bool)
    if len(near):
        inside[near] = points_in_boxes(points[near], boxes).any(axis=1)
    return inside
