"""CenterPoint reference network: mmdet3d state_dict names, mmdeploy outputs, ORT == OpenVINO ==
torch, and the LidarDetector path on an exported centerpoint bundle."""
from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

from admlops_ros.backends import BackendError  # noqa: E402
from admlops_ros.bundle.files import read_spec, write_spec  # noqa: E402
from admlops_ros.lidar.detector import LidarDetector  # noqa: E402
from admlops_ros.lidar.heads import decoder_from_spec  # noqa: E402
from admlops_ros.training.centerpoint import (PILLAR02_NUS, CenterPointConfig,  # noqa: E402
                                              build_centerpoint, centerpoint_model_spec,
                                              export_centerpoint_bundle)
from admlops_ros.training.export import (OUTPUT_NAMES, random_voxels, run_onnxruntime,  # noqa: E402
                                         run_openvino, run_torch)

# 0.4 m pillars over 25.6 m x 19.2 m: a 64 x 48 canvas, a 16 x 12 head map; 3 tasks, 5 classes.
TINY = CenterPointConfig(
    name="centerpoint_tiny", tasks=(("car",), ("truck", "bus"), ("pedestrian", "cone")),
    point_features=("x", "y", "z", "intensity", "time"), voxel_size=(0.4, 0.4, 8.0),
    point_cloud_range=(-12.8, -9.6, -5.0, 12.8, 9.6, 3.0), max_points=8,
    max_voxels=(2000, 2000), feat_channels=(16,), layer_nums=(1, 1, 1),
    out_channels=(16, 24, 32), fpn_out_channels=(16, 16, 16), share_conv_channel=16,
    head_conv=16, max_num=60, post_center_range=(-14.0, -11.0, -10.0, 14.0, 11.0, 10.0),
    test_cfg={"nms_type": "rotate", "min_radius": (4, 1, 0.175), "nms_thr": 0.2,
              "score_threshold": 0.1, "pre_max_size": 100, "post_max_size": 20,
              "post_center_limit_range": (-14.0, -11.0, -10.0, 14.0, 11.0, 10.0)},
    tensorrt_profile=None)


def _randomize(model, seed=0):
    """Weights and BN statistics that give outputs of order 1 and heatmap peaks."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)):
                fan_in = m.weight.shape[0] if isinstance(m, torch.nn.ConvTranspose2d) \
                    else m.weight[0].numel()
                m.weight.normal_(0, (1.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.uniform_(-0.5, 0.5)
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
        for head in model.pts_bbox_head.task_heads:
            head.heatmap[-1].bias.fill_(-2.19)
    return model.eval()


def _cloud(seed=0, n=6000):
    rng = np.random.default_rng(seed)
    r = TINY.point_cloud_range
    centres = rng.uniform(r[:3], r[3:], (25, 3))
    xyz = centres[rng.integers(0, 25, n)] + rng.normal(0, [1.0, 1.0, 0.5], (n, 3))
    return np.c_[xyz, rng.random(n), rng.uniform(0, 0.5, n)].astype(np.float32)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    model = _randomize(build_centerpoint(TINY, init=False))
    out = tmp_path_factory.mktemp("cp") / "bundle"
    export_centerpoint_bundle(TINY, out, model=model, check_voxels=(300,))
    return out, model


def test_state_dict_names_are_mmdet3d_s():
    keys = set(build_centerpoint(PILLAR02_NUS, init=False).state_dict())
    for key in ("pts_voxel_encoder.pfn_layers.0.linear.weight",
                "pts_voxel_encoder.pfn_layers.0.norm.running_var",
                "pts_backbone.blocks.2.15.weight", "pts_neck.deblocks.0.0.weight",
                "pts_neck.deblocks.2.1.num_batches_tracked",
                "pts_bbox_head.shared_conv.conv.weight", "pts_bbox_head.shared_conv.bn.bias",
                "pts_bbox_head.task_heads.0.reg.0.conv.weight",
                "pts_bbox_head.task_heads.0.reg.0.bn.running_mean",
                "pts_bbox_head.task_heads.0.reg.1.bias",
                "pts_bbox_head.task_heads.5.vel.1.weight",
                "pts_bbox_head.task_heads.5.heatmap.1.bias"):
        assert key in keys, key
    assert not any(k.startswith(("voxel_encoder", "bbox_head")) for k in keys)
    assert not any(".conv.bias" in k for k in keys)   # ConvModule bias='auto' with BN
    model = build_centerpoint(PILLAR02_NUS, init=False)
    assert isinstance(model.pts_neck.deblocks[1][0], torch.nn.Conv2d)   # stride 1: conv
    assert isinstance(model.pts_neck.deblocks[2][0], torch.nn.ConvTranspose2d)
    assert model.pts_bbox_head.task_heads[1].heatmap[1].out_channels == 2
    assert model.pts_bbox_head.task_heads[0].reg[1].kernel_size == (3, 3)


def test_nuscenes_spec_numbers():
    spec = centerpoint_model_spec(PILLAR02_NUS)
    assert spec.head_channels == (10, 48, 12)
    assert spec.head_feature_map_sizes == ((128, 128),)
    assert spec.voxelization.canvas_shape == (512, 512)
    assert spec.input.sweeps == 10 and spec.input.num_features == 5
    assert spec.test_cfg.nms_type == "rotate" and spec.test_cfg.post_max_size == 83


def test_outputs_are_the_task_heads_concatenated(bundle):
    _, model = bundle
    inputs = random_voxels(TINY, 200, seed=3)
    outs = run_torch(model, inputs)
    v, n, c = (torch.from_numpy(a) for a in inputs)
    with torch.no_grad():
        x = model.pts_neck(model.pts_backbone(model.pts_middle_encoder(
            model.pts_voxel_encoder(v, n, c), c, 1)))
        tasks = model.pts_bbox_head(x)
    assert outs["cls_score0"].shape == (1, 5, 12, 16)
    assert outs["bbox_pred0"].shape == (1, 24, 12, 16)
    assert outs["dir_cls_pred0"].shape == (1, 6, 12, 16)
    np.testing.assert_array_equal(outs["cls_score0"][:, 1:3], tasks[1]["heatmap"].numpy())
    np.testing.assert_array_equal(outs["bbox_pred0"][:, 8:10], tasks[1]["reg"].numpy())
    np.testing.assert_array_equal(outs["bbox_pred0"][:, 10:11], tasks[1]["height"].numpy())
    np.testing.assert_array_equal(outs["bbox_pred0"][:, 11:14], tasks[1]["dim"].numpy())
    np.testing.assert_array_equal(outs["bbox_pred0"][:, 14:16], tasks[1]["vel"].numpy())
    np.testing.assert_array_equal(outs["dir_cls_pred0"][:, 4:6], tasks[2]["rot"].numpy())


@pytest.mark.parametrize("num_voxels", [1, 150, 1500])
def test_onnxruntime_equals_openvino_equals_torch(bundle, num_voxels):
    root, model = bundle
    inputs = random_voxels(TINY, num_voxels, seed=num_voxels)
    ref = run_torch(model, inputs)
    ort = run_onnxruntime(root / "end2end.onnx", inputs)
    ov = run_openvino(root / "openvino" / "end2end.xml", inputs, "f32")
    for name in OUTPUT_NAMES:
        scale = max(1.0, float(np.abs(ref[name]).max()))
        np.testing.assert_allclose(ort[name], ref[name], rtol=0, atol=1e-4 * scale)
        np.testing.assert_allclose(ov[name], ref[name], rtol=0, atol=1e-4 * scale)


def test_detector_on_onnxruntime_and_openvino_gives_the_same_detections(bundle):
    root, model = bundle
    points = _cloud(1)
    with LidarDetector.from_bundle(root, backend="onnxruntime") as ort, \
            LidarDetector.from_bundle(root, backend="openvino") as ov:
        a, b = ort.detect(points), ov.detect(points)
        vox = ort.preprocess(points)
    assert len(a) > 5 and a.velocities is not None
    assert a.class_names == TINY.class_names
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-4)
    np.testing.assert_allclose(a.velocities, b.velocities, atol=1e-4)
    # the same as the decoder on PyTorch's outputs for the runtime's voxels
    from admlops_ros.lidar.voxelize import with_batch_index
    ref = run_torch(model, (vox.voxels, vox.num_points, with_batch_index(vox.coors)))
    c = decoder_from_spec(read_spec(root)).decode(*([ref[n]] for n in OUTPUT_NAMES))
    np.testing.assert_array_equal(a.labels, c.labels)
    np.testing.assert_allclose(a.boxes, c.boxes, atol=1e-4)


def test_circle_nms_bundle_spec_runs(bundle, tmp_path):
    root, _ = bundle
    shutil.copytree(root, tmp_path / "b")
    spec = read_spec(root)
    cfg = dataclasses.replace(spec.test_cfg, nms_type="circle")
    write_spec(dataclasses.replace(spec, test_cfg=cfg), tmp_path / "b" / "spec.yaml")
    with LidarDetector.from_bundle(tmp_path / "b", backend="onnxruntime") as det:
        out = det.detect(_cloud(2))
    assert len(out) > 0


@pytest.mark.parametrize("change, needle", [
    ({"tasks": (("car",), ("truck", "bus"), ("pedestrian",), ("cone",))},
     "bbox_pred0 has 24 channels but the spec implies 32 = 4 tasks * (reg 2, height 1, dim 3, "
     "vel 2)"),
    ({"out_size_factor": 2}, "map is [12, 16] (H, W) but the spec's center_head.out_size_factor "
     "gives [24, 32]"),
])
def test_spec_engine_mismatch_is_named(bundle, tmp_path, change, needle):
    root, _ = bundle
    shutil.copytree(root, tmp_path / "b")
    spec = read_spec(root)
    tasks = len(change.get("tasks", spec.center_head.tasks))
    cfg = dataclasses.replace(spec.test_cfg, min_radius=(1.0,) * tasks)
    write_spec(dataclasses.replace(spec, center_head=dataclasses.replace(spec.center_head,
                                                                         **change),
                                   test_cfg=cfg), tmp_path / "b" / "spec.yaml")
    with pytest.raises(BackendError) as err:
        LidarDetector.from_bundle(tmp_path / "b", backend="onnxruntime")
    assert needle in str(err.value)


def test_code_size_mismatch_is_named(bundle, tmp_path):
    root, _ = bundle
    shutil.copytree(root, tmp_path / "b")
    spec = read_spec(root)
    coder = dataclasses.replace(spec.box_coder, code_size=7)
    write_spec(dataclasses.replace(spec, box_coder=coder), tmp_path / "b" / "spec.yaml")
    with pytest.raises(BackendError, match=r"bbox_pred0 has 24 channels but the spec implies "
                                           r"18 = 3 tasks \* \(reg 2, height 1, dim 3\)"):
        LidarDetector.from_bundle(tmp_path / "b", backend="onnxruntime")
