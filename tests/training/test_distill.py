"""Distillation: zero terms for a student equal to its teacher, a named mismatch, a short run."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from admlops_ros.training.augment import AugmentConfig  # noqa: E402
from admlops_ros.training.distill import DistillError, Distiller  # noqa: E402
from admlops_ros.training.network import build_model  # noqa: E402
from admlops_ros.training.prune import prune_state_dict  # noqa: E402
from admlops_ros.training.train import (LOG_JSONL, STATE, TrainConfig,  # noqa: E402
                                        TrainError, train)
from tests.training.test_prune import _inputs, _random_bn  # noqa: E402
from tests.training.test_train import TINY, standin_frame  # noqa: E402


def _identity_adapter(distiller):
    n = distiller.adapter.weight.shape[0]
    with torch.no_grad():
        distiller.adapter.weight.copy_(torch.eye(n).reshape(n, n, 1, 1))
        distiller.adapter.bias.zero_()


def test_a_student_equal_to_its_teacher_has_zero_distillation_loss():
    torch.manual_seed(0)
    teacher = build_model(TINY).eval()
    _random_bn(teacher)
    student = build_model(TINY, init=False).eval()
    student.load_state_dict(teacher.state_dict())
    distiller = Distiller(teacher, student)
    _identity_adapter(distiller)
    x = _inputs(TINY)
    with torch.no_grad():
        feats = student.features_batch(*x)
        t = {"voxels": x[0], "num_points": x[1], "coors": x[2], "scatter_coors": None}
        t_feats, t_heads = distiller.teacher_outputs(t, 1, None)
        losses = distiller.losses(feats, student.bbox_head(feats), t_feats, t_heads, 1.0)
    for name, value in losses.items():
        assert float(value) == pytest.approx(0.0, abs=1e-6), name


def test_a_pruned_student_gets_an_adapter_and_positive_terms():
    torch.manual_seed(0)
    teacher = build_model(TINY).eval()
    _random_bn(teacher)
    state, pconfig = prune_state_dict(teacher.state_dict(), TINY, 0.5)
    student = build_model(pconfig, init=False)
    student.load_state_dict(state)
    distiller = Distiller(teacher, student)
    assert distiller.adapter.in_channels == sum(pconfig.fpn_out_channels)
    assert distiller.adapter.out_channels == sum(TINY.fpn_out_channels)
    x = _inputs(TINY)
    feats = student.features_batch(*x)
    t = {"voxels": x[0], "num_points": x[1], "coors": x[2], "scatter_coors": None}
    losses = distiller.losses(feats, student.bbox_head(feats),
                              *distiller.teacher_outputs(t, 1, None), 1.0)
    sum(losses.values()).backward()
    assert all(float(v.detach()) > 0 for v in losses.values())
    assert all(p.grad is None for p in teacher.parameters())  # the teacher stays frozen
    assert student.backbone.blocks[0][0].weight.grad is not None


def test_teacher_of_other_classes_is_named():
    teacher = build_model(TINY.replace(class_names=("Car", "Pedestrian", "Truck")))
    with pytest.raises(DistillError, match="class_names"):
        Distiller(teacher, build_model(TINY))


def test_training_with_a_teacher_logs_the_terms_and_resumes(tmp_path):
    teacher_cfg = tmp_path / "teacher_config.json"
    teacher_cfg.write_text(json.dumps(TINY.to_dict()))
    torch.save(build_model(TINY).state_dict(), str(tmp_path / "teacher.pth"))
    cfg = TrainConfig(iterations=4, batch_size=1, crop=None, gt_db_frames=0, log_every=2,
                      checkpoint_every=2, augment=AugmentConfig(gt_sampling=False),
                      distill_teacher=str(tmp_path / "teacher.pth"),
                      distill_teacher_model=str(teacher_cfg))
    fn = lambda seed: standin_frame(seed % 2)  # noqa: E731
    one = train(cfg, tmp_path / "a", frame_fn=fn, model_config=TINY, progress=False)
    train(cfg, tmp_path / "b", frame_fn=fn, model_config=TINY, progress=False, stop_at=2)
    assert "adapter" in torch.load(str(tmp_path / "b" / STATE), weights_only=True)
    two = train(cfg, tmp_path / "b", frame_fn=fn, model_config=TINY, progress=False,
                resume=True)
    log = [json.loads(line) for line in (tmp_path / "a" / LOG_JSONL).read_text().splitlines()]
    assert {"loss_kd_cls", "loss_kd_box", "loss_kd_dir", "loss_kd_feat"} <= set(log[-1])
    sa, sb = (torch.load(str(p), weights_only=True) for p in (one, two))
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-5, atol=1e-6, msg=k)
    cfg.distill_teacher = str(tmp_path / "missing.pth")
    with pytest.raises(TrainError, match="distill_teacher"):
        train(cfg, tmp_path / "c", frame_fn=fn, model_config=TINY, progress=False)
