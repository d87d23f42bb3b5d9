"""KITTI object calibration files (``calib/*.txt``): one reader for the camera node and the
evaluation/data tooling.

Keys: P0..P3 [3, 4] rectified projections (P2 = left colour camera, image_2), R0_rect [3, 3],
Tr_velo_to_cam [3, 4] LiDAR -> unrectified camera 0, Tr_imu_to_velo [3, 4]. LiDAR -> rectified
camera is ``R0_rect @ Tr_velo_to_cam`` (mmdet3d's lidar2cam); pixels of image_2 are
``P2 @ lidar2cam`` applied to homogeneous LiDAR points.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np

from admlops_ros.errors import AdmlopsError

PathLike = Union[str, "os.PathLike[str]"]


class KittiError(AdmlopsError, ValueError):
    """A KITTI file or array is malformed."""


def pad4(mat: np.ndarray) -> np.ndarray:
    """3x3 or 3x4 -> 4x4 homogeneous matrix."""
    out = np.eye(4, dtype=np.float64)
    out[:mat.shape[0], :mat.shape[1]] = mat
    return out


@dataclass
class KittiCalib:
    """One frame's calibration (KITTI object ``calib/*.txt``).

    Attributes:
        P0, P1, P2, P3: [3, 4] projection matrices of the rectified cameras (P2 = left colour).
        R0_rect: [3, 3] rectifying rotation of camera 0.
        Tr_velo_to_cam: [3, 4] LiDAR -> (unrectified) camera 0.
        Tr_imu_to_velo: [3, 4] IMU -> LiDAR.
    """

    P0: np.ndarray
    P1: np.ndarray
    P2: np.ndarray
    P3: np.ndarray
    R0_rect: np.ndarray
    Tr_velo_to_cam: np.ndarray
    Tr_imu_to_velo: np.ndarray = field(default_factory=lambda: np.eye(4)[:3].copy())

    @property
    def lidar2cam(self) -> np.ndarray:
        """[4, 4] LiDAR -> rectified camera (``R0_rect @ Tr_velo_to_cam``, mmdet3d lidar2cam)."""
        return pad4(self.R0_rect) @ pad4(self.Tr_velo_to_cam)

    @property
    def lidar2img(self) -> np.ndarray:
        """[4, 4] LiDAR -> image 2 pixels (homogeneous; divide by the third row)."""
        return pad4(self.P2) @ self.lidar2cam


_CALIB_KEYS = {"P0": (3, 4), "P1": (3, 4), "P2": (3, 4), "P3": (3, 4), "R0_rect": (3, 3),
               "Tr_velo_to_cam": (3, 4), "Tr_imu_to_velo": (3, 4)}
_CALIB_ALIASES = {"R_rect": "R0_rect", "R0": "R0_rect", "Tr_velo_cam": "Tr_velo_to_cam",
                  "Tr_imu_velo": "Tr_imu_to_velo"}


def read_calib(path: PathLike) -> KittiCalib:
    """Reads a KITTI object calib file.

    Raises:
        KittiError: a required key (P2, R0_rect, Tr_velo_to_cam) is missing or malformed.
    """
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise KittiError(f"cannot read KITTI calib {path}: {exc}") from None
    values = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if ":" not in line:
            continue
        key, rest = line.split(":", 1)
        key = _CALIB_ALIASES.get(key.strip(), key.strip())
        if key not in _CALIB_KEYS:
            continue
        shape = _CALIB_KEYS[key]
        try:
            nums = np.array([float(v) for v in rest.split()], np.float64)
        except ValueError as exc:
            raise KittiError(f"{path}:{lineno}: {key} has a non-number: {exc}") from None
        if nums.size != shape[0] * shape[1]:
            raise KittiError(f"{path}:{lineno}: {key} needs {shape[0] * shape[1]} numbers, "
                             f"got {nums.size}")
        if not np.all(np.isfinite(nums)):
            raise KittiError(f"{path}:{lineno}: {key} has non-finite values")
        values[key] = nums.reshape(shape)
    for key in ("P2", "R0_rect", "Tr_velo_to_cam"):
        if key not in values:
            raise KittiError(f"{path}: calib key {key!r} missing (needed for LiDAR <-> camera)")
    for key in ("P0", "P1", "P3"):
        values.setdefault(key, values["P2"].copy())
    values.setdefault("Tr_imu_to_velo", np.eye(4)[:3].copy())
    return KittiCalib(**values)


def write_calib(path: PathLike, calib: KittiCalib) -> None:
    """Writes a KITTI object calib file (all seven keys, 12 significant digits)."""
    lines = []
    for key in _CALIB_KEYS:
        mat = np.asarray(getattr(calib, key), np.float64).reshape(-1)
        lines.append(key + ": " + " ".join(f"{v:.12e}" for v in mat))
    Path(path).write_text("\n".join(lines) + "\n")
