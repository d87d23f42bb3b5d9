"""Anchors of mmdet3d AlignedAnchor3DRangeGenerator (size_per_range=True), cached per parameters."""
from __future__ import annotations

import functools
from typing import Sequence, Tuple

import numpy as np

from admlops_ros.errors import AdmlopsError

__all__ = ["AnchorError", "aligned_anchors", "num_base_anchors"]


class AnchorError(AdmlopsError, ValueError):
    """Raised for inconsistent anchor parameters (ranges, sizes, rotations, feature map)."""


def _tuple2d(values, name: str, width: int) -> Tuple[Tuple[float, ...], ...]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1 and arr.size == width:
        arr = arr.reshape(1, width)
    if arr.ndim != 2 or arr.shape[1] != width or arr.shape[0] == 0:
        raise AnchorError(
            f"anchors.{name}: expected a list of [{width}] lists, got shape {arr.shape}")
    return tuple(tuple(float(v) for v in row) for row in arr)


def num_base_anchors(sizes: Sequence[Sequence[float]], rotations: Sequence[float]) -> int:
    """Anchors per feature-map cell: number of sizes * number of rotations."""
    return len(_tuple2d(sizes, "sizes", 3)) * len(tuple(rotations))


def _centers(lo: float, hi: float, n: int, align_corner: bool) -> np.ndarray:
    """First ``n`` of ``n + 1`` evenly spaced grid lines, shifted by half a cell unless aligned."""
    lines = np.linspace(lo, hi, n + 1)
    if not align_corner:
        lines = lines + (lines[1] - lines[0]) / 2
    return lines[:n]


@functools.lru_cache(maxsize=16)
def _anchors_cached(feature_map_size: Tuple[int, int],
                    ranges: Tuple[Tuple[float, ...], ...],
                    sizes: Tuple[Tuple[float, ...], ...],
                    rotations: Tuple[float, ...],
                    align_corner: bool,
                    scale: float) -> np.ndarray:
    h, w = feature_map_size
    n_size = len(sizes)
    n_rot = len(rotations)
    out = np.empty((h, w, n_size, n_rot, 7), dtype=np.float64)
    rot = np.asarray(rotations, dtype=np.float64)
    for s, (rng, size) in enumerate(zip(ranges, sizes)):
        xs = _centers(rng[0], rng[3], w, align_corner)
        ys = _centers(rng[1], rng[4], h, align_corner)
        zs = _centers(rng[2], rng[5], 1, align_corner)
        out[:, :, s, :, 0] = xs[None, :, None]
        out[:, :, s, :, 1] = ys[:, None, None]
        out[:, :, s, :, 2] = zs[0]
        out[:, :, s, :, 3:6] = np.asarray(size, dtype=np.float64) * scale
        out[:, :, s, :, 6] = rot[None, None, :]
    anchors = out.reshape(-1, 7).astype(np.float32)
    anchors.setflags(write=False)
    return anchors


def aligned_anchors(feature_map_size: Sequence[int],
                    ranges: Sequence[Sequence[float]],
                    sizes: Sequence[Sequence[float]],
                    rotations: Sequence[float],
                    align_corner: bool = False,
                    scale: float = 1.0) -> np.ndarray:
    """Anchors of one feature level, exactly as mmdet3d ``AlignedAnchor3DRangeGenerator``.

    For range/size pair s the grid lines are ``linspace(min, max, n + 1)`` per axis, shifted by
    half a cell (unless ``align_corner``) and the first n are the centres. A range is
    (x_min, y_min, z_min, x_max, y_max, z_max) in the LiDAR frame; the anchor z is the z of
    that range, used as the bottom of the box (LiDAR boxes are bottom-centre).

    Args:
        feature_map_size: (H, W) of the head output (H along y, W along x).
        ranges: one [6] range per size, or a single range shared by all sizes (metres).
        sizes: [S, 3] anchor sizes (dx, dy, dz) in metres.
        rotations: [R] yaw angles in radians.
        align_corner: put anchor centres on grid corners instead of cell centres.
        scale: size multiplier of this level (mmdet3d ``scales``).

    Returns:
        [H * W * S * R, 7] float32 (x, y, z, dx, dy, dz, yaw), ordered (H, W, size, rotation),
        i.e. anchor index = (h * W + w) * S * R + s * R + r. Read-only (shared cache).

    Raises:
        AnchorError: on inconsistent parameters.
    """
    fms = tuple(int(v) for v in feature_map_size)
    if len(fms) != 2 or min(fms) <= 0:
        raise AnchorError(
            f"anchors.feature_map_size: expected [H, W] with positive sizes, got "
            f"{list(feature_map_size)}")
    sizes_t = _tuple2d(sizes, "sizes", 3)
    ranges_t = _tuple2d(ranges, "ranges", 6)
    if len(ranges_t) != len(sizes_t):
        if len(ranges_t) != 1:
            raise AnchorError(
                f"anchors.ranges: need one range per size or a single range, got "
                f"{len(ranges_t)} ranges for {len(sizes_t)} sizes")
        ranges_t = ranges_t * len(sizes_t)
    rot_t = tuple(float(r) for r in np.asarray(rotations, dtype=np.float64).reshape(-1))
    if not rot_t:
        raise AnchorError("anchors.rotations: need at least one rotation, e.g. [0, 1.57]")
    return _anchors_cached(fms, ranges_t, sizes_t, rot_t, bool(align_corner), float(scale))
