"""Real-master tests of the lidar_detection node: rostest (10 Hz stamps, malformed clouds), bad start."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.ros.conftest import DEVEL, run_rostest
NODE = DEVEL / "lib" / "admlops_ros" / "lidar_detection"

pytestmark = [
    pytest.mark.ros,
    pytest.mark.skipif(not NODE.exists() or shutil.which("roscore") is None
                       or not os.environ.get("ROS_PACKAGE_PATH"),
                       reason="needs the built catkin workspace sourced (make build; "
                              "scripts/with_ros_env.sh) and roscore"),
]


def run_node(core, name, *args, timeout=120.0):
    """Run the node (devel-space relay) under its own name so parameters do not leak."""
    return subprocess.run([str(NODE), f"__name:={name}", *args], env=core.env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("name, arg, expect", [
    ("bad_score", "_score_threshold:=2.0", "~score_threshold = 2.0"),
    ("bad_backend", "_backend:=cuda", "~backend = 'cuda'"),
    ("bad_points", "_max_points:=-3", "~max_points = -3"),
    ("bad_typo", "_score_treshold:=0.5", "did you mean ~score_threshold"),
    ("bad_engine", "_engine:=/nonexistent/bundle", "~engine = '/nonexistent/bundle'"),
])
def test_bad_parameter_stops_node_with_message(core, name, arg, expect):
    result = run_node(core, name, arg)
    assert result.returncode == 2, result.stderr
    assert expect in result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_node_starts_with_each_cpu_backend(core, backend):
    """The node loads the default engine with a named backend, then runs until stopped."""
    from admlops_ros.ros.processes import start, stop, topic_has_subscriber, wait_for

    name = f"start_{backend}"
    log = Path(core.ros_home) / f"{name}.log"
    proc = start([str(NODE), f"__name:={name}", f"_backend:={backend}",
                  f"_input_topic:=/points_{backend}"], core.env, log)
    try:
        wait_for(lambda: topic_has_subscriber(core.uri, f"/points_{backend}", f"/{name}"), 120.0,
                 f"node with backend {backend}", proc)
    except Exception:
        stop(proc)
        pytest.fail(log.read_text(errors="replace")[-3000:])
    assert stop(proc) is not None


def test_unknown_class_filter_lists_model_classes(core):
    result = run_node(core, "bad_classes", "_class_filter:=[Truck]")
    out = result.stdout + result.stderr
    assert result.returncode in (2, 3), out
    assert "Truck" in out and "Car" in out, out


@pytest.mark.slow
def test_rostest_lidar_detection(tmp_path):
    """tests/rostest/lidar_detection.test: default engine, 10 Hz stamps, malformed clouds."""
    run_rostest("lidar_detection.test", tmp_path)
