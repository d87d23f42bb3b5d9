"""Camera detector training side: net contract, targets, augmentation, a tiny step, quick AP."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from admlops_ros.training.camera_data import (CameraCache, FrameLabels, render_cache,
                                              scaled_camera, split_targets)
from admlops_ros.training.camera_net import STRIDE, CameraNet, CameraNetConfig
from admlops_ros.training.camera_train import (TrainConfig, ap50, augment, build_targets,
                                               detect_torch, load_model, train)


def test_forward_contract():
    m = CameraNet().eval()
    with torch.no_grad():
        boxes, scores = m(torch.zeros(1, 3, 64, 128))
    assert boxes.shape == (1, 16 * 32, 4) and scores.shape == (1, 16 * 32, 3)
    assert float(scores.min()) >= 0.0 and float(scores.max()) <= 1.0
    assert (boxes[..., 2] >= boxes[..., 0]).all() and (boxes[..., 3] >= boxes[..., 1]).all()


def test_targets_peak_at_centre_and_ignore():
    gb = np.array([[40.0, 20.0, 80.0, 52.0]], np.float32)
    ib = np.array([[100.0, 0.0, 128.0, 64.0]], np.float32)
    heat, mask, bt, bw = build_targets(gb, np.array([0]), ib, np.array([1]), (64, 128), 3)
    iy, ix = np.unravel_index(np.argmax(heat[0]), heat[0].shape)
    assert heat[0, iy, ix] == 1.0 and (ix, iy) == (60 // STRIDE, 36 // STRIDE)
    assert heat[1:].max() == 0.0
    assert mask[1, :, 100 // STRIDE:].max() == 0.0 and mask[0].min() == 1.0
    assert np.allclose(bt[:, iy, ix], gb[0]) and bw[iy, ix] > 0


def test_split_targets_ignores_vans_small_and_occluded():
    lab = FrameLabels(boxes=np.array([[0, 0, 10, 30], [0, 0, 10, 5], [0, 0, 20, 40],
                                      [0, 0, 10, 30]], np.float32),
                      names=["Car", "Pedestrian", "Van", "Cyclist"],
                      occlusion_level=np.array([0, 0, 0, 3]), truncation=np.zeros(4))
    gb, gl, ib, il = split_targets(lab, min_height=10)
    assert gl.tolist() == [0] and sorted(il.tolist()) == [0, 1, 2]


def test_augment_keeps_boxes_on_the_image():
    rng = np.random.default_rng(0)
    img = np.full((192, 640, 3), 100, np.uint8)
    img[50:100, 300:400] = 255
    boxes = np.array([[300, 50, 400, 100]], np.float32)
    for _ in range(5):
        out, b, kept = augment(img, boxes, (192, 384), (0.7, 1.4), rng)
        assert out.shape == (192, 384, 3)
        assert (b[:, [0, 2]] >= 0).all() and (b[:, [0, 2]] <= 384).all()
        assert 0.0 <= kept[0] <= 1.0


def test_ap50_evaluator():
    g = np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32)
    gts = [(g, np.array([0, 0]), np.zeros((0, 4), np.float32), np.zeros(0, np.int64))]
    perfect = [(g, np.array([0.9, 0.8]), np.array([0, 0]))]
    assert ap50(perfect, gts, 1)[0] == pytest.approx(100.0)
    # a false positive ranked first, then both hits: precision 0, 1/2, 2/3 at recall 0, .5, 1;
    # the all-point envelope is 2/3 everywhere
    fp = [(np.concatenate([[[100, 100, 110, 110]], g]).astype(np.float32),
           np.array([0.95, 0.9, 0.8]), np.array([0, 0, 0]))]
    assert ap50(fp, gts, 1)[0] == pytest.approx(100 * 2 / 3)
    # the same false positive inside an ignore box does not count
    gts_i = [(g, np.array([0, 0]), np.array([[99, 99, 111, 111]], np.float32), np.array([0]))]
    assert ap50(fp, gts_i, 1)[0] == pytest.approx(100.0)


def test_tiny_training_step(tmp_path):
    cache = render_cache(tmp_path / "cache", [5, 6], scaled_camera(128, 64))
    cfg = TrainConfig(iterations=2, batch_size=2, crop=(64, 128), threads=1,
                      net=CameraNetConfig(widths=(8, 8, 16, 16, 16), neck=8))
    model = train(cache, tmp_path / "run", cfg, log_every=1)
    assert (tmp_path / "run" / "latest.pth").exists()
    again = load_model(tmp_path / "run" / "latest.pth")
    x = torch.zeros(1, 3, 64, 128)
    with torch.no_grad():
        assert torch.allclose(model(x)[1], again(x)[1])
    dets = detect_torch(again, [np.asarray(CameraCache(cache).images[0])])
    assert dets[0][0].shape[1] == 4
