"""Detector health for /diagnostics: counters and the OK / WARN / ERROR state machine."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels
LEVEL_NAMES = {OK: "OK", WARN: "WARN", ERROR: "ERROR"}
WARN_HOLD_S = 2.0          # a dropped cloud keeps the state at WARN this long (seconds)


@dataclass
class Counters:
    """Frame counters since start."""

    frames_in: int = 0
    frames_out: int = 0
    frames_dropped: int = 0
    failures: int = 0
    consecutive_bad: int = 0


class DiagnosticsState:
    """Health of the detection node from per-frame events.

    Levels:
        ERROR: the last ``error_after`` clouds in a row were dropped or failed.
        WARN: the last frame took longer than ``max_processing_ms``, or a cloud was dropped
            or a frame failed within the last ``hold_s`` seconds.
        OK: otherwise.

    Every ``record_*`` method returns True when the level or message changed (publish now).
    Thread-safe: ROS callbacks and the 1 Hz timer call it from different threads.
    """

    def __init__(self, max_processing_ms: float, error_after: int, hold_s: float = WARN_HOLD_S,
                 clock: Callable[[], float] = time.monotonic, frame_name: str = "cloud") -> None:
        self.frame_name = frame_name  # "cloud" or "image": the word in the messages
        self.max_processing_ms = float(max_processing_ms)
        self.error_after = int(error_after)
        self.hold_s = float(hold_s)
        self.clock = clock
        self.counters = Counters()
        self.last_processing_ms = float("nan")
        self.last_problem = ""
        self._last_problem_time: Optional[float] = None
        self._slow = False
        self._lock = threading.Lock()
        self._reported: Tuple[int, str] = (OK, "")

    def record_received(self) -> None:
        """A cloud arrived."""
        with self._lock:
            self.counters.frames_in += 1

    def record_published(self, processing_ms: float) -> bool:
        """Detections were published for a cloud that took ``processing_ms`` (ms)."""
        with self._lock:
            self.counters.frames_out += 1
            self.counters.consecutive_bad = 0
            self.last_processing_ms = float(processing_ms)
            self._slow = processing_ms > self.max_processing_ms
            return self._changed()

    def record_warning(self, problem: str) -> bool:
        """A cloud was processed but had a problem worth a WARN (e.g. all points NaN)."""
        with self._lock:
            self._problem(problem)
            return self._changed()

    def record_dropped(self, problem: str) -> bool:
        """A cloud was rejected (bad layout, too many points): no detections published."""
        with self._lock:
            self.counters.frames_dropped += 1
            self.counters.consecutive_bad += 1
            self._problem(problem)
            return self._changed()

    def record_failure(self, problem: str) -> bool:
        """The detector raised on a cloud: counted as dropped and as a failure."""
        with self._lock:
            self.counters.failures += 1
            self.counters.frames_dropped += 1
            self.counters.consecutive_bad += 1
            self._problem(problem)
            return self._changed()

    def poll(self) -> bool:
        """Re-evaluate time-based state (call periodically); True when it changed."""
        with self._lock:
            return self._changed()

    def status(self) -> Tuple[int, str, Dict[str, str]]:
        """(level, message, key/values) right now."""
        with self._lock:
            level, message = self._evaluate()
            return level, message, self._values()

    def _problem(self, problem: str) -> None:
        self.last_problem = problem
        self._last_problem_time = self.clock()

    def _evaluate(self) -> Tuple[int, str]:
        c = self.counters
        if c.consecutive_bad >= self.error_after:
            return ERROR, (f"{c.consecutive_bad} consecutive {self.frame_name}s dropped or failed; "
                           f"last: {self.last_problem}")
        recent = (self._last_problem_time is not None
                  and self.clock() - self._last_problem_time <= self.hold_s)
        if recent:
            return WARN, f"{self.frame_name} problem: {self.last_problem}"
        if self._slow:
            return WARN, (f"processing took {self.last_processing_ms:.1f} ms > "
                          f"max_processing_ms {self.max_processing_ms:.1f} ms")
        if c.frames_in == 0:
            return OK, f"waiting for {self.frame_name}s"
        return OK, "detecting"

    def _changed(self) -> bool:
        level = self._evaluate()[0]
        now = (level, self.last_problem if level != OK else "")
        changed = now != self._reported
        self._reported = now
        return changed

    def _values(self) -> Dict[str, str]:
        c = self.counters
        return {
            "frames_in": str(c.frames_in),
            "frames_out": str(c.frames_out),
            "frames_dropped": str(c.frames_dropped),
            "failures": str(c.failures),
            "consecutive_bad": str(c.consecutive_bad),
            "last_processing_ms": f"{self.last_processing_ms:.2f}",
            "max_processing_ms": f"{self.max_processing_ms:.1f}",
            "last_error": self.last_problem,
        }


def to_diagnostic_array(state: DiagnosticsState, name: str, hardware_id: str, stamp: Any,
                        extra: Optional[Dict[str, str]] = None) -> Any:
    """diagnostic_msgs/DiagnosticArray with one DiagnosticStatus for the detector."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue  # noqa: WPS433

    level, message, values = state.status()
    values.update(extra or {})
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                              values=[KeyValue(k, v) for k, v in values.items()])
    array = DiagnosticArray(status=[status])
    array.header.stamp = stamp
    return array


__all__: List[str] = ["OK", "WARN", "ERROR", "LEVEL_NAMES", "Counters", "DiagnosticsState",
                      "to_diagnostic_array"]
