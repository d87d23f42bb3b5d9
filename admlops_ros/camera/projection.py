"""Lidar 3D boxes into a camera image: calibration, near-plane clipped projection, 2D-3D fusion."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from admlops_ros.camera.kitti_calib import KittiError, read_calib
from admlops_ros.errors import AdmlopsError
from admlops_ros.lidar.geometry import box_corners_3d

#: Depth (m, camera z) below which box geometry is clipped away: points behind or in the
#: camera's plane have no image position.
NEAR_PLANE_M = 0.1
#: The 12 edges of a box as corner index pairs (box_corners_3d order: bit 2 = +dx, bit 1 = +dy
#: ... see lidar/geometry.box_corners_3d): 4 bottom, 4 top, 4 vertical.
BOX_EDGES = np.array([[0, 3], [3, 7], [7, 4], [4, 0],     # bottom (z = 0)
                      [1, 2], [2, 6], [6, 5], [5, 1],     # top (z = dz)
                      [0, 1], [3, 2], [7, 6], [4, 5]],    # vertical
                     np.int64)
_KITTI_SHAPES = {"P2": (3, 4), "R0_rect": (3, 3), "Tr_velo_to_cam": (3, 4)}


class ProjectionError(AdmlopsError, ValueError):
    """Calibration that cannot project (missing/malformed matrix, non-finite or singular)."""


def _homogeneous(mat: np.ndarray) -> np.ndarray:
    out = np.eye(4, dtype=np.float64)
    out[:mat.shape[0], :mat.shape[1]] = mat
    return out


def _matrix(values: Union[Sequence[float], np.ndarray], shape: Tuple[int, int],
            name: str) -> np.ndarray:
    arr = np.asarray(values, np.float64)
    if arr.size != shape[0] * shape[1]:
        raise ProjectionError(f"{name} needs {shape[0] * shape[1]} numbers ({shape[0]}x"
                              f"{shape[1]}), got {arr.size}")
    arr = arr.reshape(shape)
    if not np.all(np.isfinite(arr)):
        raise ProjectionError(f"{name} has non-finite values: {arr.tolist()}")
    return arr


@dataclass(frozen=True)
class CameraModel:
    """A pinhole camera and where it sits relative to the lidar.

    Attributes:
        projection: [3, 4] camera frame -> homogeneous pixels (KITTI P2, CameraInfo P, or K with a
            zero fourth column); pixel (u, v) = (p0 / p2, p1 / p2).
        lidar_to_camera: [4, 4] lidar frame (x forward, y left, z up) -> camera frame of
            ``projection`` (optical: x right, y down, z forward; KITTI: R0_rect @ Tr_velo_to_cam).
        image_size: (height, width) pixels, or None (no clipping to the image).
        near: near-plane depth in metres (camera z).
    """

    projection: np.ndarray
    lidar_to_camera: np.ndarray
    image_size: Optional[Tuple[int, int]] = None
    near: float = NEAR_PLANE_M
    lidar_to_image: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        proj = _matrix(self.projection, (3, 4), "projection (P)")
        ext = _matrix(self.lidar_to_camera, (4, 4), "lidar_to_camera")
        if not np.allclose(ext[3], [0.0, 0.0, 0.0, 1.0]):
            raise ProjectionError(f"lidar_to_camera's last row must be 0 0 0 1, got {ext[3]}")
        if abs(np.linalg.det(ext[:3, :3])) < 1e-6:
            raise ProjectionError("lidar_to_camera's rotation is singular; give the 4x4 "
                                  "lidar -> camera transform (row-major)")
        if proj[2, 2] == 0.0 and not np.any(proj[2, :3]):
            raise ProjectionError(f"projection (P) third row {proj[2].tolist()} maps every point "
                                  "to infinity; use CameraInfo P or K of a calibrated camera")
        if self.near <= 0:
            raise ProjectionError(f"near plane {self.near} m must be > 0")
        object.__setattr__(self, "projection", proj)
        object.__setattr__(self, "lidar_to_camera", ext)
        object.__setattr__(self, "lidar_to_image", proj @ ext)
        if self.image_size is not None:
            h, w = (int(v) for v in self.image_size)
            object.__setattr__(self, "image_size", (h, w))

    @classmethod
    def from_kitti(cls, calib: Union[str, Path, Mapping[str, np.ndarray]],
                   image_size: Optional[Tuple[int, int]] = None) -> "CameraModel":
        """The left colour camera (image_2) of a KITTI object calib file (P2, R0_rect,
        Tr_velo_to_cam).

        Args:
            calib: path of a calib .txt, or a mapping with those three keys.
            image_size: (height, width), e.g. (375, 1242).

        Raises:
            ProjectionError: a key is missing or has the wrong number of values.
        """
        if isinstance(calib, (str, Path)):
            try:
                kc = read_calib(calib)
            except KittiError as exc:
                raise ProjectionError(str(exc)) from None
            values = {"P2": kc.P2, "R0_rect": kc.R0_rect, "Tr_velo_to_cam": kc.Tr_velo_to_cam}
        else:
            values = dict(calib)
        missing = [k for k in _KITTI_SHAPES if k not in values]
        if missing:
            raise ProjectionError(f"KITTI calib lacks {', '.join(missing)} (needs P2, R0_rect, "
                                  "Tr_velo_to_cam)")
        mats = {k: _matrix(values[k], shape, k) for k, shape in _KITTI_SHAPES.items()}
        return cls(mats["P2"], _homogeneous(mats["R0_rect"]) @ _homogeneous(mats["Tr_velo_to_cam"]),
                   image_size)

    @classmethod
    def from_camera_info(cls, info: object, lidar_to_camera: np.ndarray,
                         matrix: str = "P") -> "CameraModel":
        """From a sensor_msgs/CameraInfo (``K``, ``P``, ``width``, ``height``).

        Args:
            info: the CameraInfo message (or any object with those fields).
            lidar_to_camera: [4, 4] lidar -> camera optical frame (the tf from the lidar frame to
                the CameraInfo's frame_id).
            matrix: "P" (rectified images; falls back to K when P is all zero) or "K" (raw
                images; lens distortion is not applied).

        Raises:
            ProjectionError: K and P both zero or malformed.
        """
        p = np.asarray(getattr(info, "P", ()), np.float64).reshape(-1)
        k = np.asarray(getattr(info, "K", ()), np.float64).reshape(-1)
        if matrix == "P" and p.size == 12 and np.any(p):
            proj = p.reshape(3, 4)
        elif k.size == 9 and np.any(k):
            proj = np.concatenate([k.reshape(3, 3), np.zeros((3, 1))], axis=1)
        else:
            raise ProjectionError(f"CameraInfo has no calibration (K and P are zero); calibrate "
                                  f"the camera or give ~kitti_calib (matrix {matrix!r})")
        height, width = int(getattr(info, "height", 0)), int(getattr(info, "width", 0))
        return cls(proj, lidar_to_camera, (height, width) if height and width else None)

    def with_image_size(self, image_size: Tuple[int, int]) -> "CameraModel":
        """The same camera clipped to images of (height, width)."""
        return CameraModel(self.projection, self.lidar_to_camera, tuple(image_size), self.near)

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """[..., 3] lidar points -> [..., 3] camera-frame points (metres)."""
        pts = np.asarray(points, np.float64)
        return pts @ self.lidar_to_camera[:3, :3].T + self.lidar_to_camera[:3, 3]

    def camera_to_pixels(self, cam: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """([..., 2] pixels, [..., ] projective depth) of camera-frame points.

        Depth is the third homogeneous coordinate (camera z for KITTI P2 up to its tiny
        translation); pixels of points with depth <= 0 are meaningless (NaN).
        """
        hom = cam @ self.projection[:, :3].T + self.projection[:, 3]
        depth = hom[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = hom[..., :2] / np.where(depth > 0, depth, np.nan)[..., None]
        return uv, depth

    def project_points(self, points: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """([N, 2] pixels (NaN behind the camera), [N] camera depth z in metres) of lidar points."""
        cam = self.to_camera(np.asarray(points, np.float64).reshape(-1, 3))
        uv, _ = self.camera_to_pixels(cam)
        return uv, cam[:, 2]

    def project_boxes(self, boxes3d: np.ndarray) -> "ProjectedBoxes":
        """Lidar boxes -> 2D boxes, with box edges clipped against the near plane.

        Args:
            boxes3d: [N, 7] lidar frame (x, y, z, dx, dy, dz, yaw), z at the bottom centre
                (``Detections.boxes``); metres, radians.

        Returns:
            ProjectedBoxes (see there).
        """
        return project_boxes(self, boxes3d)


@dataclass
class ProjectedBoxes:
    """Lidar boxes seen by a camera.

    Attributes:
        boxes2d: [N, 4] float64 (x1, y1, x2, y2) pixels: the bounding box of the box's part in
            front of the near plane, clipped to the image (when the size is known); zeros where
            not ``valid``.
        unclipped: [N, 4] the same before clipping to the image (NaN where nothing is in front).
        valid: [N] bool: part of the box is in front of the near plane and inside the image.
        edges: [N, 12, 2, 2] float64 pixel end points of the 12 box edges after near-plane
            clipping (for wireframes); NaN where ``edge_visible`` is false.
        edge_visible: [N, 12] bool: the edge has a part in front of the near plane.
        depth: [N] camera depth (m) of the box centre.
    """

    boxes2d: np.ndarray
    unclipped: np.ndarray
    valid: np.ndarray
    edges: np.ndarray
    edge_visible: np.ndarray
    depth: np.ndarray

    def __len__(self) -> int:
        return len(self.valid)


def project_boxes(camera: CameraModel, boxes3d: np.ndarray) -> ProjectedBoxes:
    """See :meth:`CameraModel.project_boxes`.

    Every edge a-b with one end behind the near plane (z < near) is cut at z = near; the
    projected 2D box is the min/max of the corners in front plus these cut points (the vertices
    of the box clipped by the near plane), so a box reaching behind the camera still gets the
    2D box of its visible part instead of one spanning through infinity.
    """
    boxes = np.asarray(boxes3d, np.float64).reshape(-1, 7)
    n = len(boxes)
    centres = boxes[:, :3].copy()
    centres[:, 2] += 0.5 * boxes[:, 5]
    depth = camera.to_camera(centres)[:, 2] if n else np.zeros(0)
    if n == 0:
        return ProjectedBoxes(np.zeros((0, 4)), np.zeros((0, 4)), np.zeros(0, bool),
                              np.zeros((0, 12, 2, 2)), np.zeros((0, 12), bool), depth)
    cam = camera.to_camera(box_corners_3d(boxes))                  # [N, 8, 3]
    near = camera.near
    a = cam[:, BOX_EDGES[:, 0]]                                   # [N, 12, 3]
    b = cam[:, BOX_EDGES[:, 1]]
    za, zb = a[..., 2], b[..., 2]
    in_a, in_b = za >= near, zb >= near
    visible = in_a | in_b
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.clip((near - za) / (zb - za), 0.0, 1.0)[..., None]
    cut = a + t * (b - a)                                         # on the near plane
    a_clip = np.where(in_a[..., None], a, cut)
    b_clip = np.where(in_b[..., None], b, cut)
    uv_a, _ = camera.camera_to_pixels(a_clip)
    uv_b, _ = camera.camera_to_pixels(b_clip)
    hidden = ~visible
    uv_a[hidden] = np.nan
    uv_b[hidden] = np.nan
    edges = np.stack([uv_a, uv_b], axis=2)                        # [N, 12, 2, 2]
    pts = edges.reshape(n, 24, 2)
    any_pt = visible.any(axis=1)
    unclipped = np.full((n, 4), np.nan)
    if any_pt.any():
        with np.errstate(invalid="ignore"):
            unclipped[any_pt, :2] = np.nanmin(pts[any_pt], axis=1)
            unclipped[any_pt, 2:] = np.nanmax(pts[any_pt], axis=1)
    boxes2d = np.nan_to_num(unclipped.copy(), nan=0.0)
    valid = any_pt & np.all(np.isfinite(unclipped), axis=1)
    if camera.image_size is not None:
        height, width = camera.image_size
        boxes2d[:, [0, 2]] = np.clip(boxes2d[:, [0, 2]], 0.0, width)
        boxes2d[:, [1, 3]] = np.clip(boxes2d[:, [1, 3]], 0.0, height)
    valid &= (boxes2d[:, 2] > boxes2d[:, 0]) & (boxes2d[:, 3] > boxes2d[:, 1])
    boxes2d[~valid] = 0.0
    return ProjectedBoxes(boxes2d, unclipped, valid, edges, visible, depth)


def transform_matrix(translation: Sequence[float], quaternion: Sequence[float]) -> np.ndarray:
    """[4, 4] rigid transform from a translation (x, y, z) and a quaternion (x, y, z, w).

    Raises:
        ProjectionError: non-finite values or a zero quaternion.
    """
    t = np.asarray(translation, np.float64).reshape(3)
    q = np.asarray(quaternion, np.float64).reshape(4)
    norm = float(np.linalg.norm(q))
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(q))) or norm < 1e-9:
        raise ProjectionError(f"transform has a non-finite translation {t.tolist()} or a zero/"
                              f"non-finite quaternion {q.tolist()}")
    x, y, z, w = q / norm
    rot = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                    [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                    [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = t
    return out


def matrix_to_quaternion(rotation: np.ndarray) -> Tuple[float, float, float, float]:
    """Unit quaternion (x, y, z, w) of a [3, 3] rotation matrix (inverse of :func:`transform_matrix`).

    The largest of w, x, y, z is computed first (numerically stable for every rotation).
    """
    m = np.asarray(rotation, np.float64).reshape(3, 3)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > max(m[0, 0], m[1, 1], m[2, 2]):
        w = 0.5 * math.sqrt(1.0 + trace)
        x, y, z = (m[2, 1] - m[1, 2]) / (4 * w), (m[0, 2] - m[2, 0]) / (4 * w), \
            (m[1, 0] - m[0, 1]) / (4 * w)
    elif m[0, 0] >= m[1, 1] and m[0, 0] >= m[2, 2]:
        x = 0.5 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        w, y, z = (m[2, 1] - m[1, 2]) / (4 * x), (m[0, 1] + m[1, 0]) / (4 * x), \
            (m[0, 2] + m[2, 0]) / (4 * x)
    elif m[1, 1] >= m[2, 2]:
        y = 0.5 * math.sqrt(1.0 - m[0, 0] + m[1, 1] - m[2, 2])
        w, x, z = (m[0, 2] - m[2, 0]) / (4 * y), (m[0, 1] + m[1, 0]) / (4 * y), \
            (m[1, 2] + m[2, 1]) / (4 * y)
    else:
        z = 0.5 * math.sqrt(1.0 - m[0, 0] - m[1, 1] + m[2, 2])
        w, x, y = (m[1, 0] - m[0, 1]) / (4 * z), (m[0, 2] + m[2, 0]) / (4 * z), \
            (m[1, 2] + m[2, 1]) / (4 * z)
    return float(x), float(y), float(z), float(w)


# ---------------------------------------------------------------------------------------------
# fusion
# ---------------------------------------------------------------------------------------------
def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N, M] IoU of axis-aligned (x1, y1, x2, y2) boxes (0 where an area is empty)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


@dataclass
class FusionResult:
    """Which 2D detections match which projected 3D objects.

    Attributes:
        object_index: [N2d] int64: the matched 3D object of each 2D detection, -1 when none.
        iou: [N2d] float64 IoU of each match (0 when none).
        confirmed: [N3d] bool: the 3D object has a matching 2D detection.
    """

    object_index: np.ndarray
    iou: np.ndarray
    confirmed: np.ndarray

    @property
    def pairs(self) -> Tuple[Tuple[int, int, float], ...]:
        """(2D index, 3D index, IoU) of every match, by 2D index."""
        return tuple((int(i), int(j), float(self.iou[i]))
                     for i, j in enumerate(self.object_index) if j >= 0)


def fuse(boxes2d: np.ndarray, names2d: Sequence[str], projected: ProjectedBoxes,
         names3d: Sequence[str], iou_threshold: float = 0.5,
         class_map: Optional[Mapping[str, str]] = None) -> FusionResult:
    """Greedy one-to-one association of 2D detections and projected 3D objects by IoU.

    Pairs are taken in descending IoU; a pair needs IoU >= ``iou_threshold``, the same class
    name (after ``class_map``, applied to both sides, e.g. {"Van": "Car"}) and a valid
    projection; each detection and each object is used once.

    Args:
        boxes2d: [N2d, 4] (x1, y1, x2, y2) pixels of the camera detections.
        names2d: class name of each 2D detection.
        projected: the 3D objects projected into the same image.
        names3d: class name of each 3D object.
        iou_threshold: minimum IoU in (0, 1].
        class_map: names mapped before comparing; None compares names as they are.

    Raises:
        ProjectionError: lengths disagree or the threshold is outside (0, 1].
    """
    boxes2d = np.asarray(boxes2d, np.float64).reshape(-1, 4)
    n2, n3 = len(boxes2d), len(projected)
    if len(names2d) != n2 or len(names3d) != n3:
        raise ProjectionError(f"fuse: {n2} 2D boxes with {len(names2d)} names, {n3} 3D objects "
                              f"with {len(names3d)} names")
    if not 0.0 < iou_threshold <= 1.0:
        raise ProjectionError(f"fusion IoU threshold {iou_threshold} must be in (0, 1]")
    mapping = dict(class_map or {})
    c2 = [mapping.get(str(n), str(n)) for n in names2d]
    c3 = [mapping.get(str(n), str(n)) for n in names3d]
    object_index = np.full(n2, -1, np.int64)
    ious = np.zeros(n2, np.float64)
    confirmed = np.zeros(n3, bool)
    if n2 and n3:
        iou = iou_matrix(boxes2d, projected.boxes2d)
        same = np.array([[x == y for y in c3] for x in c2], bool)
        iou = np.where(same & projected.valid[None, :], iou, 0.0)
        rows, cols = np.nonzero(iou >= iou_threshold)
        order = np.argsort(-iou[rows, cols], kind="stable")
        for i, j in zip(rows[order], cols[order]):
            if object_index[i] >= 0 or confirmed[j]:
                continue
            object_index[i] = j
            ious[i] = iou[i, j]
            confirmed[j] = True
    return FusionResult(object_index, ious, confirmed)


__all__ = ["NEAR_PLANE_M", "BOX_EDGES", "ProjectionError", "CameraModel", "ProjectedBoxes",
           "project_boxes", "transform_matrix", "iou_matrix",
           "FusionResult", "fuse"]
