"""ROS master on the 'host' side of a bridge, nodes in a 'container' namespace, env from ros_env.sh."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.netns.bridge import CONTAINER_IP, GATEWAY, NetnsBridge, NetnsUnavailable

pytestmark = pytest.mark.netns

from tests.paths import REPO_ROOT as REPO
ROS_ENV = REPO / "scripts" / "ros_env.sh"
PROBE = REPO / "tests" / "netns" / "ros_probe.py"
PY = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() \
    else sys.executable
MASTER = "http://%s:11311" % GATEWAY


def _base_env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("ROS_MASTER_URI", "ROS_IP", "ROS_HOSTNAME")
           and not k.startswith("ADMLOPS_ROS_")}
    env["ROS_HOME"] = str(tmp_path / "ros_home")
    env["ADMLOPS_PYTHON"] = PY
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["PATH"] = "%s:%s" % (os.path.dirname(PY), env.get("PATH", "/usr/bin:/bin"))
    return env


def _with_ros_env(argv, *env_args: str):
    """bash: source ros_env.sh ENV_ARGS, stop on its error, then exec argv."""
    # `source` without arguments hands the caller's "$@" to the script: clear it first
    script = ('cmd=("$@"); set --; source "%s" %s; rc=$?; [ "$rc" -eq 0 ] || exit "$rc"; '
              'exec "${cmd[@]}"' % (ROS_ENV, " ".join(env_args)))
    return ["bash", "-c", script, "ros_env"] + list(argv)


@pytest.fixture()
def bridge():
    for tool in ("roscore", "rostopic"):
        if not shutil.which(tool):
            pytest.skip("%s not installed (scripts/setup_env.sh installs ROS)" % tool)
    try:
        NetnsBridge.check_available()
    except NetnsUnavailable as exc:
        pytest.skip("network namespaces unavailable: %s" % exc)
    nb = NetnsBridge()
    try:
        nb.__enter__()
    except NetnsUnavailable as exc:
        pytest.skip("network namespaces unavailable: %s" % exc)
    try:
        yield nb
    finally:
        nb.close()
        assert not nb.exists(), "namespaces left behind"


def _start_master(nb: NetnsBridge, env: dict, tmp_path: Path):
    log = open(tmp_path / "roscore.log", "w")
    nb.popen(nb.host_ns, _with_ros_env(["roscore", "-p", "11311"], "--no-check"), env,
             stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    last = None
    while time.monotonic() < deadline:
        last = nb.run(nb.container_ns, _with_ros_env(["true"], "--timeout", "1"), env)
        if last.returncode == 0:
            return last
        time.sleep(0.3)
    pytest.fail("master never reachable from the container namespace: %s\n%s"
                % (last.stderr if last else "", (tmp_path / "roscore.log").read_text()))


def test_env_from_route_and_master_check_across_bridge(bridge, tmp_path):
    env = _base_env(tmp_path)
    show = ["sh", "-c", 'echo "$ROS_MASTER_URI $ROS_IP $ROS_HOSTNAME"']
    # host side: the gateway address itself; container side: its own address on eth0
    res = bridge.run(bridge.host_ns, _with_ros_env(show, "--no-check"), env)
    assert res.stdout.split() == [MASTER, GATEWAY, GATEWAY], res.stderr
    res = bridge.run(bridge.container_ns, _with_ros_env(show, "--no-check"), env)
    assert res.stdout.split() == [MASTER, CONTAINER_IP, CONTAINER_IP], res.stderr
    assert "via eth0" in res.stderr
    # nothing listens yet: refused, with the fix, and the variables are still set (rc 3)
    res = bridge.run(bridge.container_ns, ["bash", "-c", 'source "%s"; echo "rc=$? $ROS_IP"'
                                           % ROS_ENV], env)
    assert "rc=3 %s" % CONTAINER_IP in res.stdout
    assert "refused" in res.stderr and "start `roscore`" in res.stderr
    # an address on the subnet nobody owns: timeout
    res = bridge.run(bridge.container_ns, ["bash", "-c", 'source "%s" http://172.28.0.99:11311 '
                                           '--timeout 0.5; echo "rc=$?"' % ROS_ENV], env)
    assert "rc=3" in res.stdout and ("timeout" in res.stderr or "no_route" in res.stderr)
    # off the subnet with no route at all (the container namespace has only the bridge route)
    bridge.run(bridge.container_ns, ["ip", "route", "del", "default"], env)
    res = bridge.run(bridge.container_ns, ["bash", "-c", 'source "%s" http://10.255.0.1:11311; '
                                           'echo "rc=$?"' % ROS_ENV], env)
    assert "rc=2" in res.stdout and "no route to the ROS master 10.255.0.1" in res.stderr
    # and the master started on the host side answers from the container
    res = _start_master(bridge, env, tmp_path)
    assert "master OK" in res.stderr


def test_messages_cross_the_bridge(bridge, tmp_path):
    env = _base_env(tmp_path)
    _start_master(bridge, env, tmp_path)
    listener = bridge.popen(bridge.host_ns, _with_ros_env(
        [PY, str(PROBE), "listen", "/admlops_netns_test", "3", "20"]), env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True)
    bridge.popen(bridge.container_ns, _with_ros_env(
        ["rostopic", "pub", "-r", "5", "/admlops_netns_test", "std_msgs/String",
         "data: hello"]), env, stdout=open(tmp_path / "pub.log", "w"),
        stderr=open(tmp_path / "pub.err", "w"))
    out, err = listener.communicate(timeout=40)
    assert listener.returncode == 0, (out, err, (tmp_path / "pub.err").read_text())
    report = json.loads(out.strip().splitlines()[-1])
    assert report["count"] >= 3
    # the publisher registered with the container's address, the listener with the gateway's
    assert all(uri.startswith("http://%s:" % CONTAINER_IP)
               for uri in report["publishers"].values()), report
    assert report["my_uri"].startswith("http://%s:" % GATEWAY)


def _shipped_bundle():
    for spec in sorted((REPO / "engines").glob("*/spec.yaml")):
        lidar = "modality: camera" not in spec.read_text()  # the lidar node's bundles only
        if lidar and (spec.parent / "end2end.onnx").is_file():
            return spec.parent
    return None


@pytest.mark.slow
def test_detection_node_in_container_namespace(bridge, tmp_path):
    node = REPO / "nodes" / "lidar_detection"
    bundle = _shipped_bundle()
    if bundle is None or not node.is_file():
        pytest.skip("no engine bundle with end2end.onnx under engines/ or no nodes/"
                    "lidar_detection yet: the bridge itself is covered by "
                    "test_messages_cross_the_bridge")
    env = _base_env(tmp_path)
    _start_master(bridge, env, tmp_path)
    listener = bridge.popen(bridge.host_ns, _with_ros_env(
        [PY, str(PROBE), "listen", "/detection/lidar_detector/objects", "2", "60"]), env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    node_log = open(tmp_path / "node.log", "w")
    bridge.popen(bridge.container_ns, _with_ros_env(
        [PY, str(node), "_engine:=%s" % bundle, "_backend:=openvino",
         "_input_topic:=/points_raw", "_publish_markers:=false"]), env,
        stdout=node_log, stderr=node_log)
    bridge.popen(bridge.host_ns, _with_ros_env([PY, str(PROBE), "cloud", "/points_raw", "2"]),
                 env, stdout=open(tmp_path / "lidar.log", "w"), stderr=subprocess.STDOUT)
    out, err = listener.communicate(timeout=90)
    assert listener.returncode == 0, (out, err, (tmp_path / "node.log").read_text()[-3000:])
    report = json.loads(out.strip().splitlines()[-1])
    assert report["count"] >= 2
    assert all(uri.startswith("http://%s:" % CONTAINER_IP)
               for uri in report["publishers"].values()), report
