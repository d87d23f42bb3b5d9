"""DeltaXYZWLHRBBoxCoder: encode/decode round trip and a hand-computed case."""
from __future__ import annotations

import math

import numpy as np

from admlops_ros.lidar.heads import decode, encode


def test_box_coder_round_trip_and_hand_case():
    rng = np.random.default_rng(0)
    anchors = np.c_[rng.uniform(0, 70, (500, 2)), rng.uniform(-2, 0, 500),
                    rng.uniform(0.5, 4, (500, 3)), rng.uniform(-3, 3, 500)]
    boxes = anchors + np.c_[rng.normal(0, 1, (500, 3)), np.zeros((500, 3)),
                            rng.normal(0, 1, 500)]
    boxes[:, 3:6] = anchors[:, 3:6] * rng.uniform(0.5, 2, (500, 3))
    deltas = encode(anchors, boxes)
    np.testing.assert_allclose(decode(anchors, deltas), boxes, atol=1e-9)
    np.testing.assert_allclose(encode(anchors, decode(anchors, deltas)), deltas, atol=1e-9)
    # hand case: anchor 3.9 x 1.6 x 1.56 at bottom z -1.78
    a = np.array([[10.0, 2.0, -1.78, 3.9, 1.6, 1.56, 0.0]])
    t = np.array([[0.1, -0.2, 0.5, math.log(1.1), 0.0, math.log(0.5), 0.3]])
    diag = math.hypot(3.9, 1.6)
    zc = 0.5 * 1.56 + (-1.78 + 0.78)
    expect = [10 + 0.1 * diag, 2 - 0.2 * diag, zc - 0.39, 3.9 * 1.1, 1.6, 0.78, 0.3]
    np.testing.assert_allclose(decode(a, t)[0], expect, atol=1e-12)
    assert decode(a.astype(np.float32), t.astype(np.float32)).dtype == np.float32
