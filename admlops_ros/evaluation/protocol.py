"""KITTI protocol constants (classes, IoU thresholds, difficulty limits, bands) and EvalConfig."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Sequence, Tuple

import numpy as np

# KITTI protocol constants (devkit eval.py / mmdet3d kitti_utils/eval.py).
KITTI_CLASSES: Tuple[str, ...] = ("Car", "Pedestrian", "Cyclist")
STRICT_IOU: Dict[str, float] = {"Car": 0.7, "Pedestrian": 0.5, "Cyclist": 0.5}
LOOSE_IOU: Dict[str, float] = {"Car": 0.5, "Pedestrian": 0.25, "Cyclist": 0.25}
BBOX_IOU: Dict[str, float] = dict(STRICT_IOU)  # 2D boxes keep the strict thresholds in both sets
NEIGHBOUR_CLASS: Dict[str, str] = {"car": "van", "pedestrian": "person_sitting"}
KITTI_DIFFICULTIES: Tuple[str, ...] = ("easy", "moderate", "hard")
KITTI_MIN_HEIGHT_PX: Tuple[float, ...] = (40.0, 25.0, 25.0)
KITTI_MAX_OCCLUSION: Tuple[int, ...] = (0, 1, 2)
KITTI_MAX_TRUNCATION: Tuple[float, ...] = (0.15, 0.3, 0.5)
DISTANCE_BANDS_M: Tuple[Tuple[float, float], ...] = ((0.0, 20.0), (20.0, 40.0),
                                                     (40.0, math.inf))
N_SAMPLE_PTS = 41
METRICS: Tuple[str, ...] = ("bbox", "bev", "3d")
IOU_SETS: Tuple[str, ...] = ("strict", "loose")


@dataclass
class EvalConfig:
    """What to evaluate.

    Attributes:
        classes: class names to score.
        metrics: subset of ("bbox", "bev", "3d"); "bbox" needs 2D boxes on both sides.
        difficulty_mode: "auto" (KITTI when every gt frame carries 2D box, occlusion and
            truncation, else distance), "kitti", "distance" or "labels" (FrameGT.difficulty
            used as cumulative KITTI level).
        distance_bands: [lo, hi) BEV range bands in metres for the distance mode.
        score_threshold: operating score threshold for precision / recall / TP errors.
        strict_iou, loose_iou: IoU thresholds per class for bev / 3d (classes missing here
            fall back to 0.5 / 0.25).
    """

    classes: Tuple[str, ...] = KITTI_CLASSES
    metrics: Tuple[str, ...] = ("bev", "3d")
    difficulty_mode: str = "auto"
    distance_bands: Tuple[Tuple[float, float], ...] = DISTANCE_BANDS_M
    score_threshold: float = 0.3
    strict_iou: Dict[str, float] = field(default_factory=lambda: dict(STRICT_IOU))
    loose_iou: Dict[str, float] = field(default_factory=lambda: dict(LOOSE_IOU))

    def min_overlap(self, metric: str, iou_set: str, cls: str) -> float:
        """IoU a match must exceed for a metric ("bbox"/"bev"/"3d"), set and class."""
        if metric == "bbox":
            return BBOX_IOU.get(cls, 0.5)
        table = self.strict_iou if iou_set == "strict" else self.loose_iou
        return float(table.get(cls, 0.5 if iou_set == "strict" else 0.25))


def kitti_difficulty(bbox2d: np.ndarray, occluded: np.ndarray,
                     truncated: np.ndarray) -> np.ndarray:
    """KITTI difficulty level per object: 0 easy, 1 moderate, 2 hard, -1 none of them.

    Args:
        bbox2d: [M, 4] image boxes (left, top, right, bottom) px.
        occluded: [M] occlusion state; truncated: [M] 0..1.
    """
    bbox2d = np.asarray(bbox2d, np.float64).reshape(-1, 4)
    height = bbox2d[:, 3] - bbox2d[:, 1]
    level = np.full(len(bbox2d), -1, np.int64)
    for lvl in (2, 1, 0):  # the lowest level whose rules hold wins
        ok = ((np.asarray(occluded) <= KITTI_MAX_OCCLUSION[lvl])
              & (np.asarray(truncated) <= KITTI_MAX_TRUNCATION[lvl])
              & (height > KITTI_MIN_HEIGHT_PX[lvl]))
        level[ok] = lvl
    return level


__all__: Sequence[str] = ("KITTI_CLASSES", "STRICT_IOU", "LOOSE_IOU", "BBOX_IOU", "NEIGHBOUR_CLASS",
                          "KITTI_DIFFICULTIES", "KITTI_MIN_HEIGHT_PX", "KITTI_MAX_OCCLUSION",
                          "KITTI_MAX_TRUNCATION", "DISTANCE_BANDS_M", "N_SAMPLE_PTS", "METRICS",
                          "IOU_SETS", "EvalConfig", "kitti_difficulty")
