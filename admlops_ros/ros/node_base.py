"""What lidar_detection and camera_detection share: the frame loop's error policy, diagnostics,
the master watchdog, and ``main``'s start-up sequence.

The error policy of one input message (a cloud or an image): a problem with the message itself
(``drop_errors``) drops it with a WARN and a diagnostic; anything else the detector raises counts
as a failure (ERROR after ``error_after_failures`` in a row); the node never dies on input.

A watchdog thread (ros/master_watch.py) asks the ROS master every ~master_check_period_s whether
it still knows the node: rospy never re-registers with a restarted master, so the node would run
on unseen. It exits with EXIT_MASTER_LOST instead, for roslaunch ``respawn`` to start it again,
after putting its start-up parameters back on the new master.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Type

from admlops_ros.errors import AdmlopsError
from admlops_ros.ros.conversions import stats_to_msg
from admlops_ros.ros.diagnostics import LEVEL_NAMES, DiagnosticsState, to_diagnostic_array
from admlops_ros.ros.master_watch import (EXIT_MASTER_LOST, MASTER_OK, MASTER_WAITING,
                                          MasterClient, MasterVerdict, MasterWatch,
                                          MasterWatchdog)

LOG = logging.getLogger(__name__)

DIAGNOSTIC_PERIOD_S = 1.0
THROTTLE_S = 5.0
EXIT_BAD_PARAMS = 2
EXIT_ENGINE = 3


def release(exc: BaseException) -> str:
    """The message of a caught exception, with its traceback dropped.

    The traceback holds the frames up into rospy's callback, and with them the input message,
    in a reference cycle: kept, every dropped cloud (megabytes) lived until the next full GC
    collection and the node's RSS rose in steps of tens of MiB (found by scripts/soak.py).
    """
    exc.__traceback__ = None
    return str(exc)


class DetectionNodeBase:
    """Diagnostics, watchdog and the per-message error policy of a detection node.

    Subclasses set ``self.processor`` (with ``.msgs``) and their publishers and subscriptions,
    call :meth:`_start_base` last in ``__init__``, and route each message through
    :meth:`_handle_frame`.
    """

    #: name of the node's entry in /diagnostics, and of its input ("cloud", "image")
    diagnostic_name = ""
    node_name = ""
    frame_kind = "frame"

    def _init_base(self, rospy: Any, diag: DiagnosticsState,
                   summary: Optional[Dict[str, str]],
                   restore_params: Optional[Dict[str, Any]]) -> None:
        from diagnostic_msgs.msg import DiagnosticArray  # noqa: WPS433

        self.rospy = rospy
        self.diag = diag
        self.summary = dict(summary or {})
        self.restore_params = dict(restore_params or {})
        self._diag_lock = threading.Lock()
        self._logged_level = self.diag.status()[0]
        self.exit_code = 0
        self.master: Optional[MasterClient] = None
        self.watchdog: Optional[MasterWatchdog] = None
        self.pub_diag = rospy.Publisher("/diagnostics", DiagnosticArray, queue_size=10)
        self.publish_diagnostics()

    def _start_base(self, master_check_period_s: float) -> None:
        """The diagnostics timer and, with a positive period, the master watchdog."""
        rospy = self.rospy
        self.timer = rospy.Timer(rospy.Duration(DIAGNOSTIC_PERIOD_S), self._on_timer)
        if master_check_period_s > 0:
            import rosgraph  # noqa: WPS433

            name = rospy.get_name()
            master_uri = rosgraph.get_master_uri()  # what rospy.init_node used
            self.master = MasterClient(master_uri, name)
            watch = MasterWatch(name, rospy.get_node_uri(), master_uri)
            self.watchdog = MasterWatchdog(watch, lambda: self.master.lookup_node(name),
                                           master_check_period_s,
                                           self._on_master_verdict).start()
            rospy.on_shutdown(self.watchdog.stop)

    def _on_master_verdict(self, verdict: MasterVerdict) -> None:
        rospy = self.rospy
        if not verdict.message or rospy.is_shutdown():
            return
        if verdict.state == MASTER_OK:
            rospy.loginfo(verdict.message)
        elif verdict.state == MASTER_WAITING:
            rospy.logwarn(verdict.message)
        else:
            self.exit_code = EXIT_MASTER_LOST
            rospy.logfatal(verdict.message)
            self._restore_params()
            rospy.signal_shutdown(f"ROS master restarted (exit code {EXIT_MASTER_LOST})")

    def _restore_params(self) -> None:
        """Put the node's start-up parameters the new master lacks back (roslaunch set them once)."""
        if not self.restore_params or self.master is None:
            return
        try:
            restored = self.master.restore_missing(self.restore_params)
        except Exception as exc:  # the master went away again: the respawn gets the defaults
            self.rospy.logwarn(f"could not restore parameters on the restarted master "
                               f"({type(exc).__name__}: {exc}); the respawned node starts with "
                               f"what the master has")
            return
        if restored:
            self.rospy.loginfo(f"restored {len(restored)} start-up parameters on the restarted "
                               f"master for the respawned node: {', '.join(restored)}")

    def _guarded(self, handle: Callable[[Any], None], msg: Any) -> None:
        """``handle(msg)``, logging (never raising) what escapes it: publishing during shutdown,
        malformed headers, ..."""
        try:
            handle(msg)
        except Exception as exc:
            if not self.rospy.is_shutdown():
                self.rospy.logerr_throttle(THROTTLE_S, f"{self.frame_kind} callback failed: "
                                           f"{type(exc).__name__}: {exc}")

    def _handle_frame(self, msg: Any, process: Callable[[Any], Any],
                      drop_errors: Tuple[Type[BaseException], ...],
                      publish: Callable[[Any], None], stats_type: str) -> None:
        """One input message: process, publish, stats, diagnostics (the module's error policy).

        Args:
            process: ``msg -> result`` with ``.stats`` (dict) and ``.warning`` (str).
            drop_errors: what ``process`` raises for a message it drops.
            publish: publishes the result's outputs.
            stats_type: the stats message type of the node's package.
        """
        rospy = self.rospy
        kind = self.frame_kind
        t0 = time.perf_counter()
        self.diag.record_received()
        try:
            result = process(msg)
        except drop_errors as exc:
            problem = release(exc)
            rospy.logwarn_throttle(THROTTLE_S, f"dropped {kind} (stamp "
                                   f"{msg.header.stamp.to_sec():.3f}, frame "
                                   f"{msg.header.frame_id!r}): {problem}")
            self._after(self.diag.record_dropped(problem))
            return
        except Exception as exc:  # the node never dies on input: count and report
            LOG.debug("detector failure", exc_info=True)
            problem = f"{type(exc).__name__}: {release(exc)}"
            rospy.logerr_throttle(THROTTLE_S, f"detector failed on {kind} (stamp "
                                  f"{msg.header.stamp.to_sec():.3f}): {problem}")
            self._after(self.diag.record_failure(problem))
            return
        publish(result)
        processing_ms = (time.perf_counter() - t0) * 1e3
        changed = self.diag.record_published(processing_ms)
        if result.warning:
            rospy.logwarn_throttle(THROTTLE_S, result.warning)
            changed = self.diag.record_warning(result.warning) or changed
        stamp = msg.header.stamp
        latency_ms = ((rospy.Time.now() - stamp).to_sec() * 1e3 if not stamp.is_zero()
                      else float("nan"))
        counters = self.diag.counters
        stats = dict(result.stats, processing_ms=processing_ms, latency_ms=latency_ms,
                     frames_in=counters.frames_in, frames_out=counters.frames_out,
                     frames_dropped=counters.frames_dropped)
        self.pub_stats.publish(stats_to_msg(msg.header, stats, self.processor.msgs, stats_type))
        self._after(changed)

    def _after(self, changed: bool) -> None:
        if not changed:
            return
        level, message, _ = self.diag.status()
        if level != self._logged_level:
            self._logged_level = level
            self.rospy.loginfo(f"diagnostics {LEVEL_NAMES[level]}: {message}")
        self.publish_diagnostics()

    def _on_timer(self, _event: Any) -> None:
        self.diag.poll()
        self.publish_diagnostics()

    def publish_diagnostics(self) -> None:
        """Publish the current DiagnosticArray on /diagnostics."""
        with self._diag_lock:
            self.pub_diag.publish(to_diagnostic_array(
                self.diag, self.diagnostic_name, self.summary.get("model", self.node_name),
                self.rospy.Time.now(), self.summary))


def startup_params(rospy: Any, private: Dict[str, Any]) -> Dict[str, Any]:
    """The parameters to restore on a restarted master: ~* as read at start, /use_sim_time."""
    name = rospy.get_name()
    out = {f"{name}/{key}": value for key, value in private.items()}
    if rospy.has_param("/use_sim_time"):
        out["/use_sim_time"] = rospy.get_param("/use_sim_time")
    return out


def close_detector(detector: Any) -> None:
    """``detector.close()`` where the detector has one."""
    close = getattr(detector, "close", None)
    if close is not None:
        close()


def run_node(node_name: str, argv: Optional[Sequence[str]], validate: Callable[[Dict], Any],
             load: Callable[[Any], Any], describe: Callable[[Any, Any], Dict[str, str]],
             make_node: Callable[[Any, Any, Dict[str, str], Dict[str, Any]], Any],
             what: str = "engine",
             before_spin: Optional[Callable[[Any, Any], Optional[int]]] = None) -> int:
    """A detection node's ``main``: init, validate ~parameters, load and warm up the detector,
    spin; returns the exit code (0 stopped, 2 bad parameters, 3 engine failure, 4 the ROS
    master restarted: EXIT_MASTER_LOST).

    Args:
        validate: ``~`` parameters -> params (raises AdmlopsError naming the parameter).
        load: params -> a warmed-up detector.
        describe: (detector, params) -> model/backend facts for diagnostics and the log.
        make_node: (params, detector, summary, restore_params) -> the node object
            (``exit_code``, ``output_topic``).
        before_spin: (params, detector) -> an exit code to stop with instead of spinning.
    """
    import rospy  # noqa: WPS433

    rospy.init_node(node_name, argv=list(argv) if argv is not None else sys.argv)
    private = rospy.get_param("~", {})
    try:
        params = validate(private)
    except AdmlopsError as exc:  # ParamError, or the package directory not found
        rospy.logfatal(str(exc))
        rospy.signal_shutdown("bad parameters")
        return EXIT_BAD_PARAMS
    backend = getattr(params, "backend", "auto")
    rospy.loginfo(f"loading {what} {params.engine} (backend {backend})")
    try:
        detector = load(params)
    except Exception as exc:
        rospy.logfatal(f"cannot load {what} {params.engine} with backend {backend!r}: "
                       f"{type(exc).__name__}: {exc}")
        rospy.signal_shutdown("engine load failed")
        return EXIT_ENGINE
    try:
        if before_spin is not None:
            code = before_spin(params, detector)
            if code is not None:
                return code
        summary = describe(detector, params)
        node = make_node(params, detector, summary, startup_params(rospy, private))
        rospy.loginfo(f"{node_name} ready: {summary}; {params.input_topic} -> "
                      f"{getattr(node, 'output_topic', 'outputs')}")
        rospy.spin()
    finally:
        close_detector(detector)
    return node.exit_code
