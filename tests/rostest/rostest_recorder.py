"""Recorder of the rostest node scripts: messages per topic, collected by subscriber callbacks."""
from __future__ import annotations

import threading
import time
from typing import Dict, List

import rospy


class Recorder:
    """Collects messages per topic (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.msgs: Dict[str, List] = {}

    def callback(self, topic: str):
        def on_msg(msg) -> None:
            with self.lock:
                self.msgs.setdefault(topic, []).append(msg)
        return on_msg

    def get(self, topic: str) -> List:
        with self.lock:
            return list(self.msgs.get(topic, []))

    def wait(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not rospy.is_shutdown():
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()
