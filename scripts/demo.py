#!/usr/bin/env python3
"""Demo: roscore + lidar_detection and camera_detection (default engines) + a simulated bag of
clouds, camera images, CameraInfo and the static lidar->camera tf played through them; live
lines, then both summaries."""
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

SEED0 = 50_000                # demo scenes: seeds SEED0 .. SEED0 + frames - 1
LIDAR_OBJECTS = "/detection/lidar_detector/objects"
LIDAR_STATS = "/detection/lidar_detector/stats"
CAMERA_DETECTIONS = "/detection/camera_detector/detections"
CAMERA_STATS = "/detection/camera_detector/stats"


def simulator_fingerprint() -> str:
    """Short hash of the simulator's and bag writer's source: a cached bag is reused only while
    they are the same."""
    import hashlib  # noqa: WPS433

    digest = hashlib.sha256()
    sources = sorted((REPO / "admlops_ros" / "simulation").glob("*.py"))
    sources += [REPO / "admlops_ros" / "evaluation" / name for name in ("bags.py", "camera_bags.py")]
    for source in sources:
        digest.update(source.read_bytes())
    return digest.hexdigest()[:10]


def make_bag(path: Path, frames: int, images: bool = True) -> Path:
    """Write (or reuse) a bag of simulated HDL-64E scans at 10 Hz (/points_raw, frame
    "velodyne"), with ``images`` the rendered camera images, CameraInfo and /tf_static too
    (:func:`admlops_ros.evaluation.bags.bag_from_sim`)."""
    if path.exists():
        print(f"[demo] using cached bag {path}")
        return path
    from admlops_ros.evaluation.bags import bag_from_sim  # noqa: WPS433

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    what = "scans and camera images" if images else "scans"
    print(f"[demo] simulating {frames} {what} into {path} (once, cached) ...", flush=True)
    bag_from_sim(tmp, frames, seed=SEED0, images="raw" if images else "none")
    os.replace(tmp, path)
    return path


class Monitor:
    """Collects one node's outputs (detections per class, stats) in the demo process."""

    def __init__(self, objects_topic: str, objects_type: str, stats_topic: str,
                 stats_type: str) -> None:
        import rospy  # noqa: WPS433

        from admlops_ros.ros.conversions import import_messages  # noqa: WPS433

        msgs = import_messages()
        self.lock = threading.Lock()
        self.per_class: Counter = Counter()
        self.frames_out = 0
        self.stats: List = []
        self.subs = [rospy.Subscriber(objects_topic, getattr(msgs, objects_type), self._on_objects,
                                      queue_size=100),
                     rospy.Subscriber(stats_topic, getattr(msgs, stats_type), self._on_stats,
                                      queue_size=100)]

    def _on_objects(self, msg) -> None:
        with self.lock:
            self.frames_out += 1
            if hasattr(msg, "objects"):   # DetectedObjectArray (lidar)
                self.per_class.update(o.label_name for o in msg.objects)
            else:                         # Detection2DArray (camera)
                self.per_class.update(d.class_name for d in msg.detections)

    def _on_stats(self, msg) -> None:
        with self.lock:
            self.stats.append(msg)

    def snapshot(self) -> Dict[str, object]:
        with self.lock:
            last = self.stats[-1] if self.stats else None

            def column(name: str) -> Dict[str, float]:
                return _percentiles(np.array([getattr(s, name) for s in self.stats], np.float64))
            snap = {
                "frames_in": int(last.frames_in) if last else 0,
                "frames_out": self.frames_out,
                "frames_dropped": int(last.frames_dropped) if last else 0,
                "per_class": dict(self.per_class),
                "latency_ms": column("latency_ms"),
                "processing_ms": column("processing_ms"),
                "detect_ms": column("detect_ms"),
            }
            if self.stats and hasattr(last, "num_confirmed"):
                snap["projected"] = int(sum(s.num_projected for s in self.stats))
                snap["confirmed"] = int(sum(s.num_confirmed for s in self.stats))
            return snap


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


def _launch(core: RosCore, what: str, args: List[str], log: Path, **kwargs):
    log.write_text("")
    try:
        proc = launch_detection(core, args, log, **kwargs)
    except ProcessError as exc:
        raise SystemExit(f"[demo] {what} did not start: {exc}\n{_tail(log)}")
    print(f"[demo] {what} ready (engine loaded, warmed up)", flush=True)
    return proc


def run(frames: int = 100, engine: str = "", backend: str = "", camera: bool = True,
        camera_engine: str = "", camera_backend: str = "", bag: Optional[Path] = None,
        out_dir: Path = REPO / "build" / "demo") -> Dict[str, Dict[str, object]]:
    """Run the whole demo; returns the final summaries {"lidar": ..., "camera": ...}
    (see :class:`Monitor`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # the default name carries the simulator fingerprint: a changed simulator makes a new bag
    kind = "cam" if camera else "lidar"
    default_bag = out_dir / f"sim_{frames}f_{kind}_{simulator_fingerprint()}.bag"
    bag = make_bag(bag or default_bag, frames, images=camera)
    procs = []
    rospy = None
    with RosCore(out_dir / "ros_home") as core:
        try:
            print(f"[demo] roscore at {core.uri}; starting lidar_detection"
                  f"{' and camera_detection' if camera else ''} (logs in {out_dir})", flush=True)
            args = ["use_sim_time:=true"]
            args += [f"engine:={engine}"] if engine else []
            args += [f"backend:={backend}"] if backend else []
            procs.append(_launch(core, "lidar_detection", args,
                                 out_dir / "lidar_detection.log"))
            if camera:
                # the lidar node's boxes are drawn into the image and fused (lidar->camera from
                # the bag's /tf_static, intrinsics from its CameraInfo)
                args = ["use_sim_time:=true", "camera_info_topic:=/camera/camera_info",
                        f"lidar_objects_topic:={LIDAR_OBJECTS}", "fusion:=true"]
                args += [f"engine:={camera_engine}"] if camera_engine else []
                args += [f"backend:={camera_backend}"] if camera_backend else []
                procs.append(_launch(core, "camera_detection", args,
                                     out_dir / "camera_detection.log",
                                     input_topic="/camera/image_raw", node="/camera_detection",
                                     launch_file="camera_detection.launch"))
            os.environ.update(core.env)
            import rospy  # noqa: WPS433 (after ROS_MASTER_URI is set)

            rospy.init_node("admlops_demo", anonymous=True, disable_signals=True)
            monitors = {"lidar": Monitor(LIDAR_OBJECTS, "DetectedObjectArray", LIDAR_STATS,
                                         "DetectionStats")}
            if camera:
                monitors["camera"] = Monitor(CAMERA_DETECTIONS, "Detection2DArray", CAMERA_STATS,
                                             "CameraDetectionStats")
            time.sleep(1.0)
            print(f"[demo] playing {bag.name}: {frames} frames at 10 Hz", flush=True)
            player = start(["rosbag", "play", "-q", "--clock", "-d", "1", str(bag)], core.env,
                           out_dir / "rosbag_play.log")
            procs.append(player)
            while player.poll() is None:
                time.sleep(1.0)
                for name, monitor in monitors.items():
                    print(f"[demo] {name:<6} " + _line(monitor.snapshot(), frames), flush=True)
            if player.returncode != 0:
                raise SystemExit(f"[demo] rosbag play failed:\n{_tail(out_dir / 'rosbag_play.log')}")
            last, deadline = None, time.monotonic() + 10.0
            while time.monotonic() < deadline:  # drain: wait until no output arrives for 1.5 s
                time.sleep(1.5)
                current = [m.snapshot()["frames_out"] for m in monitors.values()]
                if current == last:
                    break
                last = current
            summaries = {name: m.snapshot() for name, m in monitors.items()}
            for summary in summaries.values():
                summary["frames_sent"] = frames
        finally:
            if rospy is not None:
                rospy.signal_shutdown("demo finished")
            for proc in reversed(procs):
                stop(proc)
    return summaries


def print_summary(summary: Dict[str, object], title: str = "lidar_detection",
                  unit: str = "cloud") -> None:
    """The final table of one node."""
    sent, lat, proc, det = (summary["frames_sent"], summary["latency_ms"],
                            summary["processing_ms"], summary["detect_ms"])
    skipped = sent - summary["frames_in"]
    print(f"\n=== admlops_ros demo summary: {title} ===")
    print(f"frames sent (bag)        {sent}")
    print(f"frames in (node)         {summary['frames_in']}  (not received: {skipped}; "
          "queue_size=1 keeps only the newest)")
    print(f"frames out (detections)  {summary['frames_out']}")
    print(f"frames dropped (node)    {summary['frames_dropped']}")
    if not summary["per_class"]:
        print("detections               none")
    for name, count in sorted(summary["per_class"].items()):
        print(f"detections {name:<13} {count}  ({count / max(summary['frames_out'], 1):.2f} per frame)")
    if "confirmed" in summary:
        print(f"lidar objects in image   {summary['projected']}  (projected with /tf_static and "
              "CameraInfo)")
        print(f"confirmed by the camera  {summary['confirmed']}  (2D-3D fusion, IoU >= 0.3)")
    print(f"latency ms p50 / p95     {lat['p50']:.1f} / {lat['p95']:.1f}  (ROS time at publish - "
          f"{unit} stamp)")
    wait = ", with the wait for the lidar objects" if "confirmed" in summary else ""
    print(f"processing ms p50 / p95  {proc['p50']:.1f} / {proc['p95']:.1f}  (callback, wall "
          f"clock{wait})")
    print(f"detect ms p50 / p95      {det['p50']:.1f} / {det['p95']:.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=100, help="simulated frames in the bag")
    parser.add_argument("--engine", default="", help="lidar engine bundle dir (default: shipped)")
    parser.add_argument("--backend", default="", help="auto | onnxruntime | openvino | tensorrt")
    parser.add_argument("--no-camera", action="store_true",
                        help="lidar only (no images in the bag, no camera_detection)")
    parser.add_argument("--camera-engine", default="",
                        help="camera bundle dir (default: shipped engines/camera_sim_3class)")
    parser.add_argument("--camera-backend", default="",
                        help="auto | onnxruntime | openvino | tensorrt | mmdeploy_sdk")
    parser.add_argument("--bag", type=Path, default=None, help="play this bag instead")
    args = parser.parse_args()
    interrupts.install((signal.SIGINT, signal.SIGTERM))
    try:
        summaries = run(args.frames, args.engine, args.backend, not args.no_camera,
                        args.camera_engine, args.camera_backend, args.bag)
    except KeyboardInterrupt:
        print("\n[demo] interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    print_summary(summaries["lidar"])
    if "camera" in summaries:
        print_summary(summaries["camera"], "camera_detection", "image")
    failed = [name for name, s in summaries.items() if s["frames_out"] == 0]
    if failed:
        print(f"[demo] FAILED: no detections published by {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
