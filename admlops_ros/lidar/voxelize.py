"""mmcv 2.x hard voxelization (points -> voxels, coors, num_points) with numba and numpy paths."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from admlops_ros.bundle.grid import (MAX_GRID_AXIS, MAX_VOXEL_TENSOR_BYTES, GridError,
                                     voxel_grid_size, voxel_limit_problem)
from admlops_ros.errors import AdmlopsError

try:  # numba is optional: the numpy path gives identical results, only slower
    import numba as _numba
except ImportError:  # pragma: no cover - exercised where numba is absent
    _numba = None

__all__ = [
    "HAVE_NUMBA",
    "VoxelizationError",
    "PointShuffler",
    "Voxelizer",
    "Voxels",
    "grid_size",
    "voxelize",
    "with_batch_index",
]

LOGGER = logging.getLogger(__name__)

HAVE_NUMBA = _numba is not None
#: Largest dense lookup grid (cells) the numba path keeps per Voxelizer (int32: 64 MiB);
#: finer grids use the numpy path, whose memory is O(N).
MAX_LOOKUP_CELLS = 1 << 24
_BACKENDS = ("auto", "numba", "numpy")


class VoxelizationError(AdmlopsError, ValueError):
    """Bad voxelization parameters or input points."""


def _is_count(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


@dataclass
class Voxels:
    """Hard-voxelized cloud, the engine's input (mmcv `Voxelization` outputs plus counters).

    Attributes:
        voxels: [V, max_points, C] float32, points in input order, zero-padded.
        num_points: [V] int32, points stored per voxel (1..max_points).
        coors: [V, 3] int32 grid indices (z, y, x); voxel order = creation order.
        dropped_voxels: occupied in-range cells that got no voxel because max_voxels was
            reached (their points are dropped).
        num_points_in_range: input points inside point_cloud_range.
        dropped_points: in-range points not stored (their voxel was full or not created).
    """

    voxels: np.ndarray
    num_points: np.ndarray
    coors: np.ndarray
    dropped_voxels: int = 0
    num_points_in_range: int = 0
    dropped_points: int = 0

    @property
    def num_voxels(self) -> int:
        """Number of voxels V."""
        return int(self.num_points.shape[0])


def with_batch_index(coors: np.ndarray, batch: int = 0) -> np.ndarray:
    """Prepend a batch column: [V, 3] (z, y, x) -> [V, 4] int32 (batch, z, y, x).

    This is the `coors` engine input of mmdeploy 1.x voxel detectors (mmdet3d pads it the
    same way in Det3DDataPreprocessor).
    """
    coors = np.asarray(coors)
    if coors.ndim != 2 or coors.shape[1] != 3:
        raise VoxelizationError(
            "coors must be [V, 3] (z, y, x), got shape %s" % (tuple(coors.shape),)
        )
    out = np.empty((coors.shape[0], 4), np.int32)
    out[:, 0] = batch
    out[:, 1:] = coors
    return out


def grid_size(voxel_size: Sequence[float], point_cloud_range: Sequence[float]) -> np.ndarray:
    """Grid cells per axis (x, y, z) exactly as mmcv's kernel computes them.

    ``bundle.grid.voxel_grid_size`` (float32 (max - min) / size, halves away from zero), with
    the parameters checked first.

    Raises:
        VoxelizationError: wrong lengths, non-positive voxel size or an empty grid.
    """
    vsize = np.asarray(voxel_size, dtype=np.float64)
    prange = np.asarray(point_cloud_range, dtype=np.float64)
    if vsize.shape != (3,) or prange.shape != (6,):
        raise VoxelizationError(
            "voxel_size must have 3 values (x, y, z) and point_cloud_range 6 (x_min, y_min, "
            "z_min, x_max, y_max, z_max); got %s and %s" % (list(vsize), list(prange))
        )
    if not (np.isfinite(vsize).all() and np.isfinite(prange).all() and (vsize > 0).all()):
        raise VoxelizationError(
            "voxel_size %s must be positive and point_cloud_range %s finite"
            % (list(vsize), list(prange))
        )
    try:
        cells = voxel_grid_size(vsize, prange)
    except GridError as exc:
        raise VoxelizationError(str(exc)) from None
    if min(cells) <= 0:
        raise VoxelizationError(
            "point_cloud_range %s with voxel_size %s gives grid %s (x, y, z): every axis "
            "needs at least one cell; check that max > min" % (list(prange), list(vsize),
                                                               list(cells))
        )
    if max(cells) > MAX_GRID_AXIS:
        raise VoxelizationError(voxel_limit_problem(cells, 1, 1) or "grid too large")
    grid = np.asarray(cells, dtype=np.int64)
    return grid


_NO_PERM = np.empty(0, np.int32)  # "no shuffle" for the kernel
_BLOCK = 256  # points per block in the kernel's first loop


def _all_finite_numba(points):
    """True when no value of points is NaN or +-inf (compiled by numba; vectorized)."""
    flat = points.reshape(points.size)
    big = np.float32(3.4028235e38)  # float32 max: abs(v) <= big is False for NaN and +-inf
    bad = False
    for k in range(flat.shape[0]):
        bad |= not abs(flat[k]) <= big
    return not bad


def _assign_numba(points, perm, positions, lookup, rmin, vsize, grid, max_points, max_voxels,
                  scale_column, scale):
    """The voxelization kernel (compiled by numba): mmcv's loop without copying the cloud.

    Voxelizes the N points in input order or, when ``perm`` is not empty, in the order
    ``perm[perm < N]`` (``positions`` is the inverse of ``perm``: the place of row i in it).

    Loop 1 reads the cloud once, in memory order and in blocks so that the divisions
    vectorize and its time does not depend on the point order, and computes each point's
    cell: float32 (p - range_min) / voxel_size exactly as mmcv (NaN fails every comparison;
    mmcv: INT_MIN). It lists the in-range points in voxelization order as (cell, row) pairs of
    int32: in input order by appending; shuffled by writing each in-range cell at its row's
    position, then compacting. Loop 2 follows mmcv over that list: a voxel is created at its
    first point while fewer than max_voxels exist, at most max_points per voxel; it records
    the source row of each stored point. Loop 3 copies only the stored points into the zeroed
    output, voxel by voxel, multiplying column ``scale_column`` (if >= 0) by the float32
    ``scale`` (the zero padding stays +0.0). The lookup grid is left all -1 for the next call.
    """
    num, channels = points.shape
    gx, gy, gz = np.int32(grid[0]), np.int32(grid[1]), np.int32(grid[2])  # <= MAX_LOOKUP_CELLS
    fgx, fgy, fgz = np.float32(gx), np.float32(gy), np.float32(gz)
    r0, r1, r2 = rmin[0], rmin[1], rmin[2]
    v0, v1, v2 = vsize[0], vsize[1], vsize[2]
    zero = np.float32(0.0)
    shuffled = perm.shape[0] > 0 and num > 0
    steps = perm.shape[0] if shuffled else num
    order_cell = np.empty(steps, np.int32)  # cells in voxelization order, then compacted
    order = np.empty(steps, np.int32)  # their source rows
    cells = np.empty(num if shuffled else 0, np.int32)  # by row, when shuffled
    bx = np.empty(_BLOCK, np.float32)
    by = np.empty(_BLOCK, np.float32)
    bz = np.empty(_BLOCK, np.float32)
    bc = np.empty(_BLOCK, np.int32)
    in_range = 0
    for start in range(0, num, _BLOCK):
        size = min(_BLOCK, num - start)
        for b in range(size):
            bx[b] = points[start + b, 0] - r0
            by[b] = points[start + b, 1] - r1
            bz[b] = points[start + b, 2] - r2
        for b in range(size):
            bx[b] = bx[b] / v0
            by[b] = by[b] / v1
            bz[b] = bz[b] / v2
        for b in range(size):
            fx, fy, fz = bx[b], by[b], bz[b]
            inside = (fx >= 0) & (fx < fgx) & (fy >= 0) & (fy < fgy) & (fz >= 0) & (fz < fgz)
            # trunc == floor for values >= 0; points outside convert 0 (never NaN or huge)
            cell = ((np.int32(fz if inside else zero) * gy + np.int32(fy if inside else zero))
                    * gx + np.int32(fx if inside else zero))
            bc[b] = cell if inside else np.int32(-1)
        if shuffled:
            cells[start:start + size] = bc[:size]
        else:
            for b in range(size):  # branch-free append
                cell = bc[b]
                order_cell[in_range] = cell
                order[in_range] = start + b
                in_range += cell >= 0
    if shuffled:  # each in-range cell at its row's position, then compaction in place
        order_cell[:] = -1
        for i in range(num):
            cell = cells[i]
            if cell >= 0:
                order_cell[positions[i]] = cell
        for j in range(steps):
            cell = order_cell[j]
            order_cell[in_range] = cell
            order[in_range] = perm[j]
            in_range += cell >= 0
    capacity = min(max_voxels, num)  # a cloud of num points makes at most num voxels
    coors = np.empty((capacity, 3), np.int32)
    counts = np.zeros(capacity, np.int32)
    sources = np.empty(capacity * max_points, np.int32)  # source row per (voxel, slot)
    dropped_cells = np.empty(min(in_range, lookup.shape[0]), np.int32)
    num_voxels = 0
    num_dropped_cells = 0
    for j in range(in_range):
        cell = order_cell[j]
        vid = lookup[cell]
        if vid == -2:  # cell first seen after max_voxels was reached
            continue
        if vid == -1:
            if num_voxels >= max_voxels:
                lookup[cell] = -2
                dropped_cells[num_dropped_cells] = cell
                num_dropped_cells += 1
                continue
            vid = num_voxels
            num_voxels += 1
            lookup[cell] = vid
            coors[vid, 0] = cell // (gx * gy)
            coors[vid, 1] = (cell // gx) % gy
            coors[vid, 2] = cell % gx
        slot = counts[vid]
        if slot < max_points:
            sources[vid * max_points + slot] = order[j]
            counts[vid] = slot + 1
    # reset only the touched lookup cells so the grid is reusable
    for v in range(num_voxels):
        lookup[(coors[v, 0] * gy + coors[v, 1]) * gx + coors[v, 2]] = -1
    for j in range(num_dropped_cells):
        lookup[dropped_cells[j]] = -1
    voxels = np.zeros((num_voxels, max_points, channels), np.float32)  # one memset
    for v in range(num_voxels):
        for s in range(counts[v]):
            src = sources[v * max_points + s]
            for c in range(channels):
                voxels[v, s, c] = points[src, c]
            if scale_column >= 0:
                voxels[v, s, scale_column] *= scale  # float32 * float32, as numpy in place
    return (voxels, coors[:num_voxels].copy(), counts[:num_voxels].copy(), num_dropped_cells,
            in_range)


if HAVE_NUMBA:
    _all_finite_jit = _numba.njit(cache=True, nogil=True)(_all_finite_numba)
    _assign_jit = _numba.njit(cache=True, nogil=True)(_assign_numba)
else:  # pragma: no cover
    _all_finite_jit = _assign_jit = None


def _voxelize_numpy(points, rmin, vsize, grid, max_points, max_voxels):
    """Vectorized numpy path with the same results as the numba path (sort based, O(N))."""
    num, channels = points.shape
    with np.errstate(over="ignore", invalid="ignore"):  # huge/inf/NaN points are dropped
        scaled = (points[:, :3] - rmin) / vsize  # float32, as mmcv
    ok = np.ones(num, bool)
    for axis in range(3):
        col = scaled[:, axis]
        ok &= (col >= 0) & (col < np.float32(grid[axis]))  # NaN compares False: dropped
    idx = np.flatnonzero(ok)
    cell_xyz = scaled[idx].astype(np.int64)
    cell = (cell_xyz[:, 2] * grid[1] + cell_xyz[:, 1]) * grid[0] + cell_xyz[:, 0]
    _, first, inverse = np.unique(cell, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    creation = np.argsort(first, kind="stable")  # unique cells in first-hit order
    rank = np.empty_like(creation)
    rank[creation] = np.arange(creation.size)
    vid = rank[inverse]
    num_voxels = min(int(creation.size), int(max_voxels))
    keep = vid < num_voxels
    idx, vid = idx[keep], vid[keep]
    order = np.argsort(vid, kind="stable")
    counts = np.bincount(vid, minlength=num_voxels)
    starts = np.cumsum(counts) - counts
    slot = np.empty_like(vid)
    slot[order] = np.arange(vid.size) - starts[vid[order]]
    stored = slot < max_points
    voxels = np.zeros((num_voxels, max_points, channels), np.float32)
    voxels[vid[stored], slot[stored]] = points[idx[stored]]
    coors = cell_xyz[first[creation[:num_voxels]]][:, ::-1].astype(np.int32)
    return (voxels, np.ascontiguousarray(coors), np.minimum(counts, max_points).astype(np.int32),
            int(creation.size) - num_voxels, int(ok.sum()))


class Voxelizer:
    """mmcv 2.x hard voxelization with fixed parameters and reusable scratch buffers.

    Semantics (mmcv/ops/csrc/pytorch/cpu/voxelization.cpp): cell index =
    floor((p - range_min) / voxel_size) in float32; points outside [0, grid) dropped; points
    taken in input order; a voxel is created at its first point while fewer than max_voxels
    exist (later new cells are dropped, existing voxels still fill); at most max_points per
    voxel; voxel order = creation order. Deterministic. Not reentrant per instance: calls are
    serialized by a lock.

    Args:
        voxel_size: (x, y, z) metres.
        point_cloud_range: (x_min, y_min, z_min, x_max, y_max, z_max) metres, LiDAR frame.
        max_points: maximum points per voxel (mmcv max_num_points).
        max_voxels: maximum voxels per cloud (the test-time value for mmdet3d configs).
        num_features: expected channel count C (None: any C >= 3).
        backend: "auto" (numba when installed and the grid fits MAX_LOOKUP_CELLS), "numba"
            or "numpy".
    """

    def __init__(
        self,
        voxel_size: Sequence[float],
        point_cloud_range: Sequence[float],
        max_points: int,
        max_voxels: int,
        num_features: Optional[int] = None,
        backend: str = "auto",
    ) -> None:
        self.grid_size = grid_size(voxel_size, point_cloud_range)  # (x, y, z) cells
        self.voxel_size: Tuple[float, ...] = tuple(float(v) for v in voxel_size)
        self.point_cloud_range: Tuple[float, ...] = tuple(float(v) for v in point_cloud_range)
        if not all(_is_count(v) for v in (max_points, max_voxels)) or \
                int(max_points) < 1 or int(max_voxels) < 1:
            raise VoxelizationError(
                "max_points (%s) and max_voxels (%s) must be integers >= 1 (mmcv's -1 'dynamic' "
                "mode is not hard voxelization)" % (max_points, max_voxels)
            )
        self.max_points = int(max_points)
        self.max_voxels = int(max_voxels)
        if num_features is not None and (not _is_count(num_features) or int(num_features) < 3):
            raise VoxelizationError("num_features must be an integer >= 3 (x, y, z first), got "
                                    "%r" % (num_features,))
        self.num_features = None if num_features is None else int(num_features)
        problem = voxel_limit_problem(self.grid_size, self.max_points, self.max_voxels,
                                      self.num_features)
        if problem:
            raise VoxelizationError(problem)
        self._rmin = np.asarray(self.point_cloud_range[:3], np.float32)
        self._vsize = np.asarray(self.voxel_size, np.float32)
        cells = 1
        for g in self.grid_size:
            cells *= int(g)  # Python ints: np.prod overflows int64 for large grids
        if backend not in _BACKENDS:
            raise VoxelizationError("backend=%r; use one of %s" % (backend, ", ".join(_BACKENDS)))
        if backend == "numba" and not HAVE_NUMBA:
            raise VoxelizationError("backend='numba' but numba is not installed; pip install "
                                    "numba or use backend='auto'")
        if backend == "numba" and cells > MAX_LOOKUP_CELLS:
            raise VoxelizationError("grid %s has %d cells, more than the numba path's lookup "
                                    "table holds (%d); use backend='auto' or 'numpy'"
                                    % (list(self.grid_size), cells, MAX_LOOKUP_CELLS))
        if backend == "auto":
            backend = "numba" if HAVE_NUMBA and cells <= MAX_LOOKUP_CELLS else "numpy"
            if HAVE_NUMBA and cells > MAX_LOOKUP_CELLS:
                LOGGER.info("grid %s has %d cells (> %d): using the numpy voxelizer",
                            list(self.grid_size), cells, MAX_LOOKUP_CELLS)
        self.backend = backend
        self._lookup: Optional[np.ndarray] = None
        if backend == "numba":
            self._lookup = np.full(cells, -1, np.int32)  # cell -> voxel id, reset after use
        self._lock = threading.Lock()
        self._warned_overflow = False

    def __repr__(self) -> str:
        return ("Voxelizer(voxel_size=%s, point_cloud_range=%s, max_points=%d, max_voxels=%d, "
                "backend=%r)" % (list(self.voxel_size), list(self.point_cloud_range),
                                 self.max_points, self.max_voxels, self.backend))

    def _check(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points)
        if points.ndim != 2:
            raise VoxelizationError(
                "points must be 2-D [N, C], got shape %s" % (tuple(points.shape),)
            )
        if not np.issubdtype(points.dtype, np.floating):
            raise VoxelizationError(
                "points must be a float array (float32), got dtype %s; convert the cloud with "
                "pointcloud2_to_array or points.astype(np.float32)" % points.dtype
            )
        channels = points.shape[1]
        if self.num_features is not None and channels != self.num_features:
            raise VoxelizationError(
                "points have %d channels but this model takes %d; pass [N, %d] points "
                "(spec input.point_features)" % (channels, self.num_features, self.num_features)
            )
        if channels < 3:
            raise VoxelizationError(
                "points have %d channels; at least x, y, z are needed" % channels
            )
        size = min(len(points), self.max_voxels) * self.max_points * channels * 4
        if size > MAX_VOXEL_TENSOR_BYTES:
            raise VoxelizationError(
                "voxels of %d points x %d channels with max_points %d could take %.1f GiB (at "
                "most %.0f GiB); lower max_voxels or max_points"
                % (len(points), channels, self.max_points, size / 2 ** 30,
                   MAX_VOXEL_TENSOR_BYTES / 2 ** 30))
        return np.ascontiguousarray(points, dtype=np.float32)

    def __call__(self, points: np.ndarray) -> Voxels:
        """Voxelize one cloud.

        Args:
            points: [N, C] float array (cast to float32), LiDAR frame, metres; x, y, z first.

        Returns:
            Voxels (arrays owned by the caller).

        Raises:
            VoxelizationError: not 2-D, not floating point, or a wrong channel count.
        """
        points = self._check(points)
        if self.backend == "numba":
            return self._run_numba(points, None, -1, 1.0)
        return self._run_numpy(points)

    def voxelize_scan(self, points: np.ndarray, shuffler: Optional[PointShuffler] = None,
                      scale_column: Optional[int] = None, scale: float = 1.0) -> Voxels:
        """Voxelize a raw scan: drop non-finite rows, shuffle, scale one column, voxelize.

        Gives exactly ``self(q)`` for ``q = points[np.isfinite(points).all(axis=1)]``, then
        ``q = shuffler(q)`` if a shuffler is given, then ``q[:, scale_column] *= scale`` (in
        float32). The numba path makes none of these copies when all values are finite: it
        reads the cloud once, in memory order, and copies only the stored points (at most
        max_voxels * max_points).

        Args:
            points: [N, C] float array (cast to float32), LiDAR frame, metres; x, y, z first.
            shuffler: the order in which points are voxelized; None keeps input order.
            scale_column: channel multiplied by ``scale`` (e.g. intensity); None for none.
            scale: the factor, applied as float32.

        Returns:
            Voxels (arrays owned by the caller).

        Raises:
            VoxelizationError: not 2-D, not floating point, a wrong channel count or a
                scale_column outside [0, C).
        """
        points = self._check(points)
        if scale_column is not None and not (
                _is_count(scale_column) and 0 <= int(scale_column) < points.shape[1]):
            raise VoxelizationError("scale_column must be a channel index in [0, %d), got %r"
                                    % (points.shape[1], scale_column))
        column = -1 if scale_column is None or float(scale) == 1.0 else int(scale_column)
        finite = _all_finite_jit(points) if self.backend == "numba" else \
            bool(np.isfinite(points).all())
        if not finite:  # rare: the per-row mask and a copy, then the order of the rows left
            points = points[np.isfinite(points).all(axis=1)]
        if self.backend == "numba":
            return self._run_numba(points, shuffler, column, scale)
        if shuffler is not None:
            points = shuffler(points)  # a new array: scaled in place below
        elif column >= 0 and finite:
            points = points.copy()
        if column >= 0:
            points[:, column] *= np.float32(scale)
        return self._run_numpy(points)

    def _run_numba(self, points: np.ndarray, shuffler: Optional[PointShuffler],
                   scale_column: int, scale: float) -> Voxels:
        perm = positions = _NO_PERM
        if shuffler is not None:
            perm, positions = shuffler.permutation(len(points)), shuffler.positions(len(points))
        with self._lock:  # the lookup grid is shared scratch
            result = _assign_jit(points, perm, positions, self._lookup, self._rmin, self._vsize,
                                 self.grid_size, self.max_points, self.max_voxels, scale_column,
                                 np.float32(scale))
            return self._result(*result)

    def _run_numpy(self, points: np.ndarray) -> Voxels:
        result = _voxelize_numpy(points, self._rmin, self._vsize, self.grid_size,
                                 self.max_points, self.max_voxels)
        with self._lock:
            return self._result(*result)

    def _result(self, voxels: np.ndarray, coors: np.ndarray, num_points: np.ndarray,
                dropped_voxels: int, in_range: int) -> Voxels:
        """Voxels with the counters; warns once per Voxelizer when max_voxels was hit."""
        dropped_voxels = int(dropped_voxels)
        if dropped_voxels and not self._warned_overflow:
            self._warned_overflow = True
            LOGGER.warning(
                "cloud occupies more than max_voxels=%d voxels: kept the first %d, dropped "
                "%d (points of later cells are lost); warned once per Voxelizer, see "
                "Voxels.dropped_voxels", self.max_voxels, self.max_voxels, dropped_voxels)
        stored = int(num_points.sum())
        return Voxels(voxels, num_points, coors, dropped_voxels, int(in_range),
                      int(in_range) - stored)

    def warmup(self) -> None:
        """Compile the numba kernel now (node start) instead of on the first frame."""
        channels = self.num_features if self.num_features is not None else 4
        lo, hi = self._rmin, np.asarray(self.point_cloud_range[3:], np.float32)
        points = np.zeros((16, channels), np.float32)
        points[:, :3] = lo + (hi - lo) * np.linspace(0.0, 1.0, 16, dtype=np.float32)[:, None]
        self.voxelize_scan(points)


class PointShuffler:
    """A fixed pseudo-random order of a cloud's points, for models trained on shuffled scans.

    mmdet3d's PointShuffle puts a scan in random order before voxelization, so a pillar's
    max_points slots sample all of its points instead of the first ones in scan order. This
    is the deterministic run-time counterpart: the order of N points is the order that a
    seeded permutation of C indices (C = the smallest power of two >= max(N, min_capacity))
    gives to the indices below N, itself a uniformly random permutation of N. It depends
    only on N and the seed, never on earlier clouds.

    Args:
        min_capacity: smallest permutation length (larger ones are made when needed, once).
        seed: seed of the permutations.
    """

    def __init__(self, min_capacity: int = 1 << 18, seed: int = 0) -> None:
        self.min_capacity = int(min_capacity)
        self.seed = int(seed)
        self._perms: Dict[int, np.ndarray] = {}
        self._positions: Dict[int, np.ndarray] = {}

    def capacity(self, n: int) -> int:
        """C, the length of the permutation that orders n points."""
        capacity = self.min_capacity
        while capacity < n:
            capacity *= 2
        return capacity

    def permutation(self, n: int) -> np.ndarray:
        """[C] int32 permutation of range(C), C >= n; the order of n points is perm[perm < n]."""
        capacity = self.capacity(n)
        perm = self._perms.get(capacity)
        if perm is None:  # a race only makes the same array twice
            perm = np.random.default_rng([self.seed, capacity]).permutation(capacity)
            perm = self._perms.setdefault(capacity, perm.astype(np.int32))
        return perm

    def positions(self, n: int) -> np.ndarray:
        """[C] int32 inverse of ``permutation(n)``: the place of index k in it."""
        capacity = self.capacity(n)
        positions = self._positions.get(capacity)
        if positions is None:
            perm = self.permutation(n)
            positions = np.empty(capacity, np.int32)
            positions[perm] = np.arange(capacity, dtype=np.int32)
            positions = self._positions.setdefault(capacity, positions)
        return positions

    def order(self, n: int) -> np.ndarray:
        """[n] int32 indices: the shuffled order of n points."""
        perm = self.permutation(n)
        return perm[perm < n]

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """The rows of ``points`` [N, C] in the shuffled order (a new array)."""
        n = len(points)
        if HAVE_NUMBA and points.ndim == 2:
            return _gather_jit(np.ascontiguousarray(points), self.permutation(n))
        return np.take(points, self.order(n), axis=0)


def _gather_below(points, perm):
    """points[perm[perm < len(points)]] in one pass (compiled by numba)."""
    n, channels = points.shape
    out = np.empty((n, channels), points.dtype)
    k = 0
    for j in range(perm.shape[0]):
        src = perm[j]
        if src < n:
            for c in range(channels):
                out[k, c] = points[src, c]
            k += 1
    return out


if HAVE_NUMBA:
    _gather_jit = _numba.njit(cache=True, nogil=True)(_gather_below)
else:  # pragma: no cover
    _gather_jit = None


_CACHE_LOCK = threading.Lock()
_CACHE: dict = {}


def voxelize(
    points: np.ndarray,
    voxel_size: Sequence[float],
    point_cloud_range: Sequence[float],
    max_points: int,
    max_voxels: int,
) -> Voxels:
    """Functional form of `Voxelizer` (instances cached per parameter set).

    Args:
        points: [N, C] float32, LiDAR frame, metres; x, y, z first.
        voxel_size: (x, y, z) metres.
        point_cloud_range: (x_min, y_min, z_min, x_max, y_max, z_max) metres.
        max_points: maximum points per voxel.
        max_voxels: maximum voxels.

    Returns:
        Voxels, see `Voxelizer`.
    """
    key = (tuple(float(v) for v in voxel_size), tuple(float(v) for v in point_cloud_range),
           int(max_points), int(max_voxels))
    with _CACHE_LOCK:
        voxelizer = _CACHE.get(key)
        if voxelizer is None:
            if len(_CACHE) >= 8:
                _CACHE.clear()
            voxelizer = Voxelizer(*key)
            _CACHE[key] = voxelizer
    return voxelizer(points)
