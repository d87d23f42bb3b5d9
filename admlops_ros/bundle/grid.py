"""The voxel grid and head feature-map sizes a model's numbers imply (one formula for each)."""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import numpy as np


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
    """
    size = np.asarray(voxel_size, dtype=np.float32)
    rng = np.asarray(point_cloud_range, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        cells = (rng[3:] - rng[:3]) / size  # float32, as the kernel
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
