"""Box overlaps (matching module): hand-computed BEV / 3D IoU."""
from __future__ import annotations

import math

import pytest

from admlops_ros.evaluation.matching import box_overlaps
from tests.evaluation.boxes import car

pytestmark = pytest.mark.usefixtures("geometry")


@pytest.mark.parametrize("pred, bev, d3", [
    (car(x=11.0), 0.6, 0.6),                                   # 3x2 of 4x2 overlap: 6 / 10
    (car(yaw=math.pi / 2), 1 / 3, 1 / 3),                      # cross: 4 / 12
    (car(dx=2, dy=2, yaw=math.pi / 4), None, None),            # checked below
    (car(z=-1.6 + 0.75), 1.0, 1 / 3),                          # half height: 6 / 18
    (car(yaw=math.pi), 1.0, 1.0),                              # flipped: same rectangle
])
def test_iou_hand_computed(pred, bev, d3):
    gt = car()
    if bev is None:  # 2x2 square vs itself rotated 45 deg: octagon 8(sqrt2-1), IoU 1/sqrt2
        gt = car(dx=2, dy=2)
        bev = d3 = 1 / math.sqrt(2)
    assert box_overlaps("bev", pred[None], gt[None])[0, 0] == pytest.approx(bev, abs=1e-6)
    assert box_overlaps("3d", pred[None], gt[None])[0, 0] == pytest.approx(d3, abs=1e-6)
