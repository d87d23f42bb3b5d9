"""One package_root(): the default bundle and the node's engine lookup, from the source tree and
from a catkin install space (where the Python package lives apart from config/ and engines/)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from admlops_ros.paths import DEFAULT_ENGINE, default_bundle_path, package_root
from admlops_ros.ros.params import resolve_engine
from tests.paths import REPO_ROOT

WS = REPO_ROOT / "build" / "catkin_ws"


def test_source_tree():
    assert package_root() == REPO_ROOT
    assert default_bundle_path() == REPO_ROOT / "engines" / DEFAULT_ENGINE
    assert resolve_engine("") == default_bundle_path()
    assert resolve_engine("engines/" + DEFAULT_ENGINE) == default_bundle_path()


PROBE = """
import json, admlops_ros
from admlops_ros.bundle.files import load_bundle
from admlops_ros.paths import default_bundle_path, package_root
from admlops_ros.ros.params import load_defaults, resolve_engine
print(json.dumps({"module": admlops_ros.__file__, "root": str(package_root()),
                  "bundle": str(default_bundle_path()), "node_engine": str(resolve_engine("")),
                  "model": load_bundle(default_bundle_path()).spec.name,
                  "params": sorted(load_defaults())[:3]}))
"""


def test_catkin_install_space(tmp_path):
    if not (WS / "src" / "admlops_ros").is_dir():
        pytest.skip("no catkin workspace: run `make build` first")
    clean = {k: v for k, v in os.environ.items()
             if k not in ("PYTHONPATH", "ROS_PACKAGE_PATH", "CMAKE_PREFIX_PATH",
                          "LD_LIBRARY_PATH", "PKG_CONFIG_PATH", "ROS_ROOT", "ROS_DISTRO")}
    build = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "build_catkin.sh"), "install"],
                           capture_output=True, text=True, env=clean, timeout=600)
    assert build.returncode == 0, build.stdout + build.stderr
    setup = WS / "install" / "setup.bash"
    res = subprocess.run(["bash", "-c", f'source "{setup}" && cd "{tmp_path}" && '
                          f'"{sys.executable}" -c "$0"', PROBE],
                         capture_output=True, text=True, env=clean, timeout=120)
    assert res.returncode == 0, res.stderr
    found = json.loads(res.stdout.strip().splitlines()[-1])
    share = WS / "install" / "share" / "admlops_ros"
    assert found["module"].startswith(str(WS / "install" / "lib")), found  # not the sources
    assert found["root"] == str(share)
    assert found["bundle"] == found["node_engine"] == str(share / "engines" / DEFAULT_ENGINE)
    assert found["model"] == DEFAULT_ENGINE and found["params"]
