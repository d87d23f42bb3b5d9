#!/usr/bin/env python3
"""ROS benchmark: 120k-point clouds through a real roscore to lidar_detection (overhead, 10 Hz soak)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from admlops_ros.ros.processes import RosCore, launch_detection, stop  # noqa: E402

OBJECTS = "/detection/lidar_detector/objects"
STATS = "/detection/lidar_detector/stats"
INPUT = "/points_raw"


def make_clouds(num_points: int, count: int = 5, seed: int = 0) -> List[np.ndarray]:
    """``count`` simulated scans resampled to exactly ``num_points`` points each ((N, 4) float32)."""
    from admlops_ros.simulation import simulate_frame  # noqa: WPS433

    rng = np.random.default_rng(seed)
    clouds = []
    for i in range(count):
        pts = simulate_frame(seed + i).points
        idx = rng.choice(len(pts), num_points, replace=len(pts) < num_points)
        cloud = pts[idx].copy()
        if len(pts) < num_points:  # duplicated points get a little jitter
            cloud[:, :3] += rng.normal(0, 0.01, (num_points, 3)).astype(np.float32)
        clouds.append(cloud)
    return clouds


class Probe:
    """Receipt time of every object array and the node's stats, keyed by input stamp."""

    def __init__(self) -> None:
        import rospy  # noqa: WPS433

        from admlops_ros.ros.conversions import import_messages  # noqa: WPS433

        msgs = import_messages()
        self.lock = threading.Lock()
        self.received: Dict[float, float] = {}
        self.stats: Dict[float, object] = {}
        self.subs = [rospy.Subscriber(OBJECTS, msgs.DetectedObjectArray, self._on_objects,
                                      queue_size=100),
                     rospy.Subscriber(STATS, msgs.DetectionStats, self._on_stats, queue_size=100)]

    def _on_objects(self, msg) -> None:
        now = time.time()
        with self.lock:
            self.received[msg.header.stamp.to_sec()] = now

    def _on_stats(self, msg) -> None:
        with self.lock:
            self.stats[msg.header.stamp.to_sec()] = msg

    def wait_for(self, stamp: float, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if stamp in self.received and stamp in self.stats:
                    return True
            time.sleep(0.005)
        return False


def _publish(pub, cloud_msg, frame_id: str = "velodyne") -> float:
    import rospy  # noqa: WPS433

    stamp = rospy.Time.from_sec(time.time())
    cloud_msg.header.stamp = stamp
    cloud_msg.header.frame_id = frame_id
    pub.publish(cloud_msg)
    return stamp.to_sec()


def _median(values: List[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def _p95(values: List[float]) -> float:
    return float(np.percentile(values, 95)) if values else float("nan")


def run(engine: str = "", backend: str = "", num_points: int = 120_000,
        latency_frames: int = 30, soak_s: float = 60.0, rate_hz: float = 10.0,
        out_dir: Path = REPO / "build" / "bench_ros") -> Dict[str, float]:
    """Start roscore + the node, measure ROS overhead and a soak; returns the figures.

    Initializes rospy in this process (once per process). Overhead = receipt time of the
    object array in this process - input stamp - the node's in-process detect time.

    Args:
        engine, backend: node parameters ("" = defaults).
        num_points: points per cloud.
        latency_frames: clouds sent one at a time (after the previous answer) for latency.
        soak_s, rate_hz: the soak: clouds at ``rate_hz`` for ``soak_s`` seconds.
        out_dir: logs (roscore, node).

    Returns:
        dict of medians/p95 (ms) and soak counters.
    """
    from admlops_ros.lidar.pointcloud import array_to_pointcloud2  # noqa: WPS433

    out_dir.mkdir(parents=True, exist_ok=True)
    clouds = make_clouds(num_points)
    with RosCore(out_dir / "ros_home") as core:
        args = ([f"engine:={engine}"] if engine else []) + (
            [f"backend:={backend}"] if backend else [])
        node = launch_detection(core, args, out_dir / "lidar_detection.log")
        try:
            os.environ.update(core.env)
            import rospy  # noqa: WPS433
            from sensor_msgs.msg import PointCloud2  # noqa: WPS433

            rospy.init_node("admlops_bench_ros", anonymous=True, disable_signals=True)
            probe = Probe()
            pub = rospy.Publisher(INPUT, PointCloud2, queue_size=1)
            msgs = [array_to_pointcloud2(c) for c in clouds]
            deadline = time.monotonic() + 10
            while pub.get_num_connections() == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)
            # latency: one cloud in flight at a time (no queueing)
            lat, det, over, conv = [], [], [], []
            for i in range(latency_frames + 2):
                stamp = _publish(pub, msgs[i % len(msgs)])
                if not probe.wait_for(stamp, 30.0) or i < 2:  # first two: warm caches
                    continue
                stats = probe.stats[stamp]
                latency = (probe.received[stamp] - stamp) * 1e3
                lat.append(latency)
                det.append(stats.detect_ms)
                over.append(latency - stats.detect_ms)
                conv.append(stats.conversion_ms)
                time.sleep(0.05)
            # soak at rate_hz
            before_stats = len(probe.stats)
            sent: List[float] = []
            rate = rospy.Rate(rate_hz)
            end = time.monotonic() + soak_s
            while time.monotonic() < end:
                sent.append(_publish(pub, msgs[len(sent) % len(msgs)]))
                rate.sleep()
            time.sleep(2.0)
            with probe.lock:
                got = [s for s in sent if s in probe.received]
                soak_stats = [probe.stats[s] for s in sent if s in probe.stats]
            last = soak_stats[-1] if soak_stats else None
            soak_det = [s.detect_ms for s in soak_stats]
            result = {
                "points": float(num_points),
                "latency_ms_median": _median(lat),
                "detect_ms_median": _median(det),
                "ros_overhead_ms_median": _median(over),
                "ros_overhead_ms_p95": _p95(over),
                "conversion_ms_median": _median(conv),
                "soak_s": soak_s,
                "soak_rate_hz": rate_hz,
                "soak_sent": float(len(sent)),
                "soak_answered": float(len(got)),
                "soak_dropped": float(len(sent) - len(got)),
                "soak_detect_ms_median": _median(soak_det),
                "soak_detect_ms_p95": _p95(soak_det),
                "node_frames_dropped": float(last.frames_dropped) if last else float("nan"),
                "stats_messages": float(len(probe.stats) - before_stats),
            }
            rospy.signal_shutdown("bench finished")
        finally:
            stop(node)
    return result


def print_table(result: Dict[str, float]) -> None:
    """The figures as a two-column table."""
    print(f"\n=== ROS benchmark: {int(result['points'])}-point clouds through a real roscore ===")
    rows = [
        ("input -> output latency, median (ms)", result["latency_ms_median"]),
        ("node detect time, median (ms)", result["detect_ms_median"]),
        ("ROS overhead = latency - detect, median (ms)", result["ros_overhead_ms_median"]),
        ("ROS overhead p95 (ms)", result["ros_overhead_ms_p95"]),
        ("  of which PointCloud2 -> array, median (ms)", result["conversion_ms_median"]),
        (f"soak {result['soak_rate_hz']:g} Hz x {result['soak_s']:g} s: clouds sent",
         result["soak_sent"]),
        ("soak: answered", result["soak_answered"]),
        ("soak: dropped (sent - answered)", result["soak_dropped"]),
        ("soak: detect time median / p95 (ms)",
         f"{result['soak_detect_ms_median']:.1f} / {result['soak_detect_ms_p95']:.1f}"),
    ]
    for name, value in rows:
        text = value if isinstance(value, str) else f"{value:.1f}"
        print(f"{name:<48} {text:>12}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine", default="")
    parser.add_argument("--backend", default="")
    parser.add_argument("--points", type=int, default=120_000)
    parser.add_argument("--latency-frames", type=int, default=30)
    parser.add_argument("--soak-s", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    result = run(args.engine, args.backend, args.points, args.latency_frames, args.soak_s,
                 args.rate)
    print_table(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
