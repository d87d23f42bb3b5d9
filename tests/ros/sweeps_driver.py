"""Driver for test_sweeps_integration: tf + clouds into a running lidar_detection node.

Usage (with ROS_MASTER_URI set): python sweeps_driver.py NODE_NAME PREFIX POINTS
Plays, one cloud at a time (each waits for its stats): 5 clouds in frame ``lidar`` whose pose
in ``odom`` moves 1 m per cloud (tf published at each cloud's stamp), 2 clouds in frame
``ghost`` that tf never knows, then 2 more ``lidar`` clouds. Prints one JSON line: per cloud
its frame and the stats' num_sweeps / num_points, and every /diagnostics status of the node.
"""
from __future__ import annotations

import json
import sys
import threading
import time

import numpy as np
import rospy
import tf2_ros
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TransformStamped
from std_msgs.msg import Header

from admlops_ros.lidar.pointcloud import array_to_pointcloud2
from admlops_ros.ros.conversions import import_messages

WAIT_S = 20.0


def main() -> int:
    node, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rospy.init_node("sweeps_driver", anonymous=True, disable_signals=True)
    msgs = import_messages()
    lock = threading.Lock()
    stats, diags = {}, []

    def on_stats(msg):
        with lock:
            stats[msg.header.stamp.to_nsec()] = (int(msg.num_sweeps), int(msg.num_points))

    def on_diag(msg):
        with lock:
            diags.extend((int(s.level), s.message) for s in msg.status if node in s.hardware_id
                         or "lidar_detection" in s.name)

    rospy.Subscriber(f"{prefix}/stats", msgs.DetectionStats, on_stats, queue_size=50)
    rospy.Subscriber("/diagnostics", DiagnosticArray, on_diag, queue_size=50)
    clouds = rospy.Publisher(f"{prefix}/points", type(array_to_pointcloud2(
        np.zeros((1, 4), np.float32))), queue_size=1)
    tf = tf2_ros.TransformBroadcaster()
    deadline = time.monotonic() + WAIT_S
    while clouds.get_num_connections() == 0 or tf.pub_tf.get_num_connections() == 0:
        if time.monotonic() > deadline:
            print(json.dumps({"error": "node did not connect"}))
            return 1
        time.sleep(0.05)

    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(1.5, 5.5, count), rng.uniform(-1.5, 1.5, count),
                           rng.uniform(-1.5, 0.0, count), rng.uniform(0, 1, count)])
    frames = ["lidar"] * 5 + ["ghost"] * 2 + ["lidar"] * 2
    out = []
    for k, frame in enumerate(frames):
        stamp = rospy.Time.now()
        if frame == "lidar":
            t = TransformStamped()
            t.header.stamp, t.header.frame_id, t.child_frame_id = stamp, "odom", "lidar"
            t.transform.translation.x = float(k)
            t.transform.rotation.w = 1.0
            tf.sendTransform(t)
            time.sleep(0.05)
        clouds.publish(array_to_pointcloud2(pts.astype(np.float32),
                                            Header(seq=k, stamp=stamp, frame_id=frame)))
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            with lock:
                got = stats.get(stamp.to_nsec())
            if got is not None:
                break
            time.sleep(0.02)
        out.append({"frame": frame, "num_sweeps": got[0] if got else None,
                    "num_points": got[1] if got else None})
    time.sleep(1.5)  # one more 1 Hz diagnostics period
    with lock:
        print(json.dumps({"clouds": out, "diagnostics": diags}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
