"""lidar_detection node: PointCloud2 -> LidarDetector -> objects, markers, stats, diagnostics.

The error policy, diagnostics and master watchdog are ros/node_base.py's (shared with
camera_detection).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from admlops_ros.lidar.detections import Detections
from admlops_ros.lidar.pointcloud import PointCloudError, convert_pointcloud2
from admlops_ros.lidar.sweeps import (REMOVE_CLOSE_M, TIME_FEATURE, SensorPose, SweepAccumulator,
                                      SweepError)
from admlops_ros.ros.conversions import detections_to_msg, import_messages
from admlops_ros.ros.diagnostics import DiagnosticsState
from admlops_ros.ros.markers import detections_to_markers
from admlops_ros.ros.node_base import DetectionNodeBase, run_node
from admlops_ros.ros.params import NodeParams, validate_params
from admlops_ros.ros.poses import PoseError

LOG = logging.getLogger(__name__)

NODE_NAME = "lidar_detection"
DIAGNOSTIC_NAME = "lidar_detection: detector"
BUFF_SIZE = 2 ** 24
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


class LidarDetectionNode(DetectionNodeBase):
    """The rospy adapter: subscriptions, publications, diagnostics; the work is FrameProcessor."""

    diagnostic_name = DIAGNOSTIC_NAME
    node_name = NODE_NAME
    frame_kind = "cloud"

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
        from sensor_msgs.msg import PointCloud2  # noqa: WPS433
        from visualization_msgs.msg import MarkerArray  # noqa: WPS433

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
        self._init_base(rospy, DiagnosticsState(params.max_processing_ms,
                                                params.error_after_failures),
                        summary, restore_params)
        msgs = self.processor.msgs
        self.output_topic = params.objects_topic
        self.pub_objects = rospy.Publisher(params.objects_topic, msgs.DetectedObjectArray,
                                           queue_size=2)
        self.pub_markers = (rospy.Publisher(params.markers_topic, MarkerArray, queue_size=2)
                            if params.publish_markers else None)
        self.pub_stats = rospy.Publisher(params.stats_topic, msgs.DetectionStats, queue_size=2)
        self.sub = rospy.Subscriber(params.input_topic, PointCloud2, self._on_cloud,
                                    queue_size=1, buff_size=BUFF_SIZE)
        self._start_base(params.master_check_period_s)

    def _on_cloud(self, cloud: Any) -> None:
        self._guarded(self._handle, cloud)

    def _handle(self, cloud: Any) -> None:
        # PointCloudError: CloudError too (the node's own drops derive from it)
        self._handle_frame(cloud, self._process, (PointCloudError,), self._publish,
                           "DetectionStats")

    def _process(self, cloud: Any) -> FrameResult:
        want_markers = self.pub_markers is not None and self.pub_markers.get_num_connections() > 0
        return self.processor.process(cloud, want_markers)

    def _publish(self, result: FrameResult) -> None:
        self.pub_objects.publish(result.objects)
        if result.markers is not None:
            self.pub_markers.publish(result.markers)


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


def _build_only(params: NodeParams, detector: Any) -> Optional[int]:
    """With ~tensorrt_build_only: the plan is built and cached; exit 0 instead of spinning."""
    if not params.tensorrt_build_only:
        return None
    import rospy  # noqa: WPS433

    rospy.loginfo(f"tensorrt_build_only: engine ready ({_summary(detector, params)}); exiting")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Run the node until shutdown; returns the exit code (0 stopped, 2 bad parameters, 3 engine
    failure, 4 the ROS master restarted: EXIT_MASTER_LOST)."""
    return run_node(NODE_NAME, argv, validate_params, load_detector, _summary,
                    LidarDetectionNode, before_spin=_build_only)
