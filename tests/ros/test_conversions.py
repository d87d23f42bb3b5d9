"""Detections -> admlops_ros messages: yaw quaternion, box centre z, header copy."""
from __future__ import annotations

import math

import numpy as np

from admlops_ros.lidar.detections import Detections
from admlops_ros.ros.conversions import (box_centers, detections_to_msg, msg_to_detections,
                                         quaternion_to_yaw, stats_to_msg, yaw_to_quaternion)
from tests.ros_fakes import header, messages_or_skip

BOXES = np.array([[10.0, 2.0, -1.7, 4.0, 1.8, 1.5, 0.5],
                  [5.0, -3.0, -1.0, 0.8, 0.6, 1.7, -2.9]], np.float32)


def test_yaw_to_quaternion_matches_rotation_about_z():
    yaw = np.array([0.0, math.pi / 2, -math.pi / 2, math.pi, 0.3])
    quat = yaw_to_quaternion(yaw)
    assert quat.shape == (5, 4)
    np.testing.assert_allclose(quat[0], [0, 0, 0, 1])
    np.testing.assert_allclose(quat[1], [0, 0, math.sqrt(0.5), math.sqrt(0.5)])
    np.testing.assert_allclose(np.linalg.norm(quat, axis=1), 1.0)
    back = [quaternion_to_yaw(*q) for q in quat]
    np.testing.assert_allclose(np.cos(back), np.cos(yaw), atol=1e-12)
    np.testing.assert_allclose(np.sin(back), np.sin(yaw), atol=1e-12)


def test_box_centre_is_bottom_plus_half_height():
    centers = box_centers(BOXES)
    np.testing.assert_allclose(centers[:, :2], BOXES[:, :2], rtol=1e-6)
    np.testing.assert_allclose(centers[:, 2], BOXES[:, 2] + BOXES[:, 5] / 2, rtol=1e-6)


def test_detections_to_msg_fields_and_header():
    msgs = messages_or_skip()
    det = Detections(BOXES, [0.9, 0.4], [2, 0], ("Pedestrian", "Cyclist", "Car"))
    hdr = header(12.5, "velodyne")
    out = detections_to_msg(det, hdr, msgs)
    assert out.header is hdr and len(out.objects) == 2
    car, ped = out.objects
    assert car.header.stamp == hdr.stamp and car.header.frame_id == "velodyne"
    assert (car.id, car.label, car.label_name) == (0, 2, "Car")
    assert (ped.id, ped.label, ped.label_name) == (1, 0, "Pedestrian")
    assert math.isclose(car.score, 0.9, rel_tol=1e-6)
    assert math.isclose(car.pose.position.z, -1.7 + 0.75, rel_tol=1e-6)
    assert math.isclose(car.pose.orientation.z, math.sin(0.25), rel_tol=1e-6)
    assert (car.dimensions.x, car.dimensions.y) == (4.0, np.float32(1.8).item())
    back = msg_to_detections(out, det.class_names)
    np.testing.assert_allclose(back.boxes, BOXES, atol=1e-5)
    assert back.labels.tolist() == [2, 0]


def test_empty_detections_give_empty_array():
    msgs = messages_or_skip()
    out = detections_to_msg(Detections.empty(("Car",)), header(), msgs)
    assert out.objects == [] and out.header.frame_id == "velodyne"


def test_stats_msg_fills_missing_with_nan_and_zero():
    msgs = messages_or_skip()
    stats = stats_to_msg(header(), {"inference_ms": 5.0, "num_points": 7, "frames_in": 3}, msgs)
    assert stats.inference_ms == 5.0 and stats.num_points == 7 and stats.frames_in == 3
    assert math.isnan(stats.latency_ms) and stats.frames_dropped == 0
