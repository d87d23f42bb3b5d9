"""The `admlops` error policy: user errors end in one line and exit 1, bugs keep a traceback."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from admlops_ros import cli
from admlops_ros.errors import AdmlopsError
from tests.paths import FIXTURES, REPO_ROOT

CONFIGS = FIXTURES / "mmdet3d_configs" / "configs"


def admlops(*args: str, timeout: float = 120):
    """Run `python -m admlops_ros ARGS` as a user would; returns the CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-m", "admlops_ros", *args], capture_output=True,
                          text=True, cwd=str(REPO_ROOT), env=env, timeout=timeout)


def assert_one_line_error(res, command: str, *needles: str, code: int = 1) -> str:
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == code, res.stderr
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"admlops {command}: error: "), lines[0]
    assert "Traceback" not in res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_bundle_rehash_of_a_missing_directory(tmp_path):
    res = admlops("bundle", str(tmp_path / "missing"), "--rehash")
    assert_one_line_error(res, "bundle", "no spec.yaml at", "spec-from-config")


def test_spec_from_config_of_a_missing_file(tmp_path):
    res = admlops("spec-from-config", str(tmp_path / "missing.py"))
    assert_one_line_error(res, "spec-from-config", "no config file at")


def test_spec_from_config_writes_a_nuscenes_fpn_pointpillars(tmp_path):
    config = CONFIGS / "pointpillars" / "pointpillars_hv_fpn_sbn-all_8xb4-2x_nus-3d.py"
    res = admlops("spec-from-config", str(config), "-o", str(tmp_path / "spec.yaml"))
    assert res.returncode == 0, res.stderr
    data = yaml.safe_load((tmp_path / "spec.yaml").read_text())
    assert data["version"] == 3 and data["anchors"]["scales"] == [1.0, 2.0, 4.0]


def test_spec_from_config_names_what_a_dcn_centerpoint_needs(tmp_path):
    config = CONFIGS / "centerpoint" / \
        "centerpoint_voxel0075_second_secfpn_head-dcn_8xb4-cyclic-20e_nus-3d.py"
    line = assert_one_line_error(admlops("spec-from-config", str(config), "-o",
                                         str(tmp_path / "spec.yaml")),
                                 "spec-from-config", "CenterPoint model not supported",
                                 "deformable convolutions (dcn) need a TensorRT plugin",
                                 "Supported: PointPillars")
    assert "Traceback" not in line and not (tmp_path / "spec.yaml").exists()


def test_spec_from_config_bad_numbers_and_missing_base(tmp_path):
    base = CONFIGS / "pointpillars" / "pointpillars_hv_secfpn_8xb6-160e_kitti-3d-3class.py"
    zero = tmp_path / "zero.py"
    zero.write_text(f"_base_ = [{str(base)!r}]\n"
                    "model = dict(data_preprocessor=dict(voxel_layer=dict("
                    "voxel_size=[0.0, 0.16, 4])))\n")
    assert_one_line_error(admlops("spec-from-config", str(zero)), "spec-from-config",
                          "voxelization.voxel_size must be 3 positive numbers")
    stride = tmp_path / "stride.py"
    stride.write_text(f"_base_ = [{str(base)!r}]\n"
                      "model = dict(backbone=dict(layer_strides=[0, 2, 2]))\n")
    assert_one_line_error(admlops("spec-from-config", str(stride)), "spec-from-config",
                          "backbone.layer_strides [0, 2, 2] must be positive integers")
    orphan = tmp_path / "orphan.py"
    orphan.write_text("_base_ = ['../_base_/models/nothing_here.py']\n")
    assert_one_line_error(admlops("spec-from-config", str(orphan)), "spec-from-config",
                          "_base_ file", "nothing_here.py not found")


def test_usage_error_exits_2_in_the_same_form(tmp_path):
    assert_one_line_error(admlops("bundle", str(tmp_path / "b")), "bundle", "give --spec",
                          code=2)


def test_verbose_shows_the_traceback():
    res = admlops("-v", "spec-from-config", "/nonexistent/config.py")
    assert res.returncode == 1
    assert "Traceback" in res.stderr and "Mmdet3dConfigError" in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("admlops spec-from-config: error:")


def _parser_with(monkeypatch, func):
    real = cli.build_parser

    def build():
        parser = real()
        sub = next(a for a in parser._actions if a.dest == "command")
        sub.add_parser("boom").set_defaults(func=func)
        return parser
    monkeypatch.setattr(cli, "build_parser", build)


def test_a_bug_keeps_its_traceback(monkeypatch):
    def bug(args):
        raise KeyError("internal")
    _parser_with(monkeypatch, bug)
    with pytest.raises(KeyError, match="internal"):
        cli.main(["boom"])


def test_project_errors_are_one_line_even_when_multiline(monkeypatch, capsys):
    def user_error(args):
        raise AdmlopsError("first line\n  second line")
    _parser_with(monkeypatch, user_error)
    assert cli.main(["boom"]) == 1
    assert capsys.readouterr().err == "admlops boom: error: first line second line\n"


def test_ctrl_c_exits_130(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "admlops_ros", "bag-from-sim", "--count",
                             "100000", "--no-progress", "-o", str(tmp_path / "x.bag")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=str(REPO_ROOT))
    deadline = time.monotonic() + 120
    while not (tmp_path / "x.bag").exists() and time.monotonic() < deadline:
        time.sleep(0.2)  # writing frames: the command is past its imports
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "admlops bag-from-sim: interrupted" in err.splitlines()  # (rospy logs at exit)


def test_with_ros_env_passes_arguments_to_the_command_not_to_setup_bash():
    if not (REPO_ROOT / "build" / "catkin_ws" / "devel" / "setup.bash").is_file():
        pytest.skip("no catkin devel space: run `make build` first")
    res = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "with_ros_env.sh"),
                          sys.executable, "-m", "admlops_ros", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("usage: admlops")
    res = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "with_ros_env.sh"), "bash", "-c",
                          'printf "%s|" "$@"; echo "$ROS_PACKAGE_PATH"', "sh", "--extend",
                          "a b"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("--extend|a b|") and "catkin_ws" in res.stdout


def test_bad_numbers_are_usage_errors(tmp_path):
    res = admlops("eval", str(tmp_path / "x.bag"), "--limit", "-3")
    assert res.returncode == 2 and "argument --limit: must be an integer >= 1, got '-3'" in \
        res.stderr
    res = admlops("eval", str(tmp_path / "x.bag"), "--score-threshold", "nan")
    assert res.returncode == 2 and "must be a finite number, got 'nan'" in res.stderr


def test_bag_from_sim_with_an_unknown_sensor_writes_nothing(tmp_path):
    res = admlops("bag-from-sim", "--count", "2", "--sensor", "foo", "-o",
                  str(tmp_path / "x.bag"))
    assert_one_line_error(res, "bag-from-sim", "unknown sensor preset 'foo'", "hdl64")
    assert not (tmp_path / "x.bag").exists()


def _bundle_inputs(tmp_path):
    from admlops_ros.bundle.files import write_spec
    from admlops_ros.bundle.spec import ModelSpec
    from tests.fixtures.tiny_model import make_tiny_onnx, tiny_spec
    spec = write_spec(ModelSpec.from_dict(tiny_spec()), tmp_path / "spec.yaml")
    return spec, make_tiny_onnx(tmp_path / "model.onnx")


def test_bundle_refuses_a_file_that_is_not_an_engine(tmp_path):
    spec, _ = _bundle_inputs(tmp_path)
    (tmp_path / "hello.txt").write_text("hello")
    res = admlops("bundle", str(tmp_path / "b"), "--spec", str(spec), "--onnx",
                  str(tmp_path / "hello.txt"))
    assert_one_line_error(res, "bundle", "onnxruntime could not load")
    assert not (tmp_path / "b").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".b.")] == []


def test_a_failed_bundle_write_leaves_the_old_bundle_untouched(tmp_path):
    spec, onnx = _bundle_inputs(tmp_path)
    res = admlops("bundle", str(tmp_path / "b"), "--spec", str(spec), "--onnx", str(onnx),
                  "--convert-openvino")
    assert res.returncode == 0, res.stderr
    before = {p.name: p.read_bytes() for p in (tmp_path / "b").rglob("*") if p.is_file()}
    assert "end2end.xml" in before
    (tmp_path / "hello.txt").write_text("hello")
    res = admlops("bundle", str(tmp_path / "b"), "--spec", str(spec), "--onnx",
                  str(tmp_path / "hello.txt"), "--convert-openvino")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    after = {p.name: p.read_bytes() for p in (tmp_path / "b").rglob("*") if p.is_file()}
    assert after == before


def test_eval_with_an_engine_that_does_not_fit_its_spec_is_one_line(tmp_path):
    """issue 18: a spec with voxel_size [0.16, 0.16, 4] on the shipped engine made every frame
    fail with a raw runtime exception and `admlops eval` end in a traceback."""
    import dataclasses
    import shutil

    from admlops_ros.bundle.files import read_spec, write_spec
    from admlops_ros.paths import default_bundle_path
    shutil.copytree(default_bundle_path(), tmp_path / "b")
    spec = read_spec(tmp_path / "b")
    write_spec(dataclasses.replace(spec, voxelization=dataclasses.replace(
        spec.voxelization, voxel_size=(0.16, 0.16, 4.0))), tmp_path / "b" / "spec.yaml")
    res = admlops("bag-from-sim", "--count", "1", "--no-progress", "-o", str(tmp_path / "x.bag"))
    assert res.returncode == 0, res.stderr
    res = admlops("eval", str(tmp_path / "x.bag"), "--engine", str(tmp_path / "b"), "--backend",
                  "onnxruntime", "--no-progress", "--out", str(tmp_path / "out"))
    lines = [line for line in res.stderr.splitlines() if line.startswith("admlops eval:")]
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert len(lines) == 1 and "larger than the engine's scatter canvas" in lines[0]
