"""Shared fixtures of the real-master tests: ``core``, one roscore per test module."""
from __future__ import annotations

import pytest

from admlops_ros.ros.processes import RosCore
from tests.paths import REPO_ROOT

DEVEL = REPO_ROOT / "build" / "catkin_ws" / "devel"  # scripts/build_catkin.sh's workspace


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    """A real roscore on a free port for the module's tests (``core.env``, ``core.uri``)."""
    with RosCore(tmp_path_factory.mktemp("ros_home")) as master:
        yield master
