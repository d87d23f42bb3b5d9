"""Node parameter validation: defaults load, bad values name parameter, value and allowed range."""
from __future__ import annotations

import pytest

from admlops_ros.ros.params import (ParamError, load_defaults, load_schema, resolve_engine,
                                    validate_params)


def test_defaults_are_valid():
    p = validate_params({}, check_engine=False)
    assert p.input_topic == "/points_raw"
    assert p.objects_topic == "/detection/lidar_detector/objects"
    assert p.markers_topic == "/detection/lidar_detector/objects_markers"
    assert p.stats_topic == "/detection/lidar_detector/stats"
    assert p.backend == "auto" and p.precision == "f32" and p.intensity_mode == "error"
    assert p.score_threshold == 0.3  # operating point; the spec's 0.1 is for AP
    assert p.intensity_scale is None and p.class_filter == ()
    assert p.max_processing_ms == 200.0 and p.error_after_failures == 10


def test_every_default_has_a_schema_entry():
    assert set(load_defaults()) == set(load_schema()["properties"])


def test_overrides():
    p = validate_params({"score_threshold": 0.3, "class_filter": ["Car"], "intensity_scale": 1 / 255,
                         "backend": "openvino", "max_points": 500000}, check_engine=False)
    assert p.score_threshold == 0.3 and p.class_filter == ("Car",)
    assert p.intensity_scale == pytest.approx(1 / 255) and p.max_points == 500000


@pytest.mark.parametrize("name, value, expect", [
    ("score_threshold", 2.0, "maximum of 1.0"),
    ("backend", "cuda", "one of auto, tensorrt, openvino, onnxruntime"),
    ("precision", "int8", "one of f32, bf16, f16"),
    ("max_points", 0, "integer in [1,"),
    ("max_points", "many", "not of type 'integer'"),
    ("intensity_scale", 0.0, "not 0"),
    ("intensity_mode", "drop", "one of error, zeros"),
    ("class_filter", "Car", "list of strings"),
    ("max_processing_ms", -5, "number in (0,"),
    ("error_after_failures", 0, "integer in [1,"),
    ("input_topic", "bad topic", "ROS name"),
    ("publish_markers", "yes", "true or false"),
])
def test_bad_value_message_names_parameter_value_and_range(name, value, expect):
    with pytest.raises(ParamError) as err:
        validate_params({name: value}, check_engine=False)
    text = str(err.value)
    assert f"~{name} = {value!r}" in text
    assert expect in text


def test_unknown_parameter_suggests_the_right_name():
    with pytest.raises(ParamError, match=r"unknown parameter ~score_thresh = 0.5; did you mean "
                                         r"~score_threshold"):
        validate_params({"score_thresh": 0.5}, check_engine=False)


def test_all_errors_reported_at_once():
    with pytest.raises(ParamError) as err:
        validate_params({"backend": "x", "max_points": -1}, check_engine=False)
    assert "~backend" in str(err.value) and "~max_points" in str(err.value)


def test_engine_path_resolution(tmp_path):
    (tmp_path / "spec.yaml").write_text("format_version: 1\n")
    assert resolve_engine(str(tmp_path)) == tmp_path.resolve()
    with pytest.raises(ParamError, match=r"~engine = '/nonexistent/bundle': no spec.yaml"):
        resolve_engine("/nonexistent/bundle")
    (tmp_path / "engines" / "mine").mkdir(parents=True)
    (tmp_path / "engines" / "mine" / "spec.yaml").write_text("x: 1\n")
    assert resolve_engine("engines/mine", root=tmp_path) == (tmp_path / "engines" / "mine").resolve()


def test_sweeps_default_off_and_overrides():
    p = validate_params({}, check_engine=False)
    assert p.sweeps == 0 and p.sweeps_fixed_frame == "odom"  # 0: the spec's input.sweeps
    p = validate_params({"sweeps": 10, "sweeps_fixed_frame": "map"}, check_engine=False)
    assert p.sweeps == 10 and p.sweeps_fixed_frame == "map"


@pytest.mark.parametrize("name, value, expect", [
    ("sweeps", -1, "integer in [0, 100]"),
    ("sweeps", 2.5, "not of type 'integer'"),
    ("sweeps", 101, "integer in [0, 100]"),
    ("sweeps_fixed_frame", "", "ROS name"),
    ("sweeps_fixed_frame", "my frame", "ROS name"),
])
def test_bad_sweep_parameters_are_named(name, value, expect):
    with pytest.raises(ParamError) as err:
        validate_params({name: value}, check_engine=False)
    assert f"~{name} = {value!r}" in str(err.value) and expect in str(err.value)
