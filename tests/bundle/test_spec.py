"""spec.yaml validation, bundle write/load round trip, sha256 checks."""
from __future__ import annotations

import math

import pytest
import yaml

from admlops_ros.bundle.spec import (ModelSpec, SpecError, feature_map_stride, grid_size, load_bundle,
                              read_spec, rehash_bundle, update_file_hashes, write_bundle)
from tests.fixtures.tiny_model import make_tiny_onnx, tiny_spec

KITTI = {
    "format_version": 1, "name": "pointpillars_kitti_3class", "family": "pointpillars",
    "class_names": ["Pedestrian", "Cyclist", "Car"],
    "input": {"point_features": ["x", "y", "z", "intensity"], "intensity_scale": 1.0},
    "voxelization": {"voxel_size": [0.16, 0.16, 4.0],
                     "point_cloud_range": [0.0, -39.68, -3.0, 69.12, 39.68, 1.0],
                     "max_points": 32, "max_voxels": 40000},
    "anchors": {"ranges": [[0, -39.68, -0.6, 69.12, 39.68, -0.6]] * 2
                + [[0, -39.68, -1.78, 69.12, 39.68, -1.78]],
                "sizes": [[0.8, 0.6, 1.73], [1.76, 0.6, 1.73], [3.9, 1.6, 1.56]],
                "rotations": [0.0, 1.57], "align_corner": False, "feature_map_size": [248, 216]},
    "box_coder": {"type": "DeltaXYZWLHRBBoxCoder", "code_size": 7},
    "head": {"use_direction_classifier": True, "dir_offset": -1.5707963267948966,
             "dir_limit_offset": 0.0},
    "test_cfg": {"use_rotate_nms": True, "nms_thr": 0.01, "score_thr": 0.1, "nms_pre": 100,
                 "max_num": 50},
    "engine": {"output_layout": "mmdeploy-1.2",
               "tensorrt_profile": {"min": 2000, "opt": 5000, "max": 9000}},
}


def test_kitti_spec_numbers():
    spec = ModelSpec.from_dict(KITTI)
    assert spec.voxelization.grid_size == (432, 496, 1)
    assert spec.voxelization.canvas_shape == (496, 432)
    assert spec.anchors.num_anchors == 6
    assert spec.head_channels == (18, 42, 12)
    assert spec.num_classes == 3
    assert spec.engine.tensorrt_profile.max == 9000
    assert spec.head.dir_offset == pytest.approx(-math.pi / 2)
    assert spec.raw["name"] == "pointpillars_kitti_3class"
    assert ModelSpec.from_dict(spec.to_dict()) == spec


def test_defaults_follow_mmdet3d_1x():
    data = {k: v for k, v in KITTI.items() if k not in ("head", "box_coder", "input", "engine")}
    spec = ModelSpec.from_dict(data)
    assert spec.head.dir_offset == pytest.approx(-math.pi / 2)
    assert spec.head.dir_limit_offset == 0.0
    assert spec.box_coder.code_size == 7
    assert spec.input.point_features == ("x", "y", "z", "intensity")
    assert spec.engine.output_layout is None


def test_grid_and_stride_helpers():
    assert grid_size([0.2, 0.2, 8], [-51.2, -51.2, -5, 51.2, 51.2, 3]) == (512, 512, 1)
    assert feature_map_stride((496, 432), (248, 216)) == 2
    assert feature_map_stride((496, 432), (496, 432)) == 1
    assert feature_map_stride((8, 12), (4, 5)) is None


def _with(section, key, value):
    data = yaml.safe_load(yaml.safe_dump(KITTI))
    if section:
        data[section][key] = value
    else:
        data[key] = value
    return data


@pytest.mark.parametrize("section,key,value,needle", [
    ("voxelization", "voxel_size", [0.16, 0.16],
     "voxelization.voxel_size must be 3 positive numbers, got [0.16, 0.16]"),
    ("voxelization", "voxel_size", [0.16, -0.16, 4], "voxelization.voxel_size must be 3 positive"),
    ("voxelization", "point_cloud_range", [0, 0, 0, -1, 1, 1], "with max > min"),
    ("voxelization", "max_points", 0, "voxelization.max_points must be an integer >= 1, got 0"),
    ("voxelization", "max_voxels", 1.5, "voxelization.max_voxels must be an integer"),
    ("anchors", "feature_map_size", [250, 216], "is not the scatter grid [496, 432]"),
    ("anchors", "ranges", [[0, 1, 2]] * 2, "anchors.ranges must be a list of 1 or 3"),
    ("anchors", "sizes", [[0.8, 0.6]], "anchors.sizes[0] must be 3 positive numbers"),
    ("anchors", "rotations", [], "anchors.rotations must be one or more numbers"),
    ("test_cfg", "nms_thr", 1.5, "test_cfg.nms_thr must be a number >= 0.0 and <= 1.0, got 1.5"),
    ("test_cfg", "nms_pre", 0, "test_cfg.nms_pre must be a positive integer or -1"),
    ("test_cfg", "nms_thres", 0.1, "unknown key(s) test_cfg.nms_thres"),
    ("input", "point_features", ["y", "x", "z"], "input.point_features must be distinct names"),
    ("input", "intensity_scale", 0, "input.intensity_scale must be a number > 0.0"),
    ("input", "shuffle_points", "yes", "input.shuffle_points must be true or false"),
    ("engine", "output_layout", "mmdeploy-2.0", "engine.output_layout must be 'auto' or one of"),
    ("engine", "tensorrt_profile", {"min": 9000, "opt": 5000, "max": 2000},
     "engine.tensorrt_profile must be"),
    ("box_coder", "type", "CenterPointBBoxCoder", "box_coder.type must be one of"),
    (None, "family", "centerpoint", "family must be one of ['pointpillars']"),
    (None, "format_version", 2, "format_version must be 1"),
    (None, "class_names", ["Car", "Car"], "class_names must be a non-empty list of distinct"),
    (None, "voxelisation", {}, "unknown top-level key(s) voxelisation"),
])
def test_validation_messages_name_field_value_and_fix(section, key, value, needle):
    with pytest.raises(SpecError) as err:
        ModelSpec.from_dict(_with(section, key, value))
    assert needle in str(err.value)
    assert str(err.value).startswith("spec.yaml: ")


def test_missing_section_is_named():
    data = {k: v for k, v in KITTI.items() if k != "anchors"}
    with pytest.raises(SpecError, match="missing section `anchors`"):
        ModelSpec.from_dict(data)


def test_max_voxels_above_tensorrt_profile_warns(caplog, monkeypatch):
    import admlops_ros.bundle.spec as spec_module
    monkeypatch.setattr(spec_module, "_WARNED", set())
    ModelSpec.from_dict(KITTI)
    assert "exceeds engine.tensorrt_profile.max 9000" in caplog.text


def test_bundle_round_trip_and_hashes(tmp_path):
    onnx = make_tiny_onnx(tmp_path / "src" / "model.onnx")
    bundle = write_bundle(tmp_path / "b", tiny_spec(), onnx)
    assert bundle.onnx_path == tmp_path / "b" / "end2end.onnx"
    assert bundle.openvino_xml is None and bundle.tensorrt_plan is None
    loaded = load_bundle(tmp_path / "b" / "spec.yaml")
    assert loaded.spec == bundle.spec
    assert set(loaded.spec.files) == {"end2end.onnx"}
    assert len(loaded.spec.files["end2end.onnx"]) == 64


def test_sha256_mismatch_names_file_hashes_and_fix(tmp_path):
    onnx = make_tiny_onnx(tmp_path / "m.onnx")
    bundle = write_bundle(tmp_path / "b", tiny_spec(), onnx)
    expected = bundle.spec.files["end2end.onnx"]
    make_tiny_onnx(tmp_path / "b" / "end2end.onnx", seed=7)  # replaced by another model
    with pytest.raises(SpecError) as err:
        load_bundle(tmp_path / "b")
    msg = str(err.value)
    assert "sha256 mismatch for end2end.onnx" in msg and expected in msg
    assert "admlops bundle --rehash" in msg
    files = rehash_bundle(tmp_path / "b")
    assert files["end2end.onnx"] != expected
    assert load_bundle(tmp_path / "b").spec.files == files


def test_rehash_adds_standard_files_and_missing_file_is_named(tmp_path):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(tiny_spec()))
    with pytest.raises(SpecError, match="files lists no engine"):
        load_bundle(tmp_path)
    make_tiny_onnx(tmp_path / "end2end.onnx")
    rehash_bundle(tmp_path)
    assert set(load_bundle(tmp_path).spec.files) == {"end2end.onnx"}
    (tmp_path / "end2end.onnx").unlink()
    with pytest.raises(SpecError, match="files.end2end.onnx is listed but .* does not exist"):
        load_bundle(tmp_path)


def test_bad_hash_text_and_missing_spec(tmp_path):
    data = tiny_spec()
    data["files"] = {"end2end.onnx": "abc"}
    with pytest.raises(SpecError, match="files.end2end.onnx must be a sha256 hex digest"):
        ModelSpec.from_dict(data)
    with pytest.raises(SpecError, match="no spec.yaml"):
        read_spec(tmp_path)
    (tmp_path / "spec.yaml").write_text("a: [1, 2")
    with pytest.raises(SpecError, match="not valid YAML"):
        read_spec(tmp_path)


def test_update_file_hashes_records_new_files(tmp_path):
    onnx = make_tiny_onnx(tmp_path / "m.onnx")
    write_bundle(tmp_path / "b", tiny_spec(anchors={"scales": [1.0]}), onnx)
    (tmp_path / "b" / "tensorrt").mkdir()
    (tmp_path / "b" / "tensorrt" / "x.plan").write_bytes(b"plan")
    files = update_file_hashes(tmp_path / "b", ["tensorrt/x.plan"])
    assert set(files) == {"end2end.onnx", "tensorrt/x.plan"}
    assert load_bundle(tmp_path / "b").tensorrt_plan == tmp_path / "b" / "tensorrt" / "x.plan"
    with pytest.raises(SpecError, match="cannot record files.nope.xml"):
        update_file_hashes(tmp_path / "b", ["nope.xml"])
