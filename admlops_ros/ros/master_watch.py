"""Watch the ROS master: does it still know this node? (rospy never re-registers after a restart)"""
from __future__ import annotations

import logging
import threading
import time
import xmlrpc.client
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

LOG = logging.getLogger(__name__)

EXIT_MASTER_LOST = 4          # a restarted ROS master does not know the node: respawn it
MASTER_CALL_TIMEOUT_S = 2.0   # one XML-RPC call to the master; no answer = master unreachable
MASTER_WARN_EVERY_S = 10.0    # "master unreachable" warning at most this often
MASTER_OK, MASTER_WAITING, MASTER_LOST = "ok", "waiting", "lost"


class TimeoutTransport(xmlrpc.client.Transport):
    """XML-RPC over HTTP with a socket timeout (xmlrpc.client has none of its own)."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def make_connection(self, host: Any) -> Any:
        conn = super().make_connection(host)
        conn.timeout = self.timeout
        return conn


@dataclass(frozen=True)
class MasterAnswer:
    """What the ROS master said about one node name.

    Attributes:
        reachable: the master answered.
        uri: the XML-RPC URI registered under the name; "" when the master does not know it.
        error: why there was no answer (when not reachable).
    """

    reachable: bool
    uri: str = ""
    error: str = ""


class MasterClient:
    """The few ROS master calls the watchdog needs, each bounded by ``timeout`` (no rospy)."""

    def __init__(self, master_uri: str, caller_id: str,
                 timeout: float = MASTER_CALL_TIMEOUT_S) -> None:
        self.master_uri = master_uri
        self.caller_id = caller_id
        self.timeout = timeout

    def _call(self, method: str, *args: Any) -> Any:
        """(code, message, value) of one master call, on a fresh connection (masters restart)."""
        with xmlrpc.client.ServerProxy(self.master_uri,
                                       transport=TimeoutTransport(self.timeout)) as proxy:
            code, message, value = getattr(proxy, method)(self.caller_id, *args)
        return int(code), str(message), value

    def lookup_node(self, name: str) -> MasterAnswer:
        """Ask the master for the URI of node ``name``; never raises."""
        try:
            code, message, uri = self._call("lookupNode", name)
        except Exception as exc:  # refused, timed out, not a ROS master, ...: no answer
            return MasterAnswer(False, error=f"{type(exc).__name__}: {exc}")
        if code == 1:
            return MasterAnswer(True, uri=str(uri))
        if code == -1:  # "unknown node"
            return MasterAnswer(True)
        return MasterAnswer(False, error=f"lookupNode failed (code {code}): {message}")

    def restore_missing(self, params: Dict[str, Any]) -> List[str]:
        """Set each parameter (full name -> value) the master does not have; returns their names.

        Raises:
            OSError, xmlrpc.client.Error: the master stopped answering.
        """
        restored = []
        for name, value in sorted(params.items()):
            _, _, present = self._call("hasParam", name)
            if not present:
                self._call("setParam", name, value)
                restored.append(name)
        return restored


@dataclass(frozen=True)
class MasterVerdict:
    """The watchdog's reading of one master answer.

    Attributes:
        state: MASTER_OK, MASTER_WAITING (no answer) or MASTER_LOST (the node must exit).
        message: one line to log ("" when there is nothing new to say).
    """

    state: str
    message: str = ""


def _same_uri(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


class MasterWatch:
    """Decides from the master's answers whether the node lost its registration (no rospy).

    No answer: wait for the master (a warning every ``warn_every_s``). An answer that does not
    know the node, or knows another process under its name, comes from a restarted master that
    never heard of this process (rospy does not re-register): MASTER_LOST.
    """

    def __init__(self, node_name: str, node_uri: str, master_uri: str,
                 warn_every_s: float = MASTER_WARN_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.node_name = node_name
        self.node_uri = node_uri
        self.master_uri = master_uri
        self.warn_every_s = warn_every_s
        self.clock = clock
        self._down_since: Optional[float] = None
        self._warned_at: Optional[float] = None

    def observe(self, answer: MasterAnswer) -> MasterVerdict:
        """Fold one answer into the state; returns what to do and what to log."""
        now = self.clock()
        if not answer.reachable:
            if self._down_since is None:
                self._down_since = now
            if self._warned_at is not None and now - self._warned_at < self.warn_every_s:
                return MasterVerdict(MASTER_WAITING)
            self._warned_at = now
            return MasterVerdict(MASTER_WAITING, (
                f"ROS master {self.master_uri} not answering for {now - self._down_since:.0f} s "
                f"({answer.error}); waiting for it; if it comes back restarted, {self.node_name} "
                f"exits with code {EXIT_MASTER_LOST} to be respawned"))
        if _same_uri(answer.uri, self.node_uri):
            message = ""
            if self._down_since is not None:
                message = (f"ROS master {self.master_uri} answers again after "
                           f"{now - self._down_since:.0f} s and still knows {self.node_name}")
            self._down_since = self._warned_at = None
            return MasterVerdict(MASTER_OK, message)
        if answer.uri:
            what = (f"has another process registered as {self.node_name} ({answer.uri}, this "
                    f"node is {self.node_uri})")
        else:
            what = f"does not know {self.node_name}"
        return MasterVerdict(MASTER_LOST, (
            f"ROS master {self.master_uri} restarted: it {what} and rospy cannot re-register; "
            f"exiting with code {EXIT_MASTER_LOST} so that roslaunch respawn "
            f"(lidar_detection.launch respawn:=true) or a supervisor restarts the node"))


class MasterWatchdog:
    """A daemon thread that runs ``lookup`` through ``watch`` every ``period_s`` of wall time.

    Wall-clock waits, not rospy.Timer: it works with /use_sim_time and no /clock. Each verdict
    goes to ``on_verdict``; the thread ends after MASTER_LOST or ``stop()``.
    """

    def __init__(self, watch: MasterWatch, lookup: Callable[[], MasterAnswer], period_s: float,
                 on_verdict: Callable[[MasterVerdict], None]) -> None:
        self.watch = watch
        self.lookup = lookup
        self.period_s = period_s
        self.on_verdict = on_verdict
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="master_watchdog", daemon=True)

    def start(self) -> "MasterWatchdog":
        self.thread.start()
        return self

    def stop(self) -> None:
        """End the thread at its next wake-up (e.g. on node shutdown, when it unregisters)."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            verdict = self.watch.observe(self.lookup())
            if self._stop.is_set():  # shutting down: the node unregistered itself
                return
            try:
                self.on_verdict(verdict)
            except Exception:  # a logging failure must not end the watch
                LOG.exception("master watchdog callback failed")
            if verdict.state == MASTER_LOST:
                return
