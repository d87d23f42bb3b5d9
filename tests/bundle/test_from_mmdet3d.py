"""mmdet3d 1.x config -> spec: the KITTI 3-class PointPillars numbers and mmengine merge rules."""
from __future__ import annotations

import logging

import math
from pathlib import Path

import pytest
import yaml

from admlops_ros.bundle import cli as bundle_cli
from admlops_ros.bundle.from_mmdet3d import (head_feature_map_size, spec_from_config_dict,
                                             spec_from_mmdet3d_config)
from admlops_ros.bundle.mmdet3d_config import Mmdet3dConfigError, load_config
from admlops_ros.bundle.spec import ModelSpec
from tests.paths import FIXTURES

CONFIGS = FIXTURES / "mmdet3d_configs" / "configs"
KITTI_3CLASS = CONFIGS / "pointpillars" / "pointpillars_hv_secfpn_8xb6-160e_kitti-3d-3class.py"


def test_kitti_3class_matches_mmdeploy_contract():
    spec = spec_from_mmdet3d_config(KITTI_3CLASS)
    assert spec.class_names == ("Pedestrian", "Cyclist", "Car")
    v = spec.voxelization
    assert v.voxel_size == (0.16, 0.16, 4.0)
    assert v.point_cloud_range == (0.0, -39.68, -3.0, 69.12, 39.68, 1.0)
    assert (v.max_points, v.max_voxels) == (32, 40000)  # test-time max_voxels
    assert v.canvas_shape == (496, 432)
    assert spec.input.point_features == ("x", "y", "z", "intensity")
    a = spec.anchors
    assert a.ranges == ((0, -39.68, -0.6, 69.12, 39.68, -0.6),
                        (0, -39.68, -0.6, 69.12, 39.68, -0.6),
                        (0, -39.68, -1.78, 69.12, 39.68, -1.78))
    assert a.sizes == ((0.8, 0.6, 1.73), (1.76, 0.6, 1.73), (3.9, 1.6, 1.56))
    assert a.rotations == (0.0, 1.57) and a.align_corner is False
    assert a.feature_map_size == (248, 216)
    assert spec.head_channels == (18, 42, 12)
    assert a.num_anchors * 248 * 216 == 321408
    assert spec.box_coder.code_size == 7
    assert spec.head.dir_offset == pytest.approx(-math.pi / 2)
    assert spec.head.dir_limit_offset == 0.0
    t = spec.test_cfg
    assert (t.use_rotate_nms, t.nms_thr, t.score_thr, t.nms_pre, t.max_num) == \
        (True, 0.01, 0.1, 100, 50)


def test_base_chain_merge_rules():
    cfg = load_config(KITTI_3CLASS)
    assert cfg["point_cloud_range"] == [0, -39.68, -3, 69.12, 39.68, 1]  # child overrides base
    assert cfg["lr"] == 0.001
    # child dict merged into the base dict: AdamW kept, lr and clip_grad replaced
    assert cfg["optim_wrapper"]["optimizer"] == {"type": "AdamW", "lr": 0.001,
                                                 "betas": (0.95, 0.99), "weight_decay": 0.01}
    assert cfg["optim_wrapper"]["clip_grad"]["max_norm"] == 35
    assert cfg["train_dataloader"]["batch_size"] == 6
    assert cfg["train_dataloader"]["dataset"]["dataset"]["pipeline"][2]["use_ground_plane"]
    assert cfg["default_scope"] == "mmdet3d"
    assert "_base_" not in cfg


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_delete_and_base_variable_and_duplicate_keys(tmp_path):
    _write(tmp_path / "base" / "a.py", "x = dict(a=1, b=dict(c=2))\nsize = [1, 2]\n")
    _write(tmp_path / "base" / "b.py", "y = 3\n")
    child = _write(tmp_path / "c.py",
                   "_base_ = ['base/a.py', './base/b.py']\n"
                   "x = dict(b=dict(_delete_=True, d=4))\n"
                   "z = {{_base_.size}}\n")
    cfg = load_config(child)
    assert cfg == {"x": {"a": 1, "b": {"d": 4}}, "size": [1, 2], "y": 3, "z": [1, 2]}
    _write(tmp_path / "base" / "d.py", "y = 4\n")
    dup = _write(tmp_path / "dup.py", "_base_ = ['base/b.py', 'base/d.py']\n")
    with pytest.raises(Mmdet3dConfigError, match=r"key\(s\) \['y'\] defined in more than one"):
        load_config(dup)
    bad = _write(tmp_path / "bad.py", "_base_ = 'base/a.py'\nsize = dict(a=1)\n")
    with pytest.raises(Mmdet3dConfigError, match="add _delete_=True"):
        load_config(bad)


def test_feature_map_size_derivation():
    second = {"type": "SECOND", "layer_strides": [2, 2, 2]}
    fpn = {"type": "SECONDFPN", "upsample_strides": [1, 2, 4]}
    assert head_feature_map_size((496, 432), second, fpn) == (248, 216)
    assert head_feature_map_size((512, 512), second, fpn) == (256, 256)
    # nuScenes-style FPN with a down-sampling first level (upsample 0.5)
    assert head_feature_map_size((400, 400), {"type": "SECOND", "layer_strides": [1, 2, 2]},
                                 {"type": "SECONDFPN", "upsample_strides": [0.5, 1, 2]}) == \
        (200, 200)
    with pytest.raises(Mmdet3dConfigError, match="different sizes"):
        head_feature_map_size((498, 432), second, fpn)
    with pytest.raises(Mmdet3dConfigError, match="SECOND \\+ SECONDFPN only"):
        head_feature_map_size((496, 432), {"type": "ResNet"}, fpn)


def test_unsupported_configs_are_named():
    cfg = load_config(KITTI_3CLASS)
    cfg["model"]["bbox_head"]["anchor_generator"]["type"] = "Anchor3DRangeGenerator"
    with pytest.raises(Mmdet3dConfigError, match="Anchor3DRangeGenerator' unsupported"):
        spec_from_config_dict(cfg, "x")
    cfg = load_config(KITTI_3CLASS)
    cfg["model"]["middle_encoder"]["output_shape"] = [400, 432]
    with pytest.raises(Mmdet3dConfigError, match=r"output_shape \[400, 432\] != grid \[496, 432\]"):
        spec_from_config_dict(cfg, "x")
    cfg = load_config(KITTI_3CLASS)
    cfg["model"]["bbox_head"]["dir_offset"] = 0.7854
    assert spec_from_config_dict(cfg, "x").head.dir_offset == 0.7854


def test_cli_spec_from_config_then_bundle_rehash(tmp_path):
    import argparse

    from tests.fixtures.tiny_model import make_tiny_onnx
    parser = argparse.ArgumentParser()
    bundle_cli.add_commands(parser.add_subparsers())
    out = tmp_path / "bundle" / "spec.yaml"
    args = parser.parse_args(["spec-from-config", str(KITTI_3CLASS), "-o", str(out),
                              "--name", "kitti", "--tensorrt-profile", "2000", "5000", "9000"])
    assert args.func(args) == 0
    data = yaml.safe_load(out.read_text())
    assert data["name"] == "kitti"
    assert data["engine"]["tensorrt_profile"] == {"min": 2000, "opt": 5000, "max": 9000}
    make_tiny_onnx(out.parent / "end2end.onnx")
    args = parser.parse_args(["bundle", "--rehash", str(out.parent)])
    assert args.func(args) == 0
    assert set(yaml.safe_load(out.read_text())["files"]) == {"end2end.onnx"}


PP = CONFIGS / "pointpillars"


def test_kitti_car_config_one_class_one_range():
    """A child config with a single-string _base_ and `_delete_=True` on the anchor generator."""
    spec = spec_from_mmdet3d_config(PP / "pointpillars_hv_secfpn_8xb6-160e_kitti-3d-car.py")
    assert spec.class_names == ("Car",)
    assert spec.anchors.ranges == ((0.0, -39.68, -1.78, 69.12, 39.68, -1.78),)
    assert spec.anchors.sizes == ((3.9, 1.6, 1.56),)
    assert spec.anchors.num_anchors == 2 and spec.head_channels == (2, 14, 4)
    assert spec.anchors.feature_map_size == (248, 216)
    assert (spec.test_cfg.nms_pre, spec.test_cfg.max_num) == (100, 50)


def test_mvx_pts_keys_are_read():
    """MVXFasterRCNN: voxel layer in data_preprocessor, pts_* parts, test_cfg.pts; seven
    anchor ranges and sizes for ten classes, velocity as two custom values."""
    spec = spec_from_mmdet3d_config(PP / "pointpillars_hv_secfpn_sbn-all_8xb4-2x_nus-3d.py")
    assert len(spec.class_names) == 10 and spec.class_names[0] == "car"
    assert len(spec.anchors.sizes) == len(spec.anchors.ranges) == 7  # not one per class
    assert spec.anchors.custom_values == (0.0, 0.0) and spec.box_coder.code_size == 9
    assert spec.head_channels == (140, 126, 28)
    assert spec.voxelization.canvas_shape == (400, 400)
    assert spec.anchors.feature_map_size == (200, 200)
    t = spec.test_cfg
    assert (t.nms_pre, t.nms_thr, t.score_thr, t.max_num) == (1000, 0.2, 0.05, 500)
    # LoadPointsFromMultiSweeps keeps use_dim [0, 1, 2, 4]: x, y, z and the time lag
    assert spec.input.point_features == ("x", "y", "z", "time")
    assert (spec.input.sweeps, spec.input.sweeps_remove_close) == (11, False)
    assert not spec.input.sweeps_pad_empty


CP = CONFIGS / "centerpoint"
NUS_TASKS = (("car",), ("truck", "construction_vehicle"), ("bus", "trailer"), ("barrier",),
             ("motorcycle", "bicycle"), ("pedestrian", "traffic_cone"))


@pytest.mark.parametrize("config,family,features,maps,channels", [
    (PP / "pointpillars_hv_fpn_sbn-all_8xb4-2x_nus-3d.py", "pointpillars", "xyzt",
     ((200, 200), (100, 100), (50, 50)), (80, 72, 16)),
    (PP / "pointpillars_hv_fpn_sbn-all_8xb2-2x_lyft-3d.py", "pointpillars", "xyzt",
     ((320, 320), (160, 160), (80, 80)), (72, 56, 16)),
    (PP / "pointpillars_hv_secfpn_sbn-all_16xb2-2x_waymoD5-3d-3class.py", "pointpillars",
     "xyzie", ((468, 468),), (18, 42, 12)),
    (CP / "centerpoint_pillar02_second_secfpn_8xb4-cyclic-20e_nus-3d.py", "centerpoint",
     "xyzit", ((128, 128),), (10, 48, 12)),
    (CP / "centerpoint_pillar02_second_secfpn_head-circlenms_8xb4-cyclic-20e_nus-3d.py",
     "centerpoint", "xyzit", ((128, 128),), (10, 48, 12)),
    (CP / "centerpoint_voxel01_second_secfpn_8xb4-cyclic-20e_nus-3d.py", "centerpoint",
     "xyzit", ((128, 128),), (10, 48, 12)),
    (CP / "centerpoint_voxel0075_second_secfpn_head-circlenms_8xb4-cyclic-20e_nus-3d.py",
     "centerpoint", "xyzit", ((180, 180),), (10, 48, 12)),
])
def test_every_supported_family_converts(tmp_path, config, family, features, maps, channels):
    """Each mmdeploy-converted config form gives a spec that round-trips through spec.yaml
    and the JSON schema, with the head maps and channels its engine has."""
    import jsonschema

    from admlops_ros.bundle.json_schema import spec_json_schema
    letters = {"x": "x", "y": "y", "z": "z", "i": "intensity", "t": "time",
               "e": "elongation"}
    spec = spec_from_mmdet3d_config(config)
    assert spec.family == family
    assert spec.input.point_features == tuple(letters[c] for c in features)
    assert spec.head_feature_map_sizes == maps and spec.head_channels == channels
    data = spec.to_dict()
    jsonschema.validate(data, spec_json_schema())
    assert ModelSpec.from_dict(yaml.safe_load(yaml.safe_dump(data))) == spec
    if family == "centerpoint":
        assert spec.center_head.tasks == NUS_TASKS
        assert spec.test_cfg.nms_type == ("circle" if "circlenms" in config.name else "rotate")
        assert spec.test_cfg.min_radius == (4.0, 12.0, 10.0, 1.0, 0.85, 0.175)
        assert (spec.input.sweeps, spec.input.sweeps_remove_close) == (10, True)
        assert spec.input.sweeps_pad_empty  # CenterPoint's test pipeline pads empty sweeps
        assert spec.box_coder.code_size == 9 and spec.center_head.max_num == 500


def test_centerpoint_numbers_and_consistency_checks():
    spec = spec_from_mmdet3d_config(
        CP / "centerpoint_pillar02_second_secfpn_8xb4-cyclic-20e_nus-3d.py")
    head, t = spec.center_head, spec.test_cfg
    assert (head.out_size_factor, head.score_threshold, head.norm_bbox) == (4, 0.1, True)
    assert head.post_center_range == (-61.2, -61.2, -10.0, 61.2, 61.2, 10.0)
    assert (t.pre_max_size, t.post_max_size, t.nms_thr, t.score_threshold) == \
        (1000, 83, (0.2,), 0.1)
    assert spec.voxelization.canvas_shape == (512, 512) and spec.format_version == 3
    cfg = load_config(CP / "centerpoint_pillar02_second_secfpn_8xb4-cyclic-20e_nus-3d.py")
    cfg["model"]["pts_bbox_head"]["bbox_coder"]["pc_range"] = [-50.0, -50.0]
    with pytest.raises(Mmdet3dConfigError, match=r"bbox_coder.pc_range \[-50.0, -50.0\] != the "
                                                 r"voxel layer's point_cloud_range\[:2\]"):
        spec_from_config_dict(cfg, "cp")
    cfg = load_config(CP / "centerpoint_pillar02_second_secfpn_8xb4-cyclic-20e_nus-3d.py")
    cfg["model"]["pts_bbox_head"]["bbox_coder"]["out_size_factor"] = 2
    with pytest.raises(Mmdet3dConfigError, match="test_cfg.out_size_factor 4 != bbox_coder"):
        spec_from_config_dict(cfg, "cp")
    cfg = load_config(CP / "centerpoint_pillar02_second_secfpn_8xb4-cyclic-20e_nus-3d.py")
    del cfg["model"]["pts_bbox_head"]["common_heads"]["vel"]
    with pytest.raises(Mmdet3dConfigError, match="code_size 9 but common_heads lacks vel"):
        spec_from_config_dict(cfg, "cp")
    cfg["model"]["pts_bbox_head"]["bbox_coder"]["code_size"] = 7
    assert spec_from_config_dict(cfg, "cp").head_channels == (10, 36, 12)


def test_sparse_centerpoint_is_written_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        spec = spec_from_mmdet3d_config(
            CP / "centerpoint_voxel0075_second_secfpn_8xb4-cyclic-20e_nus-3d.py")
    assert "spconv" in caplog.text and "TensorRT plugin" in caplog.text
    assert spec.voxelization.grid_size == (1440, 1440, 40)
    cfg = load_config(CP / "centerpoint_voxel0075_second_secfpn_8xb4-cyclic-20e_nus-3d.py")
    cfg["model"]["pts_middle_encoder"]["sparse_shape"] = [41, 1024, 1024]
    with pytest.raises(Mmdet3dConfigError, match=r"sparse_shape \[41, 1024, 1024\]"):
        spec_from_config_dict(cfg, "cp")


@pytest.mark.parametrize("change,needle", [
    (lambda m: m["pts_bbox_head"].update(type="ShapeAwareHead"), "ShapeAwareHead (SSN"),
    (lambda m: m["pts_bbox_head"]["anchor_generator"].update(scales=[1, 2]),
     "scales [1, 2] (2 levels) but the neck gives 3"),
    (lambda m: m["pts_bbox_head"]["bbox_coder"].update(code_size=7),
     "code_size 7 != 7 + 2 anchor_generator.custom_values"),
    (lambda m: m.update(pts_middle_encoder={"type": "SparseEncoder"}),
     "SparseEncoder (sparse convolutions need spconv ops"),
    (lambda m: m["pts_voxel_encoder"].update(type="DynamicVFE"), "DynamicVFE (supported"),
    (lambda m: m["pts_neck"].update(add_extra_convs="on_output"), "add_extra_convs"),
])
def test_pointpillars_outside_the_families_end_in_one_line(change, needle):
    cfg = load_config(PP / "pointpillars_hv_fpn_sbn-all_8xb4-2x_nus-3d.py")
    change(cfg["model"])
    with pytest.raises(Mmdet3dConfigError) as err:
        spec_from_config_dict(cfg, "nus")
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_unsupported_parts_are_listed_together():
    cfg = load_config(CP / "centerpoint_voxel0075_second_secfpn_head-dcn_8xb4-cyclic-20e_nus-3d.py")
    cfg["model"]["test_cfg"]["pts"]["max_pool_nms"] = True
    with pytest.raises(Mmdet3dConfigError) as err:
        spec_from_config_dict(cfg, "cp")
    msg = str(err.value)
    for part in ("dcn) need a TensorRT plugin", "DCNSeparateHead", "max_pool_nms"):
        assert part in msg
    cfg = load_config(KITTI_3CLASS)
    cfg["model"]["middle_encoder"] = {"type": "SparseEncoder"}
    with pytest.raises(Mmdet3dConfigError, match="SparseEncoder .*spconv"):
        spec_from_config_dict(cfg, "x")
    cfg = load_config(KITTI_3CLASS)
    cfg["model"]["data_preprocessor"]["voxel_layer"]["max_num_points"] = -1
    with pytest.raises(Mmdet3dConfigError, match="dynamic voxelization"):
        spec_from_config_dict(cfg, "x")
