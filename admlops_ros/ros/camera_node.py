"""camera_detection node: Image -> CameraDetector -> 2D detections, annotated image, fusion, stats.

Mirrors ros/node.py: a ROS-master-free core (:class:`CameraFrameProcessor`) does the work per image;
:class:`CameraDetectionNode` only subscribes, publishes and keeps /diagnostics; bad images are
dropped with a WARN and the node lives on; a restarted master makes it exit with code 4.
"""
from __future__ import annotations

import bisect
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from admlops_ros.camera.annotate import annotate
from admlops_ros.camera.projection import (CameraModel, FusionResult,
                                           ProjectionError, fuse, transform_matrix)
from admlops_ros.errors import AdmlopsError
from admlops_ros.ros.conversions import import_messages
from admlops_ros.ros.diagnostics import DiagnosticsState
from admlops_ros.ros.image_conversions import ImageError, bgr_to_image, to_bgr
from admlops_ros.ros.node_base import DetectionNodeBase, close_detector, run_node
from admlops_ros.ros.params import (ParamError, load_defaults, load_schema, resolve_engine,
                                    schema_errors)
from admlops_ros.paths import package_root

LOG = logging.getLogger(__name__)

NODE_NAME = "camera_detection"
DIAGNOSTIC_NAME = "camera_detection: detector"
DEFAULT_CAMERA_ENGINE = "camera_sim_3class"
CONFIG_NAME = "camera_detection.yaml"
SCHEMA_NAME = "camera_detection.schema.json"
BUFF_SIZE = 2 ** 26          # a 4096 x 4096 bgr8 image is 48 MiB
LIDAR_BUFFER = 20            # DetectedObjectArray messages kept for stamp matching
#: ``extrinsic(camera_frame, lidar_frame, stamp) -> [4, 4]`` lidar -> camera (raises
#: ProjectionError): a tf lookup or a fake.
ExtrinsicSource = Callable[[str, str, Any], np.ndarray]


class CameraNodeError(AdmlopsError, ValueError):
    """An image the node drops for a reason of its own (beyond ImageError), or bad set-up."""


@dataclass(frozen=True)
class CameraNodeParams:
    """Validated parameters of the camera_detection node (see config/camera_detection.yaml).

    Attributes:
        engine: camera bundle directory (absolute) or None when not checked (tests).
        backend: auto | onnxruntime | openvino | tensorrt | mmdeploy_sdk.
        input_topic: sensor_msgs/Image topic (CompressedImage with ``input_compressed``).
        camera_info_topic: sensor_msgs/CameraInfo topic, "" for none.
        camera_info_matrix: "P" or "K" (see CameraModel.from_camera_info).
        kitti_calib: KITTI calib file, "" for none (takes precedence over CameraInfo).
        lidar_to_camera: [4, 4] lidar -> camera optical frame, or None to look it up in tf.
        lidar_objects_topic: admlops_ros/DetectedObjectArray topic, "" for none.
        lidar_stamp_tolerance_s: the lidar array used for an image is the latest one whose stamp
            is within this many seconds of the image's.
        lidar_wait_s: how long (wall clock) an image waits for the lidar array of its stamp.
        fusion: associate 2D detections with projected lidar boxes.
        fusion_iou_threshold: IoU needed for an association.
        score_threshold: 2D detections below it are not published; None keeps all.
        max_pixels: images with more pixels are dropped.
        max_processing_ms, error_after_failures, master_check_period_s: as the lidar node.
    """

    engine: Optional[Path]
    backend: str = "auto"
    input_topic: str = "/camera/image_raw"
    input_compressed: bool = False
    camera_info_topic: str = ""
    camera_info_matrix: str = "P"
    kitti_calib: str = ""
    lidar_to_camera: Optional[Tuple[float, ...]] = None
    lidar_objects_topic: str = ""
    lidar_stamp_tolerance_s: float = 0.05
    lidar_wait_s: float = 0.1
    fusion: bool = False
    fusion_iou_threshold: float = 0.3
    detections_topic: str = "/detection/camera_detector/detections"
    annotated_topic: str = "/detection/camera_detector/image_annotated"
    fused_objects_topic: str = "/detection/camera_detector/confirmed_objects"
    stats_topic: str = "/detection/camera_detector/stats"
    publish_annotated: bool = True
    score_threshold: Optional[float] = None
    max_pixels: int = 4096 * 4096
    max_processing_ms: float = 100.0
    error_after_failures: int = 10
    master_check_period_s: float = 2.0

    def extrinsic_matrix(self) -> Optional[np.ndarray]:
        """``lidar_to_camera`` as a [4, 4] array (None: from tf)."""
        if self.lidar_to_camera is None:
            return None
        return np.asarray(self.lidar_to_camera, np.float64).reshape(4, 4)


def validate_camera_params(values: Dict[str, Any], check_engine: bool = True
                           ) -> CameraNodeParams:
    """Merge ``~`` parameters over config/camera_detection.yaml and check them against its schema.

    Raises:
        ParamError: every bad value, one per line (name, value, allowed range); a kitti_calib
            file that does not exist or lacks P2/R0_rect/Tr_velo_to_cam; a singular
            lidar_to_camera.
    """
    root = package_root()
    merged = dict(load_defaults(root / "config" / CONFIG_NAME))
    merged.update(values)
    errors = schema_errors(merged, load_schema(root / "config" / SCHEMA_NAME))
    if errors:
        raise ParamError("bad camera_detection parameters:\n  " + "\n  ".join(errors))
    engine = (resolve_engine(str(merged["engine"]), default=DEFAULT_CAMERA_ENGINE)
              if check_engine else None)
    extr = tuple(float(v) for v in merged["lidar_to_camera"]) or None
    calib = str(merged["kitti_calib"])
    if calib and not Path(calib).is_absolute():
        calib = str(root / calib)
    try:
        if calib:
            CameraModel.from_kitti(calib)
        if extr is not None:
            CameraModel(np.eye(3, 4), np.asarray(extr).reshape(4, 4))
    except ProjectionError as exc:
        name = "kitti_calib" if calib and "lidar_to_camera" not in str(exc) else "lidar_to_camera"
        raise ParamError(f"invalid parameter ~{name}: {exc}") from None
    score = float(merged["score_threshold"])
    return CameraNodeParams(
        engine=engine, backend=str(merged["backend"]), input_topic=str(merged["input_topic"]),
        input_compressed=bool(merged["input_compressed"]),
        camera_info_topic=str(merged["camera_info_topic"]),
        camera_info_matrix=str(merged["camera_info_matrix"]), kitti_calib=calib,
        lidar_to_camera=extr, lidar_objects_topic=str(merged["lidar_objects_topic"]),
        lidar_stamp_tolerance_s=float(merged["lidar_stamp_tolerance_s"]),
        lidar_wait_s=float(merged["lidar_wait_s"]),
        fusion=bool(merged["fusion"]), fusion_iou_threshold=float(merged["fusion_iou_threshold"]),
        detections_topic=str(merged["detections_topic"]),
        annotated_topic=str(merged["annotated_topic"]),
        fused_objects_topic=str(merged["fused_objects_topic"]),
        stats_topic=str(merged["stats_topic"]), publish_annotated=bool(merged["publish_annotated"]),
        score_threshold=score if score >= 0 else None, max_pixels=int(merged["max_pixels"]),
        max_processing_ms=float(merged["max_processing_ms"]),
        error_after_failures=int(merged["error_after_failures"]),
        master_check_period_s=float(merged["master_check_period_s"]))


class LidarBuffer:
    """The last DetectedObjectArray messages, by stamp, for matching to image stamps."""

    def __init__(self, size: int = LIDAR_BUFFER) -> None:
        self.size = int(size)
        self._stamps: List[float] = []
        self._msgs: List[Any] = []
        self._added = threading.Condition()

    def add(self, msg: Any) -> None:
        """Keep ``msg`` (admlops_ros/DetectedObjectArray); the oldest goes beyond ``size``."""
        stamp = msg.header.stamp.to_sec()
        with self._added:
            i = bisect.bisect_right(self._stamps, stamp)
            self._stamps.insert(i, stamp)
            self._msgs.insert(i, msg)
            if len(self._msgs) > self.size:
                del self._stamps[0], self._msgs[0]
            self._added.notify_all()

    def match(self, stamp_s: float, tolerance_s: float, wait_s: float = 0.0) -> Optional[Any]:
        """The latest message with ``|stamp - stamp_s| <= tolerance_s``, or None.

        Args:
            wait_s: wait up to this long (wall clock) for such a message to be added: the lidar
                node answers a cloud some tens of ms after the camera image of the same instant
                arrives. No wait when no lidar array came yet or the newest is already past
                ``stamp_s``: then none will match.
        """
        deadline = time.monotonic() + max(0.0, wait_s)
        with self._added:
            while True:
                for t, msg in zip(reversed(self._stamps), reversed(self._msgs)):
                    if abs(t - stamp_s) <= tolerance_s:
                        return msg
                if not self._stamps or self._stamps[-1] > stamp_s + tolerance_s:
                    return None
                left = deadline - time.monotonic()
                if left <= 0 or not self._added.wait(left):
                    return None

    def __len__(self) -> int:
        return len(self._msgs)


def objects_to_boxes(msg: Any) -> Tuple[np.ndarray, List[str]]:
    """([N, 7] bottom-centre lidar boxes, class names) of an admlops_ros/DetectedObjectArray."""
    from admlops_ros.ros.conversions import quaternion_to_yaw  # noqa: WPS433

    rows, names = [], []
    for obj in msg.objects:
        p, q, d = obj.pose.position, obj.pose.orientation, obj.dimensions
        rows.append((p.x, p.y, p.z - 0.5 * d.z, d.x, d.y, d.z,
                     quaternion_to_yaw(q.x, q.y, q.z, q.w)))
        names.append(str(obj.label_name))
    return np.asarray(rows, np.float64).reshape(-1, 7), names


@dataclass
class CameraFrameResult:
    """Outputs of one image.

    Attributes:
        detections: admlops_ros/Detection2DArray.
        annotated: sensor_msgs/Image (bgr8) or None.
        confirmed_objects: admlops_ros/DetectedObjectArray of the confirmed lidar objects (header
            of the lidar array) or None without fusion.
        stats: CameraDetectionStats field values without the frame counters.
        warning: a problem with an image that was still processed (no calibration, no tf ...).
    """

    detections: Any
    annotated: Any = None
    confirmed_objects: Any = None
    stats: Dict[str, float] = field(default_factory=dict)
    warning: str = ""


class CameraFrameProcessor:
    """ROS-master-free work per image: convert, detect, project lidar boxes, fuse, draw, build."""

    def __init__(self, detector: Any, params: CameraNodeParams, msgs: Any = None,
                 extrinsic: Optional[ExtrinsicSource] = None) -> None:
        """Args:
            detector: a CameraDetector (``detect(bgr) -> Detections2D``, ``class_names``).
            params: validated node parameters.
            msgs: the generated admlops_ros.msg module (default: from the devel space).
            extrinsic: lidar -> camera transform lookup when ``params.lidar_to_camera`` is None
                (a tf lookup in the node).
        """
        self.detector = detector
        self.params = params
        self.msgs = msgs or import_messages()
        self.extrinsic = extrinsic
        self.lidar = LidarBuffer()
        self.camera_info: Any = None
        self._kitti = CameraModel.from_kitti(params.kitti_calib) if params.kitti_calib else None

    def set_camera_info(self, info: Any) -> None:
        """The latest sensor_msgs/CameraInfo (used when no kitti_calib is given)."""
        self.camera_info = info

    def camera_model(self, header: Any, lidar_frame: str, image_size: Tuple[int, int]
                     ) -> CameraModel:
        """The camera for an image of ``image_size`` (height, width) and a lidar frame.

        Raises:
            ProjectionError: no calibration (no kitti_calib and no CameraInfo yet) or no
                lidar -> camera transform.
        """
        if self._kitti is not None:
            return self._kitti.with_image_size(image_size)
        if self.camera_info is None:
            raise ProjectionError(
                "no camera calibration: no CameraInfo received on "
                f"{self.params.camera_info_topic or '(no ~camera_info_topic)'} and no "
                "~kitti_calib; lidar boxes are not projected")
        extr = self.params.extrinsic_matrix()
        if extr is None:
            if self.extrinsic is None:
                raise ProjectionError("no ~lidar_to_camera and no tf to look it up in")
            frame = str(self.camera_info.header.frame_id or header.frame_id)
            extr = self.extrinsic(frame, lidar_frame, header.stamp)
        model = CameraModel.from_camera_info(self.camera_info, extr,
                                             self.params.camera_info_matrix)
        return model.with_image_size(image_size)

    def process(self, msg: Any, want_annotated: bool = True) -> CameraFrameResult:
        """Detect objects in one Image/CompressedImage; outputs carry its header unchanged.

        Raises:
            ImageError: the image is dropped (encoding, size, truncated data, undecodable).
            Exception: whatever the detector raises (a failure).
        """
        params = self.params
        t0 = time.perf_counter()
        image = to_bgr(msg, params.max_pixels)
        t1 = time.perf_counter()
        det = self.detector.detect(image)
        if params.score_threshold is not None and len(det):
            keep = np.asarray(det.scores) >= params.score_threshold
            det = _select(det, keep)
        t2 = time.perf_counter()
        height, width = image.shape[:2]
        warnings: List[str] = []
        projected, fusion, lidar_msg, names3d = None, None, None, []
        if params.lidar_objects_topic:
            lidar_msg = self.lidar.match(msg.header.stamp.to_sec(), params.lidar_stamp_tolerance_s,
                                         params.lidar_wait_s)
            if lidar_msg is None and len(self.lidar):
                warnings.append(f"no lidar objects within {params.lidar_stamp_tolerance_s} s of "
                                f"the image stamp {msg.header.stamp.to_sec():.3f}")
        if lidar_msg is not None:
            boxes3d, names3d = objects_to_boxes(lidar_msg)
            try:
                camera = self.camera_model(msg.header, str(lidar_msg.header.frame_id),
                                           (height, width))
                projected = camera.project_boxes(boxes3d)
            except ProjectionError as exc:
                warnings.append(str(exc))
            if projected is not None and params.fusion:
                fusion = fuse(det.boxes, det.names() if hasattr(det, "names")
                              else [det.class_names[i] for i in det.labels], projected, names3d,
                              params.fusion_iou_threshold)
        t3 = time.perf_counter()
        annotated = None
        if want_annotated:
            drawn = annotate(image, det, projected, fusion.confirmed if fusion else None,
                             names3d if projected is not None else None)
            annotated = bgr_to_image(drawn, msg.header)
        t4 = time.perf_counter()
        detections = detections2d_to_msg(det, msg.header, self.msgs, fusion, lidar_msg)
        confirmed = (confirmed_objects_msg(lidar_msg, fusion, self.msgs)
                     if fusion is not None else None)
        timings = getattr(det, "timings_ms", {}) or {}
        nan = float("nan")
        stats = {
            "conversion_ms": (t1 - t0) * 1e3,
            "preprocess_ms": timings.get("preprocess", nan),
            "inference_ms": timings.get("inference", nan),
            "postprocess_ms": timings.get("postprocess", nan),
            "detect_ms": timings.get("total", (t2 - t1) * 1e3),
            "fusion_ms": (t3 - t2) * 1e3 if lidar_msg is not None else nan,
            "annotate_ms": (t4 - t3) * 1e3 if want_annotated else nan,
            "image_width": width, "image_height": height,
            "num_detections": len(det),
            "num_projected": int(projected.valid.sum()) if projected is not None else 0,
            "num_confirmed": int(fusion.confirmed.sum()) if fusion is not None else 0,
        }
        return CameraFrameResult(detections, annotated, confirmed, stats, "; ".join(warnings))


def _select(det: Any, keep: np.ndarray) -> Any:
    """Detections2D subset (``select``, or a new object of the same dataclass)."""
    if hasattr(det, "select"):
        return det.select(keep)
    import dataclasses  # noqa: WPS433

    return dataclasses.replace(det, boxes=np.asarray(det.boxes)[keep],
                               scores=np.asarray(det.scores)[keep],
                               labels=np.asarray(det.labels)[keep])


def detections2d_to_msg(det: Any, header: Any, msgs: Any,
                        fusion: Optional[FusionResult] = None, lidar_msg: Any = None) -> Any:
    """admlops_ros/Detection2DArray of a Detections2D (header = the input image header).

    Args:
        det: boxes [N, 4] (x1, y1, x2, y2) pixels, scores, labels, class_names.
        header: std_msgs/Header of the image, copied unchanged.
        msgs: the generated message module.
        fusion: the association with ``lidar_msg``'s objects, or None.
        lidar_msg: the DetectedObjectArray fused with, or None.
    """
    boxes = np.asarray(det.boxes, np.float64).reshape(-1, 4)
    names = tuple(det.class_names)
    index = fusion.object_index.tolist() if fusion is not None else [-1] * len(boxes)
    ious = fusion.iou.tolist() if fusion is not None else [0.0] * len(boxes)
    out = []
    rows = zip(boxes.tolist(), np.asarray(det.scores).tolist(), np.asarray(det.labels).tolist(),
               index, ious)
    for i, ((x1, y1, x2, y2), score, label, obj, iou) in enumerate(rows):
        out.append(msgs.Detection2D(
            header=header, id=i, class_id=int(label),
            class_name=names[label] if 0 <= label < len(names) else str(label),
            score=float(score), center_x=0.5 * (x1 + x2), center_y=0.5 * (y1 + y2),
            size_x=x2 - x1, size_y=y2 - y1, object_index=int(obj), fusion_iou=float(iou)))
    array = msgs.Detection2DArray(header=header, detections=out)
    if fusion is not None and lidar_msg is not None:
        array.fused = True
        array.objects_header = lidar_msg.header
        array.num_objects = len(lidar_msg.objects)
        array.confirmed_objects = [int(j) for j in np.nonzero(fusion.confirmed)[0]]
    return array


def confirmed_objects_msg(lidar_msg: Any, fusion: FusionResult, msgs: Any) -> Any:
    """DetectedObjectArray of the lidar objects the camera confirmed (the lidar header)."""
    objects = [obj for obj, ok in zip(lidar_msg.objects, fusion.confirmed) if ok]
    return msgs.DetectedObjectArray(header=lidar_msg.header, objects=objects)


class TfExtrinsic:
    """``extrinsic(camera_frame, lidar_frame, stamp) -> [4, 4]`` from tf2 (static transforms)."""

    def __init__(self, timeout_s: float = 0.05) -> None:
        import rospy  # noqa: WPS433
        import tf2_ros  # noqa: WPS433

        self.rospy = rospy
        self.timeout_s = timeout_s
        self.buffer = tf2_ros.Buffer(rospy.Duration(30.0))
        self.listener = tf2_ros.TransformListener(self.buffer)
        self._tf2 = tf2_ros

    def __call__(self, camera_frame: str, lidar_frame: str, stamp: Any) -> np.ndarray:
        try:
            tf = self.buffer.lookup_transform(camera_frame, lidar_frame, self.rospy.Time(0),
                                              self.rospy.Duration(self.timeout_s))
        except (self._tf2.LookupException, self._tf2.ConnectivityException,
                self._tf2.ExtrapolationException) as exc:
            raise ProjectionError(f"no tf from {lidar_frame!r} to {camera_frame!r} ({exc}); "
                                  "publish the static transform or set ~lidar_to_camera") from None
        t, q = tf.transform.translation, tf.transform.rotation
        return transform_matrix((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))


class CameraDetectionNode(DetectionNodeBase):
    """The rospy adapter: subscriptions, publications, diagnostics; CameraFrameProcessor works."""

    diagnostic_name = DIAGNOSTIC_NAME
    node_name = NODE_NAME
    frame_kind = "image"

    def __init__(self, params: CameraNodeParams, detector: Any,
                 summary: Optional[Dict[str, str]] = None,
                 restore_params: Optional[Dict[str, Any]] = None) -> None:
        import rospy  # noqa: WPS433
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: WPS433

        self.params = params
        need_tf = (params.lidar_objects_topic and not params.kitti_calib
                   and params.lidar_to_camera is None)
        self.processor = CameraFrameProcessor(detector, params,
                                              extrinsic=TfExtrinsic() if need_tf else None)
        self._init_base(rospy, DiagnosticsState(params.max_processing_ms,
                                                params.error_after_failures, frame_name="image"),
                        summary, restore_params)
        msgs = self.processor.msgs
        self.output_topic = params.detections_topic
        self.pub_detections = rospy.Publisher(params.detections_topic, msgs.Detection2DArray,
                                              queue_size=2)
        self.pub_annotated = (rospy.Publisher(params.annotated_topic, Image, queue_size=2)
                              if params.publish_annotated else None)
        self.pub_confirmed = (rospy.Publisher(params.fused_objects_topic,
                                              msgs.DetectedObjectArray, queue_size=2)
                              if params.fusion else None)
        self.pub_stats = rospy.Publisher(params.stats_topic, msgs.CameraDetectionStats,
                                         queue_size=2)
        self.subs = []
        if params.camera_info_topic:
            self.subs.append(rospy.Subscriber(params.camera_info_topic, CameraInfo,
                                              self.processor.set_camera_info, queue_size=1))
        if params.lidar_objects_topic:
            self.subs.append(rospy.Subscriber(params.lidar_objects_topic,
                                              msgs.DetectedObjectArray, self.processor.lidar.add,
                                              queue_size=5))
        kind = CompressedImage if params.input_compressed else Image
        self.subs.append(rospy.Subscriber(params.input_topic, kind, self._on_image, queue_size=1,
                                          buff_size=BUFF_SIZE))
        self._start_base(params.master_check_period_s)

    def _on_image(self, msg: Any) -> None:
        self._guarded(self._handle, msg)

    def _handle(self, msg: Any) -> None:
        self._handle_frame(msg, self._process, (ImageError,), self._publish,
                           "CameraDetectionStats")

    def _process(self, msg: Any) -> CameraFrameResult:
        want = self.pub_annotated is not None and self.pub_annotated.get_num_connections() > 0
        return self.processor.process(msg, want)

    def _publish(self, result: CameraFrameResult) -> None:
        self.pub_detections.publish(result.detections)
        if result.annotated is not None:
            self.pub_annotated.publish(result.annotated)
        if result.confirmed_objects is not None and self.pub_confirmed is not None:
            self.pub_confirmed.publish(result.confirmed_objects)


def load_detector(params: CameraNodeParams) -> Any:
    """Open the camera bundle with the node's backend and warm it up.

    Raises:
        Exception: whatever the bundle/backend loading raises.
    """
    from admlops_ros.camera.detector import CameraDetector  # noqa: WPS433

    detector = CameraDetector.from_bundle(params.engine, backend=params.backend)
    try:
        detector.warmup()
    except Exception:
        close_detector(detector)
        raise
    return detector


def _summary(detector: Any, params: CameraNodeParams) -> Dict[str, str]:
    info = {"bundle": str(params.engine), "backend": params.backend,
            "classes": ",".join(getattr(detector, "class_names", ()) or ())}
    spec = getattr(detector, "spec", None)
    name = getattr(spec, "name", None) or getattr(spec, "model", None)
    if name:
        info["model"] = str(name)
    return info


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the node until shutdown; exit code 0 stopped, 2 bad parameters, 3 engine failure,
    4 the ROS master restarted."""
    return run_node(NODE_NAME, argv, validate_camera_params, load_detector, _summary,
                    CameraDetectionNode, what="camera engine")


__all__ = ["CameraNodeParams", "validate_camera_params", "LidarBuffer", "CameraFrameProcessor",
           "CameraFrameResult", "CameraDetectionNode", "detections2d_to_msg", "main"]
