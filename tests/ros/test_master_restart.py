"""A real roscore killed and restarted under a running lidar_detection node (issue 18, item 4).

rospy never re-registers with a new master, so the node must exit with EXIT_MASTER_LOST (not
linger unseen); roslaunch respawn:=true then brings it back on the new master, with the launch's
parameters (the new master's parameter server starts empty; the node restores them).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import xmlrpc.client
from pathlib import Path
from typing import Callable, List, Optional

import pytest

from admlops_ros.ros.master_watch import EXIT_MASTER_LOST
from admlops_ros.ros.processes import (RosCore, launch_detection, master_ready, start, stop,
                                       topic_has_subscriber, wait_for)
from tests.paths import REPO_ROOT as REPO
from tests.ros.conftest import DEVEL
NODE = DEVEL / "lib" / "admlops_ros" / "lidar_detection"
PROBE = REPO / "tests" / "netns" / "ros_probe.py"  # `cloud TOPIC HZ` / `listen TOPIC N TIMEOUT`
READY_S = 180.0   # engine load + warm-up on a busy 2-core machine
EXIT_S = 30.0     # check period (2 s) + shutdown, with a wide margin for a loaded machine
ANSWER_S = 30.0   # a fresh publisher/listener pair gets objects back

pytestmark = [
    pytest.mark.ros,
    pytest.mark.skipif(not NODE.exists() or shutil.which("roscore") is None
                       or not os.environ.get("ROS_PACKAGE_PATH"),
                       reason="needs the built catkin workspace sourced (make build; "
                              "scripts/with_ros_env.sh) and roscore"),
]


def start_core(core: RosCore) -> None:
    """Start roscore; wait for rosout too (a roscore still starting it ignores SIGTERM)."""
    core.start()
    wait_for(lambda: topic_has_subscriber(core.uri, "/rosout", "/rosout"), 20.0,
             f"rosout of roscore on port {core.port}", core.proc)


def master_pid(core: RosCore) -> Optional[int]:
    try:
        code, _, pid = xmlrpc.client.ServerProxy(core.uri).getPid("/admlops_test")
    except (OSError, xmlrpc.client.Error):
        return None
    return int(pid) if code == 1 else None


def close_core(core: RosCore) -> None:
    """Stop roscore and its rosmaster: that one has its own process group and outlives a
    roscore that had to be killed with SIGKILL."""
    pid = master_pid(core)
    core.close()
    if pid is not None and master_pid(core) == pid:
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not master_ready(core.uri), 10.0, f"old master on port {core.port} gone")


@pytest.fixture
def core(tmp_path):
    master = RosCore(tmp_path / "ros_home")
    try:
        start_core(master)
        yield master
    finally:
        close_core(master)


@pytest.fixture
def procs():
    """Register processes to stop (their whole process group) on every path, newest first."""
    started: List[subprocess.Popen] = []
    try:
        yield started.append
    finally:
        for proc in reversed(started):
            stop(proc)


def tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else f"(no {path})"


def restart(core: RosCore) -> None:
    """Kill roscore (its process group) and start a new one on the same port."""
    close_core(core)
    start_core(core)


def answered(core: RosCore, input_topic: str, objects_topic: str, log: Path,
             register: Callable[[subprocess.Popen], None]) -> dict:
    """Publish clouds and listen for objects with fresh processes registered at the current master."""
    pub = start([sys.executable, str(PROBE), "cloud", input_topic, "5"], core.env, log)
    register(pub)
    try:
        res = subprocess.run([sys.executable, str(PROBE), "listen", objects_topic, "2",
                              str(ANSWER_S)], env=core.env, capture_output=True, text=True,
                             timeout=ANSWER_S + 30.0)
    finally:
        stop(pub)
    lines = res.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {"count": 0, "stderr": res.stderr[-2000:]}


def test_node_exits_with_master_lost_code_after_roscore_restart(core, procs, tmp_path):
    log = tmp_path / "node.log"
    node = start([str(NODE), "__name:=lidar_detection", "_input_topic:=/points_a",
                  "_objects_topic:=/objects_a"], core.env, log)
    procs(node)
    wait_for(lambda: topic_has_subscriber(core.uri, "/points_a", "/lidar_detection"), READY_S,
             f"lidar_detection (log {log})", node, poll_s=0.2)
    got = answered(core, "/points_a", "/objects_a", tmp_path / "probe.log", procs)
    assert got["count"] >= 2 and "/lidar_detection" in got.get("publishers", {}), got

    close_core(core)  # master gone: the node waits for it (and says so) instead of exiting
    wait_for(lambda: "not answering" in tail(log), EXIT_S, "the node's 'master not answering' "
             "warning", node)
    assert node.poll() is None, tail(log)

    start_core(core)  # a new, empty master on the same port: the node knows it is lost and exits
    try:
        node.wait(timeout=EXIT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"node still running {EXIT_S:.0f} s after the roscore restart:\n{tail(log)}")
    text = tail(log)
    assert node.returncode == EXIT_MASTER_LOST, text
    assert f"ROS master {core.uri} restarted: it does not know /lidar_detection" in text, text


def test_respawned_node_answers_on_the_new_master(core, procs, tmp_path):
    log = tmp_path / "roslaunch.log"
    args = ["respawn:=true", "respawn_delay:=0", "input_topic:=/points_b",
            "objects_topic:=/objects_b"]  # required stays true: the launch file turns it off
    procs(launch_detection(core, args, log, input_topic="/points_b", timeout=READY_S))
    got = answered(core, "/points_b", "/objects_b", tmp_path / "probe1.log", procs)
    assert got["count"] >= 2, got

    restart(core)
    # the respawned node registers with the new master, on the launch's (non-default) topic
    wait_for(lambda: topic_has_subscriber(core.uri, "/points_b", "/lidar_detection"), READY_S,
             f"respawned lidar_detection (log {log})", poll_s=0.2)
    assert f"exit code {EXIT_MASTER_LOST}" in tail(log, 20000), tail(log)
    got = answered(core, "/points_b", "/objects_b", tmp_path / "probe2.log", procs)
    assert got["count"] >= 2 and "/lidar_detection" in got.get("publishers", {}), got
