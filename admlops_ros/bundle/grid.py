"""The voxel grid and head feature-map sizes a model's numbers imply (one formula for each)."""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import numpy as np

from admlops_ros.errors import AdmlopsError


class GridError(AdmlopsError, ValueError):
    """Voxel sizes and ranges that give no finite grid (callers name their field)."""


def voxel_grid_size(voxel_size: Sequence[float],
                    point_cloud_range: Sequence[float]) -> Tuple[int, int, int]:
    """(nx, ny, nz) voxel cells, exactly as mmcv's hard-voxelization kernel computes them.

    mmcv (ops/csrc/.../voxelization.cpp) holds voxel_size and the range as float32 and takes
    C ``round((max - min) / size)``: float32 arithmetic, halves rounded away from zero. So a
    0.2 m voxel over a 0.5 m range gives 3 cells (float32 0.5 / 0.2 is exactly 2.5), where
    Python's ``round`` (half to even) would say 2. Points are then kept while
    ``floor((p - min) / size) < cells``, i.e. up to ``min + cells * size`` (past ``max`` when
    the span is not a whole number of voxels).

    Args:
        voxel_size: (x, y, z) metres, positive.
        point_cloud_range: (x_min, y_min, z_min, x_max, y_max, z_max) metres.

    Returns:
        Cells per axis; zero or negative when max <= min (callers reject that).

    Raises:
        GridError: the cell count is not a finite number in float32 (a voxel size that is 0 as
            float32, or a span that overflows float32).
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        size = np.asarray(voxel_size, dtype=np.float32)
        rng = np.asarray(point_cloud_range, dtype=np.float32)
        cells = (rng[3:] - rng[:3]) / size  # float32, as the kernel
    if not (np.all(size > 0) and np.all(np.isfinite(cells))):
        raise GridError(f"voxel_size {list(map(float, voxel_size))} over point_cloud_range "
                        f"{list(map(float, point_cloud_range))} gives {cells.tolist()} cells "
                        "in float32 (as mmcv computes them): not a finite number of voxels")
    return tuple(int(math.copysign(math.floor(abs(float(c)) + 0.5), float(c)))
                 for c in cells)  # type: ignore[return-value]


def conv_output_size(size: int, stride: int) -> int:
    """Output length of a 3x3 convolution with padding 1 and this stride: ceil(size / stride)."""
    return -(-int(size) // int(stride))


def second_fpn_level_sizes(canvas_shape: Sequence[int], layer_strides: Sequence[int],
                           upsample_strides: Sequence[float]) -> List[Tuple[int, int]]:
    """(H, W) of each SECOND + SECONDFPN level before the neck concatenates them.

    SECOND blocks open with a 3x3 convolution, padding 1, stride s (size -> ceil(size / s));
    SECONDFPN brings level i to a common size with a transposed convolution of kernel =
    stride = u (size * u), or for u < 1 a convolution of kernel = stride = round(1 / u)
    (floor(size * u)). The neck needs every level to agree.

    Args:
        canvas_shape: (ny, nx) of the PointPillarsScatter canvas.
        layer_strides: SECOND ``layer_strides``.
        upsample_strides: SECONDFPN ``upsample_strides``, one per stride.
    """
    sizes = []
    cur = [int(c) for c in canvas_shape]
    for stride, up in zip(layer_strides, upsample_strides):
        cur = [conv_output_size(c, stride) for c in cur]
        if up >= 1:
            sizes.append((cur[0] * int(up), cur[1] * int(up)))
        else:
            k = int(round(1 / up))
            sizes.append((cur[0] // k, cur[1] // k))
    return sizes


def feature_map_stride(canvas_shape: Sequence[int],
                       feature_map_size: Sequence[int]) -> Optional[int]:
    """The smallest integer s with ceil(canvas / s) == feature map on both axes, else None.

    ceil(c / s) == f holds for c / f <= s < c / (f - 1), so the answer is the smallest integer
    in the intersection of those intervals (no search: sizes can be huge).
    """
    lo, hi = 1, math.inf
    for c, f in zip(canvas_shape, feature_map_size):
        c, f = int(c), int(f)
        if c < 1 or f < 1 or f > c:
            return None
        lo = max(lo, -(-c // f))
        if f > 1:
            hi = min(hi, (c - 1) // (f - 1))
    return lo if lo <= hi else None


# Sizes a hard voxelization can have (the spec checks them at load, the voxelizer when built):
# coors are int32 engine inputs, the voxelizer indexes cells in int64, and a frame's voxels are
# [voxels, max_points, C] float32. mmdet3d configs use 5..100 points and 12k..160k voxels.
MAX_GRID_AXIS = (1 << 31) - 1
MAX_GRID_CELLS = 1 << 62
MAX_VOXELS = 1 << 22
MAX_POINTS_PER_VOXEL = 1 << 12
MAX_VOXEL_TENSOR_BYTES = 1 << 32


def voxel_limit_problem(grid: Sequence[int], max_points: int, max_voxels: int,
                        num_features: Optional[int] = None) -> Optional[str]:
    """What makes a voxelization too large to run, or None when it fits.

    Args:
        grid: (nx, ny, nz) cells (``voxel_grid_size``).
        max_points, max_voxels: points per voxel and voxels per frame.
        num_features: C, when known (for the size of the voxel tensor).
    """
    grid = [int(g) for g in grid]
    cells = 1
    for g in grid:
        cells *= g  # Python ints: np.prod would overflow int64 silently
    if max(grid) > MAX_GRID_AXIS or cells > MAX_GRID_CELLS:
        return (f"voxel grid {grid} (x, y, z) has {cells:.3g} cells (at most "
                f"{MAX_GRID_CELLS:.3g}, at most {MAX_GRID_AXIS} per axis): voxel_size is far "
                "too small for point_cloud_range")
    if max_voxels > MAX_VOXELS:
        return f"max_voxels {max_voxels} is above {MAX_VOXELS} (mmdet3d models use 12k..160k)"
    if max_points > MAX_POINTS_PER_VOXEL:
        return (f"max_points {max_points} per voxel is above {MAX_POINTS_PER_VOXEL} (mmdet3d "
                "models use 5..100)")
    if num_features is not None:
        size = max_voxels * max_points * int(num_features) * 4
        if size > MAX_VOXEL_TENSOR_BYTES:
            return (f"a frame's voxels [max_voxels {max_voxels}, max_points {max_points}, C "
                    f"{num_features}] float32 take {size / 2 ** 30:.1f} GiB (at most "
                    f"{MAX_VOXEL_TENSOR_BYTES / 2 ** 30:.0f} GiB)")
    return None
