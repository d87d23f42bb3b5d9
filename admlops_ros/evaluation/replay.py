"""Replay a bag through the detector: offline (in process) or online (roscore + node + rosbag play)."""
from __future__ import annotations

import logging
import math
import os
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from admlops_ros.errors import AdmlopsError
from admlops_ros.evaluation import fov as fov_filter
from admlops_ros.evaluation.bags import BagFrame, BagSummary, read_bag
from admlops_ros.evaluation.frames import FrameGT, FramePred
from admlops_ros.evaluation.metrics import evaluate
from admlops_ros.evaluation.protocol import EvalConfig
from admlops_ros.evaluation.results import EvalResult
from admlops_ros.evaluation.rosbag_io import write_indexed_copy

LOG = logging.getLogger(__name__)

OBJECTS_TOPIC = "/detection/lidar_detector/objects"
STATS_TOPIC = "/detection/lidar_detector/stats"
NODE_NAME = "/lidar_detection"
BEV_SAMPLES = 4  # frames kept (subsampled points) for the report's BEV images
BEV_POINTS = 30000
TAIL_WAIT_S = 3.0  # wait this long after the last cloud for late detections (online)
NODE_READY_TIMEOUT_S = 120.0


class ReplayError(AdmlopsError):
    """The replay could not run (engine, backend, ROS processes); the message says which."""


def parse_backend(spec: str) -> Tuple[str, Dict[str, str]]:
    """``openvino-bf16`` -> ("openvino", {"precision": "bf16"}); ``onnxruntime`` -> (it, {})."""
    name, _, precision = spec.partition("-")
    return name, ({"precision": precision} if precision else {})


@dataclass
class FrameRecord:
    """What happened to one cloud of the bag.

    Attributes:
        index, stamp_ns: position and header stamp of the cloud.
        num_points: points decoded (0 when the cloud could not be decoded).
        has_gt: ground truth with this stamp exists.
        detected: a detection result exists (offline: detector ran; online: message received).
        num_detections: boxes in the result.
        latency_ms: offline: detector total; online: cloud seen -> objects seen (wall clock).
        timings_ms: per-stage times (offline from Detections, online from the stats topic).
    """

    index: int
    stamp_ns: int
    num_points: int
    has_gt: bool
    detected: bool = False
    num_detections: int = 0
    latency_ms: float = math.nan
    timings_ms: Dict[str, float] = field(default_factory=dict)


@dataclass
class ReplayResult:
    """Everything a replay produced: per-cloud records, aligned gt / predictions, samples."""

    mode: str
    bag: BagSummary
    engine: Dict[str, object]
    records: List[FrameRecord]
    gts: List[FrameGT]
    preds: List[FramePred]
    samples: List[Dict[str, Any]]  # {"stamp_ns", "points" [K, 3], "gt": FrameGT, "pred": FramePred,
    #                                 "calib": FrameCalib or None, "image": BGR or None}
    wall_s: float
    problems: List[str] = field(default_factory=list)
    rate: float = 1.0
    fov: Dict[str, Any] = field(default_factory=dict)  # FovStats.to_dict() of the run
    calibs: List[Any] = field(default_factory=list)  # FrameCalib or None, aligned with gts


def restrict_to_range(gt: FrameGT, point_cloud_range: Sequence[float]) -> FrameGT:
    """Ground truth whose box centre lies outside the model's x/y range becomes ignored."""
    lo_x, lo_y, _, hi_x, hi_y, _ = [float(v) for v in point_cloud_range]
    b = gt.boxes
    outside = (b[:, 0] < lo_x) | (b[:, 0] >= hi_x) | (b[:, 1] < lo_y) | (b[:, 1] >= hi_y)
    ignore = outside if gt.ignore is None else (np.asarray(gt.ignore, bool) | outside)
    return FrameGT(gt.boxes, gt.names, gt.bbox2d, gt.occluded, gt.truncated, ignore,
                   gt.difficulty, gt.dontcare_bbox2d, gt.frame_id)


def _sample_indices(n: int, k: int = BEV_SAMPLES) -> set:
    return set(np.linspace(0, max(n - 1, 0), min(k, n)).round().astype(int).tolist())


def _keep_sample(samples: List[Dict[str, Any]], frame: BagFrame, pred: FramePred,
                 calib: Optional["fov_filter.FrameCalib"] = None) -> None:
    pts = frame.points if frame.points is not None else np.zeros((0, 3), np.float32)
    step = max(1, len(pts) // BEV_POINTS)
    samples.append({"stamp_ns": frame.stamp_ns, "points": pts[::step, :3].copy(),
                    "gt": frame.gt, "pred": pred, "calib": calib, "image": None})


def _check_fov(fov: str) -> None:
    if fov not in fov_filter.FOV_MODES:
        raise ReplayError(f"fov {fov!r} unknown; use one of {', '.join(fov_filter.FOV_MODES)} "
                          f"(camera: score what lies in image 2, as KITTI does; all: everything)")


def _open_camera(bag: os.PathLike, summary: BagSummary, problems: List[str], fov: str
                 ) -> "fov_filter.BagCamera":
    """The bag's calibration and 2D ground truth; a note in ``problems`` when ``fov`` is
    "camera" and the bag has no calibration (then nothing is removed)."""
    cam = fov_filter.read_bag_camera(bag, summary.points_topic)
    if fov == "camera" and not cam.has_calibration:
        problems.append(f"bag {summary.path} has no camera calibration (CameraInfo and a "
                        f"{summary.points_topic} frame -> camera transform on /tf or "
                        f"/tf_static): predictions outside the camera view are not removed "
                        f"(fov camera needs them; write KITTI bags with bag-from-kitti)")
    return cam


def _scored(frame: BagFrame, pred: FramePred, cam: "fov_filter.BagCamera",
            pcr: Sequence[float], fov: str, stats: "fov_filter.FovStats"
            ) -> Tuple[Optional[FrameGT], FramePred, Optional["fov_filter.FrameCalib"]]:
    """(gt, predictions as scored, calib) of one frame: the KITTI 2D fields of the bag's 2D
    ground truth joined to its 3D ground truth (KITTI difficulty rules), ground truth outside
    the model's range ignored, then the FOV filter ``fov``."""
    calib = cam.calib(frame.stamp_ns)
    gt = frame.gt
    if gt is not None:
        gt = fov_filter.with_kitti_fields(gt, cam.image_gt.get(frame.stamp_ns))
        gt = restrict_to_range(gt, pcr)
    gt, pred = fov_filter.filter_frame(gt, pred, calib, pcr, fov, stats)
    return gt, pred, calib


def _attach_images(bag: os.PathLike, cam: "fov_filter.BagCamera",
                   samples: List[Dict[str, Any]]) -> None:
    if not cam.image_topic or not samples:
        return
    images = fov_filter.read_images(bag, cam.image_topic, [s["stamp_ns"] for s in samples])
    for s in samples:
        s["image"] = images.get(s["stamp_ns"])


def open_detector(engine: Optional[str], backend: str, score_threshold: Optional[float] = None):
    """A LidarDetector on the bundle with a backend spec such as ``openvino-bf16``."""
    from admlops_ros.lidar.detector import LidarDetector
    name, opts = parse_backend(backend)
    try:
        return LidarDetector.from_bundle(engine, backend=name, score_threshold=score_threshold,
                                         **opts)
    except Exception as exc:  # noqa: B902 - SpecError / BackendError: report, no traceback
        raise ReplayError(f"cannot open engine {engine or '(default)'} with backend "
                          f"{backend!r}: {exc}") from exc


def detect_recorded(detect: Any, data: Any, rec: Any, what: str, problems: List[str],
                    who: str = "detector") -> Any:
    """``detect(data)`` for one frame of an offline replay, its outcome kept in ``rec``
    (``detected``, ``num_detections``, ``timings_ms``, ``latency_ms`` = the detector's total);
    a failure is logged, added to ``problems`` and gives None (the partial results are kept)."""
    try:
        dets = detect(data)
    except Exception as exc:  # noqa: B902 - keep the partial results
        msg = f"{who} failed on {what} at stamp {rec.stamp_ns / 1e9:.6f}: {exc}"
        LOG.warning("%s", msg)
        problems.append(msg)
        return None
    rec.detected, rec.num_detections = True, len(dets)
    rec.timings_ms = dict(dets.timings_ms)
    rec.latency_ms = float(dets.timings_ms.get("total", math.nan))
    return dets


def run_offline(bag: os.PathLike, engine: Optional[str] = None, backend: str = "auto",
                score_threshold: Optional[float] = None, limit: Optional[int] = None,
                progress: bool = True, points_topic: Optional[str] = None,
                gt_topic: Optional[str] = None, fov: str = "camera") -> ReplayResult:
    """Read the bag and run the detector in this process on every cloud (deterministic).

    Args:
        bag: bag path (see :mod:`admlops_ros.evaluation.bags` for the layout).
        engine: engine bundle directory (None: the shipped default).
        backend: ``auto``, ``onnxruntime``, ``openvino[-f32|-bf16]``, ``tensorrt``.
        score_threshold: override of the spec's score threshold.
        limit: stop after this many clouds.
        fov: "camera" (default): predictions and ground truth outside image 2 are removed
            before scoring, with each frame's calibration from the bag, as mmdet3d / OpenPCDet
            do for KITTI (:mod:`admlops_ros.evaluation.fov`); "all": nothing is removed.

    Raises:
        BagError, ReplayError: with a message naming the bag / topic / engine.
    """
    from tqdm import tqdm
    from admlops_ros.lidar.detector import detector_summary
    _check_fov(fov)
    summary, frames = read_bag(bag, points_topic, gt_topic)
    problems = list(summary.problems)
    cam = _open_camera(bag, summary, problems, fov)
    stats = fov_filter.FovStats(fov)
    detector = open_detector(engine, backend, score_threshold)
    records: List[FrameRecord] = []
    gts: List[FrameGT] = []
    preds: List[FramePred] = []
    calibs: List[Any] = []
    samples: List[Dict[str, Any]] = []
    total = summary.num_clouds if limit is None else min(limit, summary.num_clouds)
    keep = _sample_indices(total)
    t0 = time.perf_counter()
    spec_input = getattr(getattr(getattr(detector, "bundle", None), "spec", None), "input", None)
    model_sweeps = int(getattr(spec_input, "sweeps", 1))
    if model_sweeps > 1:
        problems.append(f"the model takes {model_sweeps} sweeps per detection; offline replay "
                        "detects on each cloud alone: use --online (the node merges the "
                        "sweeps with the bag's /tf)")
    with detector:
        detector.warmup()
        info = detector_summary(detector)
        for frame in tqdm(frames, total=total, desc="eval (offline)", unit="cloud",
                          disable=not progress):
            if limit is not None and frame.index >= limit:
                break
            rec = FrameRecord(frame.index, frame.stamp_ns,
                              0 if frame.points is None else len(frame.points),
                              frame.gt is not None)
            records.append(rec)
            if frame.points is None:
                problems.append(frame.error)
                continue
            dets = detect_recorded(detector.detect, frame.points, rec, "cloud", problems)
            if dets is None:
                continue
            pred = FramePred.from_detections(dets, frame.frame_id)
            gt, scored, calib = _scored(frame, pred, cam, detector.voxelizer.point_cloud_range,
                                        fov, stats)
            if gt is not None:
                frame.gt = gt
                gts.append(gt)
                preds.append(scored)
                calibs.append(calib)
            if frame.index in keep:
                _keep_sample(samples, frame, pred, calib)
    _attach_images(bag, cam, samples)
    return ReplayResult("offline", summary, info, records, gts, preds, samples,
                        time.perf_counter() - t0, problems, fov=stats.to_dict(), calibs=calibs)


# ---------------------------------------------------------------------------------------------
# Online

def _stamp_from_raw(buff: bytes) -> int:
    """Header stamp (ns) from serialized bytes of a message starting with std_msgs/Header."""
    _, secs, nsecs = struct.unpack_from("<III", buff, 0)
    return secs * 1_000_000_000 + nsecs


class _Recorder:
    """Subscribes to clouds (raw bytes), objects and stats; wall-clock arrival per stamp."""

    def __init__(self, points_topic: str, objects_topic: str, stats_topic: str) -> None:
        import rospy
        from admlops_ros.evaluation.bags import messages
        msgs = messages()
        self.lock = threading.Lock()
        self.cloud_seen: Dict[int, float] = {}
        self.objects: Dict[int, Tuple[float, Any]] = {}
        self.stats: Dict[int, Any] = {}
        self.subs = [
            rospy.Subscriber(points_topic, rospy.AnyMsg, self._on_cloud, queue_size=100,
                             buff_size=2 ** 26),
            rospy.Subscriber(objects_topic, msgs.DetectedObjectArray, self._on_objects,
                             queue_size=100),
            rospy.Subscriber(stats_topic, msgs.DetectionStats, self._on_stats, queue_size=100),
        ]

    def _on_cloud(self, msg: Any) -> None:
        now = time.perf_counter()
        with self.lock:
            self.cloud_seen.setdefault(_stamp_from_raw(msg._buff), now)

    def _on_objects(self, msg: Any) -> None:
        now = time.perf_counter()
        with self.lock:
            self.objects.setdefault(msg.header.stamp.to_nsec(), (now, msg))

    def _on_stats(self, msg: Any) -> None:
        with self.lock:
            self.stats[msg.header.stamp.to_nsec()] = msg

    def close(self) -> None:
        for sub in self.subs:
            sub.unregister()


def run_online(bag: os.PathLike, engine: Optional[str] = None, backend: str = "auto",
               rate: Optional[float] = None, score_threshold: Optional[float] = None,
               progress: bool = True, points_topic: Optional[str] = None,
               gt_topic: Optional[str] = None, log_dir: Optional[os.PathLike] = None,
               objects_topic: str = OBJECTS_TOPIC, stats_topic: str = STATS_TOPIC,
               sweeps: Optional[int] = None, fov: str = "camera") -> ReplayResult:
    """A private roscore, the node from lidar_detection.launch, ``rosbag play``, recorded output.

    Latency is wall clock from the cloud arriving at this recorder to its objects arriving
    (both over loopback); a cloud without an objects message with its stamp is dropped. The
    bag's /tf and /tf_static are played too (the node's multi-sweep input looks up each
    cloud's pose); ``sweeps`` is the node's ``~sweeps`` (None: the spec's input.sweeps).
    ``fov`` as in :func:`run_offline`.

    Raises:
        BagError, ReplayError: bag problems; roscore / node / rosbag failing to start (the
            message names the process and its log file).
    """
    from tqdm import tqdm
    from admlops_ros.ros import processes as proc
    from admlops_ros.ros.conversions import msg_to_detections
    _check_fov(fov)
    summary, frames = read_bag(bag, points_topic, gt_topic)
    frames_list = list(frames)  # gt + points kept for metrics and BEV samples
    problems = list(summary.problems)
    cam = _open_camera(bag, summary, problems, fov)
    stats = fov_filter.FovStats(fov)
    name, opts = parse_backend(backend)
    spec = _bundle_spec(engine)
    pcr = spec.voxelization.point_cloud_range
    if score_threshold is None:  # the node's operating default is higher; AP wants the spec's
        score_threshold = spec.score_threshold
    log_dir = Path(log_dir or Path.cwd() / "admlops_eval_logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    rate = float(rate or 1.0)
    launch_args = [f"engine:={Path(engine).resolve()}" if engine else "engine:=",
                   f"backend:={name}", f"input_topic:={summary.points_topic}",
                   f"objects_topic:={objects_topic}", f"stats_topic:={stats_topic}"]
    if "precision" in opts:
        launch_args.append(f"precision:={opts['precision']}")
    if score_threshold is not None:
        launch_args.append(f"score_threshold:={score_threshold}")
    if sweeps is not None:
        launch_args.append(f"sweeps:={int(sweeps)}")
    if (sweeps or spec.input.sweeps) > 1 and not summary.tf_topics:
        problems.append(f"the node merges {sweeps or spec.input.sweeps} sweeps per detection "
                        f"but bag {summary.path} has no tf topic (/tf, /tf_static): every "
                        "cloud is detected alone; record tf with the clouds")
    play_topics = [summary.points_topic] + list(summary.tf_topics)
    node = player = None
    indexed_copy: Optional[Path] = None
    play_path = Path(summary.path)
    t_start = time.perf_counter()
    try:
        if summary.recovered:
            # rosbag play refuses a bag without an index: play an indexed copy of its clouds,
            # next to the logs, removed in the finally below on every exit path
            indexed_copy = log_dir / f"{play_path.stem}.indexed.bag"
            write_indexed_copy(play_path, indexed_copy, play_topics)
            play_path = indexed_copy
        with proc.RosCore(ros_home=log_dir / "ros_home", log=log_dir / "roscore.log") as core:
            os.environ.update(core.env)
            import rospy
            rospy.init_node("admlops_eval", anonymous=True, disable_signals=True)
            recorder = _Recorder(summary.points_topic, objects_topic, stats_topic)
            node_log = log_dir / "node.log"
            node = proc.start(["roslaunch", "--wait", "admlops_ros", "lidar_detection.launch"]
                              + launch_args, core.env, node_log)
            try:
                proc.wait_for(lambda: proc.topic_has_subscriber(core.uri, summary.points_topic,
                                                                NODE_NAME),
                              NODE_READY_TIMEOUT_S, f"lidar_detection node (log {node_log})", node)
            except proc.ProcessError as exc:
                raise ReplayError(f"{exc}; last lines of {node_log}:\n{_tail(node_log)}") from exc
            play_log = log_dir / "rosbag_play.log"
            player = proc.start(["rosbag", "play", "--quiet", "--delay", "1.0", "--rate",
                                 str(rate), "--topics", *play_topics, "--",
                                 str(play_path)], core.env, play_log)
            bar = tqdm(total=summary.num_clouds, desc="eval (online)", unit="cloud",
                       disable=not progress)
            t_play = time.perf_counter()
            last_count, last_change = 0, time.perf_counter()
            while True:
                time.sleep(0.2)
                with recorder.lock:
                    count = len(recorder.objects)
                bar.update(count - bar.n)
                if count != last_count:
                    last_count, last_change = count, time.perf_counter()
                if player.poll() is not None and time.perf_counter() - last_change > TAIL_WAIT_S:
                    break
                if node.poll() is not None:
                    problems.append(f"the node exited with code {node.returncode} during "
                                    f"playback; see {node_log}:\n{_tail(node_log)}")
                    break
            bar.close()
            wall_play = time.perf_counter() - t_play
            if player.returncode not in (0, None):
                problems.append(f"rosbag play exited with {player.returncode}; see {play_log}")
            recorder.close()
            proc.stop(player)
            proc.stop(node)
            node = player = None
            rospy.signal_shutdown("admlops eval done")
    except (proc.ProcessError, OSError) as exc:
        raise ReplayError(f"online replay failed: {exc}") from exc
    finally:
        proc.stop(player)
        proc.stop(node)
        if indexed_copy is not None:
            indexed_copy.unlink(missing_ok=True)
    records: List[FrameRecord] = []
    gts: List[FrameGT] = []
    preds: List[FramePred] = []
    calibs: List[Any] = []
    calib_of: Dict[int, Any] = {}
    samples: List[Dict[str, Any]] = []
    keep = _sample_indices(len(frames_list))
    for frame in frames_list:
        rec = FrameRecord(frame.index, frame.stamp_ns,
                          0 if frame.points is None else len(frame.points), frame.gt is not None)
        records.append(rec)
        got = recorder.objects.get(frame.stamp_ns)
        if got is None:
            if frame.gt is not None:  # scored below as a frame without predictions
                frame.gt, _, calib_of[frame.index] = _scored(
                    frame, FramePred.empty(frame.frame_id), cam, pcr, fov, stats)
            continue
        t_obj, msg = got
        dets = msg_to_detections(msg)
        pred = FramePred(dets.boxes, dets.scores, [o.label_name for o in msg.objects],
                         frame_id=frame.frame_id)
        rec.detected, rec.num_detections = True, len(pred)
        seen = recorder.cloud_seen.get(frame.stamp_ns)
        if seen is not None:
            rec.latency_ms = (t_obj - seen) * 1e3
        st = recorder.stats.get(frame.stamp_ns)
        if st is not None:
            rec.timings_ms = {"preprocess": st.preprocess_ms, "inference": st.inference_ms,
                              "postprocess": st.postprocess_ms, "total": st.detect_ms,
                              "processing": st.processing_ms, "conversion": st.conversion_ms}
        gt, scored, calib = _scored(frame, pred, cam, pcr, fov, stats)
        if gt is not None:
            frame.gt = gt
            gts.append(gt)
            preds.append(scored)
            calibs.append(calib)
        if frame.index in keep:
            _keep_sample(samples, frame, pred, calib)
    _attach_images(bag, cam, samples)
    # clouds the node never answered still count in the metrics as frames without predictions
    for frame, rec in zip(frames_list, records):
        if frame.gt is not None and not rec.detected:
            gts.append(frame.gt)
            preds.append(FramePred.empty(frame.frame_id))
            calibs.append(calib_of.get(frame.index))
    info = {"bundle": str(engine or "(default)"), "backend": backend, "node": NODE_NAME,
            "play_wall_s": wall_play}
    return ReplayResult("online", summary, info, records, gts, preds, samples,
                        time.perf_counter() - t_start, problems, rate, fov=stats.to_dict(),
                        calibs=calibs)


def write_kitti_results(result: ReplayResult, out_dir: os.PathLike,
                        names: Optional[Sequence[str]] = None) -> Path:
    """The scored predictions as KITTI result files (``names`` or 000000.. by order), each
    converted with its frame's calibration and image size from the bag (KITTI bags: the calib
    file's), else :func:`admlops_ros.evaluation.kitti_io.nominal_calib` and 1242 x 375.

    The writer keeps what projects into image 2, so ``admlops kitti-eval`` on these files
    and the frames' label_2 scores what ``admlops eval`` scored.
    """
    from admlops_ros.evaluation import kitti_io
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    nominal = kitti_io.nominal_calib()
    for i, pred in enumerate(result.preds):
        calib = result.calibs[i] if i < len(result.calibs) else None
        objs = kitti_io.lidar_boxes_to_objects(
            pred.boxes, list(pred.names), calib.kitti_calib() if calib else nominal,
            scores=pred.scores,
            image_shape=calib.image_size if calib else kitti_io.IMAGE_SHAPE)
        kitti_io.write_label(out / f"{names[i] if names else f'{i:06d}'}.txt", objs)
    return out


def _bundle_spec(engine: Optional[str]) -> Any:
    from admlops_ros.lidar.detector import default_bundle_path
    from admlops_ros.bundle.files import load_bundle
    try:
        bundle = load_bundle(Path(engine) if engine else default_bundle_path())
    except Exception as exc:  # noqa: B902
        raise ReplayError(f"cannot load engine bundle {engine or '(default)'}: {exc}") from exc
    return bundle.spec


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------------------------------------
# Summaries

def latency_stats(values_ms: Sequence[float]) -> Dict[str, float]:
    """p50 / p90 / p99 / max / mean (ms) of the finite values; nan when there are none."""
    v = np.asarray([x for x in values_ms if x is not None and math.isfinite(x)], np.float64)
    if not len(v):
        return {"p50": math.nan, "p90": math.nan, "p99": math.nan, "max": math.nan,
                "mean": math.nan, "count": 0}
    return {"p50": float(np.percentile(v, 50)), "p90": float(np.percentile(v, 90)),
            "p99": float(np.percentile(v, 99)), "max": float(v.max()), "mean": float(v.mean()),
            "count": int(len(v))}


def summarize(result: ReplayResult, config: Optional[EvalConfig] = None
              ) -> Tuple[Dict[str, object], Optional[EvalResult], Optional[EvalResult]]:
    """results.json content, the headline EvalResult and the distance-band EvalResult."""
    config = config or EvalConfig()
    main = bands = None
    if result.gts:
        main = evaluate(result.gts, result.preds, config)
        if main.difficulty_mode != "distance":
            bands = evaluate(result.gts, result.preds,
                             EvalConfig(**{**config.__dict__, "difficulty_mode": "distance"}))
        else:
            bands = main
    recs = result.records
    n = len(recs)
    dropped = [r for r in recs if not r.detected]
    stage_keys = sorted({k for r in recs for k in r.timings_ms})
    bag_dur = result.bag.duration_s
    if result.mode == "offline":
        busy_s = sum(r.latency_ms for r in recs if math.isfinite(r.latency_ms)) / 1e3
        rtf = bag_dur / busy_s if busy_s > 0 else math.nan
        rtf_doc = "bag duration / summed detector time (>1: faster than real time)"
    else:
        play = float(result.engine.get("play_wall_s", math.nan))
        rtf = (bag_dur / result.rate) / play if play and play > 0 else math.nan
        rtf_doc = "played bag time / wall time of playback incl. draining (1 = kept pace)"
    out: Dict[str, object] = {
        "mode": result.mode,
        "bag": {"path": result.bag.path, "points_topic": result.bag.points_topic,
                "gt_topic": result.bag.gt_topic, "clouds": result.bag.num_clouds,
                "gt_messages": result.bag.num_gt, "duration_s": bag_dur},
        "engine": result.engine,
        "frames": {"clouds": n, "evaluated": len(result.gts),
                   "without_gt": sum(1 for r in recs if not r.has_gt),
                   "dropped": len(dropped),
                   "dropped_stamps": [r.stamp_ns / 1e9 for r in dropped[:20]]},
        "latency_ms": latency_stats([r.latency_ms for r in recs]),
        "latency_definition": ("detector total in process" if result.mode == "offline" else
                               "cloud seen -> objects seen, wall clock over loopback"),
        "stages_ms": {k: latency_stats([r.timings_ms.get(k, math.nan) for r in recs])
                      for k in stage_keys},
        "real_time_factor": rtf, "real_time_factor_definition": rtf_doc,
        "rate": result.rate, "wall_s": result.wall_s,
        "problems": list(result.problems),
        "fov": dict(result.fov) or None,
        "metrics": main.to_dict() if main is not None else None,
        "metrics_by_distance": bands.to_dict() if bands is not None and bands is not main
        else None,
    }
    return out, main, bands


__all__: Sequence[str] = ("ReplayError", "ReplayResult", "FrameRecord", "run_offline",
                          "run_online", "summarize", "latency_stats", "parse_backend",
                          "open_detector", "write_kitti_results", "restrict_to_range")
