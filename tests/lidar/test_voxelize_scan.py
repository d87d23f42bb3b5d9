"""Voxelizer.voxelize_scan against the copies it replaces: filter, shuffle, scale, voxelize."""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np
import pytest

from admlops_ros.bundle.files import load_bundle
from admlops_ros.lidar.voxelize import HAVE_NUMBA, PointShuffler, VoxelizationError, Voxelizer
from admlops_ros.paths import default_bundle_path
from admlops_ros.simulation import simulate_frame

BACKENDS = ["numpy"] + (["numba"] if HAVE_NUMBA else [])
INTENSITY = 3


@pytest.fixture(scope="module")
def vox_spec():
    """The shipped model's voxelization (0.32 m pillars, max_points 16, max_voxels 7000)."""
    return load_bundle(default_bundle_path()).spec.voxelization


@pytest.fixture(scope="module")
def scan():
    return simulate_frame(7).points


def _voxelizer(spec, backend: str, max_voxels: Optional[int] = None) -> Voxelizer:
    return Voxelizer(spec.voxel_size, spec.point_cloud_range, spec.max_points,
                     spec.max_voxels if max_voxels is None else max_voxels, backend=backend)


def two_step(points: np.ndarray, voxelizer: Voxelizer, shuffler: Optional[PointShuffler],
             scale: float):
    """What LidarDetector.preprocess did before voxelize_scan: copies, then the numpy path."""
    points = points[np.isfinite(points).all(axis=1)]
    if shuffler is not None:
        points = np.take(points, shuffler.order(len(points)), axis=0)
    else:
        points = points.copy()
    if scale != 1.0:
        points[:, INTENSITY] *= scale
    reference = Voxelizer(voxelizer.voxel_size, voxelizer.point_cloud_range,
                          voxelizer.max_points, voxelizer.max_voxels, backend="numpy")
    return reference(points)


def assert_identical(got, ref) -> None:
    """Bit-identical Voxels: same dtypes, shapes, bytes (so -0.0 != +0.0, NaN == NaN)."""
    for name in ("voxels", "num_points", "coors"):
        a, b = getattr(got, name), getattr(ref, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert a.tobytes() == b.tobytes(), name
    for name in ("dropped_voxels", "num_points_in_range", "dropped_points"):
        assert getattr(got, name) == getattr(ref, name), name


def check(points: np.ndarray, voxelizer: Voxelizer, shuffler: Optional[PointShuffler],
          scale: float):
    before = points.copy()
    got = voxelizer.voxelize_scan(points, shuffler, INTENSITY, scale)
    np.testing.assert_array_equal(points, before)  # the caller's cloud is never scaled
    ref = two_step(points, voxelizer, shuffler, scale)
    assert_identical(got, ref)
    return got


def tiled(scan: np.ndarray, n: int) -> np.ndarray:
    """n points: copies of a scan, each moved by a few cm (new cells, same structure)."""
    rng = np.random.default_rng(0)
    reps = -(-n // len(scan))
    shifts = (rng.standard_normal((reps, 1, 4)) * [0.05, 0.05, 0.02, 0.0]).astype(np.float32)
    return (scan[None] + shifts).reshape(-1, 4)[:n].copy()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shuffled", [True, False])
@pytest.mark.parametrize("scale", [1.0, 0.5, 1 / 255, -2.0])
def test_simulated_scan(vox_spec, scan, backend, shuffled, scale):
    voxelizer = _voxelizer(vox_spec, backend)
    shuffler = PointShuffler() if shuffled else None
    voxels = check(scan, voxelizer, shuffler, scale)
    assert voxels.num_voxels > 1000 and voxels.dropped_points > 0  # full pillars
    if scale < 0:  # scaled stored rows may be -0.0; the zero padding stays +0.0
        padding = np.arange(vox_spec.max_points)[None, :] >= voxels.num_points[:, None]
        assert not np.signbit(voxels.voxels[padding]).any()


@pytest.mark.parametrize("shuffled", [True, False])
def test_million_point_cloud(vox_spec, scan, shuffled):
    points = tiled(scan, 1_000_000)
    voxelizer = _voxelizer(vox_spec, "auto")
    voxels = check(points, voxelizer, PointShuffler() if shuffled else None, 1 / 255)
    assert voxels.num_points_in_range > 300_000
    # past a power of two the permutation is longer (2 ** 21 for 1.1M points)
    check(tiled(scan, 1_100_000), voxelizer, PointShuffler() if shuffled else None, 1.0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shuffled", [True, False])
@pytest.mark.parametrize("column", [0, 1, 2, INTENSITY])
def test_non_finite_values_drop_their_rows(vox_spec, scan, backend, shuffled, column):
    points = scan.copy()
    rng = np.random.default_rng(column)
    rows = rng.choice(len(points), 200, replace=False)
    points[rows, column] = np.array([np.nan, np.inf, -np.inf, np.nan], np.float32)[
        rng.integers(0, 4, 200)]
    voxelizer = _voxelizer(vox_spec, backend)
    shuffler = PointShuffler() if shuffled else None
    voxels = check(points, voxelizer, shuffler, 0.5)
    if column == INTENSITY:  # in-range rows with a bad intensity are dropped, not stored
        assert voxels.num_points_in_range < voxelizer(points).num_points_in_range
        assert np.isfinite(voxels.voxels).all()
    # the rows left are shuffled by their own count, as if the bad rows were never there
    clean = np.delete(points, rows, axis=0)
    assert_identical(voxels, voxelizer.voxelize_scan(clean, shuffler, INTENSITY, 0.5))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shuffled", [True, False])
def test_max_voxels_overflow(vox_spec, scan, backend, shuffled, caplog):
    voxelizer = _voxelizer(vox_spec, backend, max_voxels=500)
    shuffler = PointShuffler() if shuffled else None
    with caplog.at_level(logging.WARNING, logger="admlops_ros.lidar.voxelize"):
        first = voxelizer.voxelize_scan(scan, shuffler, INTENSITY, 0.5)
        again = voxelizer.voxelize_scan(scan, shuffler, INTENSITY, 0.5)
    assert len([r for r in caplog.records if "max_voxels" in r.getMessage()]) == 1
    assert first.num_voxels == 500 and first.dropped_voxels > 0
    assert_identical(first, two_step(scan, voxelizer, shuffler, 0.5))
    assert_identical(again, first)  # the lookup grid was reset after the overflow


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shuffled", [True, False])
def test_empty_and_out_of_range_clouds(vox_spec, backend, shuffled):
    voxelizer = _voxelizer(vox_spec, backend)
    shuffler = PointShuffler() if shuffled else None
    outside = np.full((1000, 4), 500.0, np.float32)
    all_bad = np.full((10, 4), np.nan, np.float32)
    for points in (np.zeros((0, 4), np.float32), outside, all_bad):
        voxels = check(points, voxelizer, shuffler, 0.5)
        assert voxels.num_voxels == 0 and voxels.num_points_in_range == 0
        assert voxels.voxels.shape == (0, vox_spec.max_points, 4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_order_and_other_channel_counts(backend):
    """A cloud with no scan order, 5 channels, float64 input and a 3-D grid."""
    vs, pcr = (0.5, 0.5, 0.5), (-4.0, -4.0, -2.0, 4.0, 4.0, 2.0)
    rng = np.random.default_rng(3)
    points = (rng.random((20000, 5)) * [10, 10, 5, 1, 1] - [5, 5, 2.5, 0, 0])
    voxelizer = Voxelizer(vs, pcr, 5, 60, backend=backend)
    shuffler = PointShuffler(min_capacity=64)
    got = voxelizer.voxelize_scan(points, shuffler, INTENSITY, 0.25)
    ref = two_step(points.astype(np.float32), voxelizer, shuffler, 0.25)
    assert_identical(got, ref)
    assert_identical(voxelizer.voxelize_scan(points), voxelizer(points))


def test_scale_column_is_checked(vox_spec):
    voxelizer = _voxelizer(vox_spec, "auto")
    with pytest.raises(VoxelizationError, match=r"channel index in \[0, 4\)"):
        voxelizer.voxelize_scan(np.zeros((3, 4), np.float32), None, 4, 0.5)
    with pytest.raises(VoxelizationError, match="float"):
        voxelizer.voxelize_scan(np.zeros((3, 4), np.int32))


def test_positions_invert_the_permutation():
    shuffler = PointShuffler(min_capacity=64)
    for n in (0, 10, 64, 65, 1000):
        perm, positions = shuffler.permutation(n), shuffler.positions(n)
        assert len(perm) == shuffler.capacity(n) >= max(n, 64)
        np.testing.assert_array_equal(positions[perm], np.arange(len(perm)))
        assert positions.dtype == np.int32
