"""ROS probe run inside a namespace: listen to a topic (any type) or publish point clouds.

    ros_probe.py listen TOPIC COUNT TIMEOUT_S   -> prints one JSON line, exit 0 when COUNT arrived
    ros_probe.py cloud TOPIC RATE_HZ            -> publishes random x,y,z,intensity clouds
"""
from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import numpy as np  # noqa: E402
import rospy  # noqa: E402
import rosgraph  # noqa: E402


def listen(topic: str, count: int, timeout_s: float) -> int:
    rospy.init_node("admlops_netns_listener", anonymous=True, disable_signals=True)
    got = []

    def callback(msg: rospy.AnyMsg) -> None:
        got.append(msg._connection_header.get("callerid", "?"))

    rospy.Subscriber(topic, rospy.AnyMsg, callback, queue_size=10)
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    master = rosgraph.Master("/admlops_netns_listener")
    uris = {}
    for caller in sorted(set(got)):
        try:
            uris[caller] = master.lookupNode(caller)
        except Exception as exc:  # report, the test asserts on it
            uris[caller] = "lookup failed: %s" % exc
    print(json.dumps({"count": len(got), "publishers": uris, "my_uri": rospy.get_node_uri()}))
    sys.stdout.flush()
    return 0 if len(got) >= count else 1


def clouds(topic: str, rate_hz: float) -> int:
    from admlops_ros.lidar.pointcloud import array_to_pointcloud2
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import Header

    rospy.init_node("admlops_netns_lidar", anonymous=True)
    pub = rospy.Publisher(topic, PointCloud2, queue_size=1)
    rng = np.random.default_rng(0)
    rate = rospy.Rate(rate_hz)
    while not rospy.is_shutdown():
        pts = np.column_stack([rng.uniform(0, 60, 20000), rng.uniform(-30, 30, 20000),
                               rng.uniform(-2.5, 0.5, 20000), rng.uniform(0, 1, 20000)])
        pub.publish(array_to_pointcloud2(pts.astype(np.float32),
                                         Header(stamp=rospy.Time.now(), frame_id="lidar")))
        rate.sleep()
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "listen":
        sys.exit(listen(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
    sys.exit(clouds(sys.argv[2], float(sys.argv[3])))
