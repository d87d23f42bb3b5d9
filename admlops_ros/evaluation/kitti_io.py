"""KITTI object format I/O: velodyne .bin, label_2 .txt, calib .txt, camera <-> LiDAR boxes.

Box conventions follow mmdet3d 1.x:
- camera boxes (KITTI label order, rect camera frame, bottom centre): (x, y, z, l, h, w, ry)
  with ``(l, h, w)`` the KITTI ``dimensions`` (h, w, l) reordered;
- LiDAR boxes (bottom centre): (x, y, z, dx, dy, dz, yaw) with dx = l, dy = w, dz = h,
  yaw = -ry - pi/2 wrapped by ``limit_period(., 0.5, 2 pi)`` (and the same back), location
  through ``inverse(R0_rect @ Tr_velo_to_cam)``, exactly as ``Box3DMode.convert`` CAM <-> LIDAR.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from admlops_ros.camera.kitti_calib import (KittiCalib, KittiError, pad4 as _pad4,  # noqa: F401
                                            read_calib, write_calib)

if TYPE_CHECKING:  # pragma: no cover
    from admlops_ros.simulation import LidarFrame

LOG = logging.getLogger(__name__)
PathLike = Union[str, "os.PathLike[str]"]
IMAGE_SHAPE = (375, 1242)      # KITTI image (height, width), pixels
DONT_CARE = "DontCare"


def limit_period(val, offset: float = 0.5, period: float = math.pi):
    """mmdet3d ``limit_period``: ``val - floor(val / period + offset) * period``."""
    return val - np.floor(val / period + offset) * period


# ---------------------------------------------------------------------------------------------
# calib
# ---------------------------------------------------------------------------------------------
def nominal_calib() -> KittiCalib:
    """A typical KITTI calibration (that of KITTI object training frame 000000)."""
    return KittiCalib(
        P0=np.array([[707.0493, 0.0, 604.0814, 0.0], [0.0, 707.0493, 180.5066, 0.0],
                     [0.0, 0.0, 1.0, 0.0]]),
        P1=np.array([[707.0493, 0.0, 604.0814, -379.7842], [0.0, 707.0493, 180.5066, 0.0],
                     [0.0, 0.0, 1.0, 0.0]]),
        P2=np.array([[707.0493, 0.0, 604.0814, 45.75831], [0.0, 707.0493, 180.5066, -0.3454157],
                     [0.0, 0.0, 1.0, 0.004981016]]),
        P3=np.array([[707.0493, 0.0, 604.0814, -334.1081], [0.0, 707.0493, 180.5066, 2.33066],
                     [0.0, 0.0, 1.0, 0.003201153]]),
        R0_rect=np.array([[0.9999128, 0.01009263, -0.008511932],
                          [-0.01012729, 0.9999406, -0.004037671],
                          [0.008470675, 0.004123522, 0.9999556]]),
        Tr_velo_to_cam=np.array([[0.006927964, -0.9999722, -0.002757829, -0.02457729],
                                 [-0.001162982, 0.002749836, -0.9999955, -0.06127237],
                                 [0.9999753, 0.006931141, -0.001143899, -0.3321029]]),
        Tr_imu_to_velo=np.array([[0.9999976, 0.0007553071, -0.002035826, -0.8086759],
                                 [-0.0007854027, 0.9998898, -0.01482298, 0.3195559],
                                 [0.002024406, 0.01482454, 0.9998881, -0.7997231]]))


# ---------------------------------------------------------------------------------------------
# velodyne
# ---------------------------------------------------------------------------------------------
def read_velodyne(path: PathLike, num_features: int = 4) -> np.ndarray:
    """Reads a velodyne .bin: little-endian float32 (x, y, z, intensity) rows -> [N, 4].

    Raises:
        KittiError: the file size is not a multiple of ``num_features`` floats.
    """
    raw = np.fromfile(str(path), dtype="<f4")
    if raw.size % num_features:
        raise KittiError(f"{path}: {raw.size} floats is not a multiple of {num_features} "
                         "(x, y, z, intensity); is it a KITTI velodyne .bin?")
    return raw.reshape(-1, num_features).astype(np.float32, copy=False)


def write_velodyne(path: PathLike, points: np.ndarray) -> None:
    """Writes [N, 4] (x, y, z, intensity) points as a velodyne .bin (little-endian float32).

    Raises:
        KittiError: ``points`` is not [N, 4].
    """
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] != 4:
        raise KittiError(f"write_velodyne: points must be [N, 4] (x, y, z, intensity), "
                         f"got shape {pts.shape}")
    np.ascontiguousarray(pts, dtype="<f4").tofile(str(path))


# ---------------------------------------------------------------------------------------------
# label_2
# ---------------------------------------------------------------------------------------------
@dataclass
class KittiObject:
    """One line of a KITTI label_2 file (camera frame, metres, radians, pixels).

    Attributes:
        type: Car, Van, Truck, Pedestrian, Person_sitting, Cyclist, Tram, Misc or DontCare.
        truncated: 0 (inside the image) .. 1 (leaving it).
        occluded: 0 fully visible, 1 partly, 2 largely occluded, 3 unknown.
        alpha: observation angle, [-pi, pi].
        bbox: (left, top, right, bottom) 2D box in image 2, pixels.
        dimensions: (h, w, l) metres.
        location: (x, y, z) bottom centre in the rectified camera frame, metres.
        rotation_y: yaw about the camera y axis, [-pi, pi].
        score: detection confidence (result files only).
    """

    type: str
    truncated: float
    occluded: int
    alpha: float
    bbox: Tuple[float, float, float, float]
    dimensions: Tuple[float, float, float]
    location: Tuple[float, float, float]
    rotation_y: float
    score: Optional[float] = None


def _parse_label_line(line: str, where: str) -> KittiObject:
    parts = line.split()
    if len(parts) not in (15, 16):
        raise KittiError(f"{where}: a label line needs 15 or 16 columns (type truncated occluded "
                         f"alpha bbox[4] h w l x y z rotation_y [score]), got {len(parts)}")
    try:
        v = [float(p) for p in parts[1:]]
    except ValueError as exc:
        raise KittiError(f"{where}: non-number in a label line: {exc}") from None
    return KittiObject(type=parts[0], truncated=v[0], occluded=int(v[1]), alpha=v[2],
                       bbox=(v[3], v[4], v[5], v[6]), dimensions=(v[7], v[8], v[9]),
                       location=(v[10], v[11], v[12]), rotation_y=v[13],
                       score=v[14] if len(v) == 15 else None)


def read_label(path: PathLike) -> List[KittiObject]:
    """Reads a label_2 (or result) .txt; DontCare lines are kept (filter by ``type``)."""
    out = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip():
            out.append(_parse_label_line(line, f"{path}:{lineno}"))
    return out


def format_label_line(obj: KittiObject) -> str:
    """One label_2 line: 2D fields with 2 decimals, 3D fields and angles with 4."""
    head = (f"{obj.type} {obj.truncated:.2f} {int(obj.occluded)} {obj.alpha:.4f} "
            + " ".join(f"{v:.2f}" for v in obj.bbox) + " "
            + " ".join(f"{v:.4f}" for v in obj.dimensions) + " "
            + " ".join(f"{v:.4f}" for v in obj.location) + f" {obj.rotation_y:.4f}")
    if obj.score is not None:
        head += f" {obj.score:.4f}"
    return head


def write_label(path: PathLike, objects: Iterable[KittiObject]) -> None:
    """Writes a label_2 .txt (one line per object; empty file for no object)."""
    lines = [format_label_line(o) for o in objects]
    Path(path).write_text("".join(line + "\n" for line in lines))


# ---------------------------------------------------------------------------------------------
# boxes
# ---------------------------------------------------------------------------------------------
def _lidar2cam(calib: Union[KittiCalib, np.ndarray]) -> np.ndarray:
    if isinstance(calib, KittiCalib):
        return calib.lidar2cam
    mat = np.asarray(calib, np.float64)
    if mat.shape != (4, 4):
        raise KittiError(f"lidar2cam must be a KittiCalib or a [4, 4] matrix, got {mat.shape}")
    return mat


def objects_to_camera_boxes(objects: Sequence[KittiObject]) -> np.ndarray:
    """[N, 7] float64 camera boxes (x, y, z, l, h, w, ry) of label objects (mmdet3d order)."""
    if not objects:
        return np.zeros((0, 7), np.float64)
    loc = np.array([o.location for o in objects], np.float64)
    hwl = np.array([o.dimensions for o in objects], np.float64)
    ry = np.array([o.rotation_y for o in objects], np.float64)
    return np.concatenate([loc, hwl[:, [2, 0, 1]], ry[:, None]], axis=1)


def boxes_camera_to_lidar(boxes_cam: np.ndarray,
                          calib: Union[KittiCalib, np.ndarray]) -> np.ndarray:
    """Camera boxes (x, y, z, l, h, w, ry) -> LiDAR boxes (x, y, z, dx, dy, dz, yaw).

    Args:
        boxes_cam: [N, 7] rectified camera frame, bottom centre.
        calib: `KittiCalib` or the [4, 4] lidar2cam matrix (R0_rect @ Tr_velo_to_cam).

    Returns:
        [N, 7] float64 LiDAR boxes, bottom centre, yaw in [-pi, pi).
    """
    boxes = np.asarray(boxes_cam, np.float64).reshape(-1, 7)
    rt = np.linalg.inv(_lidar2cam(calib))
    xyz1 = np.concatenate([boxes[:, :3], np.ones((len(boxes), 1))], axis=1)
    xyz = (xyz1 @ rt.T)[:, :3]
    l, h, w = boxes[:, 3:4], boxes[:, 4:5], boxes[:, 5:6]
    yaw = limit_period(-boxes[:, 6:7] - np.pi / 2, 0.5, 2 * np.pi)
    return np.concatenate([xyz, l, w, h, yaw], axis=1)


def boxes_lidar_to_camera(boxes_lidar: np.ndarray,
                          calib: Union[KittiCalib, np.ndarray]) -> np.ndarray:
    """LiDAR boxes (x, y, z, dx, dy, dz, yaw) -> camera boxes (x, y, z, l, h, w, ry).

    Args:
        boxes_lidar: [N, 7] LiDAR frame, bottom centre.
        calib: `KittiCalib` or the [4, 4] lidar2cam matrix.

    Returns:
        [N, 7] float64 rectified-camera boxes, bottom centre, ry in [-pi, pi).
    """
    boxes = np.asarray(boxes_lidar, np.float64).reshape(-1, 7)
    rt = _lidar2cam(calib)
    xyz1 = np.concatenate([boxes[:, :3], np.ones((len(boxes), 1))], axis=1)
    xyz = (xyz1 @ rt.T)[:, :3]
    dx, dy, dz = boxes[:, 3:4], boxes[:, 4:5], boxes[:, 5:6]
    ry = limit_period(-boxes[:, 6:7] - np.pi / 2, 0.5, 2 * np.pi)
    return np.concatenate([xyz, dx, dz, dy, ry], axis=1)


def objects_to_lidar(objects: Sequence[KittiObject], calib: KittiCalib,
                     skip_dontcare: bool = True) -> Tuple[np.ndarray, List[str]]:
    """(LiDAR boxes [N, 7] float32, types) of label objects, DontCare skipped by default."""
    keep = [o for o in objects if not (skip_dontcare and o.type == DONT_CARE)]
    boxes = boxes_camera_to_lidar(objects_to_camera_boxes(keep), calib)
    return boxes.astype(np.float32), [o.type for o in keep]


def lidar_box_corners(boxes: np.ndarray) -> np.ndarray:
    """[N, 8, 3] corners of LiDAR boxes (bottom four, then top four)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    u = np.array([0.5, 0.5, -0.5, -0.5, 0.5, 0.5, -0.5, -0.5])
    v = np.array([0.5, -0.5, -0.5, 0.5, 0.5, -0.5, -0.5, 0.5])
    t = np.array([0, 0, 0, 0, 1, 1, 1, 1], np.float64)
    lu = u[None] * boxes[:, 3:4]
    lv = v[None] * boxes[:, 4:5]
    c, s = np.cos(boxes[:, 6:7]), np.sin(boxes[:, 6:7])
    x = boxes[:, 0:1] + c * lu - s * lv
    y = boxes[:, 1:2] + s * lu + c * lv
    z = boxes[:, 2:3] + t[None] * boxes[:, 5:6]
    return np.stack([x, y, z], axis=2)


def project_boxes_to_image(boxes_lidar: np.ndarray, calib: KittiCalib,
                           image_shape: Tuple[int, int] = IMAGE_SHAPE
                           ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2D boxes of LiDAR boxes in image 2, as mmdet3d's KITTI result conversion does.

    The 8 corners are projected with P2 (corners closer than 0.1 m in depth are clamped to
    0.1 m), the 2D box is their min/max clipped to the image.

    Args:
        boxes_lidar: [N, 7] LiDAR boxes.
        calib: calibration.
        image_shape: (height, width) pixels.

    Returns:
        (bbox [N, 4] (left, top, right, bottom) clipped, truncation [N] = 1 - clipped area /
        unclipped area, in_image [N] bool: centre in front of the camera and a visible part).
    """
    corners = lidar_box_corners(boxes_lidar)                       # [N, 8, 3]
    n = corners.shape[0]
    if n == 0:
        return np.zeros((0, 4)), np.zeros(0), np.zeros(0, bool)
    homo = np.concatenate([corners, np.ones((n, 8, 1))], axis=2)
    cam = homo @ calib.lidar2cam.T                                  # rect camera
    cam[..., 2] = np.maximum(cam[..., 2], 0.1)
    img = cam @ _pad4(calib.P2).T
    uv = img[..., :2] / img[..., 2:3]
    raw = np.concatenate([uv.min(axis=1), uv.max(axis=1)], axis=1)  # [N, 4]
    height, width = image_shape
    clipped = raw.copy()
    clipped[:, 0] = np.clip(raw[:, 0], 0.0, width)
    clipped[:, 2] = np.clip(raw[:, 2], 0.0, width)
    clipped[:, 1] = np.clip(raw[:, 1], 0.0, height)
    clipped[:, 3] = np.clip(raw[:, 3], 0.0, height)
    area_raw = np.maximum(raw[:, 2] - raw[:, 0], 1e-9) * np.maximum(raw[:, 3] - raw[:, 1], 1e-9)
    area_clip = (np.maximum(clipped[:, 2] - clipped[:, 0], 0.0)
                 * np.maximum(clipped[:, 3] - clipped[:, 1], 0.0))
    truncation = np.clip(1.0 - area_clip / area_raw, 0.0, 1.0)
    centre_depth = (np.concatenate([np.asarray(boxes_lidar, np.float64).reshape(-1, 7)[:, :3],
                                    np.ones((n, 1))], axis=1) @ calib.lidar2cam.T)[:, 2]
    in_image = ((centre_depth > 0.0) & (raw[:, 0] < width) & (raw[:, 1] < height)
                & (raw[:, 2] > 0) & (raw[:, 3] > 0) & (area_clip > 0))
    return clipped, truncation, in_image


def observation_angle(boxes_lidar: np.ndarray, rotation_y: np.ndarray) -> np.ndarray:
    """KITTI alpha = ry - atan2(x_cam, z_cam), as mmdet3d: -atan2(-y_lidar, x_lidar) + ry,
    wrapped to [-pi, pi)."""
    boxes = np.asarray(boxes_lidar, np.float64).reshape(-1, 7)
    alpha = -np.arctan2(-boxes[:, 1], boxes[:, 0]) + np.asarray(rotation_y, np.float64)
    return limit_period(alpha, 0.5, 2 * np.pi)


def lidar_boxes_to_objects(boxes_lidar: np.ndarray, names: Sequence[str], calib: KittiCalib,
                           occluded: Optional[Sequence[int]] = None,
                           scores: Optional[Sequence[float]] = None,
                           image_shape: Tuple[int, int] = IMAGE_SHAPE,
                           camera_fov_only: bool = True) -> List[KittiObject]:
    """Label objects for LiDAR boxes (2D box, truncation and alpha from ``calib``).

    Args:
        boxes_lidar: [N, 7] LiDAR boxes.
        names: KITTI type per box.
        calib: calibration (P2 and lidar2cam are used).
        occluded: KITTI occlusion level per box (default 0).
        scores: confidence per box (written as the 16th column) or None.
        image_shape: (height, width) of image 2.
        camera_fov_only: keep only boxes visible in image 2 (as KITTI labels do); otherwise
            boxes outside it get bbox (0, 0, 0, 0) and truncated 1.

    Returns:
        The objects, in box order (filtered when ``camera_fov_only``).
    """
    boxes = np.asarray(boxes_lidar, np.float64).reshape(-1, 7)
    if len(names) != len(boxes):
        raise KittiError(f"lidar_boxes_to_objects: {len(boxes)} boxes but {len(names)} names")
    cam = boxes_lidar_to_camera(boxes, calib)
    bbox, trunc, visible = project_boxes_to_image(boxes, calib, image_shape)
    alpha = observation_angle(boxes, cam[:, 6])
    out = []
    for i in range(len(boxes)):
        if camera_fov_only and not visible[i]:
            continue
        box2d = tuple(float(v) for v in bbox[i]) if visible[i] else (0.0, 0.0, 0.0, 0.0)
        out.append(KittiObject(
            type=str(names[i]), truncated=float(trunc[i]) if visible[i] else 1.0,
            occluded=int(occluded[i]) if occluded is not None else 0, alpha=float(alpha[i]),
            bbox=box2d,  # type: ignore[arg-type]
            dimensions=(float(cam[i, 4]), float(cam[i, 5]), float(cam[i, 3])),
            location=(float(cam[i, 0]), float(cam[i, 1]), float(cam[i, 2])),
            rotation_y=float(cam[i, 6]),
            score=float(scores[i]) if scores is not None else None))
    return out


# ---------------------------------------------------------------------------------------------
# frames
# ---------------------------------------------------------------------------------------------
def read_frame(root: PathLike, idx: int) -> Tuple[np.ndarray, List[KittiObject], KittiCalib]:
    """(points [N, 4], label objects, calib) of ``root/{velodyne,label_2,calib}/IDX``."""
    root = Path(root)
    name = f"{int(idx):06d}"
    points = read_velodyne(root / "velodyne" / f"{name}.bin")
    label_path = root / "label_2" / f"{name}.txt"
    objects = read_label(label_path) if label_path.exists() else []
    return points, objects, read_calib(root / "calib" / f"{name}.txt")


def write_frame(root: PathLike, idx: int, frame: "LidarFrame",
                calib: Optional[KittiCalib] = None, camera_fov_only: bool = True,
                image_shape: Tuple[int, int] = IMAGE_SHAPE) -> List[KittiObject]:
    """Writes a simulated frame as KITTI ``root/{velodyne,label_2,calib}/IDX``.

    Args:
        root: dataset split folder (created if missing), e.g. ``out/training``.
        idx: frame index (file stem ``%06d``).
        frame: a simulation `LidarFrame`.
        calib: calibration to use (default `nominal_calib()`); written to calib/.
        camera_fov_only: write only objects visible in image 2, as KITTI does.
        image_shape: image 2 (height, width), pixels.

    Returns:
        The label objects written. ``occluded`` is the simulator's occlusion level (0..3).
    """
    from admlops_ros.simulation.labels import occlusion_level

    calib = calib if calib is not None else nominal_calib()
    root = Path(root)
    name = f"{int(idx):06d}"
    for sub in ("velodyne", "label_2", "calib"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    write_velodyne(root / "velodyne" / f"{name}.bin", frame.points)
    objects = lidar_boxes_to_objects(frame.boxes, frame.names, calib,
                                     occluded=occlusion_level(frame.occlusion),
                                     image_shape=image_shape, camera_fov_only=camera_fov_only)
    write_label(root / "label_2" / f"{name}.txt", objects)
    write_calib(root / "calib" / f"{name}.txt", calib)
    LOG.debug("wrote KITTI frame %s under %s (%d objects)", name, root, len(objects))
    return objects
