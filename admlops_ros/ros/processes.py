"""Start and stop ROS processes (roscore, roslaunch, rosbag) in their own process groups."""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
import xmlrpc.client
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from admlops_ros.errors import AdmlopsError

LOG = logging.getLogger(__name__)

READY_TIMEOUT_S = 20.0


class ProcessError(AdmlopsError, RuntimeError):
    """A ROS process did not start, or did not become ready in time."""


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ros_env(master_uri: str, ros_home: Union[str, Path],
            base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Environment for processes talking to ``master_uri`` over loopback, logs in ``ros_home``."""
    env = dict(os.environ if base is None else base)
    env.update(ROS_MASTER_URI=master_uri, ROS_IP="127.0.0.1", ROS_HOME=str(ros_home),
               PYTHONUNBUFFERED="1")
    env.pop("ROS_HOSTNAME", None)
    return env


def start(cmd: Sequence[str], env: Dict[str, str], log: Optional[Path] = None) -> subprocess.Popen:
    """Start ``cmd`` in a new process group; output to ``log`` (or discarded)."""
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(list(cmd), env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    finally:
        if log is not None:
            out.close()


def stop(proc: Optional[subprocess.Popen], sig: int = signal.SIGINT,
         timeout: float = 10.0) -> Optional[int]:
    """Signal ``proc``'s process group, wait, escalate to SIGTERM then SIGKILL; returns its code."""
    if proc is None:
        return None
    for current in (sig, signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, current)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=timeout if current != signal.SIGKILL else 5.0)
        except subprocess.TimeoutExpired:
            LOG.warning("pid %d ignored signal %d", proc.pid, current)
    return proc.poll()


def master_ready(master_uri: str) -> bool:
    """True when a ROS master answers at ``master_uri``."""
    try:
        code, _, _ = xmlrpc.client.ServerProxy(master_uri).getPid("/admlops_probe")
        return code == 1
    except (OSError, xmlrpc.client.Error):
        return False


def wait_for(predicate, timeout: float, what: str, proc: Optional[subprocess.Popen] = None,
             poll_s: float = 0.1) -> None:
    """Wait until ``predicate()`` is true; raises ProcessError after ``timeout`` s or if proc died."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise ProcessError(f"{what}: process exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            raise ProcessError(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(poll_s)


def topic_has_subscriber(master_uri: str, topic: str, node: Optional[str] = None) -> bool:
    """True when ``topic`` has a subscriber (``node`` if given) registered at the master."""
    try:
        code, _, state = xmlrpc.client.ServerProxy(master_uri).getSystemState("/admlops_probe")
    except (OSError, xmlrpc.client.Error):
        return False
    if code != 1:
        return False
    for name, nodes in state[1]:
        if name == topic and (node is None or node in nodes):
            return True
    return False


class RosCore:
    """A private roscore (own port and ROS_HOME) as a context manager; stopped with SIGTERM.

    Example:
        with RosCore(ros_home="build/ros_home") as core:
            subprocess.run(["rostopic", "list"], env=core.env)
    """

    def __init__(self, ros_home: Union[str, Path], port: Optional[int] = None,
                 log: Optional[Path] = None) -> None:
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.ros_home = Path(ros_home)
        self.log = log or self.ros_home / f"roscore_{self.port}.log"
        self.env = ros_env(self.uri, self.ros_home)
        self.proc: Optional[subprocess.Popen] = None

    def __enter__(self) -> "RosCore":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        """Start roscore and wait until the master answers."""
        self.ros_home.mkdir(parents=True, exist_ok=True)
        if master_ready(self.uri):
            raise ProcessError(f"a ROS master already runs at {self.uri}; pick another port")
        self.proc = start(["roscore", "-p", str(self.port)], self.env, self.log)
        self.core_pids: List[int] = []
        try:
            wait_for(lambda: master_ready(self.uri), READY_TIMEOUT_S,
                     f"roscore on port {self.port} (log {self.log})", self.proc)
            self.core_pids = _core_pids(self.uri)
        except BaseException:  # Ctrl-C while waiting too: nothing may be left running
            self.close()
            raise

    def close(self) -> None:
        """Stop roscore (SIGTERM to its process group; rosmaster ignores SIGINT), then rosmaster
        and rosout by their pids: roscore's launcher gives them process groups of their own, so
        a roscore killed before it could stop its children would leave them running."""
        pids = set(getattr(self, "core_pids", []))
        if self.proc is not None and self.proc.poll() is None:
            pids.update(_core_pids(self.uri))  # rosout is often up only after start()
        stop(self.proc, signal.SIGTERM)
        self.proc, self.core_pids = None, []
        for pid in sorted(pids):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if not _alive(pid):
                    break
                os.kill(pid, sig)
                deadline = time.monotonic() + 5.0
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)


def _core_pids(uri: str) -> List[int]:
    """The pids of the ROS master at ``uri`` and of its /rosout node (their getPid calls)."""
    import xmlrpc.client

    from admlops_ros.ros.master_watch import TimeoutTransport

    def proxy(address: str) -> xmlrpc.client.ServerProxy:
        return xmlrpc.client.ServerProxy(address, transport=TimeoutTransport(2.0))

    caller = "/admlops_processes"
    pids = []
    try:
        master = proxy(uri)
        code, _, pid = master.getPid(caller)
        if code == 1:
            pids.append(int(pid))
        code, _, rosout_uri = master.lookupNode(caller, "/rosout")
        if code == 1:
            code, _, pid = proxy(rosout_uri).getPid(caller)
            if code == 1:
                pids.append(int(pid))
    except (OSError, xmlrpc.client.Error):
        pass
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def launch_detection(core: RosCore, launch_args: Sequence[str], log: Path,
                     input_topic: str = "/points_raw", node: str = "/lidar_detection",
                     timeout: float = 300.0,
                     launch_file: str = "lidar_detection.launch") -> subprocess.Popen:
    """``roslaunch admlops_ros <launch_file> <args>``; returns once the node subscribed.

    ``launch_file`` is lidar_detection.launch or camera_detection.launch (with
    ``input_topic="/camera/image_raw", node="/camera_detection"``).

    Raises:
        ProcessError: roslaunch exited (bad parameters, engine load failure: see ``log``) or the
            node did not subscribe to ``input_topic`` within ``timeout`` s (engine load + warm-up).
    """
    proc = start(["roslaunch", "--wait", "admlops_ros", launch_file, *launch_args], core.env, log)
    try:
        wait_for(lambda: topic_has_subscriber(core.uri, input_topic, node), timeout,
                 f"{node.lstrip('/')} (log {log})", proc, poll_s=0.2)
    except BaseException:  # Ctrl-C while the engine loads too: nothing may be left running
        stop(proc)
        raise
    return proc


__all__: List[str] = ["launch_detection", "ProcessError", "RosCore", "free_port", "master_ready", "ros_env",
                      "start", "stop", "topic_has_subscriber", "wait_for"]
