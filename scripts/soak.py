#!/usr/bin/env python3
"""Soak: roscore + lidar_detection fed 10 Hz simulated scans mixed with malformed clouds.

A private roscore and the real node (``roslaunch admlops_ros lidar_detection.launch``, shipped
default engine, backend openvino f32 unless told otherwise) run for ``--duration`` seconds. This
process publishes (a real rospy publisher) a pool of simulated 120k-point HDL-64 scans, cycled,
and every so often (``--malformed`` fraction, evenly spread, kinds in turn) a malformed cloud.
It listens to the objects, stats and /diagnostics topics and samples the node's RSS
(/proc/<pid>/status VmRSS; the pid comes from the node's XML-RPC getPid).

Targets (PASS/FAIL, exit 1 on FAIL):
  * every good cloud answered (an objects message with the cloud's stamp);
  * malformed clouds of a "drop" kind never answered, and the node's /diagnostics frames_dropped
    equals their number, each kind's reason seen in /diagnostics;
  * "empty" kinds (zero points, all points NaN/inf: the node publishes an empty array for them)
    answered with no objects;
  * node RSS growth after warm-up < 5 % (median of the first vs the last 10 % of the samples);
  * the node still runs at the end.

When outcomes are missing, the table says where they went: clouds the node's callback never got
(node frames_in < sent: rospy runs a subscriber's callback in its receive thread and, with the
node's queue_size=1, keeps only the newest message of each socket read while the callback is
busy, i.e. when processing takes longer than the 100 ms period), clouds it got but did not
answer or count, answers lost on the way back; plus the publisher's send-queue high-water mark
(rospy drops silently once it reaches queue_size), the node's CPU share and the host's load.

Run it in the ROS environment (``make soak``):
    scripts/with_ros_env.sh .venv/bin/python scripts/soak.py --duration 3600 --json build/soak.json
Every process it starts (roscore, roslaunch + node) is stopped on every exit path (Ctrl-C too).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
import traceback
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from admlops_ros import interrupts  # noqa: E402
from admlops_ros.ros.processes import (RosCore, start, stop, topic_has_subscriber,  # noqa: E402
                                       wait_for)

INPUT = "/points_raw"
OBJECTS = "/detection/lidar_detector/objects"
STATS = "/detection/lidar_detector/stats"
DIAGNOSTICS = "/diagnostics"
NODE = "/lidar_detection"
DIAG_NAME = "lidar_detection: detector"
FRAME_ID = "velodyne"
CALLER = "/admlops_soak"

DROP, EMPTY = "drop", "empty"          # what the node does with a malformed kind
RSS_GROWTH_LIMIT = 0.05                 # target: RSS growth after warm-up below 5 %
WINDOW_FRACTION = 0.10                  # RSS growth: first vs last 10 % of the samples
HUGE_WIDTH = 2 ** 32 - 1                # PointCloud2.width is uint32


# ---------------------------------------------------------------------------------------------
# inputs: the pool of good scans and the malformed kinds


def make_pool(count: int, num_points: int, seed: int = 70_000) -> List[np.ndarray]:
    """``count`` distinct simulated HDL-64 scans with exactly ``num_points`` points ((N, 4) f32)."""
    from admlops_ros.simulation import simulate_frame  # noqa: WPS433

    rng = np.random.default_rng(seed)
    pool = []
    for i in range(count):
        pts = simulate_frame(seed + i).points
        idx = rng.choice(len(pts), num_points, replace=len(pts) < num_points)
        scan = pts[np.sort(idx)].astype(np.float32)
        if len(pts) < num_points:  # repeated points get a little jitter
            scan[:, :3] += rng.normal(0, 0.01, (num_points, 3)).astype(np.float32)
        pool.append(np.ascontiguousarray(scan))
    return pool


@dataclass
class Kind:
    """One malformed-cloud kind.

    Attributes:
        name: short id (JSON key).
        expect: DROP (no answer, counted in the node's frames_dropped) or EMPTY (answered with an
            empty object array).
        pattern: text the node's diagnostic (message or last_error) must contain at least once;
            None when the node reports nothing for it.
        what: one-line description.
        msg: the prebuilt sensor_msgs/PointCloud2 (header set when published).
    """

    name: str
    expect: str
    pattern: Optional[str]
    what: str
    msg: Any


def _fields(msg: Any) -> List[Any]:
    """Copies of ``msg``'s PointFields (editing them leaves ``msg`` alone)."""
    return [type(f)(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count)
            for f in msg.fields]


def _clone(msg: Any, **changes: Any) -> Any:
    """A new PointCloud2 like ``msg`` (own header and field list) with ``changes`` applied."""
    values = dict(height=msg.height, width=msg.width, fields=_fields(msg),
                  is_bigendian=msg.is_bigendian, point_step=msg.point_step,
                  row_step=msg.row_step, data=msg.data, is_dense=msg.is_dense)
    values.update(changes)
    out = type(msg)(**values)
    out.header.frame_id = FRAME_ID
    return out


def build_malformed(good: Sequence[np.ndarray], max_points: int) -> List[Kind]:
    """The malformed kinds, each built once from the good scans (x, y, z, intensity float32).

    ``max_points`` is the node's ~max_points: "too many points" sends max_points + 1 real points.
    What the node does with each (DROP / EMPTY) follows admlops_ros/ros/node.py and
    admlops_ros/lidar/pointcloud.py (convert_pointcloud2).
    """
    from admlops_ros.lidar.pointcloud import array_to_pointcloud2  # noqa: WPS433

    base = array_to_pointcloud2(good[0])
    n, step = int(base.width), int(base.point_step)
    nbytes = len(base.data)
    kinds: List[Kind] = []

    def add(name: str, expect: str, pattern: Optional[str], what: str, msg: Any) -> None:
        kinds.append(Kind(name, expect, pattern, what, msg))

    add("missing_x", DROP, "no 'x' field", "fields y, z, intensity only",
        _clone(base, fields=[f for f in _fields(base) if f.name != "x"]))
    add("missing_intensity", DROP, "no 'intensity' field",
        "x, y, z only (~intensity_mode error, the default)",
        _clone(base, fields=[f for f in _fields(base) if f.name != "intensity"]))
    fields = _fields(base)
    fields[0].datatype = 0
    add("unknown_datatype", DROP, "field 'x' has unknown PointField datatype 0",
        "x has datatype 0",
        _clone(base, fields=fields))
    fields = _fields(base)
    fields[0].datatype = 8  # FLOAT64: 8 bytes at offset 0 runs into y at offset 4
    add("float64_overlap", DROP, "fields 'x' and 'y' overlap",
        "x declared FLOAT64 over float32 data",
        _clone(base, fields=fields))
    fields = _fields(base)
    fields[3].count = 2
    add("vector_field", DROP, "field 'intensity' (offset 12, 8 bytes) lies outside",
        "intensity count 2 (8 bytes) past point_step 16",
        _clone(base, fields=fields))
    add("truncated", DROP, f"cloud data has {nbytes - 10} bytes",
        "len(data) = row_step * height - 10", _clone(base, data=base.data[:-10]))
    add("data_too_long", DROP, f"cloud data has {nbytes + step} bytes",
        "one point's worth of bytes too many", _clone(base, data=base.data + bytes(step)))
    add("point_step_small", DROP, "lies outside point_step 12",
        "point_step 12 < the 16 bytes of the fields",
        _clone(base, point_step=12, row_step=12 * n, data=base.data[:12 * n]))
    add("row_step_small", DROP, f"row_step {step * n - 4} is smaller",
        "row_step < width * point_step", _clone(base, row_step=step * n - 4))
    fields = _fields(base)
    fields[3].name = "x"
    add("duplicate_field", DROP, "two fields named 'x'", "fields x, y, z, x",
        _clone(base, fields=fields))
    big = np.concatenate(list(good) * (max_points // n + 1))[: max_points + 1]
    add("too_many_points", DROP, f"cloud has {max_points + 1} points",
        f"{max_points + 1} real points > ~max_points", array_to_pointcloud2(big))
    add("huge_width_over_max", DROP, f"cloud has {HUGE_WIDTH} points",
        "width 2^32-1, 64 bytes of data",
        _clone(base, width=HUGE_WIDTH, row_step=0, data=base.data[:64]))
    add("huge_width_tiny_data", DROP, "cloud data has 64 bytes",
        f"width {max_points} (= ~max_points), 64 bytes of data",
        _clone(base, width=max_points, row_step=step * max_points, data=base.data[:64]))
    nan = np.tile(np.array([[np.nan, 1, 1, 1], [np.inf, 1, 1, 1], [1, -np.inf, 1, 1],
                            [1, 1, np.nan, 1]], np.float32), (n // 4, 1))
    add("nan_inf_payload", EMPTY, "are NaN/inf", f"{len(nan)} points, every one NaN or inf",
        array_to_pointcloud2(nan))
    add("zero_points", EMPTY, None, "width 0, no data",
        _clone(base, width=0, row_step=0, data=b""))
    add("zero_height_with_data", DROP, "0 points", "height 0, width and data of a full scan",
        _clone(base, height=0))
    for kind in kinds:
        kind.msg.header.frame_id = FRAME_ID
    return kinds


def is_malformed(index: int, fraction: float) -> bool:
    """Message ``index`` (0-based) is malformed: ``fraction`` of the messages, evenly spread."""
    return math.floor((index + 1) * fraction) > math.floor(index * fraction)


# ---------------------------------------------------------------------------------------------
# figures (pure functions)


def percentile(values: Sequence[float], q: float) -> float:
    """``q``-th percentile of the finite ``values`` (nan when there are none)."""
    arr = np.asarray([v for v in values if math.isfinite(v)], np.float64)
    return float(np.percentile(arr, q)) if arr.size else float("nan")


def effective_warmup(duration: float, warmup: float) -> float:
    """The warm-up excluded from the RSS growth: ``warmup`` s, or the first 10 % of short runs."""
    return min(float(warmup), WINDOW_FRACTION * float(duration))


def rss_growth(samples: Sequence[Tuple[float, float]], warmup: float) -> Dict[str, float]:
    """RSS growth after warm-up from (seconds since start, MiB) samples.

    The samples at or after ``warmup`` span [t0, t1]; growth = median of those in the last 10 %
    of that span / median of those in the first 10 % - 1 (each window holds >= 1 sample).

    Returns:
        dict growth (fraction; nan with fewer than 2 samples after warm-up), first_mib, last_mib,
        first_n, last_n (samples in each window).
    """
    after = sorted((t, r) for t, r in samples if t >= warmup)
    nan = float("nan")
    if len(after) < 2:
        return {"growth": nan, "first_mib": nan, "last_mib": nan, "first_n": 0, "last_n": 0}
    t0, t1 = after[0][0], after[-1][0]
    win = WINDOW_FRACTION * (t1 - t0)
    first = [r for t, r in after if t <= t0 + win] or [after[0][1]]
    last = [r for t, r in after if t >= t1 - win] or [after[-1][1]]
    first_mib, last_mib = float(np.median(first)), float(np.median(last))
    return {"growth": last_mib / first_mib - 1.0, "first_mib": first_mib, "last_mib": last_mib,
            "first_n": len(first), "last_n": len(last)}


# ---------------------------------------------------------------------------------------------
# the node's process


def node_pid(master_uri: str, node: str = NODE) -> int:
    """The node's pid: master lookupNode, then the node's own XML-RPC getPid."""
    code, msg, uri = xmlrpc.client.ServerProxy(master_uri).lookupNode(CALLER, node)
    if code != 1:
        raise RuntimeError(f"master does not know {node}: {msg}")
    code, msg, pid = xmlrpc.client.ServerProxy(uri).getPid(CALLER)
    if code != 1:
        raise RuntimeError(f"{node} getPid failed: {msg}")
    return int(pid)


def parent_pid(pid: int) -> int:
    """PPid of ``pid`` (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (all its threads) in seconds (nan when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def publisher_backlog(pub: Any) -> int:
    """Messages waiting in ``pub``'s per-connection send queues (rospy internals; 0 if unknown).

    rospy drops the oldest silently once a queue holds queue_size messages: a high-water mark
    below queue_size proves that no cloud was lost on the publisher's side.
    """
    try:
        return max([len(getattr(c, "_queue", ())) for c in pub.impl.connections] or [0])
    except (AttributeError, TypeError):
        return 0


def rss_mib(pid: int) -> float:
    """VmRSS of ``pid`` in MiB (nan when the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    return float("nan")


class RssSampler(threading.Thread):
    """Samples ``pid``'s RSS every ``interval`` s: (seconds since ``t0``, MiB)."""

    def __init__(self, pid: int, interval: float, t0: float) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid, self.interval, self.t0 = pid, float(interval), t0
        self.samples: List[Tuple[float, float]] = []
        self.load: List[Tuple[float, float]] = []   # host 1-min load average (other work here)
        self.lock = threading.Lock()
        self._stop_event = threading.Event()

    def sample(self) -> float:
        value = rss_mib(self.pid)
        now = time.monotonic() - self.t0
        try:
            load1 = float(Path("/proc/loadavg").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            load1 = float("nan")
        with self.lock:
            if math.isfinite(value):
                self.samples.append((now, value))
            self.load.append((now, load1))
        return value

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.sample()

    def finish(self) -> List[Tuple[float, float]]:
        self._stop_event.set()
        self.join(timeout=5.0)
        self.sample()
        with self.lock:
            return list(self.samples)


# ---------------------------------------------------------------------------------------------
# listening to the node


def _key(stamp: Any) -> Tuple[int, int]:
    return int(stamp.secs), int(stamp.nsecs)


class Recorder:
    """The node's answers (objects by input stamp), its stats and its /diagnostics statuses."""

    def __init__(self) -> None:
        import rospy  # noqa: WPS433
        from diagnostic_msgs.msg import DiagnosticArray  # noqa: WPS433

        from admlops_ros.ros.conversions import import_messages  # noqa: WPS433

        msgs = import_messages()
        self.lock = threading.Lock()
        self.answers: Dict[Tuple[int, int], Tuple[float, int]] = {}   # stamp -> (t_recv, objects)
        self.duplicates = 0
        self.stats: List[Tuple[float, float]] = []                     # (processing, detect) ms
        self.diag_texts: List[str] = []                                # distinct message/last_error
        self._diag_seen = set()
        self.diag_values: Dict[str, str] = {}                          # the newest status values
        self.diag_levels: Dict[int, int] = {}
        self.diag_count = 0
        self.subs = [
            rospy.Subscriber(OBJECTS, msgs.DetectedObjectArray, self._on_objects,
                             queue_size=1000),
            rospy.Subscriber(STATS, msgs.DetectionStats, self._on_stats, queue_size=1000),
            rospy.Subscriber(DIAGNOSTICS, DiagnosticArray, self._on_diag, queue_size=1000),
        ]

    def _on_objects(self, msg: Any) -> None:
        now = time.time()
        with self.lock:
            key = _key(msg.header.stamp)
            if key in self.answers:
                self.duplicates += 1
            self.answers[key] = (now, len(msg.objects))

    def _on_stats(self, msg: Any) -> None:
        with self.lock:
            self.stats.append((float(msg.processing_ms), float(msg.detect_ms)))

    def _on_diag(self, msg: Any) -> None:
        for status in msg.status:
            if status.name != DIAG_NAME:
                continue
            values = {kv.key: kv.value for kv in status.values}
            with self.lock:
                self.diag_count += 1
                self.diag_values = values
                self.diag_levels[int(status.level)] = self.diag_levels.get(int(status.level), 0) + 1
                for text in (status.message, values.get("last_error", "")):
                    if text and text not in self._diag_seen:
                        self._diag_seen.add(text)
                        self.diag_texts.append(text)

    def answered(self, key: Tuple[int, int]) -> bool:
        with self.lock:
            return key in self.answers

    def node_counter(self, name: str) -> int:
        """A counter from the newest /diagnostics status (-1 when none arrived)."""
        with self.lock:
            try:
                return int(self.diag_values.get(name, -1))
            except ValueError:
                return -1


# ---------------------------------------------------------------------------------------------
# the run


@dataclass
class Sent:
    """One published cloud."""

    key: Tuple[int, int]
    t_pub: float            # time.time() at the stamp
    kind: str               # "good" or a malformed kind's name


def _write_config(path: Path, max_points: int) -> Path:
    """The shipped node config with ~max_points replaced (the soak's own copy)."""
    import yaml  # noqa: WPS433

    from admlops_ros.ros.params import load_defaults  # noqa: WPS433

    values = load_defaults()
    values["max_points"] = int(max_points)
    path.write_text("# written by scripts/soak.py: config/lidar_detection.yaml with max_points "
                    f"{max_points}\n" + yaml.safe_dump(values, sort_keys=False))
    return path


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""



def run(args: argparse.Namespace) -> Dict[str, Any]:
    """Start roscore + node, publish for ``args.duration`` s, collect; returns the result dict."""
    from admlops_ros.lidar.pointcloud import array_to_pointcloud2  # noqa: WPS433

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_setup = time.monotonic()
    print(f"[soak] simulating {args.pool} scans of {args.points} points ...", flush=True)
    pool = make_pool(args.pool, args.points)
    good_msgs = [array_to_pointcloud2(p) for p in pool]
    for msg in good_msgs:
        msg.header.frame_id = FRAME_ID
    max_points = args.max_points
    kinds = build_malformed(pool, max_points) if args.malformed > 0 else []
    if args.kinds:
        wanted = set(args.kinds.split(","))
        kinds = [k for k in kinds if k.name in wanted]
    config = _write_config(out_dir / "lidar_detection_soak.yaml", max_points)
    launch_args = [f"config:={config}", f"backend:={args.backend}",
                   f"precision:={args.precision}"] + (
        [f"engine:={args.engine}"] if args.engine else [])
    node_log = out_dir / "lidar_detection.log"
    node_log.write_text("")
    rospy = None
    node_proc = None
    sampler: Optional[RssSampler] = None
    interrupted = ""
    # not `with RosCore(...)` nor processes.launch_detection: both clean up on Exception only, so
    # a Ctrl-C (KeyboardInterrupt) while they wait would leave roscore / roslaunch running
    core = RosCore(out_dir / "ros_home")
    try:
        core.start()
        print(f"[soak] roscore at {core.uri}; starting lidar_detection "
              f"({' '.join(launch_args)}; log {node_log})", flush=True)
        node_proc = start(["roslaunch", "--wait", "admlops_ros", "lidar_detection.launch",
                           *launch_args], core.env, node_log)
        try:
            wait_for(lambda: topic_has_subscriber(core.uri, INPUT, NODE), args.start_timeout,
                     f"lidar_detection (log {node_log})", node_proc, poll_s=0.2)
        except Exception as exc:
            raise RuntimeError(f"{exc}\n{_tail(node_log)}") from exc
        pid = node_pid(core.uri)
        launcher_child = parent_pid(pid) == node_proc.pid
        print(f"[soak] node ready after {time.monotonic() - t_setup:.1f} s; pid {pid}"
              f"{' (child of roslaunch)' if launcher_child else ''}", flush=True)
        os.environ.update(core.env)
        import rospy  # noqa: WPS433 (after ROS_MASTER_URI is set)
        from sensor_msgs.msg import PointCloud2  # noqa: WPS433

        rospy.init_node(CALLER.strip("/"), anonymous=True, disable_signals=True)
        rec = Recorder()
        pub = rospy.Publisher(INPUT, PointCloud2, queue_size=args.queue_size)
        deadline = time.monotonic() + 10.0
        while pub.get_num_connections() == 0 or not all(sub.get_num_connections()
                                                         for sub in rec.subs):
            if time.monotonic() > deadline:
                raise RuntimeError("the node did not connect to the soak's topics in 10 s")
            time.sleep(0.05)
        time.sleep(0.5)

        sent: List[Sent] = []
        publish_ms: List[float] = []
        late_ms: List[float] = []
        period = 1.0 / args.rate
        total = int(round(args.duration * args.rate))
        t0 = time.monotonic()
        sampler = RssSampler(pid, args.rss_interval, t0)
        rss_start = sampler.sample()
        cpu0 = (cpu_seconds(pid), cpu_seconds(os.getpid()))
        backlog_max = 0
        sampler.start()
        next_progress = args.progress
        good_i = bad_i = 0
        try:
            for i in range(total):
                target = t0 + i * period
                delay = target - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                late_ms.append(max(0.0, time.monotonic() - target) * 1e3)
                if kinds and is_malformed(i, args.malformed):
                    kind = kinds[bad_i % len(kinds)]
                    bad_i += 1
                    msg, name = kind.msg, kind.name
                else:
                    msg, name = good_msgs[good_i % len(good_msgs)], "good"
                    good_i += 1
                t_pub = time.time()
                msg.header.stamp = rospy.Time.from_sec(t_pub)
                tp = time.perf_counter()
                pub.publish(msg)
                publish_ms.append((time.perf_counter() - tp) * 1e3)
                backlog_max = max(backlog_max, publisher_backlog(pub))
                sent.append(Sent(_key(msg.header.stamp), t_pub, name))
                if node_proc.poll() is not None:
                    raise RuntimeError(f"roslaunch exited with code {node_proc.returncode}:\n"
                                       f"{_tail(node_log)}")
                elapsed = time.monotonic() - t0
                if args.progress and elapsed >= next_progress:
                    next_progress += args.progress
                    good = [s for s in sent if s.kind == "good"]
                    got = sum(1 for s in good if rec.answered(s.key))
                    print(f"[soak] {elapsed:6.0f} s  sent {len(sent)} (good {len(good)}, "
                          f"answered {got})  node frames_in "
                          f"{rec.node_counter('frames_in')} dropped "
                          f"{rec.node_counter('frames_dropped')}  RSS "
                          f"{rss_mib(pid):.1f} MiB", flush=True)
        except KeyboardInterrupt as exc:
            interrupted = str(exc) or "KeyboardInterrupt"
            print(f"\n[soak] interrupted ({interrupted}); reporting what ran", flush=True)
        run_s = time.monotonic() - t0
        cpu1 = (cpu_seconds(pid), cpu_seconds(os.getpid()))
        # drain: every answer in (or nothing new for a while), then a diagnostics status
        # that has seen every cloud
        expect_answer = [s for s in sent if s.kind == "good" or
                         any(k.name == s.kind and k.expect == EMPTY for k in kinds)]
        deadline = time.monotonic() + (min(args.drain, 2.0) if interrupted else args.drain)
        while time.monotonic() < deadline:
            if all(rec.answered(s.key) for s in expect_answer[-50:]) and \
                    rec.node_counter("frames_in") >= len(sent):
                break
            time.sleep(0.1)
        deadline = time.monotonic() + (0.0 if interrupted else 3.0)
        seen = rec.diag_count
        while time.monotonic() < deadline and rec.diag_count <= seen:
            time.sleep(0.05)  # one more (1 Hz) status after the drain
        rss_samples = sampler.finish()
        node_alive = node_proc.poll() is None and math.isfinite(rss_mib(pid))
        result = summarize(args, kinds, sent, rec, rss_samples, rss_start, publish_ms,
                           late_ms, run_s, node_alive, max_points)
        load = [v for _, v in sampler.load]
        result["host"] = {"cpus": os.cpu_count(), "load1_median": percentile(load, 50),
                          "load1_max": max(load) if load else float("nan")}
        result["publisher"].update(queue_size=args.queue_size, queue_high_water=backlog_max)
        result["cpu"] = {"node_percent": 100.0 * (cpu1[0] - cpu0[0]) / run_s,
                         "soak_percent": 100.0 * (cpu1[1] - cpu0[1]) / run_s}
        result["interrupted"] = interrupted
        result["node_pid"] = pid
        result["node_pid_child_of_roslaunch"] = launcher_child
        return result
    finally:
        # a second Ctrl-C / SIGTERM must not cut the clean-up short
        previous = {sig: signal.signal(sig, signal.SIG_IGN)
                    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            if sampler is not None and sampler.is_alive():
                sampler.finish()
            if rospy is not None:
                rospy.signal_shutdown("soak finished")
            stop(node_proc)
            core.close()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def summarize(args: argparse.Namespace, kinds: Sequence[Kind], sent: Sequence[Sent],
              rec: Recorder, rss_samples: List[Tuple[float, float]], rss_start: float,
              publish_ms: List[float], late_ms: List[float], run_s: float, node_alive: bool,
              max_points: int) -> Dict[str, Any]:
    """Counts, RSS, latency and the targets as a JSON-able dict."""
    with rec.lock:
        answers = dict(rec.answers)
        stats = list(rec.stats)
        diag_texts = list(rec.diag_texts)
        diag_values = dict(rec.diag_values)
        diag_levels = {str(k): v for k, v in rec.diag_levels.items()}
        duplicates = rec.duplicates
    by_name = {k.name: k for k in kinds}
    good = [s for s in sent if s.kind == "good"]
    good_answered = [s for s in good if s.key in answers]
    latency = [(answers[s.key][0] - s.t_pub) * 1e3 for s in good_answered]
    per_kind: Dict[str, Dict[str, Any]] = {}
    for kind in kinds:
        mine = [s for s in sent if s.kind == kind.name]
        got = [answers[s.key] for s in mine if s.key in answers]
        seen = (None if kind.pattern is None
                else any(kind.pattern in text for text in diag_texts))
        # as_expected: how the node treated the clouds it got (a cloud it never got is counted
        # in "unanswered" for EMPTY kinds and in the frames_dropped shortfall for DROP kinds)
        if not mine:
            ok = True  # (a short or interrupted run)
        elif kind.expect == DROP:
            ok = not got and bool(seen)
        else:
            ok = all(n == 0 for _, n in got) and seen is not False
        per_kind[kind.name] = {
            "what": kind.what, "expect": kind.expect, "pattern": kind.pattern, "sent": len(mine),
            "answered": len(got), "answered_nonempty": sum(1 for _, n in got if n),
            "unanswered": len(mine) - len(got) if kind.expect == EMPTY else None,
            "seen_in_diagnostics": seen, "as_expected": bool(ok)}
    bad = [s for s in sent if s.kind != "good"]
    bad_drop = sum(1 for s in bad if by_name[s.kind].expect == DROP)
    bad_answered_unexpected = sum(
        v["answered"] if v["expect"] == DROP else v["answered_nonempty"]
        for v in per_kind.values())
    empty_answered = sum(v["answered"] for v in per_kind.values() if v["expect"] == EMPTY)
    empty_unanswered = sum(v["unanswered"] for v in per_kind.values() if v["expect"] == EMPTY)

    def counter(name: str) -> int:
        try:
            return int(diag_values.get(name, -1))
        except ValueError:
            return -1

    node_in, node_out = counter("frames_in"), counter("frames_out")
    node_dropped, node_failures = counter("frames_dropped"), counter("failures")
    # where the missing outcomes went: clouds the node's callback never saw (rospy keeps only
    # the newest queue_size=1 message per read while the callback runs) vs clouds it saw
    never_delivered = len(sent) - node_in if node_in >= 0 else -1
    missing = (len(good) - len(good_answered)) + empty_unanswered + (bad_drop - node_dropped)
    accounting = {
        "never_delivered_to_callback": never_delivered,
        "missing_outcomes": missing,
        "received_without_outcome": node_in - node_out - node_dropped,
        "answers_lost_on_the_way_back": node_out - len(good_answered) - empty_answered,
        "all_missing_never_delivered": (never_delivered == missing
                                        and node_in == node_out + node_dropped
                                        and node_out == len(good_answered) + empty_answered),
    }
    warmup = effective_warmup(run_s, args.warmup)
    growth = rss_growth(rss_samples, warmup)
    rss_values = [r for _, r in rss_samples]
    targets = {
        "answered_all_good": {
            "text": "answered == sent (good clouds)",
            "value": f"{len(good_answered)} / {len(good)}",
            "pass": len(good) > 0 and len(good_answered) == len(good)},
        "malformed_dropped_and_reported": {
            "text": "malformed: drop kinds never answered, node frames_dropped == their number, "
                    "reasons in /diagnostics; empty kinds answered with no objects",
            "value": f"frames_dropped {node_dropped} / {bad_drop}; kinds "
                     f"{sum(1 for v in per_kind.values() if v['as_expected'] and v['sent'])}"
                     f"/{sum(1 for v in per_kind.values() if v['sent'])} as expected",
            "pass": (node_dropped == bad_drop and node_failures == 0 and empty_unanswered == 0
                     and all(v["as_expected"] for v in per_kind.values()))},
        "rss_growth": {
            "text": f"RSS growth after warm-up < {RSS_GROWTH_LIMIT:.0%}",
            "value": f"{growth['growth'] * 100:+.2f} %",
            "pass": math.isfinite(growth["growth"]) and growth["growth"] < RSS_GROWTH_LIMIT},
        "node_alive": {"text": "node still running at the end", "value": str(node_alive),
                       "pass": bool(node_alive)},
    }
    return {
        "config": {
            "duration_s": args.duration, "rate_hz": args.rate, "malformed_fraction": args.malformed,
            "points": args.points, "pool": args.pool, "engine": args.engine or "(shipped default)",
            "backend": args.backend, "precision": args.precision, "max_points": max_points,
            "publisher_queue_size": args.queue_size, "rss_interval_s": args.rss_interval,
            "warmup_s": warmup},
        "run_s": run_s,
        "sent_total": len(sent),
        "good": {"sent": len(good), "answered": len(good_answered),
                 "dropped": len(good) - len(good_answered)},
        "malformed": {"sent": len(bad), "drop_kind_sent": bad_drop,
                      "empty_kind_sent": len(bad) - bad_drop,
                      "answered_unexpectedly": bad_answered_unexpected,
                      "empty_kind_unanswered": empty_unanswered,
                      "kinds_seen_in_diagnostics": sum(1 for v in per_kind.values()
                                                       if v["seen_in_diagnostics"]),
                      "kinds_with_pattern": sum(1 for v in per_kind.values()
                                                if v["pattern"] is not None)},
        "per_kind": per_kind,
        "accounting": accounting,
        "node": {"frames_in": node_in, "frames_out": node_out, "frames_dropped": node_dropped,
                 "failures": node_failures, "diagnostic_levels": diag_levels,
                 "duplicate_answers": duplicates,
                 "processing_ms_p50": percentile([p for p, _ in stats], 50),
                 "processing_ms_p95": percentile([p for p, _ in stats], 95),
                 "detect_ms_p50": percentile([d for _, d in stats], 50),
                 "detect_ms_p95": percentile([d for _, d in stats], 95)},
        "diagnostic_texts": diag_texts[:200],
        "latency_ms_p50": percentile(latency, 50),
        "latency_ms_p95": percentile(latency, 95),
        "latency_ms_max": max(latency) if latency else float("nan"),
        "publisher": {"publish_ms_p50": percentile(publish_ms, 50),
                      "publish_ms_max": max(publish_ms) if publish_ms else float("nan"),
                      "late_ms_p95": percentile(late_ms, 95),
                      "late_ms_max": max(late_ms) if late_ms else float("nan")},
        "rss": {"start_mib": rss_start, "max_mib": max(rss_values) if rss_values else float("nan"),
                "end_mib": rss_values[-1] if rss_values else float("nan"),
                "growth": growth["growth"], "first_window_mib": growth["first_mib"],
                "last_window_mib": growth["last_mib"], "first_window_n": growth["first_n"],
                "last_window_n": growth["last_n"], "samples": rss_samples},
        "targets": targets,
        "pass": all(t["pass"] for t in targets.values()),
    }


def print_table(res: Dict[str, Any]) -> None:
    """The result as a table plus PASS/FAIL lines."""
    cfg, good, bad, node, rss, pub = (res["config"], res["good"], res["malformed"], res["node"],
                                      res["rss"], res["publisher"])
    print(f"\n=== soak: lidar_detection ({cfg['backend']} {cfg['precision']}), "
          f"{cfg['rate_hz']:g} Hz x {res['run_s']:.0f} s, {cfg['malformed_fraction']:.0%} "
          f"malformed, {cfg['points']}-point scans ===")
    acc = res["accounting"]
    rows = [
        ("good clouds: sent / answered / dropped",
         f"{good['sent']} / {good['answered']} / {good['dropped']}"),
        ("malformed: sent (drop kinds + empty-answer kinds)",
         f"{bad['sent']} ({bad['drop_kind_sent']} + {bad['empty_kind_sent']})"),
        ("malformed: drops reported in /diagnostics (frames_dropped)",
         f"{node['frames_dropped']} / {bad['drop_kind_sent']}"),
        ("malformed: kinds whose reason /diagnostics showed",
         f"{bad['kinds_seen_in_diagnostics']} / {bad['kinds_with_pattern']}"),
        ("malformed: empty-kind clouds answered (no objects)",
         f"{bad['empty_kind_sent'] - bad['empty_kind_unanswered']} / {bad['empty_kind_sent']}"),
        ("malformed: unexpected answers", f"{bad['answered_unexpectedly']}"),
        ("node: frames_in / out / dropped / failures",
         f"{node['frames_in']} / {node['frames_out']} / {node['frames_dropped']} / "
         f"{node['failures']}"),
        ("clouds never delivered to the node's callback",
         f"{acc['never_delivered_to_callback']} (of {acc['missing_outcomes']} missing outcomes"
         f"{'' if acc['all_missing_never_delivered'] else '; the rest NOT explained by it'})"),
        ("RSS MiB start / max / end",
         f"{rss['start_mib']:.1f} / {rss['max_mib']:.1f} / {rss['end_mib']:.1f}"),
        (f"RSS growth after {cfg['warmup_s']:.0f} s warm-up (median "
         f"{rss['first_window_n']} vs {rss['last_window_n']} samples)",
         f"{rss['growth'] * 100:+.2f} % ({rss['first_window_mib']:.1f} -> "
         f"{rss['last_window_mib']:.1f})"),
        ("latency ms p50 / p95 / max (stamp -> answer here)",
         f"{res['latency_ms_p50']:.1f} / {res['latency_ms_p95']:.1f} / "
         f"{res['latency_ms_max']:.1f}"),
        ("node processing ms p50 / p95",
         f"{node['processing_ms_p50']:.1f} / {node['processing_ms_p95']:.1f}"),
        ("publisher: publish() ms p50 / max; late p95 / max",
         f"{pub['publish_ms_p50']:.1f} / {pub['publish_ms_max']:.1f}; "
         f"{pub['late_ms_p95']:.1f} / {pub['late_ms_max']:.1f}"),
    ]
    if "queue_high_water" in pub:
        rows.append(("publisher: send-queue high-water mark / queue_size",
                     f"{pub['queue_high_water']} / {pub['queue_size']}"))
    if "cpu" in res:
        rows.append(("CPU % (of one core): node / this soak process",
                     f"{res['cpu']['node_percent']:.0f} / {res['cpu']['soak_percent']:.0f}"))
    if "host" in res:
        host = res["host"]
        rows.append(("host: CPUs; 1-min load average median / max",
                     f"{host['cpus']}; {host['load1_median']:.2f} / {host['load1_max']:.2f}"))
    for name, value in rows:
        print(f"{name:<58} {value}")
    if res["per_kind"]:
        print(f"\n{'malformed kind':<24} {'expect':<6} {'sent':>5} {'answered':>8} "
              f"{'in diag':>7}  treatment")
        for name, v in res["per_kind"].items():
            seen = "-" if v["seen_in_diagnostics"] is None else (
                "yes" if v["seen_in_diagnostics"] else "NO")
            lost = f" ({v['unanswered']} never answered)" if v["unanswered"] else ""
            print(f"{name:<24} {v['expect']:<6} {v['sent']:>5} {v['answered']:>8} {seen:>7}  "
                  f"{'as expected' if v['as_expected'] else 'UNEXPECTED'}{lost}")
    print()
    for target in res["targets"].values():
        print(f"{'PASS' if target['pass'] else 'FAIL'}  {target['text']}: {target['value']}")
    verdict = "PASS" if res["pass"] else "FAIL"
    if res.get("interrupted"):
        print(f"soak: INTERRUPTED ({res['interrupted']}) after {res['run_s']:.0f} s; what ran: "
              f"{verdict}")
    else:
        print(f"soak: {verdict}")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=3600.0, help="seconds of publishing")
    parser.add_argument("--rate", type=float, default=10.0, help="clouds per second (Hz)")
    parser.add_argument("--malformed", type=float, default=0.1,
                        help="fraction of the clouds that are malformed (0 = none)")
    parser.add_argument("--kinds", default="", help="only these malformed kinds (comma list)")
    parser.add_argument("--points", type=int, default=120_000, help="points per good scan")
    parser.add_argument("--pool", type=int, default=20, help="distinct simulated scans, cycled")
    parser.add_argument("--engine", default="", help="engine bundle dir (default: shipped)")
    parser.add_argument("--backend", default="openvino",
                        help="auto | onnxruntime | openvino | tensorrt")
    parser.add_argument("--precision", default="f32", help="f32 | bf16 | f16")
    parser.add_argument("--max-points", type=int, default=250_000,
                        help="the node's ~max_points for the soak (the 'too many points' cloud "
                             "has one more; the shipped 2000000 would make it a 32 MB message)")
    parser.add_argument("--queue-size", type=int, default=100, help="publisher queue_size")
    parser.add_argument("--rss-interval", type=float, default=10.0, help="RSS sample period (s)")
    parser.add_argument("--warmup", type=float, default=60.0,
                        help="RSS warm-up excluded from the growth (s; at most 10%% of the run)")
    parser.add_argument("--start-timeout", type=float, default=300.0,
                        help="max seconds for the node to load the engine and subscribe")
    parser.add_argument("--drain", type=float, default=10.0,
                        help="max seconds to wait for the last answers")
    parser.add_argument("--progress", type=float, default=60.0,
                        help="print a progress line every this many seconds (0 = never)")
    parser.add_argument("--out-dir", type=Path, default=REPO / "build" / "soak",
                        help="logs (roscore, node) and the soak's node config")
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    args = parser.parse_args(argv)
    if not 0.0 <= args.malformed < 1.0:
        parser.error("--malformed must be in [0, 1)")
    if args.duration <= 0 or args.rate <= 0 or args.rss_interval <= 0:
        parser.error("--duration, --rate and --rss-interval must be > 0")
    if args.max_points <= args.points:
        parser.error("--max-points must be above --points (the good scans must pass)")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    # SIGINT too: a shell starting the soak in the background (`... &`) leaves it ignored
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if sig != signal.SIGHUP or signal.getsignal(sig) != signal.SIG_IGN:  # nohup keeps it
            signal.signal(sig, interrupts.raise_keyboard_interrupt)
    try:
        result = run(args)
    except KeyboardInterrupt:
        print("\n[soak] interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    except Exception as exc:  # the node did not start or died: nothing to report
        traceback.print_exc()
        print(f"[soak] FAIL: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print_table(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"[soak] wrote {args.json}")
    if result.get("interrupted"):
        return 130
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
