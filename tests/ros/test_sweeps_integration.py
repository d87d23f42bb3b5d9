"""Multi-sweep input through a real roscore: tf poses, accumulated clouds, missing tf -> WARN."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from admlops_ros.ros.processes import start, stop, topic_has_subscriber, wait_for
from tests.paths import REPO_ROOT as REPO
from tests.ros.conftest import DEVEL
NODE = DEVEL / "lib" / "admlops_ros" / "lidar_detection"
DRIVER = REPO / "tests" / "ros" / "sweeps_driver.py"
FEATURES = ["x", "y", "z", "intensity", "time"]
POINTS = 400
WARN = 1

pytestmark = [
    pytest.mark.ros,
    pytest.mark.skipif(not NODE.exists() or shutil.which("roscore") is None
                       or not os.environ.get("ROS_PACKAGE_PATH"),
                       reason="needs the built catkin workspace sourced (make build; "
                              "scripts/with_ros_env.sh) and roscore"),
]


@pytest.fixture(scope="module")
def time_bundle(tmp_path_factory):
    """A tiny engine whose points have a time-lag feature (x, y, z, intensity, time)."""
    pytest.importorskip("tf2_ros", reason="needs Debian python3-tf2-ros")
    from admlops_ros.bundle.files import write_bundle
    from tests.fixtures.tiny_model import make_tiny_onnx, tiny_spec

    root = tmp_path_factory.mktemp("time_bundle")
    onnx = make_tiny_onnx(root / "src" / "model.onnx", num_features=len(FEATURES))
    write_bundle(root / "b", tiny_spec(input={"point_features": FEATURES}), onnx)
    return root / "b"


def test_node_accumulates_sweeps_with_tf_and_warns_on_missing_tf(core, time_bundle, tmp_path):
    name, prefix = "sweeps_node", "/sweeps"
    log = tmp_path / "node.log"
    node = start([str(NODE), f"__name:={name}", f"_engine:={time_bundle}",
                  "_backend:=onnxruntime", "_sweeps:=3", "_sweeps_fixed_frame:=odom",
                  f"_input_topic:={prefix}/points", f"_objects_topic:={prefix}/objects",
                  f"_markers_topic:={prefix}/markers", f"_stats_topic:={prefix}/stats",
                  "_master_check_period_s:=0"], core.env, log)
    try:
        wait_for(lambda: topic_has_subscriber(core.uri, f"{prefix}/points", f"/{name}")
                 and topic_has_subscriber(core.uri, "/tf", f"/{name}"), 45.0,
                 "sweeps node", node)
        res = subprocess.run([sys.executable, str(DRIVER), name, prefix, str(POINTS)],
                             env=core.env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr
        out = json.loads(res.stdout.strip().splitlines()[-1])
        assert node.poll() is None, "the node died"
    except Exception:
        stop(node)
        print(log.read_text(errors="replace")[-4000:])
        raise
    assert stop(node) is not None
    clouds = out["clouds"]
    assert all(c["num_sweeps"] is not None for c in clouds), clouds
    # lidar x5 (tf known): the window fills to 3 sweeps, every point kept
    assert [c["num_sweeps"] for c in clouds[:5]] == [1, 2, 3, 3, 3], clouds
    assert [c["num_points"] for c in clouds[:5]] == [POINTS * n for n in (1, 2, 3, 3, 3)]
    # ghost x2: no tf -> each detected alone, the node lives on
    assert [c["num_sweeps"] for c in clouds[5:7]] == [1, 1], clouds
    # lidar again: the ghost clouds in the window have no pose and are left out
    assert [c["num_sweeps"] for c in clouds[7:]] == [1, 2], clouds
    warns = [msg for level, msg in out["diagnostics"] if level == WARN]
    assert any("no tf 'odom' <- 'ghost'" in m for m in warns), out["diagnostics"]
    assert any("left out (ghost at" in m for m in warns), out["diagnostics"]
    log_text = log.read_text(errors="replace")
    assert "multi-sweep input: 3 clouds per detection (~sweeps)" in log_text
