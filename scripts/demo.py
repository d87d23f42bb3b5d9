#!/usr/bin/env python3
"""Demo: roscore + lidar_detection (default engine) + a simulated bag played through it, live summary."""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from admlops_ros import interrupts  # noqa: E402
from admlops_ros.ros.processes import (ProcessError, RosCore, launch_detection,  # noqa: E402
                                       start, stop)

BAG_TOPIC = "/points_raw"
BAG_FRAME = "velodyne"
BAG_T0 = 1_700_000_000.0     # bag stamps start here (sim time)
SEED0 = 50_000                # demo scenes: seeds SEED0 .. SEED0 + frames - 1


def simulator_fingerprint() -> str:
    """Short hash of the simulator's source: a cached bag is reused only while it is the same."""
    import hashlib  # noqa: WPS433

    digest = hashlib.sha256()
    for source in sorted((REPO / "admlops_ros" / "simulation").glob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:10]


def make_bag(path: Path, frames: int, rate_hz: float) -> Path:
    """Write (or reuse) a bag of simulated scans on /points_raw, frame "velodyne", ``rate_hz``."""
    if path.exists():
        print(f"[demo] using cached bag {path}")
        return path
    import rosbag  # noqa: WPS433
    import rospy  # noqa: WPS433
    from std_msgs.msg import Header  # noqa: WPS433

    from admlops_ros.lidar.pointcloud import array_to_pointcloud2  # noqa: WPS433
    from admlops_ros.simulation import simulate_frame  # noqa: WPS433

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    print(f"[demo] simulating {frames} scans into {path} (once, cached) ...", flush=True)
    with rosbag.Bag(str(tmp), "w") as bag:
        for i in range(frames):
            stamp = rospy.Time.from_sec(BAG_T0 + i / rate_hz)
            frame = simulate_frame(SEED0 + i)
            header = Header(seq=i, stamp=stamp, frame_id=BAG_FRAME)
            bag.write(BAG_TOPIC, array_to_pointcloud2(frame.points, header), t=stamp)
            if (i + 1) % 20 == 0:
                print(f"[demo]   {i + 1}/{frames} scans", flush=True)
    os.replace(tmp, path)
    return path


class Monitor:
    """Collects the node's outputs (objects per class, stats) in the demo process."""

    def __init__(self, objects_topic: str, stats_topic: str) -> None:
        import rospy  # noqa: WPS433

        from admlops_ros.ros.conversions import import_messages  # noqa: WPS433

        msgs = import_messages()
        self.lock = threading.Lock()
        self.per_class: Counter = Counter()
        self.frames_out = 0
        self.stats: List = []
        self.subs = [rospy.Subscriber(objects_topic, msgs.DetectedObjectArray, self._on_objects,
                                      queue_size=100),
                     rospy.Subscriber(stats_topic, msgs.DetectionStats, self._on_stats,
                                      queue_size=100)]

    def _on_objects(self, msg) -> None:
        with self.lock:
            self.frames_out += 1
            self.per_class.update(o.label_name for o in msg.objects)

    def _on_stats(self, msg) -> None:
        with self.lock:
            self.stats.append(msg)

    def snapshot(self) -> Dict[str, object]:
        with self.lock:
            last = self.stats[-1] if self.stats else None
            lat = np.array([s.latency_ms for s in self.stats], np.float64)
            proc = np.array([s.processing_ms for s in self.stats], np.float64)
            det = np.array([s.detect_ms for s in self.stats], np.float64)
            return {
                "frames_in": int(last.frames_in) if last else 0,
                "frames_out": self.frames_out,
                "frames_dropped": int(last.frames_dropped) if last else 0,
                "per_class": dict(self.per_class),
                "latency_ms": _percentiles(lat),
                "processing_ms": _percentiles(proc),
                "detect_ms": _percentiles(det),
            }


def _percentiles(values: np.ndarray) -> Dict[str, float]:
    values = values[np.isfinite(values)]
    if not len(values):
        return {"p50": float("nan"), "p95": float("nan")}
    return {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95))}


def _line(snap: Dict[str, object], sent: Optional[int] = None) -> str:
    lat, proc = snap["latency_ms"], snap["processing_ms"]
    dets = ", ".join(f"{k} {v}" for k, v in sorted(snap["per_class"].items())) or "none"
    return (f"in {snap['frames_in']}{'/' + str(sent) if sent else ''}  out {snap['frames_out']}  "
            f"dropped {snap['frames_dropped']}  latency p50 {lat['p50']:.0f} ms p95 "
            f"{lat['p95']:.0f} ms  processing p50 {proc['p50']:.0f} ms  detections: {dets}")


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run(frames: int = 100, rate_hz: float = 10.0, engine: str = "", backend: str = "",
        bag: Optional[Path] = None, out_dir: Path = REPO / "build" / "demo") -> Dict[str, object]:
    """Run the whole demo; returns the final summary (see :class:`Monitor`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # the default name carries the simulator fingerprint: a changed simulator makes a new bag
    default_bag = out_dir / f"sim_{frames}f_{rate_hz:g}hz_{simulator_fingerprint()}.bag"
    bag = make_bag(bag or default_bag, frames, rate_hz)
    procs = []
    rospy = None
    with RosCore(out_dir / "ros_home") as core:
        try:
            print(f"[demo] roscore at {core.uri}; starting lidar_detection (logs in {out_dir})",
                  flush=True)
            args = ["use_sim_time:=true"]
            args += [f"engine:={engine}"] if engine else []
            args += [f"backend:={backend}"] if backend else []
            node_log = out_dir / "lidar_detection.log"
            node_log.write_text("")
            try:
                procs.append(launch_detection(core, args, node_log))
            except ProcessError as exc:
                raise SystemExit(f"[demo] the node did not start: {exc}\n{_tail(node_log)}")
            print("[demo] node ready (engine loaded, warmed up)", flush=True)
            os.environ.update(core.env)
            import rospy  # noqa: WPS433 (after ROS_MASTER_URI is set)

            rospy.init_node("admlops_demo", anonymous=True, disable_signals=True)
            monitor = Monitor("/detection/lidar_detector/objects", "/detection/lidar_detector/stats")
            time.sleep(1.0)
            print(f"[demo] playing {bag.name}: {frames} scans at {rate_hz:g} Hz", flush=True)
            player = start(["rosbag", "play", "-q", "--clock", "-d", "1", str(bag)], core.env,
                           out_dir / "rosbag_play.log")
            procs.append(player)
            while player.poll() is None:
                time.sleep(1.0)
                print("[demo] " + _line(monitor.snapshot(), frames), flush=True)
            if player.returncode != 0:
                raise SystemExit(f"[demo] rosbag play failed:\n{_tail(out_dir / 'rosbag_play.log')}")
            last, deadline = -1, time.monotonic() + 10.0
            while time.monotonic() < deadline:  # drain: wait until no output arrives for 1.5 s
                time.sleep(1.5)
                current = monitor.snapshot()["frames_out"]
                if current == last:
                    break
                last = current
            summary = monitor.snapshot()
            summary["frames_sent"] = frames
        finally:
            if rospy is not None:
                rospy.signal_shutdown("demo finished")
            for proc in reversed(procs):
                stop(proc)
    return summary


def print_summary(summary: Dict[str, object]) -> None:
    """The final table."""
    sent, lat, proc, det = (summary["frames_sent"], summary["latency_ms"],
                            summary["processing_ms"], summary["detect_ms"])
    skipped = sent - summary["frames_in"]
    print("\n=== admlops_ros demo summary ===")
    print(f"frames sent (bag)        {sent}")
    print(f"frames in (node)         {summary['frames_in']}  (not received: {skipped}; "
          "queue_size=1 keeps only the newest)")
    print(f"frames out (objects)     {summary['frames_out']}")
    print(f"frames dropped (node)    {summary['frames_dropped']}")
    if not summary["per_class"]:
        print("detections               none")
    for name, count in sorted(summary["per_class"].items()):
        print(f"detections {name:<13} {count}  ({count / max(summary['frames_out'], 1):.2f} per frame)")
    print(f"latency ms p50 / p95     {lat['p50']:.1f} / {lat['p95']:.1f}  (ROS time at publish - "
          "cloud stamp)")
    print(f"processing ms p50 / p95  {proc['p50']:.1f} / {proc['p95']:.1f}  (callback, wall clock)")
    print(f"detect ms p50 / p95      {det['p50']:.1f} / {det['p95']:.1f}")



def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=100, help="simulated scans in the bag")
    parser.add_argument("--rate", type=float, default=10.0, help="scan rate (Hz)")
    parser.add_argument("--engine", default="", help="engine bundle dir (default: shipped)")
    parser.add_argument("--backend", default="", help="auto | onnxruntime | openvino | tensorrt")
    parser.add_argument("--bag", type=Path, default=None, help="play this bag instead")
    args = parser.parse_args()
    interrupts.install((signal.SIGINT, signal.SIGTERM))
    try:
        summary = run(args.frames, args.rate, args.engine, args.backend, args.bag)
    except KeyboardInterrupt:
        print("\n[demo] interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    print_summary(summary)
    if summary["frames_out"] == 0:
        print("[demo] FAILED: the node published no detections", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
