"""Shared fixtures of the real-master tests: ``core``, one roscore per test module."""
from __future__ import annotations

import subprocess

import pytest

from admlops_ros.ros.processes import RosCore, ros_env
from tests.paths import REPO_ROOT

DEVEL = REPO_ROOT / "build" / "catkin_ws" / "devel"  # scripts/build_catkin.sh's workspace


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    """A real roscore on a free port for the module's tests (``core.env``, ``core.uri``)."""
    with RosCore(tmp_path_factory.mktemp("ros_home")) as master:
        yield master


def run_rostest(test_file: str, tmp_path) -> None:
    """``rostest --text admlops_ros <test_file>`` (its own master); fails with the output's tail."""
    env = ros_env("http://127.0.0.1:11311", tmp_path)
    env["ROS_TEST_RESULTS_DIR"] = str(tmp_path / "results")
    result = subprocess.run(["rostest", "--text", "admlops_ros", test_file], env=env,
                            capture_output=True, text=True, timeout=600)
    out = result.stdout + result.stderr
    assert result.returncode == 0 and "RESULT: SUCCESS" in out, out[-6000:]
