"""Anchor targets: MaxIoUAssigner semantics, encoding, direction bins, ignored Vans; losses."""
from __future__ import annotations

import math

import numpy as np
import pytest

from admlops_ros.training.configs import SIM_SMALL, AssignerConfig
from admlops_ros.training.targets import (anchor_grid, assign_targets, direction_target,
                                          max_iou_assign)

CFG = SIM_SMALL


def _anchor(anchors, h, w, k, r):
    return anchors[h, w, k, r].astype(np.float32)


def test_anchor_equal_to_gt_is_positive_with_zero_regression():
    anchors = anchor_grid(CFG)
    gts = np.stack([_anchor(anchors, 40, 30, 2, 0), _anchor(anchors, 70, 50, 0, 1),
                    _anchor(anchors, 90, 20, 1, 1)])
    labels = np.array([2, 0, 1])
    t = assign_targets(CFG, anchors, gts, labels)
    hw = anchors.shape[1]
    a_per_cell = anchors.shape[2] * anchors.shape[3]
    for (h, w, k, r), lab in zip([(40, 30, 2, 0), (70, 50, 0, 1), (90, 20, 1, 1)], labels):
        i = (h * hw + w) * a_per_cell + k * anchors.shape[3] + r
        assert t.pos_mask[i] and t.labels[i] == lab and t.label_weights[i] == 1
        np.testing.assert_allclose(t.bbox_targets[i], 0, atol=1e-6)
    # far-away anchors are negatives (background label, weight 1)
    assert t.labels[0] == CFG.num_classes and t.label_weights[0] == 1 and not t.pos_mask[0]
    # anchors of another class never take this gt
    assert set(np.unique(t.labels[t.pos_mask])) <= {0, 1, 2}
    assert t.num_pos == int(t.pos_mask.sum()) >= 3


def test_max_iou_assign_semantics():
    thr = AssignerConfig(0.6, 0.45, 0.3)
    ov = np.array([[0.7, 0.5, 0.1, 0.2, 0.0],
                   [0.1, 0.2, 0.35, 0.2, 0.0]])
    got = max_iou_assign(ov, thr)
    # 0: pos gt0; 1: between thresholds -> ignore; 2: best of gt1 (>= min_pos) -> gt1;
    # 3: negative; 4: negative
    assert got.tolist() == [1, -1, 2, 0, 0]
    # a gt below min_pos_iou gets nothing; ties all take the gt
    got = max_iou_assign(np.array([[0.2, 0.2, 0.1]]), AssignerConfig(0.6, 0.45, 0.25))
    assert got.tolist() == [0, 0, 0]
    got = max_iou_assign(np.array([[0.4, 0.4, 0.1]]), AssignerConfig(0.6, 0.45, 0.25))
    assert got.tolist() == [1, 1, 0]
    assert max_iou_assign(np.zeros((0, 4)), thr).tolist() == [0, 0, 0, 0]


def test_direction_target_matches_mmdet3d():
    anchors = np.zeros((6, 7), np.float32)
    yaws = np.array([0.0, 1.0, -1.0, math.pi - 0.1, -math.pi + 0.1, math.pi / 2 + 0.01])
    deltas = np.zeros((6, 7), np.float32)
    deltas[:, 6] = yaws
    # limit_period(yaw + pi/2, 0, 2pi) // pi
    expected = np.floor(((yaws + math.pi / 2) % (2 * math.pi)) / math.pi).astype(int)
    assert direction_target(anchors, deltas, -math.pi / 2).tolist() == expected.tolist()


def test_van_makes_car_anchors_ignored_not_negative():
    anchors = anchor_grid(CFG)
    van = _anchor(anchors, 60, 60, 2, 0).copy()
    van[3:6] = (5.0, 2.0, 2.2)
    t = assign_targets(CFG, anchors, np.zeros((0, 7)), np.zeros(0), ignore_boxes={2: van[None]})
    lab = t.labels.reshape(anchors.shape[:4])
    wgt = t.label_weights.reshape(anchors.shape[:4])
    assert wgt[60, 60, 2, 0] == 0  # the car anchor on the van: ignored
    assert wgt[60, 60, 0, 0] == 1 and lab[60, 60, 0, 0] == CFG.num_classes  # ped anchor: negative
    assert wgt[10, 10, 2, 0] == 1
    assert t.num_pos == 0


def test_losses_are_zero_bbox_for_perfect_predictions():
    torch = pytest.importorskip("torch")
    from admlops_ros.training.losses import add_sin_difference, head_losses, smooth_l1_loss
    small = CFG.replace(point_cloud_range=(0.0, -5.12, -3.0, 10.24, 5.12, 1.0),
                        anchor_ranges=((0.0, -5.12, -0.6, 10.24, 5.12, -0.6),) * 2
                        + ((0.0, -5.12, -1.78, 10.24, 5.12, -1.78),))
    anchors = anchor_grid(small)
    h, w = small.feature_map_size
    gt = _anchor(anchors, 3, 4, 2, 1).copy()
    gt[6] += 0.3
    t = assign_targets(small, anchors, gt[None], np.array([2]))
    a = anchors.shape[2] * anchors.shape[3]
    bbox = torch.from_numpy(t.bbox_targets).view(1, h, w, a * 7).permute(0, 3, 1, 2)
    cls = torch.full((1, a * 3, h, w), -20.0)
    dirs = torch.zeros((1, a * 2, h, w))
    losses = head_losses(cls, bbox.contiguous(), dirs, torch.from_numpy(t.labels),
                         torch.from_numpy(t.label_weights), torch.from_numpy(t.bbox_targets),
                         torch.from_numpy(t.pos_mask), torch.from_numpy(t.dir_targets),
                         float(max(t.num_pos, 1)))
    assert float(losses["loss_bbox"]) == pytest.approx(0.0, abs=1e-6)
    assert float(losses["loss_cls"]) > 0  # positives predicted as background
    assert float(losses["loss_dir"]) == pytest.approx(0.2 * math.log(2), rel=1e-5)
    # sin difference: yaw error pi is no error for the box loss
    p, q = add_sin_difference(torch.tensor([[0, 0, 0, 0, 0, 0, math.pi]]),
                              torch.zeros(1, 7))
    assert float(smooth_l1_loss(p, q, 1 / 9).sum()) == pytest.approx(0.0, abs=1e-6)
