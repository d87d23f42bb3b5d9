"""`admlops record` without a master: profiles, ring buffer, split, triggers, sidecars, bad input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from admlops_ros.data import record
from admlops_ros.data.record import (BagNamer, ContinuousRecorder, DetectionFrame,
                                     DiagnosticsTrigger, FlickerTrigger, LowConfidenceTrigger,
                                     RawMessage, RecordError, RingBuffer, SplitPolicy,
                                     TopicSpec, TopicWatch, TriggeredRecorder, TriggerEvent,
                                     TriggerSet)
from tests.paths import REPO_ROOT

NS = 1_000_000_000
T0 = 1_600_000_000 * NS
PERIOD = NS // 10
TOPICS = (TopicSpec("/points_raw", "lidar"), TopicSpec("/tf_static", "tf"),
          TopicSpec("/never", "camera"))


def _cloud(seq: int, stamp_ns: int, t_ns: int = None, n: int = 50) -> RawMessage:
    import genpy
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import Header

    from admlops_ros.lidar.pointcloud import array_to_pointcloud2
    header = Header(seq=seq, stamp=genpy.Time(stamp_ns // NS, stamp_ns % NS),
                    frame_id="velodyne")
    pts = np.random.default_rng(seq).normal(size=(n, 4)).astype(np.float32)
    msg = array_to_pointcloud2(pts, header, ("x", "y", "z", "intensity"))
    assert msg._type == PointCloud2._type
    return RawMessage.from_message("/points_raw", msg, stamp_ns if t_ns is None else t_ns)


def _tf_static(t_ns: int) -> RawMessage:
    from std_msgs.msg import String  # any type: what matters is the latched flag
    return RawMessage.from_message("/tf_static", String(data="static"), t_ns, latching=True)


def _read(bag_path: Path):
    import rosbag
    with rosbag.Bag(str(bag_path)) as bag:
        return [(topic, msg, t.to_nsec()) for topic, msg, t in bag.read_messages()]


# ------------------------------------------------------------------------------------ profiles
def test_shipped_profiles_agree_with_the_nodes_configs():
    from admlops_ros.evaluation import bags, camera_bags
    profiles = record.load_profiles()
    assert set(profiles) >= {"lidar", "camera", "perception", "ground_truth"}
    lidar = yaml.safe_load((REPO_ROOT / "config" / "lidar_detection.yaml").read_text())
    camera = yaml.safe_load((REPO_ROOT / "config" / "camera_detection.yaml").read_text())
    perception = {s.topic: s.sensor for s in profiles["perception"].topics}
    assert perception[lidar["input_topic"]] == "lidar"
    assert perception[lidar["objects_topic"]] == "detections"
    assert perception[lidar["stats_topic"]] == "stats"
    assert perception[camera["input_topic"]] == "camera"
    assert perception[camera["detections_topic"]] == "detections"
    assert perception[camera["stats_topic"]] == "stats"
    assert perception[camera_bags.CAMERA_INFO_TOPIC] == "camera_info"
    assert perception["/diagnostics"] == "diagnostics"
    gt = {s.topic for s in profiles["ground_truth"].topics}
    assert {bags.POINTS_TOPIC, bags.GT_TOPIC, camera_bags.IMAGE_GT_TOPIC} <= gt
    assert {s.topic for s in profiles["lidar"].topics} == {"/points_raw", "/tf", "/tf_static"}


@pytest.mark.parametrize("text, expect", [
    ("profiles: {}", "non-empty mapping 'profiles"),
    ("other: 1\nprofiles: {a: {topics: [/x]}}", "unknown top-level key(s) other"),
    ("profiles: {a: {topics: []}}", "profiles.a.topics: must be a non-empty list"),
    ("profiles: {a: {topics: [points_raw]}}", "profiles.a.topics[0]: 'points_raw' is not a "
                                              "topic name"),
    ("profiles: {a: {topics: [{topic: /x, sensor: radar}]}}",
     "profiles.a.topics[0].sensor: 'radar' is not one of lidar"),
    ("profiles: {a: {topics: [{topc: /x}]}}", "profiles.a.topics[0]: unknown key(s) topc"),
    ("profiles: {a: {topics: [/x, /x]}}", "profiles.a.topics: /x listed twice"),
    ("profiles: {a: {topics: [/x], extends: b}}", "profiles.a: unknown key(s) extends"),
    ("profiles: {a: [/x]}", "profiles.a: must be a mapping"),
    ("profiles: [", "not valid YAML"),
])
def test_profile_file_errors_name_the_profile_and_field(tmp_path, text, expect):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(RecordError) as err:
        record.load_profiles(path)
    assert expect in str(err.value) and str(path) in str(err.value)


def test_select_topics_replace_add_and_sensor_lookup():
    profiles = record.load_profiles()
    got = record.select_topics(profiles, "lidar", add=["/camera/image_raw", "/x:other",
                                                       "/tf"])
    assert [s.topic for s in got] == ["/points_raw", "/tf", "/tf_static", "/camera/image_raw",
                                      "/x"]
    assert got[3].sensor == "camera"  # the sensor another profile gives it
    got = record.select_topics(profiles, "lidar", replace=["/points_raw", "/mine:ground_truth"])
    assert got == (TopicSpec("/points_raw", "lidar"), TopicSpec("/mine", "ground_truth"))
    with pytest.raises(RecordError, match="unknown profile 'nope'; the profiles are camera, "
                                          "ground_truth, lidar, perception"):
        record.select_topics(profiles, "nope")
    with pytest.raises(RecordError, match="--add-topic /x:radar: sensor 'radar'"):
        record.select_topics(profiles, "lidar", add=["/x:radar"])


# -------------------------------------------------------------------------------- raw messages
def test_header_stamp_read_from_the_bytes():
    from std_msgs.msg import String
    msg = _cloud(3, T0 + 123)
    assert msg.stamp_ns == T0 + 123
    assert RawMessage.from_message("/s", String(data="x" * 20), T0).stamp_ns is None
    assert record.first_field_is_header("# c\nuint8 OK=0\nuint8 WARN = 1\nHeader header\nint8 a")
    assert not record.first_field_is_header("int32 a\nHeader header")
    decoded = record.decode(msg)  # from the message's own definition (genpy), no import
    assert decoded.header.seq == 3 and decoded.width == 50


def test_ring_buffer_bounded_by_time_and_bytes():
    buf = RingBuffer(keep_s=1.0, max_bytes=10 ** 9)
    for i in range(30):
        buf.push(_cloud(i, T0 + i * PERIOD))
    assert len(buf) == 11 and buf.oldest_ns == T0 + 19 * PERIOD  # [2.9 - 1.0, 2.9]
    assert [m.t_ns for m in buf.since(T0 + 25 * PERIOD)] == [T0 + i * PERIOD
                                                              for i in range(25, 30)]
    size = _cloud(0, T0).size
    small = RingBuffer(keep_s=10.0, max_bytes=4 * size)
    for i in range(10):
        small.push(_cloud(i, T0 + i * PERIOD))
    assert len(small) == 4 and small.nbytes <= 4 * size
    assert small.evicted_for_bytes == 6 and small.last_byte_eviction_ns == T0 + 5 * PERIOD


def test_split_policy():
    stats = record.BagStats()
    first = _cloud(0, T0)
    policy = SplitPolicy(duration_s=1.0)
    assert policy.reason(stats, first) is None  # an empty bag takes any message
    stats.add(first, first.t_ns)
    assert policy.reason(stats, _cloud(1, T0 + 9 * PERIOD)) is None
    assert policy.reason(stats, _cloud(1, T0 + 10 * PERIOD)) == "duration"
    by_size = SplitPolicy(size_mb=2.5 * (first.size + record.RECORD_OVERHEAD_BYTES) / 1e6)
    stats.add(_cloud(1, T0 + PERIOD), T0 + PERIOD)
    assert by_size.reason(stats, _cloud(2, T0 + 2 * PERIOD)) == "size"
    with pytest.raises(RecordError, match="--split-size must be a positive number"):
        SplitPolicy(size_mb=0)


# ------------------------------------------------------------------------------ continuous bags
def _meta():
    return {"profile": "test", "project": record.project_info(), "engine": None}


def test_continuous_split_bags_sidecars_and_latched_topics(tmp_path):
    namer = BagNamer(tmp_path, "drive")
    rec = ContinuousRecorder(namer, TOPICS, SplitPolicy(duration_s=1.0), _meta())
    static = _tf_static(T0)  # latched: received once, as a recorder starts
    static.wall_ns = T0 + 3 * NS
    rec.handle(static)
    sent = [_cloud(i, T0 + i * PERIOD) for i in range(25)]
    for msg in sent:
        msg.wall_ns = msg.t_ns + 3 * NS  # the wall clock of receipt, 3 s ahead of ROS time
        rec.handle(msg)
    written = rec.close()
    assert [p.name for p in written] == ["drive_0000.bag", "drive_0001.bag", "drive_0002.bag"]
    assert not list(tmp_path.glob("*.active"))
    clouds = []
    for i, path in enumerate(written):
        msgs = _read(path)
        side = record.read_sidecar(path)
        assert record.sidecar_path(path) == tmp_path / f"drive_000{i}.yaml"
        per_bag = [m for t, m, _ in msgs if t == "/points_raw"]
        assert len(per_bag) == (10, 10, 5)[i]
        clouds += per_bag
        assert sum(1 for t, _, _ in msgs if t == "/tf_static") == 1  # again in every split
        counts = {e["topic"]: e["messages"] for e in side["topics"]}
        assert counts == {"/points_raw": len(per_bag), "/tf_static": 1, "/never": 0}
        assert side["messages"] == len(msgs)
        assert side["missing_topics"] == ["/never"]
        assert "no message on /never in this bag" in side["problems"]
        assert side["sensors"] == ["lidar", "tf"]
        types = {e["topic"]: e["type"] for e in side["topics"]}
        assert types["/points_raw"] == "sensor_msgs/PointCloud2" and types["/never"] is None
        assert side["mode"] == "continuous" and side["index"] == i and side["profile"] == "test"
        assert side["project"]["version"] and side["bytes"] == path.stat().st_size
        assert side["split"]["reason"] == ("duration" if i < 2 else "stopped")
        assert side["header_stamps"]["first_ns"] == per_bag[0].header.stamp.to_nsec()
        assert side["start"]["ros_ns"] <= side["end"]["ros_ns"]
        assert side["start"]["wall"].endswith("Z")
        assert side["start"]["wall_s"] == pytest.approx(side["start"]["ros_s"] + 3, abs=1e-5)
        assert side["end"]["wall_s"] == pytest.approx(side["end"]["ros_s"] + 3, abs=1e-5)
        # the latched message is retimed to the bag's start, so playback has no gap
        assert min(t for _, _, t in msgs) == per_bag[0].header.stamp.to_nsec()
    assert [m.header.seq for m in clouds] == list(range(25))
    assert [m.header.stamp.to_nsec() for m in clouds] == [m.t_ns for m in sent]
    assert all(m.header.frame_id == "velodyne" and m.data == record.decode(s).data
               for m, s in zip(clouds, sent))
    # a second run in the same directory continues the numbering
    assert BagNamer(tmp_path, "drive").next()[1].name == "drive_0003.bag"


def test_continuous_split_by_size(tmp_path):
    one = _cloud(0, T0).size + record.RECORD_OVERHEAD_BYTES
    rec = ContinuousRecorder(BagNamer(tmp_path, "s"), TOPICS[:1],
                             SplitPolicy(size_mb=4.5 * one / 1e6), _meta())
    for i in range(10):
        rec.handle(_cloud(i, T0 + i * PERIOD))
    written = rec.close()
    assert [record.read_sidecar(p)["messages"] for p in written] == [4, 4, 2]
    assert [record.read_sidecar(p)["split"]["reason"] for p in written] == \
        ["size", "size", "stopped"]


# --------------------------------------------------------------------------- triggered capture
def _stamps(path: Path):
    return [m.header.stamp.to_nsec() for t, m, _ in _read(path) if t == "/points_raw"]


def test_triggered_capture_writes_the_window_around_the_trigger(tmp_path):
    rec = TriggeredRecorder(BagNamer(tmp_path, "cap"), TOPICS[:2], pre_s=1.0, post_s=0.5,
                            max_bytes=10 ** 9, meta=_meta())
    rec.handle(_tf_static(T0 - 60 * NS))
    fired = {}
    for i in range(60):
        t = T0 + i * PERIOD
        rec.handle(_cloud(i, t))
        rec.tick(t)
        if i == 30:
            fired["a"] = rec.fire(TriggerEvent("service", "asked", t))
        if i == 32:  # while the capture is written: joins it, no second bag
            assert rec.fire(TriggerEvent("flicker", "blip", t)) == fired["a"]
    written = rec.close()
    assert written == [fired["a"]] and fired["a"].name == "cap_0000.bag"
    t = T0 + 30 * PERIOD
    assert _stamps(fired["a"]) == [T0 + i * PERIOD for i in range(20, 36)]  # [t-1, t+0.5]
    side = record.read_sidecar(fired["a"])
    trig = side["trigger"]
    assert trig["kind"] == "service" and trig["reason"] == "asked" and trig["stamp_ns"] == t
    assert trig["window_ns"] == [t - NS, t + NS // 2] and trig["complete"] is True
    assert [m["kind"] for m in trig["merged"]] == ["flicker"]
    assert side["mode"] == "trigger"
    assert {e["topic"]: e["messages"] for e in side["topics"]} == \
        {"/points_raw": 16, "/tf_static": 1}


def test_capture_cut_short_by_the_stop_is_marked_incomplete(tmp_path):
    rec = TriggeredRecorder(BagNamer(tmp_path, "cap"), TOPICS[:1], pre_s=0.5, post_s=5.0,
                            max_bytes=10 ** 9, meta=_meta())
    for i in range(10):
        rec.handle(_cloud(i, T0 + i * PERIOD))
    path = rec.fire(TriggerEvent("diagnostics", "WARN", T0 + 9 * PERIOD))
    rec.handle(_cloud(10, T0 + 10 * PERIOD))
    assert rec.close() == [path]
    side = record.read_sidecar(path)
    assert side["trigger"]["complete"] is False
    assert "recording stopped before the post window ended" in side["problems"]
    assert _stamps(path) == [T0 + i * PERIOD for i in range(4, 11)]


def test_capture_notes_a_pre_window_cut_by_the_byte_bound(tmp_path):
    size = _cloud(0, T0).size
    rec = TriggeredRecorder(BagNamer(tmp_path, "cap"), TOPICS[:1], pre_s=2.0, post_s=0.0,
                            max_bytes=5 * size, meta=_meta())
    for i in range(30):
        rec.handle(_cloud(i, T0 + i * PERIOD))
    path = rec.fire(TriggerEvent("service", "asked", T0 + 29 * PERIOD))
    rec.tick(T0 + 31 * PERIOD)
    side = record.read_sidecar(path)
    assert side["messages"] == 5
    assert any("the pre window holds 0.40 s, not 2 s" in p for p in side["problems"])


# ------------------------------------------------------------------------------------ triggers
def _frame(i, centres, scores=None):
    centres = np.asarray(centres, np.float64).reshape(-1, 3)
    scores = np.full(len(centres), 0.9) if scores is None else np.asarray(scores, np.float64)
    return DetectionFrame(T0 + i * PERIOD, centres, scores, ("Car",) * len(centres))


def test_low_confidence_band_above_the_threshold():
    trig = LowConfidenceTrigger(threshold=0.3, band=0.1)
    assert trig(_frame(0, [[1, 0, 0], [5, 0, 0]], [0.9, 0.41])) is None
    event = trig(_frame(1, [[1, 0, 0], [5, 0, 0]], [0.9, 0.35]))
    assert event.kind == "low_confidence" and event.stamp_ns == T0 + PERIOD
    assert "[0.30, 0.40)" in event.reason and "Car 0.35" in event.reason
    assert LowConfidenceTrigger(0.3, 0.1, min_objects=2)(
        _frame(1, [[1, 0, 0]], [0.31])) is None
    with pytest.raises(RecordError):
        LowConfidenceTrigger(1.5)


def test_flicker_blip_dropout_and_gap():
    car, other = [10, 0, 0], [30, 5, 0]
    trig = FlickerTrigger(gate_m=2.0)
    assert trig(_frame(0, [car])) is None
    assert trig(_frame(1, [[10.5, 0, 0], other])) is None     # car moved 0.5 m: matched
    event = trig(_frame(2, [[11, 0, 0]]))                     # `other` seen in frame 1 only
    assert event.kind == "flicker" and event.stamp_ns == T0 + PERIOD
    assert "1 object(s) seen in one frame only: Car at (30.0, 5.0)" in event.reason
    assert trig(_frame(3, [[11.5, 0, 0]])) is None
    assert trig(_frame(4, [])) is None                        # gone in 4 ...
    event = trig(_frame(5, [[12.5, 0, 0]]))                   # ... back in 5: a dropout
    assert "missing for one frame" in event.reason and event.stamp_ns == T0 + 4 * PERIOD
    # frames 2 s apart restart the history: no flicker judged across the gap
    trig = FlickerTrigger(gate_m=2.0, max_gap_s=1.0)
    trig(_frame(0, [car]))
    trig(_frame(20, [other]))
    assert trig(_frame(21, [car])) is None


def test_diagnostics_trigger_names_and_levels():
    trig = DiagnosticsTrigger(["lidar_detection", "camera_detection"], record.DIAG_WARN)
    assert trig(T0, [("lidar_detection: detector", 0, "ok"), ("other: x", 2, "bad")]) is None
    event = trig(T0, [("lidar_detection: detector", 1, "slow: 250 ms")])
    assert event.reason == "lidar_detection: detector WARN: slow: 250 ms"
    assert DiagnosticsTrigger(["lidar"], 2)(T0, [("lidar_detection", 1, "x")]) is None


def test_trigger_set_cooldown_one_event_one_bag():
    triggers = TriggerSet(cooldown_s=3.0, low_confidence=LowConfidenceTrigger(0.3))
    fired = [e for i in range(60)
             for e in triggers.on_detections(_frame(i, [[1, 0, 0]], [0.32]))]
    assert [e.stamp_ns for e in fired] == [T0, T0 + 30 * PERIOD]
    assert triggers.suppressed == {"low_confidence": 58}
    assert triggers.kinds == ["service", "low_confidence"]
    assert triggers.on_diagnostics(T0, [("lidar_detection", 2, "x")]) == []
    assert triggers.describe()["low_confidence"]["score_threshold"] == 0.3


def test_detection_frame_and_statuses_from_messages():
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    from admlops_ros.evaluation.bags import messages
    try:
        msgs = messages()
    except Exception as exc:  # noqa: B902 - the catkin messages are not built
        pytest.skip(f"admlops_ros messages not built: {exc}")
    arr = msgs.DetectedObjectArray()
    arr.header.stamp.secs, arr.header.stamp.nsecs = 1_600_000_000, 5
    obj = msgs.DetectedObject(label_name="Pedestrian", score=0.4)
    obj.pose.position.x, obj.pose.position.y = 3.0, -1.0
    arr.objects = [obj]
    raw = RawMessage.from_message("/objs", arr, T0)
    frame = record.detection_frame(record.decode(raw))
    assert frame.stamp_ns == T0 + 5 and frame.names == ("Pedestrian",)
    assert frame.centres.tolist() == [[3.0, -1.0, 0.0]] and frame.scores[0] == pytest.approx(0.4)
    diag = DiagnosticArray(status=[DiagnosticStatus(level=1, name="lidar_detection: d",
                                                    message="m")])
    assert record.diagnostic_statuses(record.decode(RawMessage.from_message("/d", diag, T0))) \
        == [("lidar_detection: d", 1, "m")]


def test_topic_watch_warns_once_per_silent_topic():
    watch = TopicWatch(["/a", "/b"], T0, warn_after_s=5.0)
    watch.seen("/a")
    assert watch.due(T0 + 4 * NS) == []
    assert watch.due(T0 + 5 * NS) == ["/b"]
    assert watch.due(T0 + 9 * NS) == []


# ------------------------------------------------------------------------------- engine, input
def test_engine_info_of_the_shipped_bundles():
    from admlops_ros.bundle.files import sha256_file
    lidar = record.engine_info(REPO_ROOT / "engines" / "pointpillars_sim_3class")
    spec = REPO_ROOT / "engines" / "pointpillars_sim_3class" / "spec.yaml"
    assert lidar["name"] == yaml.safe_load(spec.read_text())["name"]
    assert lidar["modality"] == "lidar" and lidar["spec_sha256"] == sha256_file(spec)
    assert "end2end.onnx" in lidar["files"]
    camera = record.engine_info(REPO_ROOT / "engines" / "camera_sim_3class")
    assert camera["modality"] == "camera" and len(camera["spec_sha256"]) == 64


def test_engine_info_refuses_a_changed_engine_file(tmp_path):
    from admlops_ros.bundle.files import write_bundle
    from tests.fixtures.tiny_model import make_tiny_onnx, tiny_spec
    write_bundle(tmp_path / "b", tiny_spec(), make_tiny_onnx(tmp_path / "m.onnx"))
    make_tiny_onnx(tmp_path / "b" / "end2end.onnx", seed=7)
    with pytest.raises(RecordError, match="--engine .*sha256 mismatch for end2end.onnx"):
        record.engine_info(tmp_path / "b")
    with pytest.raises(RecordError, match="--engine .*no spec.yaml"):
        record.engine_info(tmp_path / "nothing")


@pytest.mark.parametrize("args, expect", [
    (["--profile", "nope"], "unknown profile 'nope'"),
    (["--profile", "lidar", "--topics", "points"], "--topics: 'points' is not a topic name"),
    (["--trigger", "--triggers", "service,magic"], "--triggers 'service,magic': magic"),
    (["--trigger", "--split-duration", "5"], "a --trigger capture is one bag per trigger"),
    (["--engine", "/nonexistent/bundle"], "--engine /nonexistent/bundle"),
])
def test_cli_bad_input_is_one_line(tmp_path, capsys, args, expect):
    from admlops_ros.cli import main
    code = main(["record", "-o", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err.strip()
    assert code in (1, 2) and len(err.splitlines()) == 1, err
    assert err.startswith("admlops record: error: ") and expect in err, err


def test_cli_unwritable_output_dir(tmp_path, capsys):
    from admlops_ros.cli import main
    (tmp_path / "file").write_text("")
    assert main(["record", "--profile", "lidar", "-o", str(tmp_path / "file" / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"admlops record: error: output directory {tmp_path / 'file' / 'out'} is "
                   f"not writable (Not a directory); pass -o a directory you can write")


def test_cli_lists_profiles(capsys):
    from admlops_ros.cli import main
    assert main(["record", "--list-profiles"]) == 0
    out = capsys.readouterr().out
    assert "perception: " in out and "  /detection/lidar_detector/objects (detections)" in out
