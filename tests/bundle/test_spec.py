"""spec.yaml schema: the numbers of a KITTI spec, defaults, and validation messages."""
from __future__ import annotations

import dataclasses
import math

import pytest
import yaml

from admlops_ros.bundle.spec import ModelSpec, SpecError
from tests.bundle.kitti_spec import KITTI


def test_kitti_spec_numbers():
    spec = ModelSpec.from_dict(KITTI)
    assert spec.voxelization.grid_size == (432, 496, 1)
    assert spec.voxelization.canvas_shape == (496, 432)
    assert spec.anchors.num_anchors == 6
    assert spec.head_channels == (18, 42, 12)
    assert spec.num_classes == 3
    assert spec.engine.tensorrt_profile.max == 9000
    assert spec.head.dir_offset == pytest.approx(-math.pi / 2)
    assert spec.to_dict()["name"] == "pointpillars_kitti_3class"
    assert ModelSpec.from_dict(spec.to_dict()) == spec


def test_defaults_follow_mmdet3d_1x():
    data = {k: v for k, v in KITTI.items() if k not in ("head", "box_coder", "input", "engine")}
    spec = ModelSpec.from_dict(data)
    assert spec.head.dir_offset == pytest.approx(-math.pi / 2)
    assert spec.head.dir_limit_offset == 0.0
    assert spec.box_coder.code_size == 7
    assert spec.input.point_features == ("x", "y", "z", "intensity")
    assert spec.engine.output_layout is None


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
    ("box_coder", "type", "CenterPointBBoxCoder",
     "box_coder.type must be 'DeltaXYZWLHRBBoxCoder' for family pointpillars"),
    ("box_coder", "type", "Delta", "box_coder.type must be one of"),
    (None, "family", "centerpoint", "missing section `center_head` (family centerpoint)"),
    (None, "family", "voxelnet", "family must be one of ['pointpillars', 'centerpoint']"),
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


def test_version_written_and_legacy_format_version_read():
    spec = ModelSpec.from_dict(KITTI)  # a version-1 spec (format_version: 1)
    data = spec.to_dict()
    assert list(data)[0] == "version" and data["version"] == 2 and "format_version" not in data
    assert ModelSpec.from_dict(data) == spec


def test_spec_from_a_newer_version_is_refused_with_a_message():
    data = ModelSpec.from_dict(KITTI).to_dict()
    data["version"] = 4
    with pytest.raises(SpecError) as err:
        ModelSpec.from_dict(data, source="engines/x/spec.yaml")
    msg = str(err.value)
    assert msg.startswith("engines/x/spec.yaml: version 4 is newer than this admlops_ros")
    assert "written by a newer admlops_ros" in msg and "upgrade admlops_ros" in msg
    assert "\n" not in msg
    for bad in ("2", 0, True):
        data["version"] = bad
        with pytest.raises(SpecError, match="version must be an integer from 1 to 3"):
            ModelSpec.from_dict(data)


def test_direct_construction_is_checked_like_a_file():
    spec = ModelSpec.from_dict(KITTI)
    with pytest.raises(SpecError, match="voxelization.max_points must be an integer >= 1"):
        dataclasses.replace(spec.voxelization, max_points=0)
    with pytest.raises(SpecError, match="anchors.feature_map_size .* is not the scatter grid"):
        dataclasses.replace(spec, anchors=dataclasses.replace(spec.anchors,
                                                              feature_map_size=[250, 216]))
    assert dataclasses.replace(spec.anchors, rotations=[0, 1.57]).rotations == (0.0, 1.57)
