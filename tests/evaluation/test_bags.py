"""Bags cut short (no index, unterminated / truncated last chunk), temp files, topic types."""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pytest

from admlops_ros.evaluation import bags
from admlops_ros.evaluation.rosbag_io import BagError, write_indexed_copy
from admlops_ros.evaluation.frames import FrameGT
from tests.paths import REPO_ROOT

ENGINE = REPO_ROOT / "engines" / "pointpillars_sim_3class"
BOXES = np.array([[10.0, 2.0, -1.7, 3.9, 1.6, 1.56, 0.3],
                  [15.0, 8.0, -1.6, 0.8, 0.6, 1.73, 0.0]])
NAMES = ["Car", "Pedestrian"]


pytestmark = pytest.mark.usefixtures("bag_messages")


def _file_header(data: bytes) -> Tuple[Dict[str, bytes], int, int]:
    """Fields of the bag's file header record, where its fields start and where it ends."""
    assert data[:13] == b"#ROSBAG V2.0\n"
    (header_len,) = struct.unpack_from("<I", data, 13)
    fields, pos = {}, 17
    while pos < 17 + header_len:
        (size,) = struct.unpack_from("<I", data, pos)
        name, _, value = data[pos + 4:pos + 4 + size].partition(b"=")
        fields[name.decode()] = value
        pos += 4 + size
    (data_len,) = struct.unpack_from("<I", data, pos)
    return fields, 17, pos + 4 + data_len


def cut_index(src: Path, dst: Path, clear_index_pos: bool = False) -> int:
    """Copy ``src`` without the index rosbag writes at the end (at the header's index_pos).

    ``clear_index_pos`` also sets index_pos to 0 in the header, as it is on disk while a
    recording runs. Returns the size of the copy.
    """
    data = bytearray(src.read_bytes())
    fields, _, _ = _file_header(bytes(data))
    (index_pos,) = struct.unpack("<Q", fields["index_pos"])
    assert 0 < index_pos < len(data)
    data = data[:index_pos]
    if clear_index_pos:
        at = bytes(data).index(b"index_pos=") + len(b"index_pos=")
        data[at:at + 8] = struct.pack("<Q", 0)
    dst.write_bytes(bytes(data))
    return len(data)


def write_small_bag(path: Path, n: int, snapshot: Optional[Path] = None) -> None:
    """``n`` frames of 500 points (one chunk). ``snapshot``: a copy of the file as it is on
    disk before the writer closes it (index_pos 0, chunk still open), i.e. a crashed recording.
    """
    rng = np.random.default_rng(1)
    with bags.BagWriter(path) as w:
        for _ in range(n):
            w.write(rng.random((500, 4), dtype=np.float32) * 20,
                    FrameGT(BOXES, NAMES, difficulty=[0, 1]))
        if snapshot is not None:
            w._bag._file.flush()  # what a killed recorder leaves on disk
            shutil.copyfile(path, snapshot)


def read_all(path: Path, **kw) -> Tuple[bags.BagSummary, List[bags.BagFrame]]:
    summary, frames = bags.read_bag(path, **kw)
    return summary, list(frames)


def assert_same_frames(got: List[bags.BagFrame], want: List[bags.BagFrame]) -> None:
    assert [f.stamp_ns for f in got] == [f.stamp_ns for f in want]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.points, w.points)
        assert (g.gt is None) == (w.gt is None)
        if w.gt is not None:
            np.testing.assert_array_equal(g.gt.boxes, w.gt.boxes)
            assert list(g.gt.names) == list(w.gt.names)


def open_fds_on(path: Path) -> List[str]:
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                fds.append(fd)
        except OSError:
            pass
    return fds


# ---------------------------------------------------------------------------------------------
# Recovery

@pytest.mark.parametrize("clear_index_pos", [False, True], ids=["index-cut", "index-pos-0"])
def test_bag_without_index_reads_every_frame(tmp_path, clear_index_pos):
    intact = tmp_path / "sim.bag"
    bags.bag_from_sim(intact, 3, progress=False)  # ~2 MB clouds: a chunk each
    cut = tmp_path / "cut.bag"
    size = cut_index(intact, cut, clear_index_pos)
    import rosbag
    with pytest.raises(rosbag.ROSBagUnindexedException):  # it really is unindexed for rosbag
        rosbag.Bag(str(cut)).close()
    want_summary, want = read_all(intact)
    summary, got = read_all(cut)
    assert summary.recovered and not want_summary.recovered
    assert summary.num_clouds == summary.num_gt == 3 and len(got) == 3
    assert_same_frames(got, want)
    assert summary.duration_s == pytest.approx(want_summary.duration_s)
    assert "not indexed" in summary.problems[0] and "read 6 messages" in summary.problems[0]
    assert not any("dropped" in p for p in summary.problems)
    assert cut.stat().st_size == size  # read in place, never modified


def test_crashed_recording_with_unterminated_chunk_reads_every_frame(tmp_path):
    # a short recording is one chunk, still open (size placeholder 0) when the recorder dies:
    # rosbag reindex keeps nothing of it
    intact, crashed = tmp_path / "a.bag", tmp_path / "crashed.bag"
    write_small_bag(intact, 6, snapshot=crashed)
    fields, _, _ = _file_header(crashed.read_bytes())
    assert struct.unpack("<Q", fields["index_pos"])[0] == 0
    _, want = read_all(intact)
    summary, got = read_all(crashed)
    assert summary.recovered and summary.num_clouds == 6 and summary.num_gt == 6
    assert_same_frames(got, want)
    assert not summary.clouds_without_gt


def test_bag_cut_mid_record_keeps_the_frames_before_and_warns(tmp_path, caplog):
    intact = tmp_path / "a.bag"
    write_small_bag(intact, 5)
    import rosbag
    with rosbag.Bag(str(intact)) as b:
        raw = {(topic, t.to_nsec()): msg[1] for topic, msg, t in b.read_messages(raw=True)}
    stamps = sorted({t for _, t in raw})
    data = intact.read_bytes()
    last_cloud = data.index(raw[(bags.POINTS_TOPIC, stamps[-1])])
    prev_gt = raw[(bags.GT_TOPIC, stamps[-2])]
    end_of_complete = data.index(prev_gt) + len(prev_gt)  # the record before the cut one
    cut_at = last_cloud + len(raw[(bags.POINTS_TOPIC, stamps[-1])]) // 2
    cut = tmp_path / "cut.bag"
    cut.write_bytes(data[:cut_at])
    _, want = read_all(intact)
    with caplog.at_level(logging.WARNING, logger="admlops_ros.evaluation.bags"):
        summary, got = read_all(cut)
    assert summary.num_clouds == 4 and summary.num_gt == 4
    assert_same_frames(got, want[:4])
    dropped = cut_at - end_of_complete
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"dropped the last {dropped} bytes from offset {end_of_complete}" in m
               and "cut.bag" in m for m in warned), warned
    assert any(f"dropped the last {dropped} bytes" in p for p in summary.problems)


def test_bag_cut_inside_the_index_loses_no_message(tmp_path):
    intact = tmp_path / "a.bag"
    write_small_bag(intact, 4)
    data = intact.read_bytes()
    fields, _, _ = _file_header(data)
    (index_pos,) = struct.unpack("<Q", fields["index_pos"])
    cut = tmp_path / "cut.bag"
    cut.write_bytes(data[:index_pos + 20])  # in the first connection record of the index
    summary, got = read_all(cut)
    assert len(got) == 4 and summary.num_gt == 4
    assert any("dropped the last 20 bytes" in p and "no message lost" in p
               for p in summary.problems)


def test_unrecoverable_bags_fail_with_one_line(tmp_path, capsys):
    from admlops_ros.cli import main
    intact = tmp_path / "a.bag"
    write_small_bag(intact, 2)
    _, _, header_end = _file_header(intact.read_bytes())
    empty = tmp_path / "empty.bag"
    empty.write_bytes(intact.read_bytes()[:header_end + 10])
    with pytest.raises(BagError, match="empty.bag is not indexed and holds no complete"):
        bags.read_bag(empty)
    assert main(["eval", str(empty), "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("admlops eval: error: bag ")
    assert "empty.bag" in err[0]


def test_eval_scores_every_frame_of_a_bag_without_index(tmp_path):
    if not (ENGINE / "spec.yaml").is_file():
        pytest.skip(f"no engine bundle at {ENGINE}")
    pytest.importorskip("onnxruntime")
    from admlops_ros.cli import main
    intact = tmp_path / "sim.bag"
    bags.bag_from_sim(intact, 3, seed=7, progress=False)
    cut = tmp_path / "cut.bag"
    cut_index(intact, cut, clear_index_pos=True)
    out = tmp_path / "out"
    assert main(["eval", str(cut), "--engine", str(ENGINE), "--backend", "onnxruntime",
                 "--no-progress", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["frames"]["clouds"] == 3 and res["frames"]["evaluated"] == 3
    assert res["frames"]["dropped"] == 0 and res["frames"]["without_gt"] == 0
    assert res["metrics"] is not None
    assert any("not indexed" in p for p in res["problems"])


def test_indexed_copy_of_a_crashed_bag_opens_with_rosbag(tmp_path):
    import rosbag
    intact, crashed = tmp_path / "a.bag", tmp_path / "crashed.bag"
    write_small_bag(intact, 3, snapshot=crashed)
    fixed = tmp_path / "fixed.bag"
    assert write_indexed_copy(crashed, fixed) == 6
    with rosbag.Bag(str(fixed)) as b:  # indexed: rosbag play / rosbag info work on it
        assert b.get_message_count() == 6
        assert sorted(b.get_type_and_topic_info().topics) == sorted([bags.GT_TOPIC,
                                                                     bags.POINTS_TOPIC])
    assert_same_frames(read_all(fixed)[1], read_all(intact)[1])


# ---------------------------------------------------------------------------------------------
# No temporary files, the bag closed on every exit path

@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


@pytest.fixture(params=["crashed", "index-cut"])
def crashed_bag(tmp_path, request):
    """An unindexed bag of 4 frames: a crash snapshot, or an intact bag with its index cut."""
    intact, crashed = tmp_path / "a.bag", tmp_path / "crashed.bag"
    write_small_bag(intact, 4, snapshot=crashed if request.param == "crashed" else None)
    if request.param == "index-cut":
        cut_index(intact, crashed)
    return crashed


def test_no_temp_files_after_reading_a_bag_without_index(private_tmp, crashed_bag):
    _, got = read_all(crashed_bag)
    assert len(got) == 4
    assert list(private_tmp.iterdir()) == [] and not open_fds_on(crashed_bag)


def test_no_temp_files_when_the_consumer_stops_early(private_tmp, crashed_bag):
    _, frames = bags.read_bag(crashed_bag)
    assert next(frames).index == 0
    assert list(private_tmp.iterdir()) == []
    frames.close()
    assert list(private_tmp.iterdir()) == [] and not open_fds_on(crashed_bag)


def test_no_temp_files_when_the_consumer_raises(private_tmp, crashed_bag):
    _, frames = bags.read_bag(crashed_bag)
    with pytest.raises(RuntimeError):
        for frame in frames:
            if frame.index == 1:
                raise RuntimeError("consumer failed")
    assert list(private_tmp.iterdir()) == []
    frames.close()  # what a with-block / the garbage collector does with it
    assert not open_fds_on(crashed_bag)


def test_no_temp_files_on_ctrl_c_while_opening(private_tmp, crashed_bag, monkeypatch):
    def interrupted(msg, frame_id=""):
        raise KeyboardInterrupt

    monkeypatch.setattr(bags, "gt_from_msg", interrupted)
    with pytest.raises(KeyboardInterrupt):
        bags.read_bag(crashed_bag)
    assert list(private_tmp.iterdir()) == [] and not open_fds_on(crashed_bag)


def test_no_temp_files_on_ctrl_c_while_iterating(private_tmp, crashed_bag, monkeypatch):
    import admlops_ros.lidar.pointcloud as pc

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pc, "convert_pointcloud2", interrupted)
    summary, frames = bags.read_bag(crashed_bag)
    assert summary.num_clouds == 4
    with pytest.raises(KeyboardInterrupt):
        next(frames)
    assert list(private_tmp.iterdir()) == [] and not open_fds_on(crashed_bag)


# ---------------------------------------------------------------------------------------------
# Topics of the wrong type, missing topics

def test_points_topic_of_the_wrong_type_names_the_type_and_the_clouds(tmp_path, capsys):
    from admlops_ros.cli import main
    path = tmp_path / "a.bag"
    write_small_bag(path, 2)
    with pytest.raises(BagError) as err:
        bags.read_bag(path, points_topic=bags.GT_TOPIC)
    msg = str(err.value)
    assert "\n" not in msg and "a.bag" in msg
    assert re.search(rf"{bags.GT_TOPIC} is admlops_ros/DetectedObjectArray, not "
                     rf"sensor_msgs/PointCloud2", msg)
    assert f"['{bags.POINTS_TOPIC}']" in msg and "--points-topic" in msg
    assert main(["eval", str(path), "--points-topic", bags.GT_TOPIC, "--engine", str(ENGINE),
                 "--backend", "onnxruntime", "--no-progress",
                 "--out", str(tmp_path / "o")]) == 1
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and err_lines[0].startswith("admlops eval: error: bag ")
    assert "sensor_msgs/PointCloud2" in err_lines[0]


def test_gt_topic_of_the_wrong_type_names_the_type_and_the_candidates(tmp_path, capsys):
    from admlops_ros.cli import main
    path = tmp_path / "a.bag"
    write_small_bag(path, 2)
    with pytest.raises(BagError) as err:
        bags.read_bag(path, gt_topic=bags.POINTS_TOPIC)
    msg = str(err.value)
    assert "\n" not in msg and "a.bag" in msg
    assert f"{bags.POINTS_TOPIC} is sensor_msgs/PointCloud2, not " \
           f"admlops_ros/DetectedObjectArray" in msg
    assert f"['{bags.GT_TOPIC}']" in msg and "--gt-topic" in msg
    assert main(["eval", str(path), "--gt-topic", bags.POINTS_TOPIC, "--engine", str(ENGINE),
                 "--backend", "onnxruntime", "--no-progress",
                 "--out", str(tmp_path / "o")]) == 1
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and err_lines[0].startswith("admlops eval: error: bag ")
    assert "admlops_ros/DetectedObjectArray" in err_lines[0]


def test_missing_topics_name_the_topics_the_bag_has(tmp_path):
    path = tmp_path / "a.bag"
    write_small_bag(path, 2)
    with pytest.raises(BagError) as err:
        bags.read_bag(path, points_topic="/x")
    assert (f"'/x'; its topics are {bags.GT_TOPIC} (admlops_ros/DetectedObjectArray), "
            f"{bags.POINTS_TOPIC} (sensor_msgs/PointCloud2)") in str(err.value)
    summary, _ = bags.read_bag(path, gt_topic="/gt")
    assert summary.gt_topic is None
    assert "'/gt'" in summary.problems[0] and bags.POINTS_TOPIC in summary.problems[0]


def test_default_gt_topic_of_another_type_is_not_read_as_ground_truth(tmp_path):
    path = tmp_path / "a.bag"
    rng = np.random.default_rng(0)
    with bags.BagWriter(path, points_topic="/lidar", gt_topic="/other") as w:
        w.write(rng.random((100, 4), dtype=np.float32), FrameGT(BOXES, NAMES))
    import rosbag
    from std_msgs.msg import String
    with rosbag.Bag(str(path), "a") as b:
        b.write(bags.GT_TOPIC, String(data="not ground truth"))
    summary, got = read_all(path)
    assert summary.points_topic == "/lidar" and summary.gt_topic is None and len(got) == 1
    assert any(f"{bags.GT_TOPIC} is std_msgs/String" in p and "'/other'" in p
               for p in summary.problems)


# ---------------------------------------------------------------------------------------------
# Online: rosbag play needs an index on disk

@pytest.mark.ros
@pytest.mark.slow
def test_online_eval_of_a_crashed_recording_plays_an_indexed_copy(tmp_path):
    import subprocess
    import sys
    if not (ENGINE / "spec.yaml").is_file():
        pytest.skip(f"no engine bundle at {ENGINE}")
    if shutil.which("roscore") is None or shutil.which("roslaunch") is None:
        pytest.skip("roscore / roslaunch not installed")
    if "ROS_PACKAGE_PATH" not in os.environ:
        pytest.skip("catkin workspace not sourced (run via scripts/run_tests.sh)")
    intact = tmp_path / "sim.bag"
    bags.bag_from_sim(intact, 4, seed=5, progress=False)
    cut = tmp_path / "cut.bag"
    cut_index(intact, cut, clear_index_pos=True)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "admlops"), "eval",
                           str(cut), "--engine", str(ENGINE), "--online", "--backend",
                           "onnxruntime", "--rate", "0.5", "--out", str(out), "--no-progress"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res["mode"] == "online" and res["frames"]["clouds"] == 4
    assert res["frames"]["dropped"] <= 1 and res["latency_ms"]["count"] >= 3
    assert "rosbag play exited" not in " ".join(res["problems"])
    assert not list(out.rglob("*.indexed.bag"))  # the copy is gone


@pytest.mark.parametrize("compression", ["bz2", "lz4"])
def test_compressed_bag_without_index_reads_its_closed_chunks(tmp_path, compression):
    if compression == "lz4":
        pytest.importorskip("roslz4")
    intact, crashed = tmp_path / "a.bag", tmp_path / "crashed.bag"
    rng = np.random.default_rng(2)
    with bags.BagWriter(intact) as w:
        w._bag.compression = compression
        w._bag.chunk_threshold = 20000  # a few frames a chunk
        for _ in range(6):
            w.write(rng.random((500, 4), dtype=np.float32) * 20,
                    FrameGT(BOXES, NAMES, difficulty=[0, 1]))
        w._bag._file.flush()
        shutil.copyfile(intact, crashed)
    cut = tmp_path / "cut.bag"
    cut_index(intact, cut, clear_index_pos=True)
    _, want = read_all(intact)
    summary, got = read_all(cut)
    assert summary.recovered and len(got) == 6
    assert_same_frames(got, want)
    # the open chunk of the crashed recording was still in the compressor: the closed
    # chunks come back, and the warning says what was dropped
    summary, got = read_all(crashed)
    assert 0 < len(got) < 6
    assert [f.stamp_ns for f in got] == [f.stamp_ns for f in want[:len(got)]]
    for g, w in zip(got, want):  # the last cloud's gt may be in the open chunk
        np.testing.assert_array_equal(g.points, w.points)
    assert any(f"a {compression} chunk still open" in p and "dropped the last" in p
               for p in summary.problems)


def test_corrupt_record_inside_a_closed_chunk_skips_the_rest_of_that_chunk(tmp_path):
    intact = tmp_path / "a.bag"
    bags.bag_from_sim(intact, 3, progress=False)  # a chunk per cloud, gt in the next one
    import rosbag
    with rosbag.Bag(str(intact)) as b:
        clouds = [msg[1] for _, msg, _ in b.read_messages(topics=[bags.POINTS_TOPIC],
                                                         raw=True)]
    cut = tmp_path / "cut.bag"
    cut_index(intact, cut)
    data = bytearray(cut.read_bytes())
    # the data length of the second cloud's record: make it run past its chunk
    at = bytes(data).index(clouds[1]) - 4
    data[at:at + 4] = struct.pack("<I", 0xFFFFFF00)
    cut.write_bytes(bytes(data))
    summary, got = read_all(cut)
    assert [f.stamp_ns for f in got] == [f.stamp_ns for f in read_all(intact)[1]][::2]
    assert any("unreadable" in p and "skipped" in p for p in summary.problems)


def test_tf_topics_are_listed_for_online_replay(tmp_path):
    """The bag's /tf and /tf_static (tf2_msgs/TFMessage) are found, so `eval --online` plays
    them with the clouds for the node's multi-sweep poses."""
    pytest.importorskip("tf2_msgs.msg", reason="Debian python3-tf2-msgs (ros-tf2-msgs) needed")
    import rosbag
    import rospy
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    path = tmp_path / "tf.bag"
    write_small_bag(path, 2)
    with rosbag.Bag(str(path), "a") as bag:
        for topic in ("/tf", "/tf_static"):
            tf = TransformStamped()
            tf.header.frame_id, tf.child_frame_id = "odom", "velodyne"
            tf.transform.rotation.w = 1.0
            bag.write(topic, TFMessage([tf]), t=rospy.Time(1))
    summary, frames = read_all(path)
    assert summary.tf_topics == ["/tf", "/tf_static"] and len(frames) == 2
    plain = tmp_path / "plain.bag"
    write_small_bag(plain, 1)
    assert read_all(plain)[0].tf_topics == []
