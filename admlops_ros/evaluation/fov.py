"""Camera field-of-view filter for KITTI scoring: the frame's calibration, boxes and points in image 2.

What is removed, and why (checked against mmdet3d 1.x ``mmdet3d/evaluation/metrics/
kitti_metric.py`` ``KittiMetric.convert_valid_bboxes``, commit 07f112cb of
open-mmlab/mmdetection3d, read with the project's search tool):

- mmdet3d converts each predicted LiDAR box to the camera with ``lidar2cam`` (R0_rect @
  Tr_velo_to_cam), projects its 8 corners with ``points_cam2img(corners, P2)`` (homogeneous
  product, divided by depth, no depth clamp), takes min/max of the corners as the 2D box
  (x1, y1, x2, y2) and keeps the box when ``x1 < W and y1 < H and x2 > 0 and y2 > 0`` (the
  image is (H, W) of that frame), AND its LiDAR ``center`` (mmdet3d's bottom centre) lies
  strictly inside ``pcd_limit_range`` (default [0, -40, -3, 70.4, 40, 0]). mmdet3d 1.x has no
  explicit camera-depth test: boxes behind the camera are dropped by the range's x > 0.
- Here (:func:`boxes_in_fov`) the image test is that of the project's KITTI result writer,
  :func:`admlops_ros.evaluation.kitti_io.project_boxes_to_image`: the same corner projection
  (corner depth clamped to 0.1 m, so a corner behind the camera lands far off the image side
  instead of flipping), the same four overlap inequalities on the unclipped 2D box, a
  non-empty clipped box, AND the box centre's depth in the rectified camera frame > 0 (the
  camera is about 0.27 m ahead of the LiDAR, so this is mmdet3d's x > 0 range cut moved to
  the camera). The range test is the model's point-cloud range on the bottom centre's x and
  y, ``lo <= v < hi`` (the rule :func:`admlops_ros.evaluation.replay.restrict_to_range`
  applies to ground truth), in place of mmdet3d's fixed KITTI range. One rule for the eval
  of a bag and for the result files ``admlops kitti-eval`` reads, so the two agree.
- The kept box's clipped 2D box is attached to the prediction: KITTI's ``clean_data``
  ignores detections lower than the difficulty's minimum height (40 / 25 / 25 px), which is
  how OpenPCDet's KITTI evaluation discounts what lies outside the image.
- Points (:func:`points_in_fov`) follow OpenPCDet's ``get_fov_flag``: pixel inside
  ``0 <= u < W``, ``0 <= v < H`` and depth > 0.

Calibration in a bag (:func:`read_bag_camera`): ``sensor_msgs/CameraInfo`` ``P`` (KITTI P2)
with its width / height, and the transform between the cloud's frame and the CameraInfo's
frame (the rectified camera, optical axes) from ``/tf`` at the cloud's stamp (bag-from-kitti:
one per frame, KITTI frames of different drives have different calibrations) or from the
static tree on ``/tf_static`` (simulated bags, recorded rigs).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from admlops_ros.camera.kitti_calib import KittiCalib
from admlops_ros.evaluation.frames import FrameGT, FramePred
from admlops_ros.evaluation.rosbag_io import BagError, open_bag

LOG = logging.getLogger(__name__)

FOV_MODES: Tuple[str, ...] = ("camera", "all")
CAMERA_INFO_TYPE = "sensor_msgs/CameraInfo"
TF_TYPES = ("tf2_msgs/TFMessage", "tf/tfMessage")
TF_TOPIC = "/tf"
TF_STATIC_TOPIC = "/tf_static"


@dataclass
class FrameCalib:
    """One frame's camera calibration.

    Attributes:
        lidar2cam: [4, 4] LiDAR -> rectified camera (KITTI ``R0_rect @ Tr_velo_to_cam``).
        P: [3, 4] rectified camera -> image pixels (KITTI P2).
        image_size: (height, width) pixels.
        source: where it came from (for messages).
    """

    lidar2cam: np.ndarray
    P: np.ndarray
    image_size: Tuple[int, int]
    source: str = ""

    def __post_init__(self) -> None:
        self.lidar2cam = np.asarray(self.lidar2cam, np.float64).reshape(4, 4)
        self.P = np.asarray(self.P, np.float64).reshape(3, 4)
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))

    @property
    def lidar2img(self) -> np.ndarray:
        """[4, 4] LiDAR -> pixels (homogeneous; divide by the third row)."""
        out = np.eye(4)
        out[:3] = self.P @ self.lidar2cam
        return out

    def kitti_calib(self) -> KittiCalib:
        """The same calibration as a KittiCalib (R0_rect identity, Tr = lidar2cam)."""
        return KittiCalib(P0=self.P.copy(), P1=self.P.copy(), P2=self.P.copy(),
                          P3=self.P.copy(), R0_rect=np.eye(3),
                          Tr_velo_to_cam=self.lidar2cam[:3].copy())

    @classmethod
    def from_kitti(cls, calib: KittiCalib, image_size: Tuple[int, int],
                   source: str = "") -> "FrameCalib":
        """From a KITTI calib file's values and the frame's image (height, width)."""
        return cls(calib.lidar2cam, calib.P2, image_size, source)


def boxes_in_fov(boxes: np.ndarray, calib: FrameCalib,
                 point_cloud_range: Optional[Sequence[float]] = None
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """Which LiDAR boxes are kept for KITTI scoring (see the module docstring) and their 2D box.

    Args:
        boxes: [N, 7] LiDAR boxes (x, y, z, dx, dy, dz, yaw), bottom centre.
        calib: the frame's calibration.
        point_cloud_range: (x_lo, y_lo, z_lo, x_hi, y_hi, z_hi) m; only x and y are tested;
            None: no range test.

    Returns:
        (keep [N] bool, bbox2d [N, 4] (left, top, right, bottom) clipped to the image, px).
    """
    from admlops_ros.evaluation import kitti_io
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    if not len(boxes):
        return np.zeros(0, bool), np.zeros((0, 4))
    bbox, _, visible = kitti_io.project_boxes_to_image(boxes, calib.kitti_calib(),
                                                       calib.image_size)
    keep = np.asarray(visible, bool)
    if point_cloud_range is not None:
        lo_x, lo_y, _, hi_x, hi_y, _ = [float(v) for v in point_cloud_range]
        keep &= ((boxes[:, 0] >= lo_x) & (boxes[:, 0] < hi_x)
                 & (boxes[:, 1] >= lo_y) & (boxes[:, 1] < hi_y))
    return keep, bbox


def points_in_fov(points: np.ndarray, calib: FrameCalib) -> np.ndarray:
    """[N] bool: the point projects into image 2 (0 <= u < W, 0 <= v < H) with depth > 0."""
    pts = np.asarray(points, np.float64)[:, :3]
    homo = np.concatenate([pts, np.ones((len(pts), 1))], axis=1)
    img = homo @ calib.lidar2img.T
    depth = img[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u, v = img[:, 0] / depth, img[:, 1] / depth
    h, w = calib.image_size
    return (depth > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)


def subset_gt(gt: FrameGT, keep: np.ndarray) -> FrameGT:
    """The ground-truth boxes where ``keep`` holds (every per-box field; DontCare kept)."""
    keep = np.asarray(keep, bool)

    def sel(a):
        return None if a is None else np.asarray(a)[keep]
    return FrameGT(gt.boxes[keep], np.asarray(gt.names)[keep], sel(gt.bbox2d), sel(gt.occluded),
                   sel(gt.truncated), sel(gt.ignore), sel(gt.difficulty), gt.dontcare_bbox2d,
                   gt.frame_id)


def subset_pred(pred: FramePred, keep: np.ndarray,
                bbox2d: Optional[np.ndarray] = None) -> FramePred:
    """The predictions where ``keep`` holds, with ``bbox2d`` [N, 4] (all boxes) attached."""
    keep = np.asarray(keep, bool)
    if bbox2d is not None:
        box2d: Optional[np.ndarray] = np.asarray(bbox2d, np.float64).reshape(-1, 4)[keep]
    else:
        box2d = None if pred.bbox2d is None else pred.bbox2d[keep]
    return FramePred(pred.boxes[keep], pred.scores[keep], np.asarray(pred.names)[keep],
                     box2d, pred.frame_id)


@dataclass
class FovStats:
    """What the FOV filter did over a run (written to results.json as ``fov``)."""

    mode: str = "camera"
    frames: int = 0
    frames_with_calib: int = 0
    predictions_in: int = 0
    predictions_removed: int = 0
    gt_in: int = 0
    gt_removed: int = 0
    calib_sources: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        rule = ("predictions and ground truth kept when the 3D box projects into image 2 "
                "(8 corners through the frame's P @ lidar2cam, 2D box overlapping the image) "
                "with its centre in front of the camera and its bottom centre inside the "
                "model's x/y point-cloud range (mmdet3d KittiMetric / OpenPCDet); kept "
                "predictions carry their clipped 2D box for KITTI's minimum-height rule"
                if self.mode == "camera" else "none: every prediction and ground-truth box "
                "is scored")
        return {"mode": self.mode, "rule": rule, "frames": self.frames,
                "frames_with_calibration": self.frames_with_calib,
                "predictions": self.predictions_in,
                "predictions_removed": self.predictions_removed,
                "ground_truth": self.gt_in, "ground_truth_removed": self.gt_removed,
                "calibration": sorted(set(self.calib_sources))}


def merge_stats(parts: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """One ``fov`` results entry of several runs' :meth:`FovStats.to_dict` (counts summed;
    empty entries, from runs that did not record one, are skipped)."""
    parts = [p for p in parts if p]
    if not parts:
        return {}
    modes = sorted({p["mode"] for p in parts})
    total = FovStats(modes[0] if len(modes) == 1 else "/".join(modes))
    for p in parts:
        total.frames += p["frames"]
        total.frames_with_calib += p["frames_with_calibration"]
        total.predictions_in += p["predictions"]
        total.predictions_removed += p["predictions_removed"]
        total.gt_in += p["ground_truth"]
        total.gt_removed += p["ground_truth_removed"]
        total.calib_sources += list(p["calibration"])
    out = total.to_dict()
    if len(modes) == 1:
        out["rule"] = parts[0]["rule"]
    return out


def filter_frame(gt: Optional[FrameGT], pred: FramePred, calib: Optional[FrameCalib],
                 point_cloud_range: Optional[Sequence[float]], mode: str,
                 stats: Optional[FovStats] = None) -> Tuple[Optional[FrameGT], FramePred]:
    """Apply the FOV filter ``mode`` ("camera" or "all") to one frame's gt and predictions.

    A frame without calibration is left as it is (counted in ``stats``).

    Raises:
        BagError: an unknown mode.
    """
    if mode not in FOV_MODES:
        raise BagError(f"fov {mode!r} unknown; use one of {', '.join(FOV_MODES)}")
    if stats is not None:
        stats.frames += 1
        stats.predictions_in += len(pred)
        stats.gt_in += len(gt) if gt is not None else 0
    if mode == "all" or calib is None:
        return gt, pred
    keep, bbox2d = boxes_in_fov(pred.boxes, calib, point_cloud_range)
    pred = subset_pred(pred, keep, bbox2d)
    if gt is not None:
        gkeep, _ = boxes_in_fov(gt.boxes, calib, None)
        if stats is not None:
            stats.gt_removed += int((~gkeep).sum())
        gt = subset_gt(gt, gkeep)
    if stats is not None:
        stats.frames_with_calib += 1
        stats.predictions_removed += int((~keep).sum())
        if calib.source:
            stats.calib_sources.append(calib.source)
    return gt, pred


# ---------------------------------------------------------------------------------------------
# Reading a bag's camera calibration (and its 2D ground truth, for the KITTI difficulty)

def _tf_edges(msg: Any) -> List[Tuple[int, Tuple[str, str, np.ndarray]]]:
    """(stamp ns, (parent, child, [4, 4] child -> parent)) per TransformStamped."""
    from admlops_ros.camera.projection import transform_matrix
    out = []
    for tf in msg.transforms:
        tr, q = tf.transform.translation, tf.transform.rotation
        out.append((int(tf.header.stamp.to_nsec()),
                    (tf.header.frame_id.lstrip("/"), tf.child_frame_id.lstrip("/"),
                     transform_matrix((tr.x, tr.y, tr.z), (q.x, q.y, q.z, q.w)))))
    return out


def chain_transform(edges: Sequence[Tuple[str, str, np.ndarray]], source: str,
                    target: str) -> Optional[np.ndarray]:
    """[4, 4] ``source``-frame points -> ``target`` frame through a tree of transforms, or None.

    Args:
        edges: (parent, child, [4, 4] child -> parent) per TransformStamped (as tf stores
            ``header.frame_id``, ``child_frame_id``).
    """
    to_target: Dict[str, np.ndarray] = {target: np.eye(4)}
    changed = True
    while changed and source not in to_target:
        changed = False
        for parent, child, mat in edges:
            if parent in to_target and child not in to_target:
                to_target[child] = to_target[parent] @ mat
                changed = True
            elif child in to_target and parent not in to_target:
                to_target[parent] = to_target[child] @ np.linalg.inv(mat)
                changed = True
    return to_target.get(source)


@dataclass
class BagCamera:
    """A bag's camera calibration per stamp and its 2D ground truth per stamp.

    Attributes:
        lidar_frame, camera_frame: the cloud's and the CameraInfo's ``header.frame_id``.
        info: stamp -> (P [3, 4], height, width).
        static_edges: /tf_static transforms; dynamic: stamp -> that stamp's /tf transforms.
        image_gt: stamp -> ImageGT (``/ground_truth/image_objects``).
        image_topic: the bag's image topic, or None.
    """

    path: str
    lidar_frame: str = ""
    camera_frame: str = ""
    info: Dict[int, Tuple[np.ndarray, int, int]] = field(default_factory=dict)
    static_edges: List[Tuple[str, str, np.ndarray]] = field(default_factory=list)
    dynamic: Dict[int, List[Tuple[str, str, np.ndarray]]] = field(default_factory=dict)
    image_gt: Dict[int, Any] = field(default_factory=dict)
    image_topic: Optional[str] = None

    @property
    def has_calibration(self) -> bool:
        return bool(self.info) and bool(self.static_edges or self.dynamic)

    def calib(self, stamp_ns: int) -> Optional[FrameCalib]:
        """The calibration at a cloud's stamp: its CameraInfo (else the bag's first) and the
        lidar -> camera transform of the /tf at that stamp (else the latest before it) joined
        with the static tree; None when the bag cannot give one."""
        if not self.info or not (self.lidar_frame and self.camera_frame):
            return None
        info = self.info.get(stamp_ns) or self.info[min(self.info)]
        edges = list(self.static_edges)
        source = TF_STATIC_TOPIC
        if self.dynamic:
            if stamp_ns in self.dynamic:
                at = stamp_ns
            else:
                before = [s for s in self.dynamic if s <= stamp_ns]
                at = max(before) if before else None
            if at is not None:
                edges = self.dynamic[at] + edges
                source = f"{TF_TOPIC} per frame"
        mat = chain_transform(edges, self.lidar_frame, self.camera_frame)
        if mat is None:
            return None
        return FrameCalib(mat, info[0], (info[1], info[2]),
                          f"{source} {self.lidar_frame}->{self.camera_frame} + CameraInfo P")


def _header_frame_id(msg: Any) -> str:
    return str(getattr(getattr(msg, "header", None), "frame_id", "")).lstrip("/")


def _stamp(msg: Any, t: Any) -> int:
    s = getattr(getattr(msg, "header", None), "stamp", None)
    if s is None or (s.secs == 0 and s.nsecs == 0):
        return int(t.to_nsec())
    return int(s.to_nsec())


def read_bag_camera(path: os.PathLike, points_topic: str,
                    info_topic: Optional[str] = None) -> BagCamera:
    """The camera calibration and 2D ground truth of a bag (small topics only, read once).

    Args:
        points_topic: the cloud topic (its first header gives the LiDAR frame).
        info_topic: CameraInfo topic (default /camera/camera_info, else the only one).

    Raises:
        BagError: the bag cannot be opened.
    """
    from admlops_ros.evaluation import camera_bags
    bag, _ = open_bag(Path(path))
    out = BagCamera(str(path))
    try:
        topics = {n: t.msg_type for n, t in bag.get_type_and_topic_info().topics.items()}
        infos = sorted(n for n, t in topics.items() if t == CAMERA_INFO_TYPE)
        if info_topic is None:
            info_topic = (camera_bags.CAMERA_INFO_TOPIC if camera_bags.CAMERA_INFO_TOPIC in infos
                          else infos[0] if len(infos) == 1 else None)
        images = [n for n in (camera_bags.IMAGE_TOPIC, camera_bags.COMPRESSED_TOPIC)
                  if topics.get(n) in (camera_bags.IMAGE_TYPE, camera_bags.COMPRESSED_TYPE)]
        out.image_topic = images[0] if images else None
        for _, msg, _ in bag.read_messages(topics=[points_topic]):
            out.lidar_frame = _header_frame_id(msg)
            break
        gt_topic = (camera_bags.IMAGE_GT_TOPIC
                    if topics.get(camera_bags.IMAGE_GT_TOPIC) == camera_bags.GT_TYPE else None)
        tf_topics = [n for n in (TF_TOPIC, TF_STATIC_TOPIC) if topics.get(n) in TF_TYPES]
        small = [t for t in [info_topic, gt_topic] + tf_topics if t]
        for topic, msg, t in (bag.read_messages(topics=small) if small else ()):
            if topic == info_topic:
                out.camera_frame = out.camera_frame or _header_frame_id(msg)
                out.info[_stamp(msg, t)] = (np.asarray(msg.P, np.float64).reshape(3, 4),
                                            int(msg.height), int(msg.width))
            elif topic == gt_topic:
                stamp = _stamp(msg, t)
                out.image_gt[stamp] = camera_bags.image_gt_from_msg(msg, f"{stamp / 1e9:.3f}")
            elif topic == TF_STATIC_TOPIC:
                out.static_edges += [edge for _, edge in _tf_edges(msg)]
            else:
                for stamp, edge in _tf_edges(msg):
                    out.dynamic.setdefault(stamp or int(t.to_nsec()), []).append(edge)
    except BagError:
        raise
    except Exception as exc:  # noqa: B902 - rosbag raises many kinds; calibration is optional
        LOG.warning("bag %s: camera calibration not read: %s", path, exc)
    finally:
        bag.close()
    return out


def read_images(path: os.PathLike, topic: str, stamps: Sequence[int]) -> Dict[int, np.ndarray]:
    """BGR images of ``topic`` at the given header stamps (only those are decoded)."""
    from admlops_ros.evaluation import camera_bags
    want = set(int(s) for s in stamps)
    out: Dict[int, np.ndarray] = {}
    if not want:
        return out
    bag, _ = open_bag(Path(path))
    try:
        for _, msg, t in bag.read_messages(topics=[topic]):
            s = _stamp(msg, t)
            if s in want and s not in out:
                try:
                    out[s] = camera_bags.msg_to_image(msg)
                except BagError as exc:
                    LOG.warning("bag %s: image at %.6f not decoded: %s", path, s / 1e9, exc)
                if len(out) == len(want):
                    break
    finally:
        bag.close()
    return out


def with_kitti_fields(gt: FrameGT, image_gt: Any) -> FrameGT:
    """The 3D ground truth with the 2D box, occlusion, truncation and DontCare regions of the
    frame's 2D ground truth, when the two are one list (bag-from-kitti writes both from the
    same label_2 lines, in order): same class names in the same order, and each object's
    difficulty level equal to KITTI's from the 2D fields. Otherwise ``gt`` unchanged."""
    from admlops_ros.evaluation.protocol import kitti_difficulty
    if image_gt is None or len(image_gt) != len(gt) or gt.difficulty is None:
        return gt
    if [str(n) for n in image_gt.names] != [str(n) for n in gt.names]:
        return gt
    occ = np.asarray(image_gt.occluded, np.int64)
    trunc = np.asarray(image_gt.truncated, np.float64)
    levels = kitti_difficulty(image_gt.boxes, occ, trunc)
    if not np.array_equal(levels, np.asarray(gt.difficulty, np.int64)):
        return gt
    return FrameGT(gt.boxes, gt.names, np.asarray(image_gt.boxes, np.float64), occ, trunc,
                   gt.ignore, gt.difficulty, np.asarray(image_gt.dontcare, np.float64),
                   gt.frame_id)


__all__: Sequence[str] = ("FOV_MODES", "FrameCalib", "FovStats", "BagCamera", "boxes_in_fov",
                          "merge_stats",
                          "points_in_fov", "filter_frame", "subset_gt", "subset_pred",
                          "chain_transform", "read_bag_camera", "read_images",
                          "with_kitti_fields")
