"""Voxel grid and feature-map stride: one rule, with mmcv's rounding."""
from __future__ import annotations

from admlops_ros.bundle.grid import feature_map_stride, voxel_grid_size


def test_grid_and_stride_helpers():
    assert voxel_grid_size([0.2, 0.2, 8], [-51.2, -51.2, -5, 51.2, 51.2, 3]) == (512, 512, 1)
    assert feature_map_stride((496, 432), (248, 216)) == 2
    assert feature_map_stride((496, 432), (496, 432)) == 1
    assert feature_map_stride((8, 12), (4, 5)) is None


def test_half_cell_rounds_as_mmcv_everywhere():
    """A 0.2 m voxel over 0.5 m: float32 0.5 / 0.2 is exactly 2.5, mmcv's C round gives 3
    (Python's round would give 2). The spec, the voxelizer and the training config agree."""
    from admlops_ros.bundle.spec import VoxelSpec
    from admlops_ros.lidar.voxelize import Voxelizer
    from admlops_ros.training.configs import KITTI_3CLASS

    size, pcr = (0.2, 0.2, 0.2), (0.0, 0.0, 0.0, 0.5, 0.5, 0.5)
    assert voxel_grid_size(size, pcr) == (3, 3, 3)
    assert VoxelSpec(size, pcr, 4, 10).grid_size == (3, 3, 3)
    assert tuple(Voxelizer(size, pcr, 4, 10).grid_size) == (3, 3, 3)
    config = KITTI_3CLASS.replace(voxel_size=size, point_cloud_range=pcr,
                                  layer_strides=(1, 1, 1), upsample_strides=(1, 1, 1))
    assert config.grid_size == (3, 3)
    # exact halves away from zero, and whole spans unchanged
    assert voxel_grid_size((0.5, 1.0, 1.0), (0.0, 0.0, 0.0, 1.25, 1.0, 1.0)) == (3, 1, 1)
    assert voxel_grid_size((0.16, 0.16, 4), (0, -39.68, -3, 69.12, 39.68, 1)) == (432, 496, 1)


def test_stride_is_found_without_a_search():
    assert feature_map_stride((10 ** 9, 10 ** 9), (1, 1)) == 10 ** 9
    assert feature_map_stride((496, 432), (124, 108)) == 4
    assert feature_map_stride((5, 5), (6, 6)) is None
