"""Detections <-> admlops_ros messages: box centre, yaw quaternion, object arrays, stats."""
from __future__ import annotations

import importlib
import math
import pkgutil
from types import ModuleType
from typing import Any, Dict, Optional

import numpy as np

from admlops_ros.errors import AdmlopsError
from admlops_ros.lidar.detections import Detections


class ConversionError(AdmlopsError, ImportError):
    """The generated admlops_ros messages cannot be imported (catkin workspace not built/sourced)."""


def import_messages() -> ModuleType:
    """The generated ``admlops_ros.msg`` module, found in the catkin devel/install space.

    The source package shadows the devel-space one when the repo is first on PYTHONPATH; the
    package path is extended with every ``admlops_ros`` directory on sys.path (as catkin's
    generated ``__init__.py`` does) before importing.

    Raises:
        ConversionError: messages not generated; run scripts/build_catkin.sh and source
            build/catkin_ws/devel/setup.bash.
    """
    import admlops_ros  # noqa: WPS433

    try:
        return importlib.import_module("admlops_ros.msg")
    except ImportError:
        admlops_ros.__path__ = pkgutil.extend_path(list(admlops_ros.__path__), "admlops_ros")
    try:
        return importlib.import_module("admlops_ros.msg")
    except ImportError as exc:
        raise ConversionError(
            f"admlops_ros messages are not built ({exc}); run scripts/build_catkin.sh and "
            "`source build/catkin_ws/devel/setup.bash` (or use scripts/with_ros_env.sh)") from exc


def yaw_to_quaternion(yaw: np.ndarray) -> np.ndarray:
    """Quaternions (x, y, z, w) of rotations by yaw about +z.

    Args:
        yaw: [N] radians, counter-clockwise about +z from +x.

    Returns:
        [N, 4] float64 (0, 0, sin(yaw/2), cos(yaw/2)).
    """
    half = 0.5 * np.asarray(yaw, dtype=np.float64).reshape(-1)
    quat = np.zeros((len(half), 4), np.float64)
    quat[:, 2] = np.sin(half)
    quat[:, 3] = np.cos(half)
    return quat


def quaternion_to_yaw(x: float, y: float, z: float, w: float) -> float:
    """Yaw (radians, about +z) of a quaternion; inverse of :func:`yaw_to_quaternion`."""
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def box_centers(boxes: np.ndarray) -> np.ndarray:
    """Geometric centres of mmdet3d LiDAR boxes.

    Args:
        boxes: [N, 7] (x, y, z_bottom, dx, dy, dz, yaw), metres.

    Returns:
        [N, 3] float64 (x, y, z_bottom + dz / 2).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    centers = boxes[:, :3].copy()
    centers[:, 2] += 0.5 * boxes[:, 5]
    return centers


def detections_to_msg(detections: Detections, header: Any, msgs: Optional[ModuleType] = None) -> Any:
    """An ``admlops_ros/DetectedObjectArray`` with the given header on the array and every object.

    Args:
        detections: boxes in the frame of ``header.frame_id`` (bottom-centre, mmdet3d).
        header: std_msgs/Header of the input cloud, copied unchanged.
        msgs: the generated message module (default :func:`import_messages`).

    Returns:
        admlops_ros.msg.DetectedObjectArray; pose.position is the box centre; ``velocity``
        (vx, vy, 0) m/s in the header frame with ``has_velocity`` when the detections have
        velocities.
    """
    msgs = msgs or import_messages()
    from geometry_msgs.msg import Point, Pose, Quaternion, Vector3  # noqa: WPS433

    has_velocity = detections.velocities is not None
    velocities = (detections.velocities.astype(np.float64).tolist() if has_velocity
                  else [(0.0, 0.0)] * len(detections))
    centers = box_centers(detections.boxes).tolist()
    quats = yaw_to_quaternion(detections.boxes[:, 6]).tolist()
    dims = detections.boxes[:, 3:6].astype(np.float64).tolist()
    scores = detections.scores.tolist()
    labels = detections.labels.tolist()
    names = detections.class_names
    objects = []
    rows = zip(centers, quats, dims, scores, labels, velocities)
    for i, (center, quat, dim, score, label, (vx, vy)) in enumerate(rows):
        objects.append(msgs.DetectedObject(
            header=header, id=i, label=int(label),
            label_name=names[label] if 0 <= label < len(names) else str(label),
            score=float(score),
            pose=Pose(position=Point(*center), orientation=Quaternion(*quat)),
            dimensions=Vector3(*dim), has_velocity=has_velocity,
            velocity=Vector3(vx, vy, 0.0)))
    return msgs.DetectedObjectArray(header=header, objects=objects)


def msg_to_detections(msg: Any, class_names: tuple = ()) -> Detections:
    """Inverse of :func:`detections_to_msg` (bottom-centre boxes), for tools and tests.

    ``velocities`` is [N, 2] when any object has ``has_velocity`` (objects without it get 0),
    else None; objects of bags recorded before the velocity fields existed have none.
    """
    rows, vel, any_velocity = [], [], False
    for obj in msg.objects:
        p, q, d = obj.pose.position, obj.pose.orientation, obj.dimensions
        rows.append((p.x, p.y, p.z - 0.5 * d.z, d.x, d.y, d.z,
                     quaternion_to_yaw(q.x, q.y, q.z, q.w)))
        if getattr(obj, "has_velocity", False):
            any_velocity = True
            vel.append((obj.velocity.x, obj.velocity.y))
        else:
            vel.append((0.0, 0.0))
    names = tuple(class_names) or tuple(sorted({o.label_name for o in msg.objects}))
    return Detections(np.array(rows, np.float32).reshape(-1, 7),
                      [o.score for o in msg.objects], [o.label for o in msg.objects], names,
                      velocities=np.array(vel, np.float32).reshape(-1, 2) if any_velocity
                      else None)


def stats_to_msg(header: Any, values: Dict[str, float], msgs: Optional[ModuleType] = None,
                 message: str = "DetectionStats") -> Any:
    """An ``admlops_ros/<message>`` stats message (DetectionStats, CameraDetectionStats); keys are
    the message's field names, missing -> NaN/0."""
    msgs = msgs or import_messages()
    stats = getattr(msgs, message)(header=header)
    for name, kind in zip(stats.__slots__, stats._slot_types):
        if name == "header":
            continue
        if kind == "float32":
            setattr(stats, name, float(values.get(name, float("nan"))))
        else:
            setattr(stats, name, int(values.get(name, 0)))
    return stats
