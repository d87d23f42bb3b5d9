"""`admlops record` under a real roscore: 10 Hz clouds into split bags with their headers and
sidecars; triggered capture around a ~capture service call and around a detection flicker;
SIGINT / SIGTERM close the bags properly.

Run as a script, this file is the publisher the tests start (its own process: one rospy node):
  python test_record_ros.py publish OPTIONS   prints one JSON line (what it sent, when)
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time

import pytest

NS = 1_000_000_000
OBJECTS_TOPIC = "/detection/lidar_detector/objects"


# ----------------------------------------------------------------------------------- publisher
def publish(opts: argparse.Namespace) -> int:
    import numpy as np
    import rospy
    from geometry_msgs.msg import TransformStamped
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import Header
    from tf2_msgs.msg import TFMessage

    from admlops_ros.lidar.pointcloud import array_to_pointcloud2
    from admlops_ros.ros.conversions import import_messages

    msgs = import_messages()
    rospy.init_node("record_publisher", anonymous=True)
    clouds = rospy.Publisher("/points_raw", PointCloud2, queue_size=50)
    objects = rospy.Publisher(OBJECTS_TOPIC, msgs.DetectedObjectArray, queue_size=50)
    static = rospy.Publisher("/tf_static", TFMessage, queue_size=1, latch=True)
    tf = TransformStamped(header=Header(stamp=rospy.Time.now(), frame_id="base_link"),
                          child_frame_id="velodyne")
    tf.transform.rotation.w = 1.0
    static.publish(TFMessage(transforms=[tf]))
    deadline = time.monotonic() + 30.0
    while clouds.get_num_connections() < 1 or (opts.objects and objects.get_num_connections() < 1):
        if time.monotonic() > deadline:
            print(json.dumps({"error": "the recorder did not subscribe"}))
            return 1
        time.sleep(0.05)
    time.sleep(0.3)  # the recorder's side of the connections
    points = np.random.default_rng(0).normal(size=(opts.points, 4)).astype(np.float32)
    report = {"sent": [], "service": None, "flicker_ns": None}
    rate = rospy.Rate(10)
    for i in range(opts.count):
        header = Header(seq=i, stamp=rospy.Time.now(), frame_id="velodyne")
        clouds.publish(array_to_pointcloud2(points, header, ("x", "y", "z", "intensity")))
        report["sent"].append([i, header.stamp.to_nsec()])
        if opts.objects:
            arr = msgs.DetectedObjectArray(header=header)
            centres = [(10.0 + 0.1 * i, 0.0, "Car")]
            if i == opts.flicker_at:  # seen in this frame only
                centres.append((30.0, 5.0, "Pedestrian"))
                report["flicker_ns"] = header.stamp.to_nsec()
            for k, (x, y, name) in enumerate(centres):
                obj = msgs.DetectedObject(header=header, id=k, label_name=name, score=0.9)
                obj.pose.position.x, obj.pose.position.y = x, y
                obj.pose.orientation.w = 1.0
                arr.objects.append(obj)
            objects.publish(arr)
        if i == opts.service_at:
            from std_srvs.srv import Trigger
            rospy.wait_for_service(opts.service, timeout=10.0)
            t = rospy.Time.now().to_nsec()
            answer = rospy.ServiceProxy(opts.service, Trigger)()
            report["service"] = {"t_ns": t, "success": answer.success, "path": answer.message}
        rate.sleep()
    time.sleep(0.3)  # the last messages on their way
    print(json.dumps(report))
    return 0


# --------------------------------------------------------------------------------------- tests
if __name__ != "__main__":
    from admlops_ros.ros.processes import start, stop, topic_has_subscriber, wait_for
    from tests.paths import REPO_ROOT as REPO
    from tests.ros.conftest import DEVEL

    pytestmark = [
        pytest.mark.ros,
        pytest.mark.skipif(not (DEVEL / "setup.bash").exists() or shutil.which("roscore") is None,
                           reason="needs the built catkin workspace (make build), roscore and "
                                  "scripts/with_ros_env.sh"),
    ]


def _record(core, out, name, *args):
    cmd = [sys.executable, "-m", "admlops_ros", "record", "-o", str(out), "--node-name", name,
           *args]
    log = out.parent / f"{name}.log"
    proc = start(cmd, core.env, log)
    try:
        wait_for(lambda: topic_has_subscriber(core.uri, "/points_raw", f"/{name}"), 60.0,
                 f"{name} subscribed", proc)
    except BaseException:
        stop(proc)
        pytest.fail(log.read_text(errors="replace")[-3000:])
    return proc, log


def _publish(core, *args):
    result = subprocess.run([sys.executable, __file__, "publish", *args], env=core.env,
                            capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _finish(proc, log, sig):
    proc.send_signal(sig)  # the recorder alone (not its group): what a launcher or user sends
    try:
        code = proc.wait(timeout=30)
    finally:
        stop(proc)
    assert code == 0, log.read_text(errors="replace")[-3000:]
    return log.read_text(errors="replace")


def _bag(path):
    import rosbag
    with rosbag.Bag(str(path)) as bag:  # opens only with an index: closed properly
        return [(topic, msg, t.to_nsec()) for topic, msg, t in bag.read_messages()]


def test_continuous_split_bags_hold_every_cloud_with_its_header(core, tmp_path):
    from admlops_ros.data.record import read_sidecar
    out = tmp_path / "bags"
    proc, log = _record(core, out, "rec_cont", "--profile", "lidar", "--add-topic",
                        "/never_seen", "--split-duration", "1.0", "--prefix", "cont",
                        "--engine", str(REPO / "engines" / "pointpillars_sim_3class"))
    sent = _publish(core, "--count", "30")["sent"]
    text = _finish(proc, log, signal.SIGINT)
    bags = sorted(out.glob("cont_*.bag"))
    assert not list(out.glob("*.active")), text
    assert 3 <= len(bags) <= 5, text  # 3 s of clouds, a bag per second
    assert [p.name for p in bags] == [f"cont_{i:04d}.bag" for i in range(len(bags))]
    got = []
    for i, path in enumerate(bags):
        msgs = _bag(path)
        side = read_sidecar(path)
        clouds = [m for topic, m, _ in msgs if topic == "/points_raw"]
        got += clouds
        assert sum(topic == "/tf_static" for topic, _, _ in msgs) == 1  # in every split
        counts = {e["topic"]: e["messages"] for e in side["topics"]}
        assert counts["/points_raw"] == len(clouds) and side["messages"] == len(msgs)
        assert {"/never_seen", "/tf"} <= set(side["missing_topics"])
        assert side["sensors"] == ["lidar", "tf"] and side["profile"] == "lidar"
        types = {e["topic"]: e["type"] for e in side["topics"]}
        assert types == {"/points_raw": "sensor_msgs/PointCloud2", "/tf": None,
                         "/tf_static": "tf2_msgs/TFMessage", "/never_seen": None}
        assert side["engine"]["name"] and len(side["engine"]["spec_sha256"]) == 64
        assert side["split"]["reason"] == ("duration" if i < len(bags) - 1 else "stopped")
        if i < len(bags) - 1:  # record times within the split duration
            assert side["end"]["ros_ns"] - side["start"]["ros_ns"] < NS
        assert side["header_stamps"]["first_ns"] == clouds[0].header.stamp.to_nsec()
        # no sim time: ROS time is the wall clock, and the sidecar's wall times are receipts
        assert abs(side["start"]["wall_s"] - side["start"]["ros_s"]) < 0.5
        assert str(path) in text  # the command lists the bags it wrote
    assert [m.header.stamp.to_nsec() for m in got] == [stamp for _, stamp in sent]
    seqs = [m.header.seq for m in got]  # rospy numbers the headers it publishes itself
    assert seqs == list(range(seqs[0], seqs[0] + len(sent)))
    assert all(m.header.frame_id == "velodyne" and m.width == 2000 for m in got)


def test_triggered_capture_around_service_call_and_flicker(core, tmp_path):
    from admlops_ros.data.record import read_sidecar
    out = tmp_path / "captures"
    pre, post = 1.0, 0.5
    proc, log = _record(core, out, "rec_trig", "--profile", "lidar", "--trigger", "--pre",
                        str(pre), "--post", str(post), "--triggers", "service,flicker",
                        "--cooldown", "5", "--prefix", "trig")
    wait_for(lambda: topic_has_subscriber(core.uri, OBJECTS_TOPIC, "/rec_trig"), 30.0,
             "rec_trig on the detections", proc)
    report = _publish(core, "--count", "45", "--objects", "--service", "/rec_trig/capture",
                      "--service-at", "15", "--flicker-at", "32")
    text = _finish(proc, log, signal.SIGTERM)
    bags = sorted(out.glob("trig_*.bag"))
    assert [p.name for p in bags] == ["trig_0000.bag", "trig_0001.bag"], text
    sent = {seq: stamp for seq, stamp in report["sent"]}
    service = report["service"]
    assert service["success"] and service["path"] == str(bags[0])
    slack = int(0.2 * NS)  # record time (receipt) vs header stamp, on a loaded machine
    for path, kind, t in ((bags[0], "service", service["t_ns"]),
                          (bags[1], "flicker", report["flicker_ns"])):
        side = read_sidecar(path)
        trig = side["trigger"]
        assert trig["kind"] == kind and trig["complete"] is True, side
        if kind == "flicker":
            assert trig["stamp_ns"] == t and "seen in one frame only" in trig["reason"]
        else:
            assert abs(trig["stamp_ns"] - t) < slack
        msgs = _bag(path)
        assert {topic for topic, _, _ in msgs} == {"/points_raw", "/tf_static"}
        stamps = [m.header.stamp.to_nsec() for topic, m, _ in msgs if topic == "/points_raw"]
        lo, hi = trig["stamp_ns"] - int(pre * NS), trig["stamp_ns"] + int(post * NS)
        assert all(lo - slack <= s <= hi + slack for s in stamps), (kind, stamps, lo, hi)
        inner = [s for s in sent.values() if lo + slack <= s <= hi - slack]
        assert set(inner) <= set(stamps), (kind, inner, stamps)
        assert stamps == sorted(stamps) and len(stamps) >= len(inner) >= 8
        assert side["topics"][0]["messages"] == len(stamps)
    assert len(report["sent"]) == 45


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="the publisher of test_record_ros")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("publish", help="10 Hz clouds (and objects), maybe a service call")
    p.add_argument("--count", type=int, default=30)
    p.add_argument("--points", type=int, default=2000, help="points per cloud")
    p.add_argument("--objects", action="store_true", help=f"also {OBJECTS_TOPIC}")
    p.add_argument("--flicker-at", type=int, default=-1, help="frame with a one-frame object")
    p.add_argument("--service", default="", help="~capture service to call")
    p.add_argument("--service-at", type=int, default=-1, help="frame after which to call it")
    sys.exit(publish(parser.parse_args()))
