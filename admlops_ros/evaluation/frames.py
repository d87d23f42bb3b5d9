"""Per-frame ground truth and predictions handed to the evaluator, and MetricsError."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from admlops_ros.errors import AdmlopsError


class MetricsError(AdmlopsError):
    """Inconsistent ground truth / predictions handed to the evaluator."""


@dataclass
class FrameGT:
    """Ground truth of one frame.

    Attributes:
        boxes: [M, 7] float (x, y, z, dx, dy, dz, yaw) LiDAR frame, z bottom centre; m, rad.
        names: [M] class names (KITTI spelling: Car, Van, Pedestrian, Person_sitting, ...).
        bbox2d: [M, 4] image box (left, top, right, bottom) px, or None (then no KITTI
            difficulty and no 2D AP).
        occluded: [M] int KITTI occlusion state 0..3, or None.
        truncated: [M] float KITTI truncation 0..1, or None.
        ignore: [M] bool boxes to ignore (matches are neither TP nor FP, e.g. the simulator's
            difficulty -1), or None.
        difficulty: [M] int 0/1/2 (-1 ignore) as the simulator labels it, or None.
        dontcare_bbox2d: [K, 4] px KITTI DontCare regions (2D metric only).
        frame_id: a name for messages (file stem or stamp).
    """

    boxes: np.ndarray
    names: Sequence[str]
    bbox2d: Optional[np.ndarray] = None
    occluded: Optional[np.ndarray] = None
    truncated: Optional[np.ndarray] = None
    ignore: Optional[np.ndarray] = None
    difficulty: Optional[np.ndarray] = None
    dontcare_bbox2d: Optional[np.ndarray] = None
    frame_id: str = ""

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 7)
        self.names = np.asarray(list(self.names), dtype=str).reshape(-1)
        n = len(self.boxes)
        if len(self.names) != n:
            raise MetricsError(f"FrameGT {self.frame_id!r}: {n} boxes but {len(self.names)} names")
        for attr, width in (("bbox2d", 4), ("occluded", 0), ("truncated", 0), ("ignore", 0),
                            ("difficulty", 0)):
            value = getattr(self, attr)
            if value is None:
                continue
            value = np.asarray(value)
            value = value.reshape(-1, width) if width else value.reshape(-1)
            if len(value) != n:
                raise MetricsError(
                    f"FrameGT {self.frame_id!r}: {attr} has {len(value)} rows for {n} boxes")
            setattr(self, attr, value)
        self.dontcare_bbox2d = (np.zeros((0, 4)) if self.dontcare_bbox2d is None
                                else np.asarray(self.dontcare_bbox2d, np.float64).reshape(-1, 4))

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def has_kitti_difficulty(self) -> bool:
        """Whether 2D box, occlusion and truncation are all present."""
        return (self.bbox2d is not None and self.occluded is not None
                and self.truncated is not None)


@dataclass
class FramePred:
    """Predictions of one frame.

    Attributes:
        boxes: [N, 7] float LiDAR frame, z bottom centre (as Detections.boxes).
        scores: [N] float confidence.
        names: [N] class names.
        bbox2d: [N, 4] image boxes px, or None.
        frame_id: a name for messages.
    """

    boxes: np.ndarray
    scores: np.ndarray
    names: Sequence[str]
    bbox2d: Optional[np.ndarray] = None
    frame_id: str = ""

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 7)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        self.names = np.asarray(list(self.names), dtype=str).reshape(-1)
        n = len(self.boxes)
        if len(self.scores) != n or len(self.names) != n:
            raise MetricsError(
                f"FramePred {self.frame_id!r}: boxes, scores, names lengths differ "
                f"({n}, {len(self.scores)}, {len(self.names)})")
        if self.bbox2d is not None:
            self.bbox2d = np.asarray(self.bbox2d, np.float64).reshape(-1, 4)
            if len(self.bbox2d) != n:
                raise MetricsError(f"FramePred {self.frame_id!r}: bbox2d rows != boxes")

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def from_detections(cls, detections, frame_id: str = "") -> "FramePred":
        """From an :class:`admlops_ros.lidar.detections.Detections` (class names by label index)."""
        return cls(detections.boxes, detections.scores, list(detections.label_names()),
                   frame_id=frame_id)

    @classmethod
    def empty(cls, frame_id: str = "") -> "FramePred":
        """A frame with no predictions."""
        return cls(np.zeros((0, 7)), np.zeros(0), [], frame_id=frame_id)


__all__: Sequence[str] = ("MetricsError", "FrameGT", "FramePred")
