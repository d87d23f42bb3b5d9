"""Diagnostics state machine: OK / WARN (slow, dropped) / ERROR (consecutive failures)."""
from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticStatus

from admlops_ros.ros.diagnostics import ERROR, OK, WARN, DiagnosticsState, to_diagnostic_array


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make(error_after: int = 3):
    clock = Clock()
    return DiagnosticsState(max_processing_ms=200.0, error_after=error_after, hold_s=2.0,
                            clock=clock), clock


def test_ok_then_warn_when_slow_then_ok():
    state, _ = make()
    assert state.status()[0] == OK
    state.record_received()
    assert state.record_published(50.0) is False  # OK -> OK: nothing new
    assert state.record_published(250.0) is True
    level, message, values = state.status()
    assert level == WARN and "250.0 ms > max_processing_ms 200.0" in message
    assert state.record_published(20.0) is True and state.status()[0] == OK
    assert values["frames_out"] == "2"


def test_drop_warns_for_hold_time_then_recovers():
    state, clock = make()
    state.record_received()
    assert state.record_dropped("cloud has no 'intensity' field") is True
    level, message, values = state.status()
    assert level == WARN and "intensity" in message
    assert values["frames_dropped"] == "1" and values["last_error"].startswith("cloud has no")
    state.record_published(10.0)
    assert state.status()[0] == WARN  # still within the hold time
    clock.t = 2.5
    assert state.poll() is True and state.status()[0] == OK


def test_error_after_consecutive_failures_and_recovery():
    state, clock = make(error_after=3)
    state.record_dropped("bad")
    state.record_failure("RuntimeError: engine")
    assert state.status()[0] == WARN
    assert state.record_failure("RuntimeError: engine") is True
    level, message, values = state.status()
    assert level == ERROR and "3 consecutive" in message
    assert values["failures"] == "2" and values["frames_dropped"] == "3"
    assert state.record_failure("RuntimeError: engine") is False  # same problem: no re-publish
    state.record_published(10.0)
    assert state.status()[0] == WARN
    clock.t = 10.0
    state.poll()
    assert state.status()[0] == OK


def test_warning_without_drop():
    state, _ = make()
    state.record_published(5.0)
    assert state.record_warning("all 10 points are NaN") is True
    assert state.status()[0] == WARN and state.counters.frames_dropped == 0


def test_diagnostic_array():
    import rospy

    state, _ = make()
    state.record_dropped("too many points")
    msg = to_diagnostic_array(state, "lidar_detection: detector", "pp", rospy.Time(5),
                              {"backend": "onnxruntime"})
    status = msg.status[0]
    assert status.level == DiagnosticStatus.WARN and status.hardware_id == "pp"
    values = {kv.key: kv.value for kv in status.values}
    assert values["frames_dropped"] == "1" and values["backend"] == "onnxruntime"
    assert msg.header.stamp == rospy.Time(5)
