"""nuScenes PointPillars reference network: mmdet3d state_dict names, HardVFE semantics, export in
mmdeploy's contract (ORT == OpenVINO == torch), and the LidarDetector path on its bundle."""
from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

from admlops_ros.lidar.detector import LidarDetector  # noqa: E402
from admlops_ros.lidar.voxelize import with_batch_index  # noqa: E402
from admlops_ros.training.export import random_voxels, run_onnxruntime, run_openvino  # noqa
from admlops_ros.training.pointpillars_nus import (NUS_FPN, NUS_SECFPN, HardVFE,  # noqa: E402
                                                   NusConfigError, build_nus_model,
                                                   count_nus_flops, export_nus_bundle,
                                                   output_names, run_nus_torch,
                                                   to_nus_model_spec)
from tests.lidar.heads.test_anchor3d_nus import reference_decode  # noqa: E402

TEST_CFG = dict(NUS_FPN.test_cfg)
# 48 x 48 canvas -> FPN levels 24, 12, 6 (0.8, 1.6, 3.2 m anchor pitch, scales 1, 2, 4)
TINY_FPN = NUS_FPN.replace(
    name="tiny_nus_fpn", point_cloud_range=(-9.6, -9.6, -5.0, 9.6, 9.6, 3.0),
    voxel_size=(0.4, 0.4, 8.0), max_points=8, max_voxels=(2000, 2000), feat_channels=(8, 8),
    layer_nums=(1, 1, 1), out_channels=(8, 16, 16), fpn_out_channels=16,
    anchor_ranges=((-9.6, -9.6, -1.8, 9.6, 9.6, -1.8),), tensorrt_profile=None)
# 40 x 40 canvas -> one 20 x 20 level, 7 ranges/sizes x 2 rotations
TINY_SECFPN = NUS_SECFPN.replace(
    name="tiny_nus_secfpn", point_cloud_range=(-9.92, -9.92, -5.0, 9.92, 9.92, 3.0),
    voxel_size=(0.496, 0.496, 8.0), max_points=8, max_voxels=(2000, 2000), feat_channels=(8, 8),
    layer_nums=(1, 1, 1), out_channels=(8, 16, 16), secfpn_out_channels=(8, 8, 8),
    anchor_ranges=tuple((-9.92, -9.92, r[2], 9.92, 9.92, r[5]) for r in NUS_SECFPN.anchor_ranges),
    tensorrt_profile=None)


def test_state_dict_names_and_shapes_are_mmdet3d_s():
    sd = build_nus_model(NUS_FPN).state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    # HardVFE: 4 + 3 + 3 = 10 -> 64 (concat max: 128) -> 64; naiveSyncBN1d as BatchNorm1d
    assert shapes["pts_voxel_encoder.vfe_layers.0.linear.weight"] == (64, 10)
    assert shapes["pts_voxel_encoder.vfe_layers.1.linear.weight"] == (64, 128)
    assert "pts_voxel_encoder.vfe_layers.1.norm.running_var" in sd
    assert shapes["pts_backbone.blocks.0.0.weight"] == (64, 64, 3, 3)
    assert shapes["pts_backbone.blocks.2.15.weight"] == (256, 256, 3, 3)
    # mmdet FPN: ConvModule conv (no bias) + bn
    assert shapes["pts_neck.lateral_convs.2.conv.weight"] == (256, 256, 1, 1)
    assert shapes["pts_neck.lateral_convs.0.conv.weight"] == (256, 64, 1, 1)
    assert shapes["pts_neck.fpn_convs.1.conv.weight"] == (256, 256, 3, 3)
    assert "pts_neck.fpn_convs.1.conv.bias" not in sd and "pts_neck.fpn_convs.1.bn.bias" in sd
    # Anchor3DHead: 4 sizes x 2 rotations = 8 anchors, 10 classes, code 9
    assert shapes["pts_bbox_head.conv_cls.weight"] == (80, 256, 1, 1)
    assert shapes["pts_bbox_head.conv_reg.weight"] == (72, 256, 1, 1)
    assert shapes["pts_bbox_head.conv_dir_cls.weight"] == (16, 256, 1, 1)
    assert {k.split(".")[0] for k in sd} == {"pts_voxel_encoder", "pts_backbone", "pts_neck",
                                             "pts_bbox_head"}
    sec = build_nus_model(NUS_SECFPN).state_dict()
    assert tuple(sec["pts_neck.deblocks.2.0.weight"].shape) == (256, 128, 4, 4)
    assert tuple(sec["pts_bbox_head.conv_cls.weight"].shape) == (140, 384, 1, 1)
    assert tuple(sec["pts_bbox_head.conv_reg.weight"].shape) == (126, 384, 1, 1)


def test_config_numbers():
    assert NUS_FPN.feature_map_sizes == ((200, 200), (100, 100), (50, 50))
    assert NUS_FPN.grid_size == (400, 400) and NUS_FPN.code_size == 9
    assert NUS_SECFPN.feature_map_sizes == ((200, 200),) and NUS_SECFPN.num_anchors == 14
    assert output_names(TINY_FPN) == tuple(f"{k}{i}" for i in range(3) for k in
                                           ("cls_score", "bbox_pred", "dir_cls_pred"))
    spec = to_nus_model_spec(NUS_FPN)
    assert spec.anchors.feature_map_sizes == NUS_FPN.feature_map_sizes
    assert spec.anchors.scales == (1.0, 2.0, 4.0) and spec.box_coder.code_size == 9
    assert spec.head_channels == (80, 72, 16) and spec.test_cfg.max_num == 500
    assert count_nus_flops(NUS_FPN) > count_nus_flops(NUS_SECFPN) > 0
    with pytest.raises(NusConfigError, match="anchor_scales"):
        NUS_FPN.replace(anchor_scales=(1.0,))


def test_hardvfe_matches_a_per_point_loop():
    cfg = TINY_FPN
    vfe = build_nus_model(cfg, seed=3).pts_voxel_encoder.eval()
    voxels, num_points, coors = random_voxels(cfg, 6, seed=4)
    with torch.no_grad():
        out = vfe(torch.from_numpy(voxels), torch.from_numpy(num_points),
                  torch.from_numpy(coors)).numpy()
    layers = [(m.linear.weight.detach().numpy().astype(np.float64), m.norm)
              for m in vfe.vfe_layers]
    vs, r = cfg.voxel_size, cfg.point_cloud_range
    for v in range(len(voxels)):
        n = int(num_points[v])
        pts = voxels[v].astype(np.float64)
        mean = pts[:n, :3].sum(axis=0) / n
        centre = np.array([(coors[v, 3] + 0.5) * vs[0] + r[0], (coors[v, 2] + 0.5) * vs[1] + r[1],
                           (coors[v, 1] + 0.5) * vs[2] + r[2]])
        feats = []
        for m in range(cfg.max_points):          # padded slots are zero before layer 1
            row = np.concatenate([pts[m], pts[m, :3] - mean, pts[m, :3] - centre])
            feats.append(row if m < n else np.zeros_like(row))
        x = np.array(feats)
        for i, (w, bn) in enumerate(layers):
            y = x @ w.T
            y = (y - bn.running_mean.numpy()) / np.sqrt(bn.running_var.numpy() + bn.eps) \
                * bn.weight.detach().numpy() + bn.bias.detach().numpy()
            y = np.maximum(y, 0.0)
            agg = y.max(axis=0)                   # over every slot, padded ones included
            x = agg if i == len(layers) - 1 else np.concatenate(
                [y, np.repeat(agg[None], len(y), axis=0)], axis=1)
        np.testing.assert_allclose(out[v], x, rtol=1e-4, atol=1e-5)
    assert isinstance(vfe, HardVFE)


def _cloud(cfg, seed, n=6000):
    """Points (x, y, z, time lag) in the range, half of them in car-sized clusters."""
    rng = np.random.default_rng(seed)
    r = np.asarray(cfg.point_cloud_range)
    pts = np.empty((n, 4), np.float32)
    pts[:, :3] = rng.uniform(r[:3], r[3:], (n, 3))
    centres = rng.uniform(r[:3] + 1, r[3:] - 1, (12, 3))
    centres[:, 2] = -1.0
    k = n // 2
    pts[:k, :3] = centres[rng.integers(0, 12, k)] + rng.normal(0, [1.2, 0.6, 0.5], (k, 3))
    pts[:, 3] = rng.choice(np.arange(10) * 0.05, n)
    return pts


@pytest.fixture(scope="module", params=["fpn", "secfpn"])
def bundle(request, tmp_path_factory):
    cfg, bias = (TINY_FPN, -5.5) if request.param == "fpn" else (TINY_SECFPN, -4.2)
    # a class bias at which a few hundred anchors per frame pass score_thr 0.05, below
    # nms_pre: the top-k boundary is exercised by tests/lidar/heads/test_anchor3d_nus.py
    model = build_nus_model(cfg, seed=11, cls_bias=bias)
    out = tmp_path_factory.mktemp(cfg.name)
    export_nus_bundle(cfg, out, model=model, check_voxels=(300,))
    return cfg, model, out


def test_raw_outputs_onnxruntime_openvino_torch_agree(bundle):
    cfg, model, path = bundle
    for v in (57, 700):                               # the voxel axis is dynamic
        inputs = random_voxels(cfg, v, seed=v)
        ref = run_nus_torch(model, inputs)
        ort = run_onnxruntime(path / "end2end.onnx", inputs)
        ov = run_openvino(path / "openvino" / "end2end.xml", inputs, "f32")
        assert set(ort) == set(ov) == set(ref) == set(output_names(cfg))
        for name in ref:
            assert ort[name].shape == ref[name].shape
            np.testing.assert_allclose(ort[name], ref[name], atol=1e-4, rtol=0)
            np.testing.assert_allclose(ov[name], ref[name], atol=1e-4, rtol=0)
    h, w = cfg.feature_map_sizes[-1]
    last = cfg.num_levels - 1
    assert ref[f"bbox_pred{last}"].shape == (1, cfg.num_anchors * 9, h, w)


def _spec_dict(spec):
    d = copy.deepcopy(spec.to_dict())
    fms = d["anchors"]["feature_map_size"]
    d["anchors"]["feature_map_size"] = [list(f) for f in fms] if isinstance(fms[0], list) \
        else list(fms)
    return d


def test_detector_on_bundle_equals_reference_decode(bundle):
    cfg, model, path = bundle
    points = _cloud(cfg, seed=21)
    dets = {}
    for backend, opts in (("onnxruntime", {}), ("openvino", {"precision": "f32"})):
        with LidarDetector.from_bundle(path, backend=backend, **opts) as det:
            dets[backend] = det.detect(points)
            vox = det.last_voxels
    a, b = dets["onnxruntime"], dets["openvino"]
    assert len(a) == len(b) > 5
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-4)
    assert a.velocities is not None and a.velocities.shape == (len(a), 2)
    np.testing.assert_allclose(a.velocities, b.velocities, atol=1e-4)
    # the same voxels through PyTorch, decoded by the plain mmdet3d loop
    outs = run_nus_torch(model, (vox.voxels, vox.num_points,
                                 with_batch_index(vox.coors).astype(np.int32)))
    n = cfg.num_levels
    spec = _spec_dict(to_nus_model_spec(cfg))
    ref = reference_decode(spec, [outs[f"cls_score{i}"] for i in range(n)],
                           [outs[f"bbox_pred{i}"] for i in range(n)],
                           [outs[f"dir_cls_pred{i}"] for i in range(n)])
    assert len(ref) == len(a)
    np.testing.assert_array_equal(a.labels, [r[3] for r in ref])
    np.testing.assert_allclose(a.scores, [r[2] for r in ref], atol=1e-5)
    np.testing.assert_allclose(a.boxes, np.array([r[0] for r in ref]), atol=2e-4)
    np.testing.assert_allclose(a.velocities, np.array([r[1] for r in ref]), atol=2e-4)
    assert len(set(a.labels.tolist())) > 1 and a.class_names == cfg.class_names


def test_training_spec_input_matches_spec_from_config_of_the_same_config():
    """The exporters' specs and spec-from-config agree on the multi-sweep input (sweeps,
    remove-close, padding) and the point columns of mmdet3d's own configs."""
    from admlops_ros.bundle.from_mmdet3d import spec_from_mmdet3d_config
    from admlops_ros.training.centerpoint import PILLAR02_NUS, centerpoint_model_spec
    from admlops_ros.training.pointpillars_nus import NUS_FPN, to_nus_model_spec
    from tests.paths import FIXTURES

    configs = FIXTURES / "mmdet3d_configs" / "configs"
    pairs = [(to_nus_model_spec(NUS_FPN),
              configs / "pointpillars" / "pointpillars_hv_fpn_sbn-all_8xb4-2x_nus-3d.py"),
             (centerpoint_model_spec(PILLAR02_NUS), configs / "centerpoint" /
              "centerpoint_pillar02_second_secfpn_8xb4-cyclic-20e_nus-3d.py")]
    for ours, path in pairs:
        assert ours.input == spec_from_mmdet3d_config(path).input, path.name
