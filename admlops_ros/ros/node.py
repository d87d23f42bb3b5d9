"""lidar_detection node: PointCloud2 -> LidarDetector -> objects, markers, stats, diagnostics.

A watchdog thread (ros/master_watch.py) asks the ROS master every ~master_check_period_s whether
it still knows the node: rospy never re-registers with a restarted master, so the node would run
on unseen. It exits with EXIT_MASTER_LOST instead, for roslaunch ``respawn`` to start it again.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from admlops_ros.errors import AdmlopsError
from admlops_ros.lidar.detections import Detections
from admlops_ros.lidar.pointcloud import PointCloudError, convert_pointcloud2
from admlops_ros.lidar.sweeps import (REMOVE_CLOSE_M, TIME_FEATURE, SensorPose, SweepAccumulator,
                                      SweepError)
from admlops_ros.ros.conversions import detections_to_msg, import_messages, stats_to_msg
from admlops_ros.ros.diagnostics import LEVEL_NAMES, DiagnosticsState, to_diagnostic_array
from admlops_ros.ros.markers import detections_to_markers
from admlops_ros.ros.master_watch import (EXIT_MASTER_LOST, MASTER_OK, MASTER_WAITING,
                                          MasterClient, MasterVerdict, MasterWatch,
                                          MasterWatchdog)
from admlops_ros.ros.params import NodeParams, validate_params
from admlops_ros.ros.poses import PoseError

LOG = logging.getLogger(__name__)

NODE_NAME = "lidar_detection"
DIAGNOSTIC_NAME = "lidar_detection: detector"
DIAGNOSTIC_PERIOD_S = 1.0
THROTTLE_S = 5.0
BUFF_SIZE = 2 ** 24
EXIT_BAD_PARAMS = 2
EXIT_ENGINE = 3
ZERO_FILLABLE = ("intensity",)
#: ``poses(frame_id, stamp) -> SensorPose`` (raises PoseError): ros/poses.TfPoses or a fake.
PoseSource = Callable[[str, Any], SensorPose]


class CloudError(PointCloudError):
    """An input cloud the node drops (too many points, a missing field it cannot fill)."""


@dataclass
class FrameResult:
    """Outputs of one cloud: messages to publish and what went wrong (if anything).

    Attributes:
        objects: admlops_ros/DetectedObjectArray (None when the cloud was dropped).
        markers: visualization_msgs/MarkerArray or None.
        stats: DetectionStats field values (ms, counts) without the frame counters.
        detections: the detector output (None when dropped).
        warning: a problem with a cloud that was still processed (e.g. all points NaN).
    """

    objects: Any = None
    markers: Any = None
    stats: Dict[str, float] = field(default_factory=dict)
    detections: Optional[Detections] = None
    warning: str = ""


def model_sweeps(detector: Any, params: NodeParams) -> Tuple[int, bool, bool]:
    """(clouds per detection, remove-close on past sweeps, pad empty sweeps) from ~sweeps and
    the model's spec.

    ``~sweeps`` 0 takes the spec's ``input.sweeps`` (1 for a detector without a bundle spec);
    remove-close and padding always follow the spec's ``input.sweeps_remove_close`` and
    ``input.sweeps_pad_empty``.
    """
    spec_input = getattr(getattr(getattr(detector, "bundle", None), "spec", None), "input", None)
    spec_sweeps = int(getattr(spec_input, "sweeps", 1))
    remove_close = bool(getattr(spec_input, "sweeps_remove_close", False))
    pad_empty = bool(getattr(spec_input, "sweeps_pad_empty", False))
    return (params.sweeps or spec_sweeps), remove_close, pad_empty


class FrameProcessor:
    """ROS-master-free work per cloud: check, convert, accumulate sweeps, detect, build messages.

    The model's "time" point feature is never read from the cloud: it is the multi-sweep time
    lag (0 for the newest cloud, and for every point with ``sweeps`` 1).
    """

    def __init__(self, detector: Any, params: NodeParams, msgs: Any = None,
                 poses: Optional[PoseSource] = None) -> None:
        """Args:
            detector: a LidarDetector (``point_features``, ``detect(points)``).
            params: validated node parameters.
            msgs: the generated admlops_ros.msg module (default: imported from the devel space).
            poses: with multi-sweep input (:func:`model_sweeps` > 1), the pose of each cloud
                in the fixed frame (looked up once per cloud, when it arrives).
        """
        self.detector = detector
        self.params = params
        self.msgs = msgs or import_messages()
        self.fields = tuple(detector.point_features)
        self.generated = (TIME_FEATURE,) if TIME_FEATURE in self.fields else ()
        self.poses = poses
        self.num_sweeps, remove_close, pad_empty = model_sweeps(detector, params)
        self.sweeps = (SweepAccumulator.for_features(self.num_sweeps, self.fields,
                                                     REMOVE_CLOSE_M if remove_close else 0.0,
                                                     pad_empty)
                       if self.num_sweeps > 1 else None)

    def check(self, cloud: Any) -> None:
        """Reject clouds the detector must not see.

        Raises:
            CloudError: more than ``max_points`` points.
        """
        num = int(cloud.width) * int(cloud.height)
        if num > self.params.max_points:
            raise CloudError(
                f"cloud has {num} points (width {cloud.width} x height {cloud.height}) > "
                f"~max_points {self.params.max_points}; downsample it or raise ~max_points")

    def process(self, cloud: Any, want_markers: bool = True) -> FrameResult:
        """Detect objects in one sensor_msgs/PointCloud2; outputs carry its header unchanged.

        Raises:
            CloudError, PointCloudError: the cloud is dropped (bad size, fields, datatypes).
            Exception: whatever the detector raises (a failure).
        """
        t0 = time.perf_counter()
        self.check(cloud)
        conv = convert_pointcloud2(cloud, fields=self.fields, missing="zeros",
                                   generated=self.generated)
        if conv.zero_filled:
            present = ", ".join(f.name for f in cloud.fields) or "none"
            unfillable = [name for name in conv.zero_filled if name not in ZERO_FILLABLE]
            if unfillable:
                raise CloudError(f"cloud has no {unfillable[0]!r} field (fields: {present}); "
                                 f"only {', '.join(ZERO_FILLABLE)} can be zero-filled")
            if self.params.intensity_mode == "error":
                raise CloudError(f"cloud has no {conv.zero_filled[0]!r} field (fields: "
                                 f"{present}); publish it, or fill it with zeros: "
                                 "~intensity_mode:=zeros")
        t1 = time.perf_counter()
        warnings = []
        if conv.num_input and not len(conv.points):
            warnings.append(f"all {conv.num_input} points are NaN/inf in {list(self.fields)}; "
                            "published no objects; check the driver's output")
        points, num_sweeps = conv.points, 1
        if self.sweeps is not None:
            points, num_sweeps, problem = self._accumulate(cloud, points)
            if problem:
                warnings.append(problem)
        t2 = time.perf_counter()
        detections = self.detector.detect(points)
        objects = detections_to_msg(detections, cloud.header, self.msgs)
        markers = detections_to_markers(detections, cloud.header) if want_markers else None
        timings = detections.timings_ms
        voxels = getattr(self.detector, "last_voxels", None)
        stats = {
            "conversion_ms": (t1 - t0) * 1e3,
            "sweeps_ms": (t2 - t1) * 1e3 if self.sweeps is not None else float("nan"),
            "preprocess_ms": timings.get("preprocess", float("nan")),
            "inference_ms": timings.get("inference", float("nan")),
            "postprocess_ms": timings.get("postprocess", float("nan")),
            "detect_ms": timings.get("total", float("nan")),
            "num_points": len(points),
            "num_sweeps": num_sweeps,
            "num_voxels": len(voxels.num_points) if voxels is not None else 0,
            "num_detections": len(detections),
        }
        return FrameResult(objects, markers, stats, detections, "; ".join(warnings))

    def _accumulate(self, cloud: Any, points: Any):
        """(points of the last sweeps in this cloud's frame, sweeps used, problem or "")."""
        header = cloud.header
        frame_id = str(header.frame_id)
        pose, problems = None, []
        if self.poses is None:
            problems.append("no pose source")
        else:
            try:
                pose = self.poses(frame_id, header.stamp)
                pose.matrix()  # a non-finite pose is a missing one, named in the warning
            except (PoseError, SweepError) as exc:
                pose = None
                problems.append(str(exc))
        acc = self.sweeps.add(points, header.stamp.to_sec(), pose, frame_id)
        if acc.reset:
            problems.append(f"sweeps reset: {acc.reset}")
        lost = [s for s in acc.skipped if s.reason == "no pose"]
        if lost:
            where = ", ".join(f"{s.frame_id or '?'} at {s.stamp_s:.3f}" for s in lost)
            problems.append(f"sweeps: {len(lost)} past clouds without a pose in "
                            f"{self.params.sweeps_fixed_frame!r} left out ({where})")
        if problems:
            problems.append(f"detected on {acc.num_sweeps} of {self.num_sweeps} sweeps")
        return acc.points, acc.num_sweeps, "; ".join(problems)


def _release(exc: BaseException) -> str:
    """The message of a caught exception, with its traceback dropped.

    The traceback holds the frames up into rospy's callback, and with them the cloud, in a
    reference cycle: kept, every dropped cloud (megabytes) lived until the next full GC
    collection and the node's RSS rose in steps of tens of MiB (found by scripts/soak.py).
    """
    exc.__traceback__ = None
    return str(exc)


class LidarDetectionNode:
    """The rospy adapter: subscriptions, publications, diagnostics; the work is FrameProcessor."""

    def __init__(self, params: NodeParams, detector: Any,
                 summary: Optional[Dict[str, str]] = None,
                 restore_params: Optional[Dict[str, Any]] = None) -> None:
        """Args:
            params: validated node parameters.
            detector: a loaded LidarDetector.
            summary: model/backend facts for diagnostics.
            restore_params: parameters (full name -> value) to put back on a restarted master
                before exiting, so that the respawned node starts with the same configuration.
        """
        import rospy  # noqa: WPS433
        from diagnostic_msgs.msg import DiagnosticArray  # noqa: WPS433
        from sensor_msgs.msg import PointCloud2  # noqa: WPS433
        from visualization_msgs.msg import MarkerArray  # noqa: WPS433

        self.rospy = rospy
        self.params = params
        poses = None
        sweeps, remove_close, pad_empty = model_sweeps(detector, params)
        if sweeps > 1:
            from admlops_ros.ros.poses import TfPoses  # noqa: WPS433 (tf2 only with sweeps)

            poses = TfPoses(params.sweeps_fixed_frame)
            time_note = ("time lag in its 'time' feature" if TIME_FEATURE in
                         tuple(detector.point_features) else "no 'time' feature in this model")
            rospy.loginfo(f"multi-sweep input: {sweeps} clouds per detection "
                          f"({'~sweeps' if params.sweeps else 'spec input.sweeps'}), poses from "
                          f"tf in {params.sweeps_fixed_frame!r}, {time_note}, remove-close "
                          f"{'on' if remove_close else 'off'}, empty sweeps "
                          f"{'padded with the newest cloud' if pad_empty else 'left empty'}")
        self.processor = FrameProcessor(detector, params, poses=poses)
        self.diag = DiagnosticsState(params.max_processing_ms, params.error_after_failures)
        self.summary = dict(summary or {})
        self._diag_lock = threading.Lock()
        self._logged_level = self.diag.status()[0]
        msgs = self.processor.msgs
        self.pub_objects = rospy.Publisher(params.objects_topic, msgs.DetectedObjectArray,
                                           queue_size=2)
        self.pub_markers = (rospy.Publisher(params.markers_topic, MarkerArray, queue_size=2)
                            if params.publish_markers else None)
        self.pub_stats = rospy.Publisher(params.stats_topic, msgs.DetectionStats, queue_size=2)
        self.pub_diag = rospy.Publisher("/diagnostics", DiagnosticArray, queue_size=10)
        self.publish_diagnostics()
        self.sub = rospy.Subscriber(params.input_topic, PointCloud2, self._on_cloud,
                                    queue_size=1, buff_size=BUFF_SIZE)
        self.timer = rospy.Timer(rospy.Duration(DIAGNOSTIC_PERIOD_S), self._on_timer)
        self.exit_code = 0
        self.restore_params = dict(restore_params or {})
        self.master: Optional[MasterClient] = None
        self.watchdog: Optional[MasterWatchdog] = None
        if params.master_check_period_s > 0:
            self._start_watchdog(params.master_check_period_s)

    def _start_watchdog(self, period_s: float) -> None:
        import rosgraph  # noqa: WPS433

        rospy = self.rospy
        name = rospy.get_name()
        master_uri = rosgraph.get_master_uri()  # what rospy.init_node used
        self.master = MasterClient(master_uri, name)
        watch = MasterWatch(name, rospy.get_node_uri(), master_uri)
        self.watchdog = MasterWatchdog(watch, lambda: self.master.lookup_node(name), period_s,
                                       self._on_master_verdict).start()
        rospy.on_shutdown(self.watchdog.stop)

    def _on_master_verdict(self, verdict: MasterVerdict) -> None:
        rospy = self.rospy
        if not verdict.message or rospy.is_shutdown():
            return
        if verdict.state == MASTER_OK:
            rospy.loginfo(verdict.message)
        elif verdict.state == MASTER_WAITING:
            rospy.logwarn(verdict.message)
        else:
            self.exit_code = EXIT_MASTER_LOST
            rospy.logfatal(verdict.message)
            self._restore_params()
            rospy.signal_shutdown(f"ROS master restarted (exit code {EXIT_MASTER_LOST})")

    def _restore_params(self) -> None:
        """Put the node's start-up parameters the new master lacks back (roslaunch set them once)."""
        if not self.restore_params or self.master is None:
            return
        try:
            restored = self.master.restore_missing(self.restore_params)
        except Exception as exc:  # the master went away again: the respawn gets the defaults
            self.rospy.logwarn(f"could not restore parameters on the restarted master "
                               f"({type(exc).__name__}: {exc}); the respawned node starts with "
                               f"what the master has")
            return
        if restored:
            self.rospy.loginfo(f"restored {len(restored)} start-up parameters on the restarted "
                               f"master for the respawned node: {', '.join(restored)}")

    def _on_cloud(self, cloud: Any) -> None:
        try:
            self._handle(cloud)
        except Exception as exc:  # publishing during shutdown, malformed headers, ...
            if not self.rospy.is_shutdown():
                self.rospy.logerr_throttle(THROTTLE_S, f"cloud callback failed: "
                                           f"{type(exc).__name__}: {exc}")

    def _handle(self, cloud: Any) -> None:
        rospy = self.rospy
        t0 = time.perf_counter()
        self.diag.record_received()
        try:
            want_markers = (self.pub_markers is not None
                            and self.pub_markers.get_num_connections() > 0)
            result = self.processor.process(cloud, want_markers)
        except PointCloudError as exc:  # CloudError too: the node's own drops derive from it
            problem = _release(exc)
            rospy.logwarn_throttle(THROTTLE_S, f"dropped cloud (stamp {cloud.header.stamp.to_sec():.3f}, "
                                   f"frame {cloud.header.frame_id!r}): {problem}")
            self._after(self.diag.record_dropped(problem))
            return
        except Exception as exc:  # the node never dies on input: count and report
            LOG.debug("detector failure", exc_info=True)
            problem = f"{type(exc).__name__}: {_release(exc)}"
            rospy.logerr_throttle(THROTTLE_S, f"detector failed on cloud (stamp "
                                  f"{cloud.header.stamp.to_sec():.3f}): {problem}")
            self._after(self.diag.record_failure(problem))
            return
        self.pub_objects.publish(result.objects)
        if result.markers is not None:
            self.pub_markers.publish(result.markers)
        processing_ms = (time.perf_counter() - t0) * 1e3
        changed = self.diag.record_published(processing_ms)
        if result.warning:
            rospy.logwarn_throttle(THROTTLE_S, result.warning)
            changed = self.diag.record_warning(result.warning) or changed
        stamp = cloud.header.stamp
        latency_ms = ((rospy.Time.now() - stamp).to_sec() * 1e3 if not stamp.is_zero()
                      else float("nan"))
        counters = self.diag.counters
        stats = dict(result.stats, processing_ms=processing_ms, latency_ms=latency_ms,
                     frames_in=counters.frames_in, frames_out=counters.frames_out,
                     frames_dropped=counters.frames_dropped)
        self.pub_stats.publish(stats_to_msg(cloud.header, stats, self.processor.msgs))
        self._after(changed)

    def _after(self, changed: bool) -> None:
        if not changed:
            return
        level, message, _ = self.diag.status()
        if level != self._logged_level:
            self._logged_level = level
            self.rospy.loginfo(f"diagnostics {LEVEL_NAMES[level]}: {message}")
        self.publish_diagnostics()

    def _on_timer(self, _event: Any) -> None:
        self.diag.poll()
        self.publish_diagnostics()

    def publish_diagnostics(self) -> None:
        """Publish the current DiagnosticArray on /diagnostics."""
        with self._diag_lock:
            self.pub_diag.publish(to_diagnostic_array(
                self.diag, DIAGNOSTIC_NAME, self.summary.get("model", NODE_NAME),
                self.rospy.Time.now(), self.summary))


def load_detector(params: NodeParams) -> Any:
    """Open the engine bundle with the node's options and warm it up.

    Raises:
        Exception: whatever the bundle/backend loading raises (SpecError, BackendError, ...).
    """
    from admlops_ros.lidar.detector import LidarDetector  # noqa: WPS433

    options: Dict[str, Any] = {"precision": params.precision}
    if params.backend in ("auto", "tensorrt"):  # plan picked from / built into the cache
        options.update(tensorrt_allow_build=params.tensorrt_allow_build,
                       tensorrt_cache_dir=params.tensorrt_cache_dir or None)
    detector = LidarDetector.from_bundle(
        params.engine, backend=params.backend, score_threshold=params.score_threshold,
        intensity_scale=params.intensity_scale,
        class_filter=list(params.class_filter) or None, **options)
    try:
        detector.warmup()
    except Exception:
        detector.close()
        raise
    return detector


def _summary(detector: Any, params: NodeParams) -> Dict[str, str]:
    try:
        from admlops_ros.lidar.detector import detector_summary  # noqa: WPS433

        info = detector_summary(detector)
    except Exception:  # a detector without bundle/backend attributes
        info = {}
    info.setdefault("bundle", str(params.engine))
    sweeps = model_sweeps(detector, params)[0]
    if sweeps > 1:
        info["sweeps"] = f"{sweeps} (poses in {params.sweeps_fixed_frame})"
    return {k: str(v) for k, v in info.items()}


def _startup_params(rospy: Any, private: Dict[str, Any]) -> Dict[str, Any]:
    """The parameters to restore on a restarted master: ~* as read at start, /use_sim_time."""
    name = rospy.get_name()
    out = {f"{name}/{key}": value for key, value in private.items()}
    if rospy.has_param("/use_sim_time"):
        out["/use_sim_time"] = rospy.get_param("/use_sim_time")
    return out


def main(argv: Optional[List[str]] = None) -> int:
    """Run the node until shutdown; returns the exit code (0 stopped, 2 bad parameters, 3 engine
    failure, 4 the ROS master restarted: EXIT_MASTER_LOST)."""
    import rospy  # noqa: WPS433

    rospy.init_node(NODE_NAME, argv=argv if argv is not None else sys.argv)
    private = rospy.get_param("~", {})
    try:
        params = validate_params(private)
    except AdmlopsError as exc:  # ParamError, or the package directory not found
        rospy.logfatal(str(exc))
        rospy.signal_shutdown("bad parameters")
        return EXIT_BAD_PARAMS
    rospy.loginfo(f"loading engine {params.engine} (backend {params.backend}, "
                  f"precision {params.precision})")
    try:
        detector = load_detector(params)
    except Exception as exc:
        rospy.logfatal(f"cannot load engine {params.engine} with backend {params.backend!r}: "
                       f"{type(exc).__name__}: {exc}")
        rospy.signal_shutdown("engine load failed")
        return EXIT_ENGINE
    if params.tensorrt_build_only:
        rospy.loginfo(f"tensorrt_build_only: engine ready ({_summary(detector, params)}); exiting")
        detector.close()
        return 0
    try:
        summary = _summary(detector, params)
        node = LidarDetectionNode(params, detector, summary, _startup_params(rospy, private))
        rospy.loginfo(f"lidar_detection ready: {summary}; {params.input_topic} -> "
                      f"{params.objects_topic}")
        rospy.spin()
    finally:
        detector.close()
    return node.exit_code
