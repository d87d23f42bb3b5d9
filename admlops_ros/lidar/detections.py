"""Detections: the plain data the pipeline returns (LiDAR frame, bottom-centre boxes)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import numpy as np


@dataclass
class Detections:
    """3D detections of one frame.

    Attributes:
        boxes: [N, 7] float32 (x, y, z, dx, dy, dz, yaw) in the LiDAR frame; metres, radians;
            z is the bottom centre of the box, yaw about +z from +x.
        scores: [N] float32 confidence in [0, 1].
        labels: [N] int64 index into ``class_names``.
        class_names: class name per label index.
        timings_ms: wall time per stage in milliseconds (preprocess, inference, postprocess,
            total and finer keys).
        velocities: [N, 2] float32 (vx, vy) in m/s in the LiDAR frame (the box code's
            custom values of nuScenes-style models), or None when the model gives none.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: Tuple[str, ...] = ()
    timings_ms: Dict[str, float] = field(default_factory=dict)
    velocities: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 7)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.class_names = tuple(self.class_names)
        n = len(self.boxes)
        if len(self.scores) != n or len(self.labels) != n:
            raise ValueError(
                "Detections: boxes, scores and labels must have the same length, got "
                f"{n}, {len(self.scores)}, {len(self.labels)}")
        if self.velocities is not None:
            self.velocities = np.asarray(self.velocities, dtype=np.float32).reshape(-1, 2)
            if len(self.velocities) != n:
                raise ValueError(f"Detections: velocities must be [N, 2] with N = {n} boxes, "
                                 f"got {len(self.velocities)} rows")

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls, class_names: Sequence[str] = (), with_velocity: bool = False
              ) -> "Detections":
        """Detections with no boxes (``velocities`` [0, 2] when ``with_velocity``)."""
        return cls(np.zeros((0, 7), np.float32), np.zeros(0, np.float32),
                   np.zeros(0, np.int64), tuple(class_names),
                   velocities=np.zeros((0, 2), np.float32) if with_velocity else None)

    def select(self, mask: np.ndarray) -> "Detections":
        """Subset by boolean mask or index array; boxes, scores and labels stay aligned."""
        return Detections(self.boxes[mask], self.scores[mask], self.labels[mask],
                          self.class_names, dict(self.timings_ms),
                          None if self.velocities is None else self.velocities[mask])

    def label_names(self) -> Tuple[str, ...]:
        """Class name of each detection."""
        return tuple(self.class_names[i] for i in self.labels)
