"""Stand-in detector and cloud builders for the pure-python ROS adapter tests (no master)."""
from __future__ import annotations

import numpy as np
import pytest

from admlops_ros.lidar.detections import Detections


class FakeDetector:
    """Returns one fixed box per call; records the points it was given."""

    class_names = ("Pedestrian", "Cyclist", "Car")
    point_features = ("x", "y", "z", "intensity")

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls = []
        self.last_voxels = None

    def detect(self, points: np.ndarray) -> Detections:
        if self.fail:
            raise RuntimeError("engine exploded")
        self.calls.append(points)
        boxes = np.array([[10.0, 2.0, -1.7, 4.0, 1.8, 1.5, 0.5]], np.float32)[: min(1, len(points))]
        det = Detections(boxes, np.full(len(boxes), 0.9), np.full(len(boxes), 2), self.class_names)
        det.timings_ms = {"preprocess": 1.0, "inference": 2.0, "postprocess": 0.5, "total": 3.5}
        return det

    def close(self) -> None:
        self.closed = True


def messages_or_skip():
    """The generated admlops_ros.msg module, or skip when the catkin workspace is not built."""
    from admlops_ros.ros.conversions import ConversionError, import_messages

    try:
        return import_messages()
    except ConversionError as exc:
        pytest.skip(f"catkin messages not built: {exc}")


def header(stamp_s: float = 12.5, frame_id: str = "velodyne"):
    import rospy
    from std_msgs.msg import Header

    return Header(seq=3, stamp=rospy.Time.from_sec(stamp_s), frame_id=frame_id)
