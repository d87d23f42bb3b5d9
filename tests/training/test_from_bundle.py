"""Weights rebuilt from the shipped bundle's ONNX: re-exported, the same raw outputs (ORT)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from admlops_ros.training.configs import SIM_SMALL  # noqa: E402
from admlops_ros.training.export import export_onnx, run_onnxruntime, run_torch  # noqa: E402
from admlops_ros.training.from_bundle import (BundleWeightsError, init_checkpoint,  # noqa: E402
                                              kaiming_std, recalibrate_batchnorm,
                                              resolve_init, state_dict_from_bundle)
from admlops_ros.training.network import build_model  # noqa: E402
from tests.paths import REPO_ROOT  # noqa: E402

BUNDLE = REPO_ROOT / "engines" / "pointpillars_sim_3class"


@pytest.fixture(scope="module")
def frame_inputs():
    """One simulated frame voxelized as the runtime does (fixed seed)."""
    from admlops_ros.lidar.voxelize import voxelize, with_batch_index
    from admlops_ros.simulation import simulate_frame
    frame = simulate_frame(4_242_000)
    vox = voxelize(frame.points, SIM_SMALL.voxel_size, SIM_SMALL.point_cloud_range,
                   SIM_SMALL.max_points, SIM_SMALL.max_voxels[1])
    return (vox.voxels, vox.num_points.astype(np.int32),
            with_batch_index(vox.coors).astype(np.int32))


@pytest.fixture(scope="module")
def rebuilt():
    model = build_model(SIM_SMALL, init=False)
    model.load_state_dict(state_dict_from_bundle(BUNDLE, SIM_SMALL), strict=True)
    return model.eval()


def test_reexported_onnx_equals_shipped(rebuilt, frame_inputs, tmp_path):
    shipped = run_onnxruntime(BUNDLE / "end2end.onnx", frame_inputs)
    again = run_onnxruntime(export_onnx(rebuilt, tmp_path / "end2end.onnx"), frame_inputs)
    assert len(frame_inputs[0]) > 1000
    for name, ref in shipped.items():
        assert again[name].shape == ref.shape
        assert float(np.abs(again[name] - ref).max()) < 1e-4, name
    assert float(shipped["cls_score0"].max()) > 0.0  # the frame has confident anchors


def test_rebuilt_weights_have_the_trainers_scale(rebuilt):
    """The fold shrank deep filters 5-10x; rebuilt, each has its initialisation's std (the BN
    gamma after it holds the rest), so fine-tuning steps are as large as in training."""
    folded = state_dict_from_bundle(BUNDLE, SIM_SMALL, natural_scale=False)
    last = "backbone.blocks.2.15.weight"
    assert float(folded[last].std()) < 0.3 * kaiming_std(tuple(folded[last].shape))
    for name, conv in (("first", rebuilt.backbone.blocks[0][0]),
                       ("last", rebuilt.backbone.blocks[2][15])):
        std = float(conv.weight.std())
        assert 0.7 < std / kaiming_std(tuple(conv.weight.shape)) < 1.42, name  # power of 2


def test_recalibrated_batchnorm_keeps_eval_outputs(rebuilt, frame_inputs):
    import copy
    model = copy.deepcopy(rebuilt)
    before = run_torch(model, frame_inputs)
    n = recalibrate_batchnorm(model, [lambda m: run_torch(m, frame_inputs)])
    assert n == 16 + 3 + 1  # backbone, neck, pillar encoder
    after = run_torch(model, frame_inputs)
    for name in before:
        scale = float(np.abs(before[name]).max())
        assert float(np.abs(after[name] - before[name]).max()) < 1e-4 * max(scale, 1.0)
    bn = model.backbone.blocks[0][1]
    assert float(bn.running_var.min()) > 0.0 and float(bn.running_mean.abs().max()) > 0.0


def test_init_checkpoint_and_resolve_init(tmp_path):
    from admlops_ros.simulation import simulate_frame
    from admlops_ros.training.train import TrainConfig
    path = init_checkpoint(BUNDLE, SIM_SMALL, tmp_path / "init.pth", [simulate_frame(7)])
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    build_model(SIM_SMALL, init=False).load_state_dict(state, strict=True)
    assert resolve_init(path, TrainConfig(), tmp_path) == path  # a file is used as it is
    with pytest.raises(BundleWeightsError, match="no such file"):
        resolve_init(tmp_path / "nothing", TrainConfig(), tmp_path)


def test_wrong_config_is_named():
    other = SIM_SMALL.replace(name="wider", feat_channels=(64,))
    with pytest.raises(BundleWeightsError, match="wider"):
        state_dict_from_bundle(BUNDLE, other)
