"""The node's master watchdog core: verdicts from master answers, the thread, the master calls."""
from __future__ import annotations

import shutil
import socket
import threading
import xmlrpc.client
from typing import List

import pytest

from admlops_ros.ros.master_watch import (EXIT_MASTER_LOST, MASTER_LOST, MASTER_OK, MASTER_WAITING,
                                          MasterAnswer, MasterClient, MasterVerdict, MasterWatch,
                                          MasterWatchdog)
from admlops_ros.ros.params import ParamError, validate_params
from admlops_ros.ros.processes import RosCore, free_port, topic_has_subscriber, wait_for

NAME, URI, MASTER = "/lidar_detection", "http://127.0.0.1:40000/", "http://127.0.0.1:11999"
DOWN = MasterAnswer(False, error="ConnectionRefusedError: [Errno 111] Connection refused")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def watch(clock=None) -> MasterWatch:
    return MasterWatch(NAME, URI, MASTER, warn_every_s=10.0, clock=clock or FakeClock())


def test_known_node_is_ok_and_quiet():
    w = watch()
    assert w.observe(MasterAnswer(True, uri=URI)) == MasterVerdict(MASTER_OK, "")
    assert w.observe(MasterAnswer(True, uri=URI.rstrip("/"))).state == MASTER_OK


def test_unreachable_master_is_waited_for_with_a_throttled_warning():
    clock = FakeClock()
    w = watch(clock)
    first = w.observe(DOWN)
    assert first.state == MASTER_WAITING
    assert MASTER in first.message and "ConnectionRefusedError" in first.message
    assert "waiting" in first.message and f"code {EXIT_MASTER_LOST}" in first.message
    clock.now += 9.0
    assert w.observe(DOWN) == MasterVerdict(MASTER_WAITING, "")
    clock.now += 1.0
    again = w.observe(DOWN)
    assert again.state == MASTER_WAITING and "for 10 s" in again.message
    clock.now += 2.0
    back = w.observe(MasterAnswer(True, uri=URI))
    assert back.state == MASTER_OK and "answers again after 12 s" in back.message
    assert w.observe(MasterAnswer(True, uri=URI)) == MasterVerdict(MASTER_OK, "")
    assert w.observe(DOWN).message  # a new outage warns at once


def test_master_that_does_not_know_the_node_restarted():
    verdict = watch().observe(MasterAnswer(True, uri=""))
    assert verdict.state == MASTER_LOST
    text = verdict.message
    assert f"ROS master {MASTER} restarted" in text and f"does not know {NAME}" in text
    assert f"exiting with code {EXIT_MASTER_LOST}" in text and "respawn:=true" in text
    assert "\n" not in text


def test_another_process_under_the_name_is_lost_too():
    verdict = watch().observe(MasterAnswer(True, uri="http://127.0.0.1:40001/"))
    assert verdict.state == MASTER_LOST
    assert "another process registered as /lidar_detection (http://127.0.0.1:40001/" in verdict.message


def run_watchdog(answers: List[MasterAnswer]) -> List[MasterVerdict]:
    """Run a real MasterWatchdog thread over scripted answers until it ends by itself."""
    verdicts: List[MasterVerdict] = []
    pending = list(answers)
    dog = MasterWatchdog(watch(), lambda: pending.pop(0) if pending else MasterAnswer(True, uri=URI),
                         0.001, verdicts.append).start()
    dog.thread.join(timeout=10.0)
    assert not dog.thread.is_alive(), "watchdog did not end after MASTER_LOST"
    return verdicts


def test_watchdog_waits_through_an_outage_and_ends_when_lost():
    verdicts = run_watchdog([MasterAnswer(True, uri=URI), DOWN, DOWN, MasterAnswer(True, uri="")])
    assert [v.state for v in verdicts] == [MASTER_OK, MASTER_WAITING, MASTER_WAITING, MASTER_LOST]


def test_watchdog_stop_ends_the_thread_without_verdicts():
    calls = threading.Event()
    verdicts: List[MasterVerdict] = []

    def lookup() -> MasterAnswer:
        calls.set()
        return MasterAnswer(True, uri="")

    dog = MasterWatchdog(watch(), lookup, 3600.0, verdicts.append).start()
    dog.stop()
    dog.thread.join(timeout=10.0)
    assert not dog.thread.is_alive() and not calls.is_set() and verdicts == []


def test_watchdog_survives_a_failing_callback():
    seen: List[str] = []

    def on_verdict(verdict: MasterVerdict) -> None:
        seen.append(verdict.state)
        if verdict.state == MASTER_WAITING:
            raise RuntimeError("rosout gone")

    answers = [DOWN, MasterAnswer(True, uri="")]
    dog = MasterWatchdog(watch(), lambda: answers.pop(0), 0.001, on_verdict).start()
    dog.thread.join(timeout=10.0)
    assert seen == [MASTER_WAITING, MASTER_LOST] and not dog.thread.is_alive()


def test_master_check_period_parameter():
    assert validate_params({}, check_engine=False).master_check_period_s == 2.0
    assert validate_params({"master_check_period_s": 0}, check_engine=False).master_check_period_s == 0
    with pytest.raises(ParamError, match=r"~master_check_period_s = -1: .*number in \[0, 3600\]"):
        validate_params({"master_check_period_s": -1}, check_engine=False)


def test_client_without_master_reports_no_answer():
    answer = MasterClient(f"http://127.0.0.1:{free_port()}", NAME, timeout=1.0).lookup_node(NAME)
    assert not answer.reachable and "ConnectionRefusedError" in answer.error


def test_client_does_not_hang_on_a_master_that_never_answers():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)  # connections complete in the kernel; nobody ever reads or answers
        uri = f"http://127.0.0.1:{sock.getsockname()[1]}"
        answer = MasterClient(uri, NAME, timeout=0.2).lookup_node(NAME)
    assert not answer.reachable and "timed out" in answer.error


@pytest.mark.ros
@pytest.mark.skipif(shutil.which("roscore") is None, reason="needs roscore (ros-core)")
def test_client_against_a_real_master(tmp_path):
    with RosCore(tmp_path / "ros_home") as core:
        client = MasterClient(core.uri, "/admlops_test")
        master = xmlrpc.client.ServerProxy(core.uri)
        fake_api = "http://127.0.0.1:9/"  # registering needs no live node (no subscribers)
        assert master.registerPublisher("/fake_node", "/fake_topic", "std_msgs/String",
                                        fake_api)[0] == 1
        assert client.lookup_node("/fake_node") == MasterAnswer(True, uri=fake_api)
        assert client.lookup_node("/nobody") == MasterAnswer(True, uri="")
        master.setParam("/admlops_test", "/n/kept", 5)
        restored = client.restore_missing({"/n/kept": 1, "/n/new": [1.5, "x"], "/use_sim_time": True})
        assert restored == ["/n/new", "/use_sim_time"]
        assert master.getParam("/admlops_test", "/n/kept")[2] == 5
        assert master.getParam("/admlops_test", "/n/new")[2] == [1.5, "x"]
        # a roscore still starting rosout ignores SIGTERM: let it finish before closing it
        wait_for(lambda: topic_has_subscriber(core.uri, "/rosout", "/rosout"), 20.0, "rosout up")
