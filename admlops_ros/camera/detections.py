"""Detections2D: the plain data the camera pipeline returns (original-image pixels)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np


@dataclass
class Detections2D:
    """2D detections of one image.

    Attributes:
        boxes: [N, 4] float32 (x1, y1, x2, y2) in pixels of the original image (x right,
            y down, origin at the top-left corner of the top-left pixel).
        scores: [N] float32 confidence in [0, 1].
        labels: [N] int64 index into ``class_names``.
        class_names: class name per label index.
        timings_ms: wall time per stage in milliseconds (preprocess, inference, postprocess,
            total).
        image_size: (height, width) of the original image, pixels.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: Tuple[str, ...] = ()
    timings_ms: Dict[str, float] = field(default_factory=dict)
    image_size: Tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.class_names = tuple(self.class_names)
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        n = len(self.boxes)
        if len(self.scores) != n or len(self.labels) != n:
            raise ValueError("Detections2D: boxes, scores and labels must have the same "
                             f"length, got {n}, {len(self.scores)}, {len(self.labels)}")

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls, class_names: Sequence[str] = (),
              image_size: Tuple[int, int] = (0, 0)) -> "Detections2D":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                   np.zeros(0, np.int64), tuple(class_names), image_size=image_size)

    def select(self, mask: np.ndarray) -> "Detections2D":
        """Subset by boolean mask or index array; boxes, scores and labels stay aligned."""
        return Detections2D(self.boxes[mask], self.scores[mask], self.labels[mask],
                            self.class_names, dict(self.timings_ms), self.image_size)

    def names(self) -> Tuple[str, ...]:
        """Class name of each detection."""
        return tuple(self.class_names[i] for i in self.labels)


def warm_up(detector: Any, runs: int = 2, image_size: Optional[Tuple[int, int]] = None) -> None:
    """Run ``detector.detect`` on a synthetic BGR image ``runs`` times (engine caches, threads).

    Args:
        image_size: (height, width) pixels; default the network input of ``detector.spec``.
    """
    h, w = image_size or (detector.spec.input.height, detector.spec.input.width)
    image = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    for _ in range(runs):
        detector.detect(image)
