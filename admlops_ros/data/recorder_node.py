"""The rospy side of `admlops record`: raw subscriptions, the ~capture service, one writer loop.

Every topic is subscribed once as ``rospy.AnyMsg`` (no deserialization; large ``buff_size`` and
``tcp_nodelay`` so 2 MB clouds do not queue up in the socket). Callbacks only put a
:class:`~admlops_ros.data.record.RawMessage` on a queue; the main thread takes them off, feeds
the recorder of :mod:`admlops_ros.data.record` and the detection / diagnostics triggers, answers
``~capture`` service calls and closes captures whose post window has passed. SIGINT and SIGTERM
stop the loop and the open bag is closed properly (indexed, sidecar written); a second signal
interrupts at once.
"""
from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from admlops_ros.data.record import (RawMessage, RecordError, TopicSpec, TopicWatch, TriggerSet,
                                     decode, detection_frame, diagnostic_statuses)

LOG = logging.getLogger(__name__)

NODE_NAME = "admlops_record"
SUBSCRIBER_QUEUE = 100      # rospy's per-subscriber queue: callbacks only enqueue, so it drains
SERVICE_ANSWER_S = 5.0      # a ~capture call waits this long for the writer loop's answer
POLL_S = 0.05


@dataclass
class RecordSession:
    """What one `admlops record` run does (built by the CLI from its options).

    Attributes:
        topics: recorded topics.
        recorder: a ContinuousRecorder or a TriggeredRecorder.
        triggers: the trigger set (trigger mode), else None.
        detections_topic / diagnostics_topic: inputs of the detection / diagnostics triggers
            (subscribed even when not recorded).
        duration_s: stop after this long (wall clock); None: until SIGINT / SIGTERM.
        queue_mb: messages waiting for the writer beyond this are dropped (and counted).
        warn_after_s: warn about a requested topic that sent nothing this long after start.
    """

    topics: Sequence[TopicSpec]
    recorder: Any
    triggers: Optional[TriggerSet] = None
    detections_topic: Optional[str] = None
    diagnostics_topic: Optional[str] = None
    duration_s: Optional[float] = None
    node_name: str = NODE_NAME
    queue_mb: float = 512.0
    warn_after_s: float = 5.0
    written: List[Path] = field(default_factory=list)


@dataclass
class _ServiceCall:
    done: threading.Event = field(default_factory=threading.Event)
    path: Optional[Path] = None
    error: str = ""


class _Inbox:
    """The queue between rospy's callback threads and the writer loop, bounded in bytes."""

    def __init__(self, max_bytes: float) -> None:
        self.queue: "queue.Queue[Any]" = queue.Queue()
        self.max_bytes = max_bytes
        self.pending = 0
        self.dropped = 0
        self._lock = threading.Lock()

    def put_message(self, msg: RawMessage) -> None:
        with self._lock:
            if self.pending + msg.size > self.max_bytes:
                self.dropped += 1
                return
            self.pending += msg.size
        self.queue.put(msg)

    def taken(self, msg: RawMessage) -> None:
        with self._lock:
            self.pending -= msg.size


def _master_uri() -> str:
    import rosgraph
    return rosgraph.get_master_uri()


def _check_master() -> None:
    from admlops_ros.ros.processes import master_ready
    uri = _master_uri()
    if not master_ready(uri):
        raise RecordError(f"no ROS master answers at {uri} (ROS_MASTER_URI); start roscore or "
                          f"set ROS_MASTER_URI")


class _Stop:
    """SIGINT / SIGTERM: the first asks the loop to stop, a second raises KeyboardInterrupt."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: Dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        LOG.info("signal %d: closing the recording", signum)
        self.event.set()

    def __enter__(self) -> "_Stop":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _KeepLogging:
    """rospy.init_node replaces the root logger's handlers with its log file: the handlers the
    CLI set (stderr) are put on the ``admlops_ros`` logger for the run, so what the recorder
    logs is still seen (and rospy's own rosout lines are not printed twice); afterwards the root
    logger gets its handlers back."""

    def __enter__(self) -> "_KeepLogging":
        self._before = list(logging.getLogger().handlers)
        self._package = logging.getLogger("admlops_ros")
        self._added: List[logging.Handler] = []
        return self

    def restore(self) -> None:
        """Call after rospy.init_node."""
        root = logging.getLogger().handlers
        self._added = [h for h in self._before if h not in root
                       and h not in self._package.handlers]
        for handler in self._added:
            self._package.addHandler(handler)

    def __exit__(self, *exc: Any) -> None:
        for handler in self._added:
            self._package.removeHandler(handler)
        root = logging.getLogger()
        if self._added:  # the caller's logging as it was (rospy's file handler off the root)
            root.handlers[:] = self._before


def run(session: RecordSession) -> List[Path]:
    """Record until SIGINT / SIGTERM or ``duration_s``; returns the bags written.

    Raises:
        RecordError: no ROS master.
    """
    import rospy

    from admlops_ros.ros.node import BUFF_SIZE
    _check_master()
    recorded = {t.topic for t in session.topics}
    trigger_inputs = {t for t in (session.detections_topic, session.diagnostics_topic) if t}
    inbox = _Inbox(session.queue_mb * 1e6)
    subscribers: List[Any] = []
    service = None
    with _Stop() as stop, _KeepLogging() as logs:
        rospy.init_node(session.node_name, disable_signals=True)
        logs.restore()

        def on_message(msg: Any, topic: str) -> None:
            header = getattr(msg, "_connection_header", None) or {}
            inbox.put_message(RawMessage(
                topic, header.get("type", ""), header.get("md5sum", ""),
                header.get("message_definition", ""), bytes(msg._buff),
                rospy.get_rostime().to_nsec(), header.get("callerid", ""),
                header.get("latching", "0") == "1", time.time_ns()))

        try:
            for topic in sorted(recorded | trigger_inputs):
                subscribers.append(rospy.Subscriber(
                    topic, rospy.AnyMsg, on_message, callback_args=topic,
                    queue_size=SUBSCRIBER_QUEUE, buff_size=BUFF_SIZE, tcp_nodelay=True))
            if session.triggers is not None and session.triggers.service:
                service = _advertise_capture(inbox)
            LOG.info("recording %s%s", ", ".join(sorted(recorded)),
                     f"; triggers {', '.join(session.triggers.kinds)}"
                     if session.triggers is not None else "")
            _loop(session, inbox, stop.event, recorded, rospy)
        finally:
            for sub in subscribers:
                sub.unregister()
            if service is not None:
                service.shutdown("recording ended")
            try:
                _drain(session, inbox, recorded)
            finally:
                session.written = session.recorder.close()
                rospy.signal_shutdown("admlops record ended")
    return session.written


def _advertise_capture(inbox: _Inbox) -> Any:
    import rospy
    from std_srvs.srv import Trigger, TriggerResponse

    def handle(_request: Any) -> Any:
        call = _ServiceCall()
        inbox.queue.put(call)
        if not call.done.wait(SERVICE_ANSWER_S):
            return TriggerResponse(success=False, message="the recorder did not answer within "
                                   f"{SERVICE_ANSWER_S:g} s")
        if call.error:
            return TriggerResponse(success=False, message=call.error)
        return TriggerResponse(success=True, message=str(call.path))

    return rospy.Service("~capture", Trigger, handle)


def _dispatch(session: RecordSession, item: Any, recorded: set, now_ns: int) -> None:
    recorder, triggers = session.recorder, session.triggers
    if isinstance(item, _ServiceCall):
        try:
            item.path = recorder.fire(triggers.manual(now_ns))
        except RecordError as exc:
            item.error = " ".join(str(exc).split())
        item.done.set()
        return
    msg: RawMessage = item
    if msg.topic in recorded:
        recorder.handle(msg)
    if triggers is None:
        return
    events = []
    try:
        if msg.topic == session.detections_topic and msg.datatype.endswith("DetectedObjectArray"):
            events = triggers.on_detections(detection_frame(decode(msg)))
        elif msg.topic == session.diagnostics_topic and \
                msg.datatype == "diagnostic_msgs/DiagnosticArray":
            dmsg = decode(msg)
            stamp = dmsg.header.stamp
            events = triggers.on_diagnostics(int(stamp.secs) * 1_000_000_000 + int(stamp.nsecs)
                                             or msg.t_ns, diagnostic_statuses(dmsg))
    except RecordError as exc:
        LOG.warning("%s", exc)
        recorder.note(" ".join(str(exc).split()))
    for event in events:
        recorder.fire(event)


def _loop(session: RecordSession, inbox: _Inbox, stop: threading.Event, recorded: set,
          rospy: Any) -> None:
    deadline = None if session.duration_s is None else time.monotonic() + session.duration_s
    watch = TopicWatch(recorded, rospy.get_rostime().to_nsec(), session.warn_after_s)
    dropped = 0
    while not stop.is_set() and not rospy.is_shutdown():
        if deadline is not None and time.monotonic() >= deadline:
            LOG.info("--duration %g s reached", session.duration_s)
            break
        try:
            item = inbox.queue.get(timeout=POLL_S)
        except queue.Empty:
            item = None
        now = rospy.get_rostime().to_nsec()
        if item is not None:
            if isinstance(item, RawMessage):
                inbox.taken(item)
                watch.seen(item.topic)
            _dispatch(session, item, recorded, now)
        session.recorder.tick(now)
        for topic in watch.due(now):
            LOG.warning("no message on %s after %g s; recording the other topics",
                        topic, session.warn_after_s)
        if inbox.dropped != dropped:
            problem = (f"{inbox.dropped - dropped} message(s) dropped: the writer fell more "
                       f"than --queue-mb {session.queue_mb:g} behind")
            LOG.warning("%s", problem)
            session.recorder.note(problem)
            dropped = inbox.dropped


def _drain(session: RecordSession, inbox: _Inbox, recorded: set) -> None:
    """Write the messages still queued after the stop; a late ~capture call is refused."""
    while True:
        try:
            item = inbox.queue.get_nowait()
        except queue.Empty:
            return
        if isinstance(item, RawMessage):
            inbox.taken(item)
            if item.topic in recorded:
                session.recorder.handle(item)
        else:
            item.error = "the recording is stopping"
            item.done.set()


__all__ = ["NODE_NAME", "RecordSession", "run"]
