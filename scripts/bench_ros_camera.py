#!/usr/bin/env python3
"""ROS overhead of the camera node for a 1242x375 bgr8 image: conversion in, messages out (medians).

In process (no master): deserialising the sensor_msgs/Image, cv_bridge to BGR, the annotated
image back to a message and serialised, the Detection2DArray built and serialised. With
``--roscore`` also the round trip through a private roscore to camera_detection running a
zero-cost detector (tests/ros/camera_driver.py): send -> Detection2DArray received, median.
Run with scripts/with_ros_env.sh.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Dict

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarking import median_ms  # noqa: E402  (scripts/benchmarking.py)

W, H = 1242, 375
TARGET_MS = 5.0


def in_process(runs: int) -> Dict[str, float]:
    """Median ms of each ROS-side step for one 1242x375 bgr8 image with 10 detections."""
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from admlops_ros.camera.annotate import annotate
    from admlops_ros.camera.detections import Detections2D
    from admlops_ros.ros.camera_node import detections2d_to_msg
    from admlops_ros.ros.conversions import import_messages
    from admlops_ros.ros.image_conversions import bgr_to_image, image_to_bgr

    msgs = import_messages()
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    header = Header(seq=1, frame_id="camera")
    msg = Image(header=header, height=H, width=W, encoding="bgr8", step=W * 3,
                data=bgr.tobytes())
    buf = io.BytesIO()
    msg.serialize(buf)
    wire = buf.getvalue()
    xy = rng.uniform(0, 300, (10, 2))
    det = Detections2D(np.concatenate([xy, xy + 50], axis=1), np.full(10, 0.8),
                       np.arange(10) % 3, ("Pedestrian", "Cyclist", "Car"), image_size=(H, W))

    def deserialize():
        Image().deserialize(wire)

    def convert():
        image_to_bgr(Image().deserialize(wire))

    def out_image():
        out = io.BytesIO()
        bgr_to_image(bgr, header).serialize(out)

    def out_detections():
        out = io.BytesIO()
        detections2d_to_msg(det, header, msgs).serialize(out)

    def draw():
        annotate(bgr, det)

    rows = {
        "deserialize Image (rospy)": median_ms(deserialize, runs),
        "Image -> BGR (deserialize + cv_bridge)": median_ms(convert, runs),
        "BGR -> Image + serialize (annotated)": median_ms(out_image, runs),
        "Detection2DArray (10) + serialize": median_ms(out_detections, runs),
    }
    rows["ROS overhead (in + detections out)"] = (
        rows["Image -> BGR (deserialize + cv_bridge)"] + rows["Detection2DArray (10) + serialize"])
    rows["ROS overhead with annotated image"] = (
        rows["ROS overhead (in + detections out)"] + rows["BGR -> Image + serialize (annotated)"])
    rows["annotate (draw 10 boxes, copy)"] = median_ms(draw, runs)
    return rows


def round_trip(runs: int) -> Dict[str, float]:
    """Median ms publish -> Detection2DArray received through a private roscore, and the node's
    processing_ms (callback start to published; the fake detector's reported timings are not
    its real cost, which is ~0) with a zero-cost detector."""
    import subprocess
    import threading

    from admlops_ros.ros.processes import RosCore, start, stop, topic_has_subscriber, wait_for

    out: Dict[str, float] = {}
    with RosCore(REPO / "build" / "ros_home_bench_camera") as core:
        driver = REPO / "tests" / "ros" / "camera_driver.py"
        log = REPO / "build" / "bench_ros_camera_node.log"
        proc = start([sys.executable, str(driver), "node", "camera_bench", "/bench"],
                     core.env, log)
        try:
            wait_for(lambda: topic_has_subscriber(core.uri, "/bench/image", "/camera_bench"),
                     120.0, "camera_bench node", proc)
            code = _ROUND_TRIP.format(repo=str(REPO), runs=runs, W=W, H=H)
            res = subprocess.run([sys.executable, "-c", code], env=core.env, capture_output=True,
                                 text=True, timeout=300)
            if res.returncode != 0:
                raise RuntimeError(res.stderr[-2000:])
            out.update(json.loads(res.stdout.strip().splitlines()[-1]))
        finally:
            stop(proc)
    return out


_ROUND_TRIP = r'''
import json, sys, threading, time
sys.path.insert(0, "{repo}")
import numpy as np, rospy
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from admlops_ros.ros.conversions import import_messages
msgs = import_messages()
rospy.init_node("bench_probe", anonymous=True)
got, stats, ev = {{}}, {{}}, threading.Event()
def on_det(m):
    got[m.header.seq] = time.perf_counter(); ev.set()
def on_stats(m):
    stats[m.header.seq] = (m.processing_ms, m.detect_ms, m.conversion_ms)
rospy.Subscriber("/bench/detections", msgs.Detection2DArray, on_det, queue_size=10)
rospy.Subscriber("/bench/stats", msgs.CameraDetectionStats, on_stats, queue_size=10)
pub = rospy.Publisher("/bench/image", Image, queue_size=2)
while pub.get_num_connections() == 0: time.sleep(0.05)
time.sleep(1.0)
data = np.random.default_rng(0).integers(0, 256, ({H}, {W}, 3), dtype=np.uint8).tobytes()
rtt = []
for i in range(1, {runs} + 1):
    ev.clear()
    t0 = time.perf_counter()
    pub.publish(Image(header=Header(seq=i, stamp=rospy.Time.now(), frame_id="camera"),
                      height={H}, width={W}, encoding="bgr8", step={W} * 3, data=data))
    if ev.wait(5.0) and i in got:
        rtt.append((got[i] - t0) * 1e3)
    time.sleep(0.1)
time.sleep(0.3)
proc = [v[0] for v in stats.values()]
conv = [v[2] for v in stats.values()]
print(json.dumps({{"round trip publish -> detections (roscore)": float(np.median(rtt)),
                   "node processing_ms (zero-cost detector)": float(np.median(proc)),
                   "node conversion_ms": float(np.median(conv))}}))
'''


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--roscore", action="store_true",
                        help="also the round trip through a private roscore")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = in_process(args.runs)
    if args.roscore:
        rows.update(round_trip(args.runs))
    print(f"\nROS camera overhead, {W}x{H} bgr8, medians of {args.runs} runs "
          f"(target <= {TARGET_MS:.0f} ms)")
    print(f"{'step':<48} {'ms':>8}")
    for name, value in rows.items():
        print(f"{name:<48} {value:8.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
