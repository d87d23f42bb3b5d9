"""MarkerArray for RViz: DELETEALL first, box edges, heading arrow, class/score text."""
from __future__ import annotations

import numpy as np
from visualization_msgs.msg import Marker

from admlops_ros.lidar.detections import Detections
from admlops_ros.ros.markers import (box_corners, class_color, detections_to_markers,
                                     edge_segments, heading_segments)
from tests.ros_fakes import header

BOX = np.array([[10.0, 2.0, -1.0, 4.0, 2.0, 1.5, np.pi / 2]], np.float32)


def test_corners_of_rotated_box():
    corners = box_corners(BOX)[0]
    # yaw 90 deg: length (4 m) along +y, width (2 m) along x
    np.testing.assert_allclose(corners[:, 0].min(), 9.0, atol=1e-6)
    np.testing.assert_allclose(corners[:, 0].max(), 11.0, atol=1e-6)
    np.testing.assert_allclose(corners[:, 1].min(), 0.0, atol=1e-6)
    np.testing.assert_allclose(corners[:, 1].max(), 4.0, atol=1e-6)
    np.testing.assert_allclose(corners[:4, 2], -1.0)
    np.testing.assert_allclose(corners[4:, 2], 0.5)


def test_edges_are_12_segments_of_box_length():
    seg = edge_segments(BOX)[0].reshape(12, 2, 3)
    lengths = np.sort(np.linalg.norm(seg[:, 1] - seg[:, 0], axis=1))
    np.testing.assert_allclose(lengths, [1.5] * 4 + [2.0] * 4 + [4.0] * 4, atol=1e-6)


def test_heading_points_to_front_face():
    start, end = heading_segments(BOX)[0]
    np.testing.assert_allclose(start, [10.0, 2.0, -0.25], atol=1e-6)
    np.testing.assert_allclose(end, [10.0, 4.0, -0.25], atol=1e-6)


def test_marker_array_contents():
    det = Detections(np.repeat(BOX, 2, 0), [0.87, 0.5], [2, 0], ("Pedestrian", "Cyclist", "Car"))
    hdr = header(3.0, "lidar_top")
    markers = detections_to_markers(det, hdr).markers
    assert markers[0].action == Marker.DELETEALL
    assert len(markers) == 1 + 3 * 2
    assert all(m.header is hdr for m in markers)
    markers = markers[1:]
    assert all(m.action == Marker.ADD for m in markers)
    lines = [m for m in markers if m.type == Marker.LINE_LIST]
    arrows = [m for m in markers if m.type == Marker.ARROW]
    texts = [m for m in markers if m.type == Marker.TEXT_VIEW_FACING]
    assert len(lines) == len(arrows) == len(texts) == 2
    assert len(lines[0].points) == 24 and len(arrows[0].points) == 2
    assert [t.text for t in texts] == ["Car 0.87", "Pedestrian 0.50"]
    assert (lines[0].color.r, lines[0].color.g, lines[0].color.b) == class_color(2)
    assert lines[0].color != lines[1].color
    assert [m.id for m in lines] == [0, 1]
    assert texts[0].pose.position.z > 0.5  # above the box top


def test_no_detections_only_clears():
    markers = detections_to_markers(Detections.empty(("Car",)), header()).markers
    assert [m.action for m in markers] == [Marker.DELETEALL]


def test_velocity_arrows_from_the_centre_one_second_long():
    boxes = np.repeat(BOX, 3, 0)
    det = Detections(boxes, [0.9, 0.8, 0.7], [2, 2, 0], ("Pedestrian", "Cyclist", "Car"),
                     velocities=[[3.0, -4.0], [0.0, 0.0], [0.0, 0.5]])
    markers = detections_to_markers(det, header(3.0, "lidar_top")).markers
    assert len(markers) == 1 + 3 * 3 + 2  # the box at rest gets no arrow
    arrows = [m for m in markers if m.ns == "velocity"]
    assert [m.id for m in arrows] == [0, 2] and all(m.type == Marker.ARROW for m in arrows)
    start, end = arrows[0].points
    assert (start.x, start.y, start.z) == (10.0, 2.0, -0.25)
    assert (end.x, end.y, end.z) == (13.0, -2.0, -0.25)  # 5 m/s -> 5 m
    assert all(m.header.frame_id == "lidar_top" for m in arrows)


def test_no_velocity_arrows_without_velocities():
    det = Detections(BOX, [0.9], [2], ("Pedestrian", "Cyclist", "Car"))
    assert not [m for m in detections_to_markers(det, header()).markers if m.ns == "velocity"]
