"""Driver for test_camera_node_integration: a fake-detector camera node, and a probe feeding it.

Usage (with ROS_MASTER_URI set):
  python camera_driver.py node NAME PREFIX    camera_detection with FakeCameraDetector, ~ params
  python camera_driver.py probe NAME PREFIX   images into PREFIX/image, prints one JSON line
The probe publishes 20 bgr8 1242x375 images at 10 Hz and records the Detection2DArray headers,
then each malformed image (wrong encoding, truncated data, zero size, 8K) followed by a good one,
recording the node's /diagnostics and whether the good image was answered.
"""
from __future__ import annotations

import json
import sys
import threading
import time

import rospy
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from admlops_ros.ros.conversions import import_messages

WAIT_S = 20.0
W, H = 1242, 375
#: name -> (a word the WARN diagnostic must contain, fields of the malformed bgr8 image)
MALFORMED = {
    "wrong_encoding": ("mono16", dict(encoding="mono16", step=W * 2, data=bytes(W * H * 2))),
    "truncated": ("truncated", dict(data=bytes(W * H * 3 // 2))),
    "zero_size": ("zero size", dict(height=0, width=0, step=0, data=b"")),
    "8k": ("7680 x 4320", dict(height=4320, width=7680, step=7680 * 3,
                               data=bytes(7680 * 4320 * 3))),
}


def run_node(name: str, prefix: str) -> int:
    from admlops_ros.ros.camera_node import CameraDetectionNode, validate_camera_params
    from tests.ros.test_camera_node import FakeCameraDetector

    rospy.init_node(name)
    params = validate_camera_params(dict(rospy.get_param("~", {}), input_topic=f"{prefix}/image",
                                         detections_topic=f"{prefix}/detections",
                                         annotated_topic=f"{prefix}/annotated",
                                         stats_topic=f"{prefix}/stats"), check_engine=False)
    CameraDetectionNode(params, FakeCameraDetector(), {"model": "fake"})
    rospy.loginfo("camera_detection (fake detector) ready")
    rospy.spin()
    return 0


def _image(seq: int, stamp: rospy.Time, **over) -> Image:
    msg = Image(header=Header(seq=seq, stamp=stamp, frame_id="camera"), height=H, width=W,
                encoding="bgr8", step=W * 3, data=bytes(W * H * 3))
    for key, value in over.items():
        setattr(msg, key, value)
    return msg


def run_probe(node: str, prefix: str) -> int:
    msgs = import_messages()
    rospy.init_node("camera_probe", anonymous=True)
    lock = threading.Lock()
    answers, diags = [], []

    def on_det(msg):
        with lock:
            answers.append({"seq": msg.header.seq, "stamp": msg.header.stamp.to_sec(),
                            "frame_id": msg.header.frame_id, "n": len(msg.detections)})

    def on_diag(msg):
        for st in msg.status:
            if st.name.startswith("camera_detection"):
                with lock:
                    diags.append({"level": int(st.level), "message": st.message})

    rospy.Subscriber(f"{prefix}/detections", msgs.Detection2DArray, on_det, queue_size=50)
    rospy.Subscriber("/diagnostics", DiagnosticArray, on_diag, queue_size=50)
    pub = rospy.Publisher(f"{prefix}/image", Image, queue_size=2)
    deadline = time.time() + WAIT_S
    while pub.get_num_connections() == 0 and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    sent = []
    rate = rospy.Rate(10)
    t0 = time.time()
    for i in range(20):
        stamp = rospy.Time.from_sec(1000.0 + 0.1 * i)
        pub.publish(_image(i + 1, stamp))
        sent.append({"seq": i + 1, "stamp": stamp.to_sec()})
        rate.sleep()
    elapsed = time.time() - t0
    _wait(lambda: len(answers) >= 20, 5.0)
    good = list(answers)
    results = {}
    for k, (name, (word, over)) in enumerate(MALFORMED.items()):
        with lock:
            diags.clear()
        pub.publish(_image(100 + k, rospy.Time.from_sec(2000.0 + k), **over))
        warned = _wait(lambda: any(d["level"] >= 1 and word in d["message"]
                                   for d in list(diags)), WAIT_S)
        with lock:
            n_before = len(answers)
            warn_msgs = [d["message"] for d in diags if d["level"] >= 1 and word in d["message"]]
        pub.publish(_image(200 + k, rospy.Time.from_sec(3000.0 + k)))
        alive = _wait(lambda: len(answers) > n_before, WAIT_S)
        results[name] = {"warned": warned, "messages": warn_msgs[:2], "alive_after": alive,
                         "answer": answers[-1] if alive else None}
    print(json.dumps({"sent": sent, "good": good, "publish_s": elapsed, "malformed": results}))
    return 0


def _wait(pred, timeout: float) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


if __name__ == "__main__":
    mode, name, prefix = sys.argv[1:4]
    sys.exit(run_node(name, prefix) if mode == "node" else run_probe(name, prefix))
