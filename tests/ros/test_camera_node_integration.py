"""camera_detection under a real roscore: 10 Hz images answered with their header; malformed ones
leave it alive with a WARN diagnostic naming the problem."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from admlops_ros.ros.processes import start, stop, topic_has_subscriber, wait_for
from tests.paths import REPO_ROOT as REPO
from tests.ros.conftest import DEVEL, run_rostest

NODE = DEVEL / "lib" / "admlops_ros" / "camera_detection"
DRIVER = REPO / "tests" / "ros" / "camera_driver.py"
ENGINE = REPO / "engines" / "camera_sim_3class"

pytestmark = [
    pytest.mark.ros,
    pytest.mark.skipif(not NODE.exists() or shutil.which("roscore") is None,
                       reason="needs the built catkin workspace (make build), roscore and "
                              "scripts/with_ros_env.sh"),
]


def _probe(core, name, prefix):
    result = subprocess.run([sys.executable, str(DRIVER), "probe", name, prefix], env=core.env,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _check(report):
    sent, good = report["sent"], report["good"]
    assert 1.7 <= report["publish_s"] <= 2.6            # 20 images at 10 Hz
    assert len(good) >= 18, good                          # queue_size 1: at most a drop or two
    by_seq = {s["seq"]: s for s in sent}
    for ans in good:                                       # header = input header
        assert ans["frame_id"] == "camera"
        assert ans["stamp"] == pytest.approx(by_seq[ans["seq"]]["stamp"], abs=1e-9)
    for name, res in report["malformed"].items():
        assert res["warned"] and res["messages"], (name, res)   # a WARN naming the problem
        assert res["alive_after"] and res["answer"]["frame_id"] == "camera", (name, res)


def _run(core, cmd, name, prefix, log):
    proc = start(cmd, core.env, log)
    try:
        wait_for(lambda: topic_has_subscriber(core.uri, f"{prefix}/image", f"/{name}"), 120.0,
                 f"{name} subscribed", proc)
        report = _probe(core, name, prefix)
        assert proc.poll() is None, log.read_text()[-3000:]
    finally:
        stop(proc)
    return report


def test_fake_detector_node_10hz_headers_and_malformed_images(core, tmp_path):
    """The rospy adapter (real cv_bridge, real master) with a fake detector."""
    name, prefix = "camera_fake", "/cam_fake"
    report = _run(core, [sys.executable, str(DRIVER), "node", name, prefix], name, prefix,
                  tmp_path / "node.log")
    _check(report)


def test_real_node_with_tiny_bundle(core, tmp_path):
    """The real node (devel relay, real CameraDetector on ONNX Runtime) on CORE's tiny net."""
    pytest.importorskip("torch", reason="the tiny test bundle is exported with torch")
    from tests.camera.fixtures import make_bundle

    bundle = make_bundle(tmp_path / "bundle", "keep_ratio")
    name, prefix = "camera_tiny", "/cam_tiny"
    cmd = [str(NODE), f"__name:={name}", f"_engine:={bundle}", f"_input_topic:={prefix}/image",
           f"_detections_topic:={prefix}/detections", f"_annotated_topic:={prefix}/annotated",
           f"_stats_topic:={prefix}/stats", "_backend:=onnxruntime"]
    _check(_run(core, cmd, name, prefix, tmp_path / "node.log"))


@pytest.mark.slow
@pytest.mark.skipif(not (ENGINE / "spec.yaml").exists(),
                    reason=f"{ENGINE} not shipped yet (helper MODEL's bundle)")
def test_real_node_with_shipped_engine(core, tmp_path):
    name, prefix = "camera_real", "/cam_real"
    cmd = [str(NODE), f"__name:={name}", f"_input_topic:={prefix}/image",
           f"_detections_topic:={prefix}/detections", f"_annotated_topic:={prefix}/annotated",
           f"_stats_topic:={prefix}/stats", "_backend:=onnxruntime"]
    _check(_run(core, cmd, name, prefix, tmp_path / "node.log"))


def test_bad_parameter_stops_camera_node(core):
    result = subprocess.run([str(NODE), "__name:=camera_bad", "_max_pixels:=-1"], env=core.env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "~max_pixels = -1" in result.stdout + result.stderr


@pytest.mark.slow
def test_rostest_camera_detection(tmp_path):
    """tests/rostest/camera_detection.test: shipped engine, 10 Hz headers, a malformed image,
    lidar objects confirmed through CameraInfo and a live static tf."""
    run_rostest("camera_detection.test", tmp_path)
