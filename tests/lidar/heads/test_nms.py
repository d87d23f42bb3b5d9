"""Rotated and axis-aligned BEV NMS and mmdet3d's multi-class NMS against a shapely loop."""
from __future__ import annotations

import numpy as np
import pytest

from admlops_ros.lidar.geometry import HAVE_NUMBA
from admlops_ros.lidar.heads import aligned_nms, multiclass_nms, rotated_nms
from tests.lidar.heads.reference import loop_nms, shapely_iou

_rotated_nms = rotated_nms


def _clustered_bev(rng, n, spread=3.0):
    centres = rng.uniform(0, 40, (max(n // 8, 1), 2))
    pick = rng.integers(0, len(centres), n)
    xy = centres[pick] + rng.normal(0, spread / 4, (n, 2))
    return np.c_[xy, rng.uniform(0.5, 4.5, (n, 2)), rng.uniform(-3.2, 3.2, n)]


BACKENDS = ["numpy"] + (["numba"] if HAVE_NUMBA else [])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("thr", [0.0, 0.01, 0.1, 0.5, 0.7])
def test_rotated_nms_matches_shapely_loop(thr, backend):
    rng = np.random.default_rng(int(thr * 100) + 7)
    for _ in range(3):
        bev = _clustered_bev(rng, 80)
        scores = rng.uniform(0, 1, 80)
        keep = rotated_nms(bev, scores, thr, backend=backend)
        assert keep.dtype == np.int64
        assert keep.tolist() == loop_nms(bev, scores, thr)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rotated_nms_ties_pre_post_and_empty(backend):
    def rotated_nms(*args, **kwargs):
        return _rotated_nms(*args, backend=backend, **kwargs)

    bev = np.array([[0, 0, 2, 2, 0], [0.1, 0, 2, 2, 0], [10, 0, 2, 2, 0], [10.1, 0, 2, 2, 0.1]],
                   float)
    scores = np.array([0.5, 0.5, 0.5, 0.5])
    assert rotated_nms(bev, scores, 0.1).tolist() == [0, 2]       # ties: input order
    assert rotated_nms(bev[::-1], scores, 0.1).tolist() == [0, 2]
    scores = np.array([0.1, 0.9, 0.8, 0.2])
    assert rotated_nms(bev, scores, 0.1).tolist() == [1, 2]
    assert rotated_nms(bev, scores, 0.1, post_max_size=1).tolist() == [1]
    assert rotated_nms(bev, scores, 0.1, pre_max_size=1).tolist() == [1]
    assert rotated_nms(bev, scores, 1.0).tolist() == [1, 2, 3, 0]   # nothing > 1
    assert rotated_nms(np.zeros((0, 5)), np.zeros(0), 0.1).tolist() == []


def test_aligned_nms_ignores_yaw():
    rng = np.random.default_rng(5)
    bev = _clustered_bev(rng, 60)
    scores = rng.uniform(0, 1, 60)

    def aa_iou(a, b):
        return shapely_iou([*a[:4], 0.0], [*b[:4], 0.0])

    for thr in (0.01, 0.3, 0.6):
        assert aligned_nms(bev, scores, thr).tolist() == loop_nms(bev, scores, thr, aa_iou)


@pytest.mark.parametrize("backend", BACKENDS)
def test_multiclass_nms_semantics(backend):
    rng = np.random.default_rng(11)
    n = 120
    bev = _clustered_bev(rng, n)
    boxes = np.c_[bev[:, :2], rng.uniform(-2, 0, n), bev[:, 2:4], rng.uniform(1, 2, n), bev[:, 4]]
    scores = rng.uniform(0, 0.6, (n, 3))
    dirs = rng.integers(0, 2, n)
    out_b, out_s, out_l, out_d = multiclass_nms(boxes, scores, 0.2, 0.1, 1000, True, dirs,
                                                backend=backend)
    exp_idx, exp_lab = [], []
    for k in range(3):
        idx = [i for i in range(n) if scores[i, k] > 0.2]
        keep = loop_nms(bev[idx], scores[idx, k], 0.1)
        exp_idx += [idx[j] for j in keep]
        exp_lab += [k] * len(keep)
    assert out_l.tolist() == exp_lab                       # class-major, not re-sorted
    np.testing.assert_array_equal(out_b, boxes[exp_idx])
    np.testing.assert_array_equal(out_s, scores[exp_idx, exp_lab])
    np.testing.assert_array_equal(out_d, dirs[exp_idx])
    # cut to max_num: sorted by score descending
    cut_b, cut_s, cut_l, _ = multiclass_nms(boxes, scores, 0.2, 0.1, 5, True, dirs)
    order = np.argsort(-out_s, kind="stable")[:5]
    np.testing.assert_array_equal(cut_s, out_s[order])
    np.testing.assert_array_equal(cut_l, out_l[order])
    # nothing passes
    e_b, e_s, e_l, e_d = multiclass_nms(boxes, scores, 0.9, 0.1, 50, True, dirs)
    assert e_b.shape == (0, 7) and len(e_s) == len(e_l) == len(e_d) == 0
    # axis-aligned variant runs through the same path
    a_b, _, a_l, _ = multiclass_nms(boxes, scores, 0.2, 0.1, 1000, False, None)
    assert len(a_b) == len(a_l) > 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("post", [0, 1, 5, 40, 1000])
def test_post_max_size_stops_early_with_the_full_greedy_prefix(backend, post):
    """The NMS kernels stop once post_max_size boxes are kept: the result must be the first
    post_max_size of the full greedy result (rotated and circle NMS)."""
    from admlops_ros.lidar.heads.nms import circle_nms
    rng = np.random.default_rng(post + 3)
    bev = _clustered_bev(rng, 300)
    scores = rng.uniform(0, 1, 300)
    full = rotated_nms(bev, scores, 0.1, backend=backend).tolist()
    assert rotated_nms(bev, scores, 0.1, post_max_size=post, backend=backend).tolist() == \
        full[:post]
    full_c = circle_nms(bev[:, :2], scores, 0.5, backend=backend).tolist()
    assert circle_nms(bev[:, :2], scores, 0.5, post_max_size=post, backend=backend).tolist() \
        == full_c[:post]
