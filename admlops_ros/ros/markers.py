"""Detections -> visualization_msgs/MarkerArray for RViz: boxes, heading, class/score, velocity."""
from __future__ import annotations

from typing import Any, List, Sequence, Tuple

import numpy as np

from admlops_ros.lidar.detections import Detections
from admlops_ros.ros.conversions import box_centers, yaw_to_quaternion

# RGB per class index (cycled): distinct on RViz's dark background.
PALETTE: Tuple[Tuple[float, float, float], ...] = (
    (1.0, 0.35, 0.2), (0.2, 0.8, 1.0), (0.3, 1.0, 0.3), (1.0, 0.85, 0.1),
    (0.8, 0.4, 1.0), (1.0, 0.5, 0.8), (0.6, 0.6, 0.6), (0.1, 0.6, 0.6),
)
# (12, 2) corner indices of the box edges: bottom ring, top ring, verticals.
EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4],
                  [0, 4], [1, 5], [2, 6], [3, 7]], dtype=np.int64)
LINE_WIDTH_M = 0.05
TEXT_HEIGHT_M = 0.6
NAMESPACES = ("boxes", "heading", "labels", "velocity")
#: A velocity arrow is the distance covered in this time: length = speed * 1 s (m).
VELOCITY_ARROW_S = 1.0
#: Slower boxes get no velocity arrow (a zero-length arrow renders as a stray head).
MIN_ARROW_SPEED_MPS = 0.1


def class_color(label: int) -> Tuple[float, float, float]:
    """RGB in [0, 1] for a class index."""
    return PALETTE[int(label) % len(PALETTE)]


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """Corners of mmdet3d LiDAR boxes.

    Args:
        boxes: [N, 7] (x, y, z_bottom, dx, dy, dz, yaw), metres, radians.

    Returns:
        [N, 8, 3] float64; corners 0-3 bottom, 4-7 top, counter-clockwise from (+dx/2, +dy/2)
        in the box frame.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    unit = np.array([[0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5], [0.5, -0.5]])
    local_xy = unit[None, :, :] * boxes[:, None, 3:5]                     # [N, 4, 2]
    cos, sin = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    x = boxes[:, None, 0] + cos * local_xy[..., 0] - sin * local_xy[..., 1]
    y = boxes[:, None, 1] + sin * local_xy[..., 0] + cos * local_xy[..., 1]
    corners = np.empty((len(boxes), 8, 3), np.float64)
    corners[:, :4, 0] = corners[:, 4:, 0] = x
    corners[:, :4, 1] = corners[:, 4:, 1] = y
    corners[:, :4, 2] = boxes[:, None, 2]
    corners[:, 4:, 2] = boxes[:, None, 2] + boxes[:, None, 5]
    return corners


def edge_segments(boxes: np.ndarray) -> np.ndarray:
    """LINE_LIST vertices of the box edges: [N, 24, 3] (12 segments of 2 points per box)."""
    return box_corners(boxes)[:, EDGES.reshape(-1), :]


def heading_segments(boxes: np.ndarray) -> np.ndarray:
    """Arrow start/end per box: [N, 2, 3] from the box centre to the middle of its front face."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    start = box_centers(boxes)
    end = start.copy()
    end[:, 0] += 0.5 * boxes[:, 3] * np.cos(boxes[:, 6])
    end[:, 1] += 0.5 * boxes[:, 3] * np.sin(boxes[:, 6])
    return np.stack([start, end], axis=1)


def velocity_segments(boxes: np.ndarray, velocities: np.ndarray) -> np.ndarray:
    """Arrow start/end per box: [N, 2, 3] from the box centre to centre + (vx, vy, 0) * 1 s."""
    start = box_centers(boxes)
    end = start.copy()
    end[:, :2] += VELOCITY_ARROW_S * np.asarray(velocities, np.float64).reshape(-1, 2)
    return np.stack([start, end], axis=1)


def label_texts(detections: Detections) -> List[str]:
    """"<class> <score>" per detection, e.g. "Car 0.87"."""
    names = detections.class_names
    return [f"{names[l] if 0 <= l < len(names) else l} {s:.2f}"
            for l, s in zip(detections.labels.tolist(), detections.scores.tolist())]


def detections_to_markers(detections: Detections, header: Any) -> Any:
    """MarkerArray: DELETEALL, then per box a LINE_LIST, an ARROW and a TEXT_VIEW_FACING, and
    with velocities an ARROW in namespace "velocity" (centre to centre + velocity * 1 s, in
    the header frame) for every box faster than MIN_ARROW_SPEED_MPS.

    The leading DELETEALL removes the previous frame's markers (no stale boxes); every marker
    carries the input header (stamp and frame_id), ids are the detection index per namespace.

    Args:
        detections: boxes in the frame of ``header.frame_id``.
        header: std_msgs/Header of the input cloud.

    Returns:
        visualization_msgs.msg.MarkerArray with 1 + 3 * N (+ moving boxes) markers.
    """
    from geometry_msgs.msg import Point, Vector3  # noqa: WPS433
    from std_msgs.msg import ColorRGBA  # noqa: WPS433
    from visualization_msgs.msg import Marker, MarkerArray  # noqa: WPS433

    markers = [Marker(header=header, action=Marker.DELETEALL)]
    edges = edge_segments(detections.boxes).tolist()
    arrows = heading_segments(detections.boxes).tolist()
    tops = box_centers(detections.boxes)
    tops[:, 2] += 0.5 * detections.boxes[:, 5] + 0.5 * TEXT_HEIGHT_M
    quats = yaw_to_quaternion(np.zeros(len(detections)))  # identity pose for point markers
    texts = label_texts(detections)
    for i, label in enumerate(detections.labels.tolist()):
        color = ColorRGBA(*class_color(label), 1.0)
        identity = _pose(quats[i], (0.0, 0.0, 0.0))
        markers.append(Marker(
            header=header, ns=NAMESPACES[0], id=i, type=Marker.LINE_LIST, action=Marker.ADD,
            pose=identity, scale=Vector3(LINE_WIDTH_M, 0.0, 0.0), color=color,
            points=[Point(*p) for p in edges[i]]))
        markers.append(Marker(
            header=header, ns=NAMESPACES[1], id=i, type=Marker.ARROW, action=Marker.ADD,
            pose=identity, scale=Vector3(0.1, 0.25, 0.3), color=color,
            points=[Point(*p) for p in arrows[i]]))
        markers.append(Marker(
            header=header, ns=NAMESPACES[2], id=i, type=Marker.TEXT_VIEW_FACING,
            action=Marker.ADD, pose=_pose(quats[i], tops[i]),
            scale=Vector3(0.0, 0.0, TEXT_HEIGHT_M), color=ColorRGBA(1.0, 1.0, 1.0, 1.0),
            text=texts[i]))
    if detections.velocities is not None:
        moving = np.hypot(detections.velocities[:, 0], detections.velocities[:, 1])
        segments = velocity_segments(detections.boxes, detections.velocities).tolist()
        for i in np.flatnonzero(moving >= MIN_ARROW_SPEED_MPS).tolist():
            markers.append(Marker(
                header=header, ns=NAMESPACES[3], id=i, type=Marker.ARROW, action=Marker.ADD,
                pose=_pose(quats[i], (0.0, 0.0, 0.0)), scale=Vector3(0.15, 0.35, 0.4),
                color=ColorRGBA(1.0, 1.0, 1.0, 1.0), points=[Point(*p) for p in segments[i]]))
    return MarkerArray(markers=markers)


def _pose(quat: Sequence[float], position: Sequence[float]) -> Any:
    from geometry_msgs.msg import Point, Pose, Quaternion  # noqa: WPS433

    return Pose(position=Point(*[float(v) for v in position]),
                orientation=Quaternion(*[float(v) for v in quat]))
