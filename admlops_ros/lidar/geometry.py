"""Box geometry in the LiDAR frame: corners, rotated BEV / 3D IoU, points in boxes (numpy)."""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np

from admlops_ros.errors import AdmlopsError

try:  # numba is optional: the numpy path gives the same results, only slower on small inputs
    import numba as _numba
except ImportError:  # pragma: no cover - exercised where numba is absent
    _numba = None

HAVE_NUMBA = _numba is not None
_BACKENDS = ("auto", "numba", "numpy")

__all__ = [
    "GeometryError",
    "limit_period",
    "bev_boxes",
    "box_corners_bev",
    "box_corners_3d",
    "bev_aabb",
    "rotated_iou_bev",
    "rotated_iou_bev_aligned",
    "rotated_intersection_bev_aligned",
    "iou_3d",
    "nearest_bev_iou",
    "points_in_boxes",
    "HAVE_NUMBA",
]

# A box with BEV area below this (m^2) is degenerate: its IoU with anything is 0 (as mmcv).
MIN_AREA = 1e-14
# Relative tolerances of the exact intersection: edges closer to parallel than this (sin of
# the angle) and closer to each other than this (fraction of the pair's size) are collinear.
_PARALLEL_TOL = 1e-9
_COLLINEAR_TOL = 1e-9


class GeometryError(AdmlopsError, ValueError):
    """Raised for box / point arrays of the wrong shape or an unknown backend."""


def _njit(fn):
    return _numba.njit(cache=True, nogil=True)(fn) if HAVE_NUMBA else fn


def use_numba(backend: str) -> bool:
    """Resolve ``backend`` ("auto", "numba", "numpy") to whether the numba kernels run.

    Raises:
        GeometryError: for an unknown backend or "numba" without numba installed.
    """
    if backend not in _BACKENDS:
        raise GeometryError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if backend == "numba" and not HAVE_NUMBA:
        raise GeometryError("backend='numba' requested but numba is not installed; use 'numpy'")
    return HAVE_NUMBA and backend != "numpy"


def limit_period(val, offset: float = 0.5, period: float = np.pi):
    """Wrap angles into ``[-offset * period, (1 - offset) * period)`` (mmdet3d ``limit_period``).

    Args:
        val: angle(s) in radians (scalar or array; dtype is kept).
        offset: fraction of the period below zero of the output range.
        period: period in radians.

    Returns:
        ``val - floor(val / period + offset) * period``.
    """
    dtype = np.asarray(val).dtype
    if dtype.kind == "f":  # numpy 1.x promotes float32 scalars with Python floats to float64
        offset, period = dtype.type(offset), dtype.type(period)
    return val - np.floor(val / period + offset) * period


def bev_boxes(boxes: np.ndarray, name: str = "boxes") -> np.ndarray:
    """BEV view (x, y, dx, dy, yaw) of [N, 7+] LiDAR boxes; [N, 5] input is returned as is.

    Raises:
        GeometryError: if the array is not [N, 5] or [N, >=7].
    """
    arr = np.asarray(boxes)
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, 7)
    if arr.ndim != 2 or (arr.shape[1] != 5 and arr.shape[1] < 7):
        raise GeometryError(
            f"{name}: expected [N, 5] (x, y, dx, dy, yaw) or [N, 7] (x, y, z, dx, dy, dz, yaw) "
            f"boxes, got shape {arr.shape}")
    if arr.shape[1] == 5:
        return arr
    return arr[:, [0, 1, 3, 4, 6]]


def _boxes7(boxes: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(boxes)
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, 7)
    if arr.ndim != 2 or arr.shape[1] < 7:
        raise GeometryError(
            f"{name}: expected [N, 7] (x, y, z, dx, dy, dz, yaw) boxes, got shape {arr.shape}")
    return arr


def box_corners_bev(boxes: np.ndarray) -> np.ndarray:
    """BEV corners of boxes, counter-clockwise seen from above.

    Args:
        boxes: [N, 7] LiDAR boxes or [N, 5] (x, y, dx, dy, yaw); metres, radians.

    Returns:
        [N, 4, 2] corners (x, y) in the input dtype (float64 for integer input); order
        (-dx/2, -dy/2), (+dx/2, -dy/2), (+dx/2, +dy/2), (-dx/2, +dy/2) in the box frame.
    """
    bev = bev_boxes(boxes)
    if not np.issubdtype(bev.dtype, np.floating):
        bev = bev.astype(np.float64)
    x, y, dx, dy, yaw = (bev[:, i] for i in range(5))
    sx = np.array([-0.5, 0.5, 0.5, -0.5], dtype=bev.dtype)
    sy = np.array([-0.5, -0.5, 0.5, 0.5], dtype=bev.dtype)
    lx = dx[:, None] * sx
    ly = dy[:, None] * sy
    c = np.cos(yaw)[:, None]
    s = np.sin(yaw)[:, None]
    out = np.empty((len(bev), 4, 2), dtype=bev.dtype)
    out[:, :, 0] = x[:, None] + lx * c - ly * s
    out[:, :, 1] = y[:, None] + lx * s + ly * c
    return out


def box_corners_3d(boxes: np.ndarray) -> np.ndarray:
    """3D corners of bottom-centre LiDAR boxes in mmdet3d ``LiDARInstance3DBoxes.corners`` order.

    Args:
        boxes: [N, 7] (x, y, z, dx, dy, dz, yaw), z at the bottom centre.

    Returns:
        [N, 8, 3] corners. With (i, j, k) = 0/1 for (-/+dx/2, -/+dy/2, bottom/top) the order is
        (000, 001, 011, 010, 100, 101, 111, 110).
    """
    b = _boxes7(boxes, "boxes")
    if not np.issubdtype(b.dtype, np.floating):
        b = b.astype(np.float64)
    norm = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 1], [0, 1, 0],
                     [1, 0, 0], [1, 0, 1], [1, 1, 1], [1, 1, 0]], dtype=b.dtype)
    norm = norm - np.array([0.5, 0.5, 0.0], dtype=b.dtype)
    local = b[:, None, 3:6] * norm[None]
    c = np.cos(b[:, 6])[:, None]
    s = np.sin(b[:, 6])[:, None]
    out = np.empty_like(local)
    out[:, :, 0] = local[:, :, 0] * c - local[:, :, 1] * s + b[:, None, 0]
    out[:, :, 1] = local[:, :, 0] * s + local[:, :, 1] * c + b[:, None, 1]
    out[:, :, 2] = local[:, :, 2] + b[:, None, 2]
    return out


def bev_aabb(boxes: np.ndarray) -> np.ndarray:
    """Axis-aligned bounding rectangle of rotated BEV boxes.

    Args:
        boxes: [N, 7] or [N, 5] boxes.

    Returns:
        [N, 4] float64 (x_min, y_min, x_max, y_max) in metres.
    """
    bev = bev_boxes(boxes).astype(np.float64)
    c = np.abs(np.cos(bev[:, 4]))
    s = np.abs(np.sin(bev[:, 4]))
    hx = 0.5 * (c * bev[:, 2] + s * bev[:, 3])
    hy = 0.5 * (s * bev[:, 2] + c * bev[:, 3])
    return np.stack([bev[:, 0] - hx, bev[:, 1] - hy, bev[:, 0] + hx, bev[:, 1] + hy], axis=1)


def _ccw_corners(x, y, dx, dy, yaw) -> np.ndarray:
    """[K, 4, 2] float64 CCW corners from per-box arrays (already shifted)."""
    c = np.cos(yaw)[:, None]
    s = np.sin(yaw)[:, None]
    lx = dx[:, None] * np.array([-0.5, 0.5, 0.5, -0.5])
    ly = dy[:, None] * np.array([-0.5, -0.5, 0.5, 0.5])
    out = np.empty((len(x), 4, 2))
    out[:, :, 0] = x[:, None] + lx * c - ly * s
    out[:, :, 1] = y[:, None] + lx * s + ly * c
    return out


def _clipped_edge_integral(p: np.ndarray, q: np.ndarray, tol_d: np.ndarray,
                           primary: bool) -> np.ndarray:
    """Boundary-integral share of the edges of convex CCW polygons ``p`` lying inside ``q``.

    Each edge p_i + t * d_i (t in [0, 1]) is clipped (Cyrus-Beck) against the four half-planes
    of ``q``; the kept piece [t0, t1] contributes 0.5 * (t1 - t0) * cross(p_i, d_i) to the
    area of the intersection (Green's theorem). Collinear edge overlaps must be counted once:
    the primary polygon keeps a piece lying on a same-direction edge of ``q``, the secondary
    one drops it; pieces on opposite-direction edges (touching from outside) are dropped by
    both.

    Args:
        p, q: [K, 4, 2] float64 CCW polygons.
        tol_d: [K] distance below which two parallel edges are collinear (metres).
        primary: True for the first polygon of the pair.

    Returns:
        [K] contribution to the intersection area (m^2).
    """
    d = np.roll(p, -1, axis=1) - p                        # [K, 4, 2] edges of p
    e = np.roll(q, -1, axis=1) - q                        # [K, 4, 2] edges of q
    pi = p[:, :, None, :]                                 # [K, 4, 1, 2]
    di = d[:, :, None, :]
    qj = q[:, None, :, :]                                 # [K, 1, 4, 2]
    ej = e[:, None, :, :]
    rel = pi - qj
    n0 = ej[..., 0] * rel[..., 1] - ej[..., 1] * rel[..., 0]   # [K, 4, 4] cross(e_j, p_i - q_j)
    n1 = ej[..., 0] * di[..., 1] - ej[..., 1] * di[..., 0]     # [K, 4, 4] cross(e_j, d_i)
    len_e = np.sqrt(ej[..., 0] ** 2 + ej[..., 1] ** 2)
    len_d = np.sqrt(di[..., 0] ** 2 + di[..., 1] ** 2)
    parallel = np.abs(n1) <= _PARALLEL_TOL * len_e * len_d
    on_line = parallel & (np.abs(n0) <= tol_d[:, None, None] * len_e)
    if primary:
        same_dir = (ej[..., 0] * di[..., 0] + ej[..., 1] * di[..., 1]) > 0
        empty = parallel & np.where(on_line, ~same_dir, n0 < 0)
    else:
        empty = parallel & (on_line | (n0 < 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -n0 / np.where(parallel, 1.0, n1)
    lower = np.where(~parallel & (n1 > 0), t, 0.0).max(axis=2)
    upper = np.where(~parallel & (n1 < 0), t, 1.0).min(axis=2)
    lo = np.maximum(lower, 0.0)
    hi = np.minimum(upper, 1.0)
    span = np.where(empty.any(axis=2), 0.0, np.maximum(hi - lo, 0.0))     # [K, 4]
    cross_pd = p[:, :, 0] * d[:, :, 1] - p[:, :, 1] * d[:, :, 0]
    return 0.5 * (span * cross_pd).sum(axis=1)


@_njit
def _nb_corners(x, y, dx, dy, yaw, out):
    """CCW corners of one box into ``out`` [4, 2] (numba kernel)."""
    c = math.cos(yaw)
    s = math.sin(yaw)
    for i in range(4):
        lx = dx * (0.5 if i == 1 or i == 2 else -0.5)
        ly = dy * (0.5 if i >= 2 else -0.5)
        out[i, 0] = x + lx * c - ly * s
        out[i, 1] = y + lx * s + ly * c


@_njit
def _nb_edge_integral(p, q, tol_d, primary):
    """Scalar twin of ``_clipped_edge_integral`` for one pair (numba kernel)."""
    total = 0.0
    for i in range(4):
        px = p[i, 0]
        py = p[i, 1]
        dx = p[(i + 1) % 4, 0] - px
        dy = p[(i + 1) % 4, 1] - py
        len_d = math.sqrt(dx * dx + dy * dy)
        lo = 0.0
        hi = 1.0
        empty = False
        for j in range(4):
            qx = q[j, 0]
            qy = q[j, 1]
            ex = q[(j + 1) % 4, 0] - qx
            ey = q[(j + 1) % 4, 1] - qy
            n0 = ex * (py - qy) - ey * (px - qx)
            n1 = ex * dy - ey * dx
            len_e = math.sqrt(ex * ex + ey * ey)
            if abs(n1) <= _PARALLEL_TOL * len_e * len_d:
                if abs(n0) <= tol_d * len_e:
                    if (not primary) or ex * dx + ey * dy <= 0:
                        empty = True
                        break
                elif n0 < 0:
                    empty = True
                    break
            else:
                t = -n0 / n1
                if n1 > 0:
                    lo = max(lo, t)
                else:
                    hi = min(hi, t)
        if not empty and hi > lo:
            total += 0.5 * (hi - lo) * (px * dy - py * dx)
    return total


@_njit
def _nb_pair_intersection(a, b, pa, pb):
    """Exact intersection area of BEV boxes a, b ([5] each); pa, pb are [4, 2] scratch."""
    area_a = a[2] * a[3]
    area_b = b[2] * b[3]
    if area_a < MIN_AREA or area_b < MIN_AREA:
        return 0.0
    cx = 0.5 * (a[0] + b[0])
    cy = 0.5 * (a[1] + b[1])
    _nb_corners(a[0] - cx, a[1] - cy, a[2], a[3], a[4], pa)
    _nb_corners(b[0] - cx, b[1] - cy, b[2], b[3], b[4], pb)
    scale = max(max(abs(a[2]), abs(a[3])), max(abs(b[2]), abs(b[3])))
    tol_d = _COLLINEAR_TOL * scale
    inter = _nb_edge_integral(pa, pb, tol_d, True) + _nb_edge_integral(pb, pa, tol_d, False)
    if not math.isfinite(inter) or inter < 0.0:
        return 0.0
    return min(inter, min(area_a, area_b))


@_njit
def _nb_intersections(a5, b5):
    out = np.zeros(a5.shape[0])
    pa = np.empty((4, 2))
    pb = np.empty((4, 2))
    for k in range(a5.shape[0]):
        out[k] = _nb_pair_intersection(a5[k], b5[k], pa, pb)
    return out


def _np_intersections(a5: np.ndarray, b5: np.ndarray) -> np.ndarray:
    # shift each pair to its mid-centre for precision (as mmcv)
    cx = 0.5 * (a5[:, 0] + b5[:, 0])
    cy = 0.5 * (a5[:, 1] + b5[:, 1])
    pa = _ccw_corners(a5[:, 0] - cx, a5[:, 1] - cy, a5[:, 2], a5[:, 3], a5[:, 4])
    pb = _ccw_corners(b5[:, 0] - cx, b5[:, 1] - cy, b5[:, 2], b5[:, 3], b5[:, 4])
    scale = np.maximum(np.abs(a5[:, 2:4]).max(axis=1), np.abs(b5[:, 2:4]).max(axis=1))
    tol_d = _COLLINEAR_TOL * scale
    with np.errstate(invalid="ignore", over="ignore"):
        inter = (_clipped_edge_integral(pa, pb, tol_d, True)
                 + _clipped_edge_integral(pb, pa, tol_d, False))
    area_a = a5[:, 2] * a5[:, 3]
    area_b = b5[:, 2] * b5[:, 3]
    degenerate = (area_a < MIN_AREA) | (area_b < MIN_AREA) | ~np.isfinite(inter)
    inter = np.clip(np.where(degenerate, 0.0, inter), 0.0, None)
    return np.where(degenerate, 0.0, np.minimum(inter, np.minimum(area_a, area_b)))


def rotated_intersection_bev_aligned(a: np.ndarray, b: np.ndarray,
                                     backend: str = "auto") -> np.ndarray:
    """Exact BEV intersection area of box pairs (a[k], b[k]).

    Convex clipping written as a boundary integral: each edge of one rectangle is clipped
    (Cyrus-Beck) to the other rectangle and the kept pieces are summed with Green's theorem;
    collinear overlapping edges are counted once. Vectorized over pairs (numpy) or looped in
    a numba kernel; both give the same result.

    Args:
        a, b: [K, 5] (x, y, dx, dy, yaw) or [K, 7] LiDAR boxes; metres, radians.
        backend: "auto" (numba when installed), "numba" or "numpy".

    Returns:
        [K] float64 intersection areas in m^2 (0 for degenerate boxes).
    """
    a5 = np.ascontiguousarray(bev_boxes(a, "a"), dtype=np.float64)
    b5 = np.ascontiguousarray(bev_boxes(b, "b"), dtype=np.float64)
    if len(a5) != len(b5):
        raise GeometryError(f"aligned boxes need equal counts, got {len(a5)} and {len(b5)}")
    if len(a5) == 0:
        return np.zeros(0)
    if use_numba(backend):
        return _nb_intersections(a5, b5)
    return _np_intersections(a5, b5)


def _iou_from_inter(inter: np.ndarray, area_a: np.ndarray, area_b: np.ndarray) -> np.ndarray:
    union = area_a + area_b - inter
    ok = (area_a >= MIN_AREA) & (area_b >= MIN_AREA) & (union > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, inter / np.where(ok, union, 1.0), 0.0)


def rotated_iou_bev_aligned(a: np.ndarray, b: np.ndarray, backend: str = "auto") -> np.ndarray:
    """Exact rotated BEV IoU of box pairs (a[k], b[k]) (mmcv ``box_iou_rotated(aligned=True)``).

    Args:
        a, b: [K, 5] (x, y, dx, dy, yaw) or [K, 7] LiDAR boxes.
        backend: "auto", "numba" or "numpy" (see ``rotated_intersection_bev_aligned``).

    Returns:
        [K] float64 IoU in [0, 1]; 0 for degenerate (zero-area) boxes, never NaN.
    """
    a5 = bev_boxes(a, "a").astype(np.float64)
    b5 = bev_boxes(b, "b").astype(np.float64)
    inter = rotated_intersection_bev_aligned(a5, b5, backend)
    return _iou_from_inter(inter, a5[:, 2] * a5[:, 3], b5[:, 2] * b5[:, 3])


def _candidate_pairs(a5: np.ndarray, b5: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j) whose axis-aligned bounding rectangles overlap (prefilter)."""
    ra = bev_aabb(a5)
    rb = bev_aabb(b5)
    margin = 1e-9
    hit = ((ra[:, None, 0] < rb[None, :, 2] + margin) & (rb[None, :, 0] < ra[:, None, 2] + margin)
           & (ra[:, None, 1] < rb[None, :, 3] + margin) & (rb[None, :, 1] < ra[:, None, 3] + margin))
    return np.nonzero(hit)


def _intersection_matrix(a5: np.ndarray, b5: np.ndarray, backend: str = "auto") -> np.ndarray:
    out = np.zeros((len(a5), len(b5)))
    if len(a5) == 0 or len(b5) == 0:
        return out
    ii, jj = _candidate_pairs(a5, b5)
    if len(ii):
        out[ii, jj] = rotated_intersection_bev_aligned(a5[ii], b5[jj], backend)
    return out


def rotated_iou_bev(a: np.ndarray, b: np.ndarray, backend: str = "auto") -> np.ndarray:
    """Exact rotated BEV IoU matrix (mmcv ``box_iou_rotated`` on (x, y, dx, dy, yaw)).

    Only pairs whose axis-aligned bounding rectangles overlap are intersected exactly; all
    others are 0 without further cost.

    Args:
        a: [N, 5] (x, y, dx, dy, yaw) or [N, 7] LiDAR boxes; metres, radians (CCW from +x).
        b: [M, 5] or [M, 7] boxes.
        backend: "auto", "numba" or "numpy".

    Returns:
        [N, M] float64 IoU; 0 for degenerate boxes, never NaN.
    """
    a5 = bev_boxes(a, "a").astype(np.float64)
    b5 = bev_boxes(b, "b").astype(np.float64)
    inter = _intersection_matrix(a5, b5, backend)
    return _iou_from_inter(inter, (a5[:, 2] * a5[:, 3])[:, None], (b5[:, 2] * b5[:, 3])[None, :])


def iou_3d(a: np.ndarray, b: np.ndarray, backend: str = "auto") -> np.ndarray:
    """3D IoU matrix of bottom-centre LiDAR boxes (mmdet3d ``LiDARInstance3DBoxes.overlaps``).

    Intersection volume = exact rotated BEV intersection area * height overlap, where each
    box spans [z, z + dz]; IoU = intersection / (vol_a + vol_b - intersection).

    Args:
        a: [N, 7] (x, y, z, dx, dy, dz, yaw) boxes, z at the bottom.
        b: [M, 7] boxes.
        backend: "auto", "numba" or "numpy".

    Returns:
        [N, M] float64 IoU; 0 for degenerate (zero-volume) boxes, never NaN.
    """
    a7 = _boxes7(a, "a").astype(np.float64)
    b7 = _boxes7(b, "b").astype(np.float64)
    inter_bev = _intersection_matrix(bev_boxes(a7), bev_boxes(b7), backend)
    top = np.minimum(a7[:, None, 2] + a7[:, None, 5], b7[None, :, 2] + b7[None, :, 5])
    bottom = np.maximum(a7[:, None, 2], b7[None, :, 2])
    inter = inter_bev * np.maximum(top - bottom, 0.0)
    vol_a = (a7[:, 3] * a7[:, 4] * a7[:, 5])[:, None]
    vol_b = (b7[:, 3] * b7[:, 4] * b7[:, 5])[None, :]
    union = vol_a + vol_b - inter
    ok = (vol_a > 0) & (vol_b > 0) & (union > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, inter / np.where(ok, union, 1.0), 0.0)


def _nearest_xyxy(boxes: np.ndarray) -> np.ndarray:
    bev = bev_boxes(boxes).astype(np.float64)
    swap = np.abs(limit_period(bev[:, 4], 0.5, np.pi)) > np.pi / 4
    dx = np.where(swap, bev[:, 3], bev[:, 2])
    dy = np.where(swap, bev[:, 2], bev[:, 3])
    return np.stack([bev[:, 0] - dx / 2, bev[:, 1] - dy / 2,
                     bev[:, 0] + dx / 2, bev[:, 1] + dy / 2], axis=1)


def nearest_bev_iou(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """IoU of the nearest axis-aligned BEV boxes (mmdet3d ``BboxOverlapsNearest3D``, mode iou).

    Each box is snapped to the axis-aligned box it is closest to: dx and dy are swapped when
    ``|limit_period(yaw, 0.5, pi)| > pi / 4``; IoU of the resulting rectangles is
    ``overlap / max(union, eps)`` (mmdet ``bbox_overlaps``).

    Args:
        a: [N, 7] or [N, 5] boxes.
        b: [M, 7] or [M, 5] boxes.
        eps: lower bound of the union (m^2).

    Returns:
        [N, M] float64 IoU.
    """
    ra = _nearest_xyxy(a)
    rb = _nearest_xyxy(b)
    if len(ra) > len(rb):                        # IoU is symmetric: chunk the smaller side
        return _aligned_iou_chunked(rb, ra, eps).T
    return _aligned_iou_chunked(ra, rb, eps)


def _aligned_iou_chunked(ra: np.ndarray, rb: np.ndarray, eps: float,
                         chunk_elems: int = 1 << 18) -> np.ndarray:
    """Axis-aligned IoU [N, M] of xyxy rectangles (N <= M).

    Large M (e.g. all anchors of a feature map): per row of ``ra`` only the rectangles of
    ``rb`` overlapping it are evaluated, the rest is 0. Small M: cache-sized row chunks.
    """
    out = np.zeros((len(ra), len(rb)))
    area_b = (rb[:, 2] - rb[:, 0]) * (rb[:, 3] - rb[:, 1])
    area_a = (ra[:, 2] - ra[:, 0]) * (ra[:, 3] - ra[:, 1])
    if len(rb) > 4096:
        for i in range(len(ra)):
            x0, y0, x1, y1 = ra[i]
            cand = np.flatnonzero((rb[:, 0] < x1) & (rb[:, 2] > x0)
                                  & (rb[:, 1] < y1) & (rb[:, 3] > y0))
            if len(cand) == 0:
                continue
            c = rb[cand]
            w = np.minimum(c[:, 2], x1) - np.maximum(c[:, 0], x0)
            h = np.minimum(c[:, 3], y1) - np.maximum(c[:, 1], y0)
            overlap = w * h
            out[i, cand] = overlap / np.maximum(area_a[i] + area_b[cand] - overlap, eps)
        return out
    step = max(1, chunk_elems // max(len(rb), 1))
    for start in range(0, len(ra), step):
        r = ra[start:start + step]
        w = np.minimum(r[:, None, 2], rb[None, :, 2])
        w -= np.maximum(r[:, None, 0], rb[None, :, 0])
        np.maximum(w, 0.0, out=w)
        h = np.minimum(r[:, None, 3], rb[None, :, 3])
        h -= np.maximum(r[:, None, 1], rb[None, :, 1])
        np.maximum(h, 0.0, out=h)
        w *= h                                   # overlap
        union = area_a[start:start + step, None] + area_b[None, :] - w
        np.maximum(union, eps, out=union)
        np.divide(w, union, out=out[start:start + step])
    return out


def points_in_boxes(points: np.ndarray, boxes: np.ndarray,
                    return_index: bool = False) -> np.ndarray:
    """Which bottom-centre LiDAR boxes contain each point (mmcv ``points_in_boxes_cpu``).

    A point is inside when ``|z - (zb + dz/2)| <= dz/2`` and, in the box frame, strictly
    ``|local_x| < dx/2`` and ``|local_y| < dy/2``.

    Args:
        points: [P, >=3] points (x, y, z, ...) in metres, LiDAR frame.
        boxes: [M, 7] boxes (x, y, z, dx, dy, dz, yaw), z at the bottom.
        return_index: return the first containing box per point instead of the mask.

    Returns:
        [P, M] bool mask, or [P] int64 index of the first box containing the point (-1: none).
    """
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise GeometryError(f"points: expected [P, >=3] (x, y, z, ...), got shape {pts.shape}")
    b = _boxes7(boxes, "boxes").astype(np.float64)
    p = pts[:, :3].astype(np.float64)
    sx = p[:, None, 0] - b[None, :, 0]
    sy = p[:, None, 1] - b[None, :, 1]
    c = np.cos(-b[:, 6])[None, :]
    s = np.sin(-b[:, 6])[None, :]
    lx = sx * c - sy * s
    ly = sx * s + sy * c
    half_z = b[None, :, 5] / 2
    inside = ((np.abs(p[:, None, 2] - (b[None, :, 2] + half_z)) <= half_z)
              & (np.abs(lx) < b[None, :, 3] / 2) & (np.abs(ly) < b[None, :, 4] / 2))
    if not return_index:
        return inside
    if inside.shape[1] == 0:
        return np.full(len(p), -1, dtype=np.int64)
    first = inside.argmax(axis=1).astype(np.int64)
    return np.where(inside.any(axis=1), first, -1)

