"""AlignedAnchor3DRangeGenerator: the KITTI anchor grid and mmdet3d's anchor order."""
from __future__ import annotations

import numpy as np

from admlops_ros.lidar.heads import aligned_anchors
from tests.bundle.kitti_spec import KITTI as KITTI_SPEC


def test_kitti_anchor_grid():
    a = KITTI_SPEC["anchors"]
    anchors = aligned_anchors(a["feature_map_size"], a["ranges"], a["sizes"], a["rotations"])
    assert anchors.shape == (321408, 7) and anchors.dtype == np.float32
    np.testing.assert_allclose(anchors[0], [0.16, -39.52, -0.6, 0.8, 0.6, 1.73, 0.0], atol=1e-5)
    np.testing.assert_allclose(anchors[1], [0.16, -39.52, -0.6, 0.8, 0.6, 1.73, 1.57], atol=1e-5)
    np.testing.assert_allclose(anchors[2], [0.16, -39.52, -0.6, 1.76, 0.6, 1.73, 0.0], atol=1e-5)
    np.testing.assert_allclose(anchors[5], [0.16, -39.52, -1.78, 3.9, 1.6, 1.56, 1.57], atol=1e-5)
    grid = anchors.reshape(248, 216, 6, 7)
    np.testing.assert_allclose(np.diff(grid[0, :, 0, 0]), 0.32, atol=1e-5)     # along W: x
    np.testing.assert_allclose(np.diff(grid[:, 0, 0, 1]), 0.32, atol=1e-5)     # along H: y
    np.testing.assert_allclose(grid[-1, -1, 0, :2], [69.12 - 0.16, 39.68 - 0.16], atol=1e-4)
    np.testing.assert_allclose(np.unique(grid[..., 2]), [-1.78, -0.6], atol=1e-6)
    np.testing.assert_allclose(grid[..., :4, 2], -0.6, atol=1e-6)
    np.testing.assert_allclose(grid[..., 4:, 2], -1.78, atol=1e-6)
    # cached and read-only
    assert aligned_anchors(a["feature_map_size"], a["ranges"], a["sizes"],
                           a["rotations"]) is anchors
    assert not anchors.flags.writeable


def test_anchor_order_matches_plain_loop():
    ranges = [[0, -4, -1, 8, 4, -1], [0, -4, -2, 8, 4, -2]]
    sizes = [[1.0, 0.5, 1.5], [4.0, 2.0, 1.6]]
    rots = [0.0, 0.5, 1.57]
    h, w = 5, 4
    for align in (False, True):
        got = aligned_anchors((h, w), ranges, sizes, rots, align_corner=align)
        ref = []
        for yi in range(h):
            for xi in range(w):
                for rng, size in zip(ranges, sizes):
                    sx, sy = (rng[3] - rng[0]) / w, (rng[4] - rng[1]) / h
                    off = 0.0 if align else 0.5
                    for r in rots:
                        ref.append([rng[0] + (xi + off) * sx, rng[1] + (yi + off) * sy, rng[2],
                                    *size, r])
        np.testing.assert_allclose(got, np.array(ref), atol=1e-6)
    # a single range is shared by all sizes
    one = aligned_anchors((h, w), ranges[:1], sizes, rots)
    assert np.all(one.reshape(h, w, 2, 3, 7)[..., 2] == np.float32(-1))
