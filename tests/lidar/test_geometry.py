"""Tests of admlops_ros.lidar.geometry: rotated IoU vs shapely, 3D IoU, nearest IoU, points in boxes."""
from __future__ import annotations

import math

import numpy as np
import pytest
from shapely.geometry import Polygon

from admlops_ros.lidar.geometry import (HAVE_NUMBA, GeometryError, bev_aabb, box_corners_3d,
                                        box_corners_bev, iou_3d, limit_period, nearest_bev_iou,
                                        points_in_boxes, rotated_iou_bev, rotated_iou_bev_aligned)


def shapely_iou(a5, b5) -> float:
    """IoU of two (x, y, dx, dy, yaw) rectangles built independently of the module."""
    def poly(b):
        x, y, dx, dy, yaw = b
        c, s = math.cos(yaw), math.sin(yaw)
        pts = []
        for lx, ly in ((-dx / 2, -dy / 2), (dx / 2, -dy / 2), (dx / 2, dy / 2), (-dx / 2, dy / 2)):
            pts.append((x + lx * c - ly * s, y + lx * s + ly * c))
        return Polygon(pts)
    pa, pb = poly(a5), poly(b5)
    union = pa.union(pb).area
    return pa.intersection(pb).area / union if union > 0 else 0.0


def _pair_cases(rng: np.random.Generator):
    """~2600 box pairs (x, y, dx, dy, yaw): random plus the hard cases, with case names."""
    cases = {}
    n = 1000
    a = np.c_[rng.uniform(-5, 5, (n, 2)), rng.uniform(0.2, 5, (n, 2)), rng.uniform(-7, 7, n)]
    b = np.c_[a[:, :2] + rng.normal(0, 2, (n, 2)), rng.uniform(0.2, 5, (n, 2)),
              rng.uniform(-7, 7, n)]
    cases["random"] = (a, b)

    def base(m):
        return np.c_[rng.uniform(-50, 50, (m, 2)), rng.uniform(0.3, 5, (m, 2)),
                     rng.uniform(-4, 4, m)]

    m = 200
    a = base(m)
    cases["identical"] = (a, a.copy())
    b = a.copy()
    b[:, 4] += np.pi
    cases["rotated_by_pi"] = (a, b)
    b = a.copy()
    b[:, 2:4] = a[:, 3:1:-1]
    b[:, 4] += np.pi / 2
    cases["same_rect_swapped_dims"] = (a, b)
    b = a.copy()
    b[:, 2:4] *= rng.uniform(0.1, 0.9, (m, 1))
    cases["nested"] = (a, b)
    b = a.copy()
    b[:, 2:4] *= rng.uniform(0.1, 0.9, (m, 1))
    shift = rng.uniform(-0.05, 0.05, (m, 1)) * a[:, 2:3]
    b[:, 0:1] += shift * np.cos(a[:, 4:5])
    b[:, 1:2] += shift * np.sin(a[:, 4:5])
    cases["nested_off_centre"] = (a, b)
    b = a.copy()                      # touching along the heading: shared edge, no overlap
    b[:, 0] += a[:, 2] * np.cos(a[:, 4])
    b[:, 1] += a[:, 2] * np.sin(a[:, 4])
    cases["touching"] = (a, b)
    b = a.copy()                      # partly overlapping with two collinear edges
    frac = rng.uniform(0.05, 0.95, m)
    b[:, 0] += frac * a[:, 2] * np.cos(a[:, 4])
    b[:, 1] += frac * a[:, 2] * np.sin(a[:, 4])
    cases["collinear_shift"] = (a, b)
    b = a.copy()
    b[:, 0:2] += 100.0
    cases["disjoint"] = (a, b)
    b = a.copy()
    b[:, 2:4] = rng.uniform(1e-4, 1e-2, (m, 2))
    b[:, 4] = rng.uniform(-4, 4, m)
    cases["tiny"] = (a, b)
    # axis-aligned integer grid boxes: shared edges and corners in all configurations
    g = 200
    a = np.c_[rng.integers(0, 4, (g, 2)).astype(float), rng.integers(1, 4, (g, 2)).astype(float),
              np.zeros(g)]
    b = np.c_[rng.integers(0, 4, (g, 2)).astype(float), rng.integers(1, 4, (g, 2)).astype(float),
              rng.choice([0.0, np.pi / 2, np.pi, -np.pi / 2], g)]
    cases["grid_axis_aligned"] = (a, b)
    return cases


BACKENDS = ["numpy"] + (["numba"] if HAVE_NUMBA else [])


@pytest.mark.parametrize("backend", BACKENDS)
def test_rotated_iou_matches_shapely_on_2000_plus_pairs(backend):
    rng = np.random.default_rng(42)
    total = 0
    for name, (a, b) in _pair_cases(rng).items():
        got = rotated_iou_bev_aligned(a, b, backend=backend)
        ref = np.array([shapely_iou(p, q) for p, q in zip(a, b)])
        assert not np.isnan(got).any(), name
        np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0, err_msg=name)
        total += len(a)
    assert total >= 2000


@pytest.mark.parametrize("backend", BACKENDS)
def test_rotated_iou_special_values(backend):
    rng = np.random.default_rng(1)
    cases = _pair_cases(rng)
    a, b = cases["identical"]
    np.testing.assert_allclose(rotated_iou_bev_aligned(a, b, backend), 1.0, atol=1e-9)
    a, b = cases["rotated_by_pi"]
    np.testing.assert_allclose(rotated_iou_bev_aligned(a, b, backend), 1.0, atol=1e-9)
    a, b = cases["touching"]
    np.testing.assert_allclose(rotated_iou_bev_aligned(a, b, backend), 0.0, atol=1e-9)
    a, b = cases["disjoint"]
    assert np.all(rotated_iou_bev_aligned(a, b, backend) == 0.0)
    # both backends agree to rounding on every case
    for name, (a, b) in cases.items():
        np.testing.assert_allclose(rotated_iou_bev_aligned(a, b, "numpy"),
                                   rotated_iou_bev_aligned(a, b, backend), atol=1e-12,
                                   err_msg=name)


def test_rotated_iou_matrix_equals_pairwise():
    rng = np.random.default_rng(3)
    a = np.c_[rng.uniform(0, 20, (40, 2)), rng.uniform(0.5, 4, (40, 2)), rng.uniform(-4, 4, 40)]
    b = np.c_[rng.uniform(0, 20, (30, 2)), rng.uniform(0.5, 4, (30, 2)), rng.uniform(-4, 4, 30)]
    mat = rotated_iou_bev(a, b)
    assert mat.shape == (40, 30)
    ref = np.array([[shapely_iou(p, q) for q in b] for p in a])
    np.testing.assert_allclose(mat, ref, atol=1e-6)
    assert (mat > 0).sum() > 10           # the sample does contain overlaps
    # [N, 7] input gives the same as its BEV view
    a7 = np.c_[a[:, :2], np.zeros(40), a[:, 2:4], np.ones(40), a[:, 4]]
    np.testing.assert_allclose(rotated_iou_bev(a7, b), mat)
    assert rotated_iou_bev(a[:0], b).shape == (0, 30)


@pytest.mark.parametrize("backend", BACKENDS)
def test_degenerate_boxes_give_zero_not_nan(backend):
    a = np.array([[0, 0, 2, 0, 0.3], [0, 0, 0, 0, 0.0], [1, 1, 2, 1e-15, 0.2]], float)
    b = np.array([[0, 0, 2, 2, 0.0], [0, 0, 0, 0, 0.0], [1, 1, 2, 2, 0.0]], float)
    iou = rotated_iou_bev_aligned(a, b, backend)
    assert np.all(iou == 0.0)
    mat = rotated_iou_bev(a, b, backend)
    assert not np.isnan(mat).any()
    boxes7 = np.array([[0, 0, 0, 2, 2, 0, 0], [0, 0, 0, 2, 2, 2, 0]], float)
    m3 = iou_3d(boxes7, boxes7)
    assert not np.isnan(m3).any()
    assert m3[0, 0] == 0.0 and m3[0, 1] == 0.0 and m3[1, 1] == pytest.approx(1.0)
    assert not np.isnan(nearest_bev_iou(boxes7 * 0, boxes7 * 0)).any()


def test_iou_3d_hand_cases():
    car = [10.0, 5.0, -1.7, 4.0, 2.0, 1.5, 0.3]
    m = iou_3d(np.array([car]), np.array([car]))
    assert m.shape == (1, 1) and m[0, 0] == pytest.approx(1.0)
    # same footprint, bottom raised by half the height: overlap 0.75 of 1.5 m
    up = list(car)
    up[2] += 0.75
    assert iou_3d(np.array([car]), np.array([up]))[0, 0] == pytest.approx(0.75 / 2.25)
    # stacked exactly on top: touching, IoU 0
    top = list(car)
    top[2] += 1.5
    assert iou_3d(np.array([car]), np.array([top]))[0, 0] == 0.0
    # half the length shifted along the heading: BEV IoU 1/3, full height
    fwd = list(car)
    fwd[0] += 2.0 * math.cos(0.3)
    fwd[1] += 2.0 * math.sin(0.3)
    assert iou_3d(np.array([car]), np.array([fwd]))[0, 0] == pytest.approx(1 / 3)
    # same rectangle described with swapped dims and yaw + pi/2
    sw = [10.0, 5.0, -1.7, 2.0, 4.0, 1.5, 0.3 + math.pi / 2]
    assert iou_3d(np.array([car]), np.array([sw]))[0, 0] == pytest.approx(1.0)
    # nested: half size in every axis at the same bottom centre -> 1/8
    small = [10.0, 5.0, -1.7, 2.0, 1.0, 0.75, 0.3]
    assert iou_3d(np.array([car]), np.array([small]))[0, 0] == pytest.approx(1 / 8)
    # matrix shape and far box
    far = [60.0, -20.0, -1.7, 4.0, 2.0, 1.5, 0.0]
    mat = iou_3d(np.array([car, far]), np.array([car, up, far]))
    assert mat.shape == (2, 3)
    assert mat[1, 0] == 0.0 and mat[1, 2] == pytest.approx(1.0)


def test_nearest_bev_iou_snaps_to_axis():
    a = np.array([[0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0]])
    # yaw 1.0 > pi/4: treated as the axis-aligned 2 x 4 box -> identical to a 2 x 4 box at 0
    b = np.array([[0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 1.0],
                  [0.0, 0.0, 0.0, 2.0, 4.0, 1.5, 0.0],
                  [0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.7],     # < pi/4: not swapped
                  [0.0, 0.0, 0.0, 4.0, 2.0, 1.5, math.pi - 0.2]])   # wraps to -0.2
    m = nearest_bev_iou(a, b)
    # 4x2 vs 2x4 centred: inter 2x2=4, union 8+8-4=12
    np.testing.assert_allclose(m[0], [4 / 12, 4 / 12, 1.0, 1.0])
    np.testing.assert_allclose(nearest_bev_iou(b, b).diagonal(), 1.0)


def test_nearest_bev_iou_large_side_matches_plain_formula():
    rng = np.random.default_rng(8)
    gts = np.c_[rng.uniform(0, 30, (6, 2)), np.zeros(6), rng.uniform(1, 4, (6, 2)), np.ones(6),
                rng.uniform(-3.2, 3.2, 6)]
    many = np.c_[rng.uniform(0, 30, (5000, 2)), np.zeros(5000), rng.uniform(0.5, 4, (5000, 2)),
                 np.ones(5000), rng.choice([0.0, 1.57], 5000)]
    got = nearest_bev_iou(gts, many)
    assert got.shape == (6, 5000)
    np.testing.assert_array_equal(nearest_bev_iou(many, gts), got.T)

    def xyxy(b):
        swap = abs(b[6] - math.floor(b[6] / math.pi + 0.5) * math.pi) > math.pi / 4
        dx, dy = (b[4], b[3]) if swap else (b[3], b[4])
        return b[0] - dx / 2, b[1] - dy / 2, b[0] + dx / 2, b[1] + dy / 2

    for i in range(6):
        p = xyxy(gts[i])
        for j in rng.choice(5000, 300, replace=False).tolist() + np.flatnonzero(got[i]).tolist():
            q = xyxy(many[j])
            w = max(min(p[2], q[2]) - max(p[0], q[0]), 0.0)
            h = max(min(p[3], q[3]) - max(p[1], q[1]), 0.0)
            union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - w * h
            assert got[i, j] == pytest.approx(w * h / max(union, 1e-6), abs=1e-12)
    assert (got > 0).sum() > 20


def test_points_in_boxes():
    boxes = np.array([[0.0, 0.0, -1.0, 4.0, 2.0, 2.0, math.pi / 2],   # rotated: spans y +-2
                      [10.0, 0.0, 0.0, 2.0, 2.0, 1.0, 0.0],
                      [10.0, 0.0, 0.0, 4.0, 4.0, 1.0, 0.0]])
    pts = np.array([[0.0, 1.9, 0.0],      # inside box 0 (rotated)
                    [1.9, 0.0, 0.0],      # outside box 0 (x half-width is 1 after rotation)
                    [0.0, 0.0, 1.0],      # z = top: inclusive -> inside
                    [0.0, 0.0, 1.01],     # above top
                    [0.0, 2.0 + 1e-9, 0.0],   # just outside along local x
                    [10.0, 0.5, 0.5],     # in boxes 1 and 2 -> first index 1
                    [11.5, 0.0, 0.5],     # only box 2
                    [50.0, 0.0, 0.0]])
    mask = points_in_boxes(pts, boxes)
    expect = np.array([[1, 0, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0],
                       [0, 1, 1], [0, 0, 1], [0, 0, 0]], bool)
    np.testing.assert_array_equal(mask, expect)
    np.testing.assert_array_equal(points_in_boxes(pts, boxes, return_index=True),
                                  [0, -1, 0, -1, -1, 1, 2, -1])
    assert points_in_boxes(pts, boxes[:0], return_index=True).tolist() == [-1] * len(pts)
    with pytest.raises(GeometryError):
        points_in_boxes(pts[:, :2], boxes)


def test_limit_period_and_corners():
    v = np.array([0.0, np.pi / 2, np.pi, -np.pi, 3 * np.pi / 2, -0.1])
    np.testing.assert_allclose(limit_period(v, 0.5, np.pi),
                               [0.0, -np.pi / 2, 0.0, 0.0, -np.pi / 2, -0.1], atol=1e-12)
    np.testing.assert_allclose(limit_period(v, 0.0, np.pi),
                               [0.0, np.pi / 2, 0.0, 0.0, np.pi / 2, np.pi - 0.1], atol=1e-12)
    assert limit_period(np.float32(4.0), 0.0, np.float32(np.pi)).dtype == np.float32
    box = np.array([[1.0, 2.0, 3.0, 4.0, 2.0, 1.5, np.pi / 2]])
    c3 = box_corners_3d(box)[0]
    # corner 0 = (-dx/2, -dy/2, bottom) rotated by +90 deg -> (1 + 1, 2 - 2, 3)
    np.testing.assert_allclose(c3[0], [2.0, 0.0, 3.0], atol=1e-12)
    np.testing.assert_allclose(c3[1], [2.0, 0.0, 4.5], atol=1e-12)
    np.testing.assert_allclose(c3[6], [0.0, 4.0, 4.5], atol=1e-12)
    cb = box_corners_bev(box)[0]
    np.testing.assert_allclose(cb, c3[[0, 4, 7, 3], :2], atol=1e-12)
    assert Polygon(cb).exterior.is_ccw
    np.testing.assert_allclose(bev_aabb(box)[0], [0.0, 0.0, 2.0, 4.0], atol=1e-12)
    with pytest.raises(GeometryError):
        rotated_iou_bev(np.zeros((3, 6)), np.zeros((1, 5)))
    with pytest.raises(GeometryError, match="backend"):
        rotated_iou_bev(np.zeros((3, 5)), np.zeros((1, 5)), backend="cuda")
