"""Short training runs on stand-in frames: loss goes down, checkpoints load with weights_only."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from admlops_ros.training.augment import AugmentConfig  # noqa: E402
from admlops_ros.training.configs import SIM_SMALL  # noqa: E402
from admlops_ros.training.dataset import SampleBuilder, collate  # noqa: E402
from admlops_ros.training.network import build_model  # noqa: E402
from admlops_ros.training.train import (CHECKPOINT, LOG_JSONL, TrainConfig,  # noqa: E402
                                        train)

R = 15.36
TINY = SIM_SMALL.replace(
    name="tiny_train", point_cloud_range=(0.0, -R / 2, -3.0, R, R / 2, 1.0),
    feat_channels=(16,), layer_nums=(1, 1, 1), out_channels=(16, 16, 32),
    fpn_out_channels=(16, 16, 16), max_voxels=(3000, 3000),
    anchor_ranges=((0.0, -R / 2, -0.6, R, R / 2, -0.6),) * 2
    + ((0.0, -R / 2, -1.78, R, R / 2, -1.78),), tensorrt_profile=None)

SIZES = {"Car": (3.9, 1.6, 1.56), "Pedestrian": (0.8, 0.6, 1.73), "Cyclist": (1.76, 0.6, 1.73),
         "Van": (5.0, 2.0, 2.2)}


def standin_frame(seed: int):
    """Ground plane at z = -1.73 plus boxes with points sampled on their surfaces."""
    rng = np.random.default_rng(seed)
    names, boxes, pts = [], [], []
    for i, name in enumerate(["Car", "Car", "Pedestrian", "Cyclist", "Van"]):
        dx, dy, dz = SIZES[name]
        x, y = rng.uniform(3, R - 3), rng.uniform(-R / 2 + 2, R / 2 - 2)
        if any(np.hypot(x - b[0], y - b[1]) < 4.5 for b in boxes):
            continue
        yaw = rng.uniform(-np.pi, np.pi)
        boxes.append([x, y, -1.73, dx, dy, dz, yaw])
        names.append(name)
        n = 300
        half = np.array([dx, dy, dz]) / 2
        u = rng.uniform(-1, 1, (n, 3)) * half
        face = rng.integers(0, 3, n)  # put each point on one face of the box
        rows = np.arange(n)
        u[rows, face] = np.sign(u[rows, face]) * half[face] * 0.98
        c, s = np.cos(yaw), np.sin(yaw)
        p = np.stack([x + c * u[:, 0] - s * u[:, 1], y + s * u[:, 0] + c * u[:, 1],
                      -1.73 + dz / 2 + u[:, 2], rng.random(n)], axis=1)
        pts.append(p)
    ground = np.stack([rng.uniform(0, R, 3000), rng.uniform(-R / 2, R / 2, 3000),
                       np.full(3000, -1.73), rng.random(3000) * 0.2], axis=1)
    points = np.concatenate(pts + [ground]).astype(np.float32)
    m = len(boxes)
    return SimpleNamespace(points=points, boxes=np.asarray(boxes, np.float32), names=names,
                           num_points=np.full(m, 300), difficulty=np.zeros(m, np.int64))


def test_sample_builder_crop_and_collate():
    builder = SampleBuilder(TINY, AugmentConfig(gt_sampling=False), crop=(24, 32))
    rng = np.random.default_rng(0)
    samples = [builder.build(standin_frame(s), rng) for s in (0, 1)]
    batch = collate(samples)
    rows, cols = builder.canvas_hw
    assert (rows, cols) == (24, 32)
    sc = batch["scatter_coors"]
    assert sc[:, 2].max() < rows and sc[:, 3].max() < cols and sc.min() >= 0
    assert set(np.unique(sc[:, 0])) <= {0, 1}
    a = TINY.num_anchors
    assert len(batch["labels"]) == 2 * (rows // 2) * (cols // 2) * a
    model = build_model(TINY).train()
    t = {k: torch.from_numpy(v) for k, v in batch.items() if getattr(v, "ndim", 0)}
    cls, reg, d = model.forward_batch(t["voxels"], t["num_points"], t["coors"], batch_size=2,
                                      canvas_hw=(rows, cols), scatter_coors=t["scatter_coors"])
    assert cls.shape == (2, a * 3, rows // 2, cols // 2)


def test_sample_builder_shuffles_points_as_the_model_config_says():
    frame = standin_frame(0)
    assert TINY.shuffle_points  # inherited from SIM_SMALL
    shuffled = SampleBuilder(TINY).build(frame, np.random.default_rng(0))
    in_order = SampleBuilder(TINY, shuffle_points=False).build(frame, np.random.default_rng(0))
    # the same cells; their slots hold other samples of their points
    key = lambda s: {tuple(c) for c in s.coors.tolist()}  # noqa: E731
    assert key(shuffled) == key(in_order)
    assert not np.array_equal(np.sort(shuffled.voxels[:, :, 2].sum(axis=1)),
                              np.sort(in_order.voxels[:, :, 2].sum(axis=1)))


@pytest.mark.slow
def test_short_training_lowers_loss_and_checkpoint_loads(tmp_path):
    cfg = TrainConfig(iterations=40, batch_size=2, crop=None, lr=3e-3, gt_db_frames=3,
                      augment=AugmentConfig(rot_range=(-0.1, 0.1), sample_groups={"Car": 3}),
                      log_every=10, checkpoint_every=20, threads=2)
    ckpt = train(cfg, tmp_path, frame_fn=lambda seed: standin_frame(seed % 3),
                 model_config=TINY, progress=False)
    log = [json.loads(line) for line in (tmp_path / LOG_JSONL).read_text().splitlines()]
    assert [r["iteration"] for r in log] == [10, 20, 30, 40]
    assert log[-1]["loss"] < 0.8 * log[0]["loss"], [r["loss"] for r in log]
    state = torch.load(str(ckpt), weights_only=True)
    model = build_model(TINY, init=False)
    model.load_state_dict(state, strict=True)
    assert ckpt.name == CHECKPOINT


def test_resume_gives_the_same_weights_as_one_run(tmp_path):
    cfg = TrainConfig(iterations=4, batch_size=1, crop=None, gt_db_frames=0,
                      augment=AugmentConfig(gt_sampling=False), log_every=2, checkpoint_every=2)
    fn = lambda seed: standin_frame(seed % 2)  # noqa: E731
    one = train(cfg, tmp_path / "a", frame_fn=fn, model_config=TINY, progress=False)
    train(cfg, tmp_path / "b", frame_fn=fn, model_config=TINY, progress=False, stop_at=2)
    two = train(cfg, tmp_path / "b", frame_fn=fn, model_config=TINY, progress=False,
                resume=True)
    sa = torch.load(str(one), weights_only=True)
    sb = torch.load(str(two), weights_only=True)
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-5, atol=1e-6, msg=k)


def test_training_on_a_kitti_dataset_mixed_with_stand_in_frames(tmp_path, caplog):
    """--dataset: real KITTI frames (camera view), mixed by ratio with the frame source, and
    the ground-truth database built from the dataset's objects."""
    from tests.paths import SHARED_KITTI
    training = SHARED_KITTI / "training"
    if not (training / "velodyne").is_dir():
        pytest.skip(f"real KITTI frames not found at {training} (../shared beside the repo)")
    cfg = TrainConfig(iterations=3, batch_size=2, crop=None, gt_db_frames=6, log_every=1,
                      checkpoint_every=10, threads=2, dataset=str(training),
                      dataset_ratio=1.0)
    with caplog.at_level("INFO"):
        ckpt = train(cfg, tmp_path, model_config=TINY, progress=False)
    assert ckpt.is_file()
    assert "gt database from 6 frames" in caplog.text
    assert json.loads((tmp_path / "train_config.json").read_text())["dataset"] == str(training)
    log = [json.loads(line) for line in (tmp_path / LOG_JSONL).read_text().splitlines()]
    assert len(log) == 3 and all(np.isfinite(r["loss"]) for r in log)


def test_simulator_presets_of_the_training_frames(tmp_path):
    """--sim-sensor / --sim-scene choose the simulated frames (default: the shipped model's)."""
    import argparse

    from admlops_ros.training.cli import _train_config, add_train_arguments
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    cfg = _train_config(parser.parse_args(["--out", str(tmp_path)]))
    assert (cfg.sim_sensor, cfg.sim_scene) == ("hdl64", "default")
    cfg = _train_config(parser.parse_args(["--out", str(tmp_path), "--sim-sensor",
                                           "hdl64e_s2_kitti", "--sim-scene", "kitti_streets"]))
    assert (cfg.sim_sensor, cfg.sim_scene) == ("hdl64e_s2_kitti", "kitti_streets")
    cfg.iterations, cfg.batch_size, cfg.gt_db_frames, cfg.log_every = 2, 1, 2, 1
    cfg.threads, cfg.prefetch = 1, False
    train(cfg, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "latest.pth").is_file()


def test_freeze_bn_keeps_the_normalisation_statistics(tmp_path):
    """--freeze-bn: BatchNorm running statistics are not updated by fine-tuning batches."""
    import torch
    cfg = TrainConfig(model="sim_small", iterations=2, batch_size=1, gt_db_frames=2, log_every=1,
                      threads=1, prefetch=False, freeze_bn=True)
    init = tmp_path / "init.pth"
    torch.save(build_model(SIM_SMALL).state_dict(), str(init))
    train(cfg, tmp_path / "run", progress=False, init=init)
    before = torch.load(str(init), weights_only=True)
    after = torch.load(str(tmp_path / "run" / CHECKPOINT), weights_only=True)
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith(".weight"))
