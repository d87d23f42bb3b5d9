"""ONNX export (mmdeploy 1.2+ names, dynamic voxels): ORT and OpenVINO equal PyTorch; FLOPs."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

from admlops_ros.training.configs import KITTI_3CLASS, SIM_SMALL, to_model_spec  # noqa: E402
from admlops_ros.training.export import (INPUT_NAMES, OUTPUT_NAMES, export_bundle,  # noqa: E402
                                         export_onnx, export_openvino, run_onnxruntime,
                                         run_openvino, run_torch)
from admlops_ros.training.flops import count_flops  # noqa: E402
from admlops_ros.training.network import build_model  # noqa: E402

SMALL = SIM_SMALL.replace(
    name="small_test", point_cloud_range=(0.0, -10.24, -3.0, 20.48, 10.24, 1.0),
    max_points=12, max_voxels=(3000, 3000), feat_channels=(16,), layer_nums=(1, 2, 2),
    out_channels=(16, 32, 32), fpn_out_channels=(16, 16, 16),
    anchor_ranges=((0.0, -10.24, -0.6, 20.48, 10.24, -0.6),) * 2
    + ((0.0, -10.24, -1.78, 20.48, 10.24, -1.78),), tensorrt_profile=None)


def _voxelize(points, cfg):
    try:
        from admlops_ros.lidar.voxelize import voxelize, with_batch_index
    except ImportError:  # pragma: no cover - the runtime voxelizer is part of the project
        pytest.skip("admlops_ros.lidar.voxelize not available")
    vox = voxelize(points, cfg.voxel_size, cfg.point_cloud_range, cfg.max_points,
                   cfg.max_voxels[1])
    return vox.voxels, vox.num_points, with_batch_index(vox.coors).astype(np.int32)


def _random_cloud(rng, n, cfg):
    r = cfg.point_cloud_range
    lo, hi = np.array(r[:3]) - 1.0, np.array(r[3:]) + 1.0  # some points outside the range
    xyz = rng.uniform(lo, hi, size=(n, 3))
    # clusters so that some pillars are full
    centres = rng.uniform(lo, hi, size=(20, 3))
    xyz[: n // 2] = centres[rng.integers(0, 20, n // 2)] + rng.normal(0, 0.3, (n // 2, 3))
    return np.concatenate([xyz, rng.random((n, 1))], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(SMALL)
    with torch.no_grad():
        for m in model.modules():  # non-trivial weights and BN statistics
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)):
                fan_in = m.weight[0].numel() if not isinstance(m, torch.nn.ConvTranspose2d) \
                    else m.weight.shape[0]
                m.weight.normal_(0, (1.0 / fan_in) ** 0.5)  # outputs of order 1
                if m.bias is not None:
                    m.bias.uniform_(-0.5, 0.5)
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    model.eval()
    d = tmp_path_factory.mktemp("export")
    onnx_path = export_onnx(model, d / "end2end.onnx", num_voxels=300)
    xml = export_openvino(onnx_path, d / "openvino" / "end2end.xml")
    return model, onnx_path, xml


def test_onnx_io_contract(exported):
    import onnx
    _, onnx_path, _ = exported
    graph = onnx.load(str(onnx_path)).graph
    assert [i.name for i in graph.input] == list(INPUT_NAMES)
    assert [o.name for o in graph.output] == list(OUTPUT_NAMES)
    for inp in graph.input:
        assert inp.type.tensor_type.shape.dim[0].dim_param  # dynamic voxel axis
    elem = {i.name: i.type.tensor_type.elem_type for i in graph.input}
    assert elem == {"voxels": onnx.TensorProto.FLOAT, "num_points": onnx.TensorProto.INT32,
                    "coors": onnx.TensorProto.INT32}
    ops = {n.op_type for n in graph.node}
    assert "ScatterElements" in ops or "ScatterND" in ops
    assert onnx.load(str(onnx_path)).opset_import[0].version == 11


@pytest.mark.parametrize("n_points,seed", [(500, 1), (6000, 2), (20000, 3)])
def test_onnxruntime_and_openvino_equal_torch(exported, n_points, seed):
    model, onnx_path, xml = exported
    rng = np.random.default_rng(seed)
    inputs = _voxelize(_random_cloud(rng, n_points, SMALL), SMALL)
    ref = run_torch(model, inputs)
    h, w = SMALL.feature_map_size
    assert ref["cls_score0"].shape == (1, 18, h, w)
    for key in OUTPUT_NAMES:  # outputs of order 1: neither trivially small nor huge
        assert 0.3 < np.abs(ref[key]).max() < 20, (key, np.abs(ref[key]).max())
    for name, outs in (("onnxruntime", run_onnxruntime(onnx_path, inputs)),
                       ("openvino-onnx", run_openvino(onnx_path, inputs)),
                       ("openvino-ir", run_openvino(xml, inputs))):
        for key in OUTPUT_NAMES:
            np.testing.assert_allclose(outs[key], ref[key], rtol=0, atol=1e-4,
                                       err_msg=f"{name} {key} V={len(inputs[0])}")


def test_flops_of_the_kitti_and_default_configs():
    assert count_flops(KITTI_3CLASS) == pytest.approx(68.35, abs=0.01)  # dense part
    assert count_flops(KITTI_3CLASS, num_voxels=12000) == pytest.approx(68.84, abs=0.01)
    assert 4.0 <= count_flops(SIM_SMALL) <= 5.0


def test_export_bundle_writes_a_loadable_spec(tmp_path):
    from admlops_ros.bundle.files import load_bundle
    out = export_bundle(SMALL, tmp_path / "bundle", check_voxels=(200,))
    bundle = load_bundle(out)
    assert bundle.spec.anchors.feature_map_size == SMALL.feature_map_size
    assert bundle.spec.voxelization.max_points == SMALL.max_points
    assert to_model_spec(SMALL).to_dict()["engine"]["output_layout"] == "mmdeploy-1.2"


class _NotATensor:
    """Stands for the mmengine objects an mmdet3d checkpoint's meta may hold."""


def test_checkpoint_with_objects_gives_the_command_that_extracts_its_weights(tmp_path):
    from admlops_ros.training.export import ExportError, load_checkpoint
    model = build_model(SMALL)
    path = tmp_path / "epoch_80.pth"
    torch.save({"state_dict": model.state_dict(), "meta": _NotATensor()}, str(path))
    with pytest.raises(ExportError, match="weights_only=True.*torch.save") as err:
        load_checkpoint(model, path)
    assert str(path) in str(err.value)
    torch.save({"state_dict": model.state_dict(), "meta": {"epoch": 80}}, str(path))
    load_checkpoint(model, path)  # plain mmdet3d-style dict: loads


def test_average_weights_mixes_floats_and_keeps_counters(tmp_path):
    import torch

    from admlops_ros.cli import main
    from admlops_ros.training.export import ExportError, average_weights
    a = {"w": torch.zeros(3), "n": torch.tensor(1)}
    b = {"w": torch.full((3,), 2.0), "n": torch.tensor(7)}
    torch.save(a, str(tmp_path / "a.pth"))
    torch.save(b, str(tmp_path / "b.pth"))
    assert main(["average-weights", str(tmp_path / "a.pth"), str(tmp_path / "b.pth"),
                 "--weight", "0.25", "-o", str(tmp_path / "m.pth")]) == 0
    out = torch.load(str(tmp_path / "m.pth"), weights_only=True)
    assert torch.equal(out["w"], torch.full((3,), 0.5)) and int(out["n"]) == 7
    torch.save({"other": torch.zeros(1)}, str(tmp_path / "c.pth"))
    with pytest.raises(ExportError, match="not the same network"):
        average_weights(tmp_path / "a.pth", tmp_path / "c.pth", 0.5, tmp_path / "x.pth")
