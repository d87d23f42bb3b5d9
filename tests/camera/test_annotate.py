"""Annotation: 2D boxes and lidar wireframes drawn where they project, input left untouched."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cv2")

from admlops_ros.camera.annotate import (CONFIRMED_COLOR, UNCONFIRMED_COLOR,  # noqa: E402
                                         annotate, class_color)
from admlops_ros.camera.detections import Detections2D  # noqa: E402
from admlops_ros.camera.projection import CameraModel  # noqa: E402

K = np.array([[700.0, 0.0, 600.0, 0.0], [0.0, 700.0, 180.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
OPTICAL = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0],
                    [0.0, 0.0, 0.0, 1.0]])


def test_boxes_and_wireframes_drawn_on_a_copy():
    image = np.zeros((375, 1242, 3), np.uint8)
    image.setflags(write=False)                      # a cv_bridge passthrough view
    det = Detections2D(np.array([[100, 100, 200, 220]], np.float32), [0.9], [2],
                       ("Pedestrian", "Cyclist", "Car"))
    cam = CameraModel(K, OPTICAL, (375, 1242))
    boxes = np.array([[10.0, 0.0, -1.0, 4.0, 2.0, 1.5, 0.3],      # in view
                      [0.0, -3.0, -1.0, 10.0, 1.0, 2.0, 0.0],     # through the camera plane
                      [-10.0, 0.0, -1.0, 4.0, 2.0, 1.5, 0.0]])    # behind: nothing drawn
    proj = cam.project_boxes(boxes)
    out = annotate(image, det, proj, np.array([True, False, False]), ["Car", "Car", "Car"])
    assert not image.any() and out.shape == image.shape
    assert (out[150, 100] == class_color(2)).all()               # left edge of the 2D box
    x1, y1, x2, y2 = proj.boxes2d[0].astype(int)
    region = out[y1:y2 + 1, x1:x2 + 1].reshape(-1, 3)
    assert (region == CONFIRMED_COLOR).all(axis=1).any()
    assert (out.reshape(-1, 3) == UNCONFIRMED_COLOR).all(axis=1).any()
