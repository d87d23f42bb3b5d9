"""Hard voxelization against a per-point transliteration of mmcv's CPU kernel."""
from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
from typing import Dict, Sequence, Tuple

import numpy as np
import pytest

from admlops_ros.lidar import voxelize as vox_mod
from admlops_ros.lidar.voxelize import (HAVE_NUMBA, PointShuffler, VoxelizationError, Voxelizer,
                                        grid_size, voxelize, with_batch_index)
from tests.paths import REPO_ROOT, SHARED_KITTI

KITTI_VS = (0.16, 0.16, 4.0)
KITTI_PR = (0.0, -39.68, -3.0, 69.12, 39.68, 1.0)
KITTI_BIN = SHARED_KITTI / "training" / "velodyne" / "000000.bin"
BACKENDS = ["numpy"] + (["numba"] if HAVE_NUMBA else [])
INT_MIN = -(2 ** 31)


def _c_floor_to_int(value: np.float32) -> int:
    """C `int c = floor(float)` on x86: NaN, inf and out-of-int range give INT_MIN."""
    try:
        c = math.floor(float(value))
    except (ValueError, OverflowError):
        return INT_MIN
    return c if INT_MIN <= c < 2 ** 31 else INT_MIN


def reference_voxelize(points: np.ndarray, voxel_size: Sequence[float],
                       point_cloud_range: Sequence[float], max_points: int,
                       max_voxels: int) -> Dict[str, object]:
    """Per-point loop following mmcv/ops/csrc/pytorch/cpu/voxelization.cpp line by line."""
    vs = [np.float32(v) for v in voxel_size]
    rng_ = [np.float32(v) for v in point_cloud_range]
    grid = []
    for j in range(3):
        cells = np.float32(rng_[3 + j] - rng_[j]) / vs[j]
        grid.append(int(math.floor(float(cells) + 0.5)))  # C round, positive values
    num, channels = points.shape
    lookup: Dict[Tuple[int, int, int], int] = {}
    voxels = np.zeros((max_voxels, max_points, channels), np.float32)
    coors = np.zeros((max_voxels, 3), np.int32)
    counts = np.zeros(max_voxels, np.int32)
    voxel_num = 0
    in_range = 0
    dropped_cells = set()
    np_err = np.seterr(over="ignore", invalid="ignore")
    for i in range(num):
        coor = [0, 0, 0]
        failed = False
        for j in range(3):
            c = _c_floor_to_int(np.float32(points[i, j] - rng_[j]) / vs[j])
            if c < 0 or c >= grid[j]:
                failed = True
                break
            coor[2 - j] = c
        if failed:
            continue
        in_range += 1
        key = tuple(coor)
        vid = lookup.get(key, -1)
        if vid == -1:
            vid = voxel_num
            if voxel_num >= max_voxels:
                dropped_cells.add(key)
                continue
            voxel_num += 1
            lookup[key] = vid
            coors[vid] = coor
        num_in = counts[vid]
        if num_in < max_points:
            voxels[vid, num_in] = points[i]
            counts[vid] += 1
    np.seterr(**np_err)
    return dict(voxels=voxels[:voxel_num], coors=coors[:voxel_num],
                num_points=counts[:voxel_num], dropped_voxels=len(dropped_cells),
                num_points_in_range=in_range,
                dropped_points=in_range - int(counts[:voxel_num].sum()))


def assert_same(result, ref) -> None:
    np.testing.assert_array_equal(result.voxels, ref["voxels"])
    np.testing.assert_array_equal(result.coors, ref["coors"])
    np.testing.assert_array_equal(result.num_points, ref["num_points"])
    assert result.voxels.dtype == np.float32
    assert result.coors.dtype == np.int32 and result.num_points.dtype == np.int32
    assert result.dropped_voxels == ref["dropped_voxels"]
    assert result.num_points_in_range == ref["num_points_in_range"]
    assert result.dropped_points == ref["dropped_points"]


def boundary_points(voxel_size, pcr, count: int, rng: np.random.Generator) -> np.ndarray:
    """Points on voxel faces, on the range faces and one float32 ulp around them."""
    vs = np.asarray(voxel_size, np.float32)
    lo = np.asarray(pcr[:3], np.float32)
    hi = np.asarray(pcr[3:], np.float32)
    grid = grid_size(voxel_size, pcr)
    pts = np.empty((count, 3), np.float32)
    for axis in range(3):
        k = rng.integers(0, grid[axis] + 1, size=count)
        face = (lo[axis] + k.astype(np.float32) * vs[axis]).astype(np.float32)
        face[k == grid[axis]] = hi[axis]
        face[k == 0] = lo[axis]
        step = rng.integers(-1, 2, size=count)
        face = np.where(step < 0, np.nextafter(face, np.float32(-np.inf)), face)
        face = np.where(step > 0, np.nextafter(face, np.float32(np.inf)), face)
        pts[:, axis] = face
    return pts


def make_cloud(n: int, channels: int, voxel_size, pcr, seed: int,
               spread: float = 0.1) -> np.ndarray:
    """Random cloud: uniform in (slightly beyond) the range, clusters, boundary and bad values."""
    rng = np.random.default_rng(seed)
    lo = np.asarray(pcr[:3], np.float32)
    hi = np.asarray(pcr[3:], np.float32)
    ext = (hi - lo) * spread
    pts = np.zeros((n, channels), np.float32)
    pts[:, :3] = lo - ext + (hi - lo + 2 * ext) * rng.random((n, 3), dtype=np.float32)
    pts[:, 3:] = rng.standard_normal((n, channels - 3))
    # dense clusters so that some voxels overflow max_points
    m = n // 4
    centre = lo + (hi - lo) * rng.random(3, dtype=np.float32)
    pts[:m, :3] = centre + rng.standard_normal((m, 3)).astype(np.float32) * \
        np.asarray(voxel_size, np.float32)
    b = n // 4
    pts[m:m + b, :3] = boundary_points(voxel_size, pcr, b, rng)
    specials = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, -1e-30, 1e-30, 3e38, -3e38],
                        np.float32)
    k = min(n // 10, 50)
    rows = rng.choice(n, size=k, replace=False)
    cols = rng.integers(0, 3, size=k)
    pts[rows, cols] = specials[rng.integers(0, len(specials), size=k)]
    perm = rng.permutation(n)
    return pts[perm]


CASES = [
    # (voxel_size, range, max_points, max_voxels, n, channels)
    (KITTI_VS, KITTI_PR, 32, 40000, 3000, 4),
    ((0.5, 0.5, 0.5), (-4.0, -4.0, -2.0, 4.0, 4.0, 2.0), 5, 60, 2500, 4),
    ((0.5, 0.5, 0.5), (-4.0, -4.0, -2.0, 4.0, 4.0, 2.0), 3, 10000, 2500, 5),
    ((0.2, 0.2, 8.0), (-2.0, -2.0, -5.0, 2.0, 2.0, 3.0), 20, 30, 1500, 5),
    ((0.1, 0.3, 0.7), (0.0, -1.5, -0.35, 2.0, 1.5, 1.05), 1, 100, 1200, 3),
    ((0.16, 0.16, 4.0), (0.0, -1.6, -3.0, 1.6, 1.6, 1.0), 2, 1, 300, 4),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_matches_reference_kernel(case, backend):
    voxel_size, pcr, max_points, max_voxels, n, channels = CASES[case]
    for seed in range(2):
        pts = make_cloud(n, channels, voxel_size, pcr, seed=case * 10 + seed)
        ref = reference_voxelize(pts, voxel_size, pcr, max_points, max_voxels)
        result = Voxelizer(voxel_size, pcr, max_points, max_voxels, backend=backend)(pts)
        assert_same(result, ref)


def test_cases_exercise_overflow_and_boundaries():
    # the cases above really hit both caps and drop out-of-range points
    voxel_size, pcr, max_points, max_voxels, n, channels = CASES[1]
    pts = make_cloud(n, channels, voxel_size, pcr, seed=10)
    ref = reference_voxelize(pts, voxel_size, pcr, max_points, max_voxels)
    assert ref["dropped_voxels"] > 0
    assert (ref["num_points"] == max_points).any()
    assert ref["num_points_in_range"] < n


def test_float32_arithmetic_like_mmcv():
    # x = 0.48f (0.47999998927...) on a 0.16 grid: float32 0.48f / 0.16f == 3.0 while float64
    # gives 2.99999...; mmcv computes in float and puts the point in cell 3.
    pcr = (0.0, 0.0, 0.0, 1.6, 1.6, 1.0)
    pts = np.array([[0.48, 0.1, 0.5, 1.0]], np.float32)
    assert math.floor(float(np.float32(0.48)) / 0.16) == 2
    result = Voxelizer((0.16, 0.16, 1.0), pcr, 4, 10)(pts)
    ref = reference_voxelize(pts, (0.16, 0.16, 1.0), pcr, 4, 10)
    np.testing.assert_array_equal(result.coors, ref["coors"])
    assert result.coors.tolist() == [[0, 0, 3]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_range_edges(backend):
    pcr = KITTI_PR
    pts = np.array([
        [0.0, 0.0, 0.0, 1.0],           # on range min x: kept
        [-0.0, 0.0, 0.0, 2.0],          # -0.0 - 0.0 -> floor(-0.0) = 0: kept
        [-1e-7, 0.0, 0.0, 3.0],         # tiny negative: floor -> -1: dropped
        [69.12, 0.0, 0.0, 4.0],         # exactly range max x (float32)
        [np.nextafter(np.float32(69.12), np.float32(0)), 0.0, 0.0, 5.0],
        [1.0, 39.68, 0.0, 6.0],         # range max y
        [1.0, -39.68, -3.0, 7.0],       # range min y and z
        [1.0, 0.0, 1.0, 8.0],           # range max z: dropped
        [np.nan, 0.0, 0.0, 9.0],
        [1.0, np.inf, 0.0, 10.0],
    ], np.float32)
    ref = reference_voxelize(pts, KITTI_VS, pcr, 32, 40000)
    result = Voxelizer(KITTI_VS, pcr, 32, 40000, backend=backend)(pts)
    assert_same(result, ref)
    kept = set(result.voxels[:, :, 3][result.voxels[:, :, 3] > 0].tolist())
    assert {1.0, 2.0, 5.0, 7.0} <= kept and not kept & {3.0, 8.0, 9.0, 10.0}


def test_kitti_grid_size():
    assert grid_size(KITTI_VS, KITTI_PR).tolist() == [432, 496, 1]
    assert grid_size((0.2, 0.2, 8), (-51.2, -51.2, -5, 51.2, 51.2, 3)).tolist() == [512, 512, 1]
    assert grid_size((0.075, 0.075, 0.2), (-54, -54, -5, 54, 54, 3)).tolist() == [1440, 1440, 40]


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed")
def test_numba_equals_numpy_on_large_clouds():
    numba_v = Voxelizer(KITTI_VS, KITTI_PR, 32, 16000, backend="numba")
    numpy_v = Voxelizer(KITTI_VS, KITTI_PR, 32, 16000, backend="numpy")
    clouds = [make_cloud(60000, 4, KITTI_VS, KITTI_PR, seed=s, spread=0.0) for s in range(3)]
    if KITTI_BIN.exists():
        clouds.append(np.fromfile(KITTI_BIN, np.float32).reshape(-1, 4))
    for pts in clouds:
        a, b = numba_v(pts), numpy_v(pts)
        assert_same(a, dict(voxels=b.voxels, coors=b.coors, num_points=b.num_points,
                            dropped_voxels=b.dropped_voxels,
                            num_points_in_range=b.num_points_in_range,
                            dropped_points=b.dropped_points))
    assert a.num_voxels > 1000


@pytest.mark.parametrize("backend", BACKENDS)
def test_deterministic_and_scratch_reset(backend):
    v = Voxelizer((0.5, 0.5, 0.5), (-4, -4, -2, 4, 4, 2), 5, 60, backend=backend)
    a = make_cloud(2000, 4, v.voxel_size, v.point_cloud_range, seed=1)
    b = make_cloud(2000, 4, v.voxel_size, v.point_cloud_range, seed=2)
    first = v(a)
    v(b)  # different cloud in between: lookup state must not leak
    again = v(a)
    fresh = Voxelizer(v.voxel_size, v.point_cloud_range, 5, 60, backend=backend)(a)
    for other in (again, fresh):
        np.testing.assert_array_equal(first.voxels, other.voxels)
        np.testing.assert_array_equal(first.coors, other.coors)
        np.testing.assert_array_equal(first.num_points, other.num_points)
        assert first.dropped_voxels == other.dropped_voxels


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", [0, 5])
def test_empty_results_have_right_shapes(backend, n):
    pts = np.full((n, 4), 1000.0, np.float32)  # all out of range when n > 0
    result = Voxelizer(KITTI_VS, KITTI_PR, 32, 40000, backend=backend)(pts)
    assert result.voxels.shape == (0, 32, 4) and result.voxels.dtype == np.float32
    assert result.num_points.shape == (0,) and result.num_points.dtype == np.int32
    assert result.coors.shape == (0, 3) and result.coors.dtype == np.int32
    assert result.num_voxels == 0 and result.num_points_in_range == 0
    assert with_batch_index(result.coors).shape == (0, 4)


def test_overflow_warns_once_per_voxelizer(caplog):
    pcr = (-4.0, -4.0, -2.0, 4.0, 4.0, 2.0)
    pts = make_cloud(2000, 4, (0.5, 0.5, 0.5), pcr, seed=3, spread=0.0)
    v = Voxelizer((0.5, 0.5, 0.5), pcr, 5, 20)
    with caplog.at_level(logging.WARNING, logger="admlops_ros.lidar.voxelize"):
        first = v(pts)
        v(pts)
    assert first.dropped_voxels > 0 and first.num_voxels == 20
    warnings = [r for r in caplog.records if "max_voxels" in r.getMessage()]
    assert len(warnings) == 1


def test_input_errors():
    v = Voxelizer(KITTI_VS, KITTI_PR, 32, 40000, num_features=4)
    with pytest.raises(VoxelizationError, match="2-D"):
        v(np.zeros(12, np.float32))
    with pytest.raises(VoxelizationError, match="float"):
        v(np.zeros((3, 4), np.int32))
    with pytest.raises(VoxelizationError, match="5 channels but this model takes 4"):
        v(np.zeros((3, 5), np.float32))
    with pytest.raises(VoxelizationError, match="at least x, y, z"):
        Voxelizer(KITTI_VS, KITTI_PR, 32, 40000)(np.zeros((3, 2), np.float32))
    with pytest.raises(VoxelizationError, match="voxel_size"):
        Voxelizer((0.16, 0.16), KITTI_PR, 32, 40000)
    with pytest.raises(VoxelizationError, match="max > min"):
        Voxelizer(KITTI_VS, (1, 0, 0, 0, 1, 1), 32, 40000)
    with pytest.raises(VoxelizationError, match="max_points"):
        Voxelizer(KITTI_VS, KITTI_PR, -1, 40000)
    with pytest.raises(VoxelizationError, match="backend"):
        Voxelizer(KITTI_VS, KITTI_PR, 32, 40000, backend="cuda")


def test_float64_and_noncontiguous_input_are_accepted():
    pts = make_cloud(500, 4, KITTI_VS, KITTI_PR, seed=4)
    ref = Voxelizer(KITTI_VS, KITTI_PR, 32, 40000)(pts)
    wide = np.zeros((500, 8), np.float64)
    wide[:, ::2] = pts
    got = Voxelizer(KITTI_VS, KITTI_PR, 32, 40000)(wide[:, ::2])
    np.testing.assert_array_equal(got.voxels, ref.voxels)


def test_functional_form_matches_class():
    pts = make_cloud(1000, 4, KITTI_VS, KITTI_PR, seed=5)
    a = voxelize(pts, KITTI_VS, KITTI_PR, 32, 40000)
    b = Voxelizer(KITTI_VS, KITTI_PR, 32, 40000)(pts)
    np.testing.assert_array_equal(a.voxels, b.voxels)
    np.testing.assert_array_equal(a.coors, b.coors)


def test_with_batch_index():
    coors = np.array([[0, 5, 7], [0, 1, 2]], np.int32)
    out = with_batch_index(coors, batch=3)
    assert out.dtype == np.int32 and out.tolist() == [[3, 0, 5, 7], [3, 0, 1, 2]]
    with pytest.raises(VoxelizationError):
        with_batch_index(np.zeros((2, 4), np.int32))


def test_backend_selection(monkeypatch):
    monkeypatch.setattr(vox_mod, "HAVE_NUMBA", False)
    assert Voxelizer(KITTI_VS, KITTI_PR, 32, 40000).backend == "numpy"
    with pytest.raises(VoxelizationError, match="numba is not installed"):
        Voxelizer(KITTI_VS, KITTI_PR, 32, 40000, backend="numba")
    monkeypatch.setattr(vox_mod, "HAVE_NUMBA", True)
    monkeypatch.setattr(vox_mod, "MAX_LOOKUP_CELLS", 1000)
    assert Voxelizer(KITTI_VS, KITTI_PR, 32, 40000).backend == "numpy"


def test_warmup_runs():
    v = Voxelizer(KITTI_VS, KITTI_PR, 32, 40000, num_features=5)
    v.warmup()
    pts = np.ones((1, 5), np.float32)
    pts[0, 2] = 0.0  # z = 1.0 would be the range max: outside
    assert v(pts).num_voxels == 1


def test_point_shuffler_is_a_fixed_permutation_of_any_size():
    shuffler = PointShuffler(min_capacity=64)
    for n in (0, 1, 10, 64, 65, 1000, 10):  # 65 and 1000 need longer permutations
        order = shuffler.order(n)
        assert sorted(order.tolist()) == list(range(n))
        # the order depends on n only, not on the clouds seen before
        np.testing.assert_array_equal(order, PointShuffler(min_capacity=64).order(n))
    assert shuffler.order(1000).tolist() != list(range(1000))
    points = np.arange(40, dtype=np.float32).reshape(10, 4)
    np.testing.assert_array_equal(shuffler(points), points[shuffler.order(10)])


def test_grid_too_large_is_an_error_not_a_segfault():
    """issue 18: np.prod(grid) overflowed int64 and the numba path wrote out of bounds."""
    code = ("import numpy as np\nfrom admlops_ros.lidar.voxelize import voxelize, "
            "VoxelizationError\ntry:\n    voxelize(np.array([[5, 5, 5, 0]], np.float32), [1, 1, 1],"
            " [0, 0, 0, 2**22, 2**22, 2**22], 4, 10)\nexcept VoxelizationError as exc:\n"
            "    print('error:', exc)\n")
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=env)
    assert res.returncode == 0, f"exit {res.returncode}: {res.stderr[-2000:]}"
    assert res.stdout.startswith("error: voxel grid [4194304, 4194304, 4194304]")
    assert "voxel_size is far too small" in res.stdout


@pytest.mark.parametrize("kwargs,needle", [
    ({"voxel_size": (1e-7, 1e-7, 1e-7)}, "voxel_size is far too small"),
    ({"max_voxels": 10 ** 12}, "max_voxels 1000000000000 is above"),
    ({"max_points": 10 ** 6}, "max_points 1000000 per voxel is above"),
    ({"max_points": 2.5}, "must be integers >= 1"),
    ({"max_voxels": float("nan")}, "must be integers >= 1"),
    ({"num_features": 2}, "num_features must be an integer >= 3"),
])
def test_absurd_parameters_are_refused_when_built(kwargs, needle):
    args = dict(voxel_size=KITTI_VS, point_cloud_range=KITTI_PR, max_points=32, max_voxels=40000)
    args.update(kwargs)
    with pytest.raises(VoxelizationError, match=needle):
        Voxelizer(**args)


def test_numba_lookup_too_large_is_refused():
    if not HAVE_NUMBA:
        pytest.skip("numba not installed")
    with pytest.raises(VoxelizationError, match="more than the numba path's lookup"):
        Voxelizer((0.01, 0.01, 0.01), (0, 0, 0, 50, 50, 4), 5, 100, backend="numba")


def test_voxel_tensor_size_is_bounded_per_cloud():
    vox = Voxelizer((0.05, 0.05, 4.0), (0, -40, -3, 70, 40, 1), 4096, 1 << 22)
    points = np.random.default_rng(0).uniform(0, 1, (70000, 4)).astype(np.float32)
    points[:, :2] *= [70, 40]
    with pytest.raises(VoxelizationError, match="GiB"):
        vox(points)
