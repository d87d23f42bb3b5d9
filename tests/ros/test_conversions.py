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


def test_velocity_round_trip_in_the_sensor_frame():
    msgs = messages_or_skip()
    det = Detections(BOXES, [0.9, 0.4], [2, 0], ("Pedestrian", "Cyclist", "Car"),
                     velocities=[[3.5, -1.25], [0.0, 0.5]])
    car, ped = detections_to_msg(det, header(), msgs).objects
    assert car.has_velocity and ped.has_velocity
    assert (car.velocity.x, car.velocity.y, car.velocity.z) == (3.5, -1.25, 0.0)
    back = msg_to_detections(detections_to_msg(det, header(), msgs), det.class_names)
    np.testing.assert_allclose(back.velocities, det.velocities)


def test_no_velocity_gives_zeros_and_false_and_none_back():
    msgs = messages_or_skip()
    out = detections_to_msg(Detections(BOXES, [0.9, 0.4], [2, 0], ("P", "C", "Car")),
                            header(), msgs)
    assert [o.has_velocity for o in out.objects] == [False, False]
    assert out.objects[0].velocity.x == 0.0 and out.objects[0].velocity.y == 0.0
    assert msg_to_detections(out).velocities is None


def _old_classes(msgs):
    """DetectedObjectArray/DetectedObject as generated before the velocity fields existed."""
    import genpy.dynamic

    new_fields = ("bool has_velocity", "geometry_msgs/Vector3 velocity")
    text = "\n".join(line for line in msgs.DetectedObjectArray._full_text.splitlines()
                     if not line.startswith(new_fields))
    classes = genpy.dynamic.generate_dynamic("admlops_ros/DetectedObjectArray", text)
    return classes["admlops_ros/DetectedObjectArray"], classes["admlops_ros/DetectedObject"]


def test_bags_recorded_before_the_velocity_fields_still_read(tmp_path):
    import rosbag

    msgs = messages_or_skip()
    old_array, old_object = _old_classes(msgs)
    assert old_array._md5sum != msgs.DetectedObjectArray._md5sum
    new = detections_to_msg(Detections(BOXES, [0.9, 0.4], [2, 0], ("P", "C", "Car")),
                            header(), msgs)
    old = old_array(header=new.header, objects=[
        old_object(header=o.header, id=o.id, label=o.label, label_name=o.label_name,
                   score=o.score, pose=o.pose, dimensions=o.dimensions) for o in new.objects])
    path = tmp_path / "old.bag"
    with rosbag.Bag(str(path), "w") as bag:
        bag.write("/ground_truth/objects", old, t=new.header.stamp)
    with rosbag.Bag(str(path)) as bag:
        (_, msg, _), = list(bag.read_messages())
    assert msg._md5sum == old_array._md5sum and not hasattr(msg.objects[0], "has_velocity")
    back = msg_to_detections(msg, ("P", "C", "Car"))
    np.testing.assert_allclose(back.boxes, BOXES, atol=1e-5)
    assert back.velocities is None and back.labels.tolist() == [2, 0]
