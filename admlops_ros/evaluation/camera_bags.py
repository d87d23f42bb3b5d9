"""Camera topics in ground-truth bags: images, CameraInfo and 2D box ground truth (write and read).

Bag layout (beside the cloud topics of :mod:`admlops_ros.evaluation.bags`; every message of a
frame carries the cloud's header stamp, ``header.frame_id`` "camera"):

- ``/camera/image_raw`` sensor_msgs/Image ``bgr8`` (or ``/camera/image_raw/compressed``
  sensor_msgs/CompressedImage ``png``), the KITTI ``image_2`` / rendered image as is.
- ``/camera/camera_info`` sensor_msgs/CameraInfo: ``P`` = KITTI P2 (rectified image, so
  ``R`` = identity, ``D`` = 0), ``K`` = its left 3x3.
- ``/ground_truth/image_objects`` admlops_ros/DetectedObjectArray used for 2D boxes (the
  project has no 2D ground-truth message; the encoding mirrors the 2D detection message:
  centre and size in pixels): per object ``label_name`` the class (KITTI spelling, also Van,
  Person_sitting, ... and ``DontCare`` for DontCare regions), ``pose.position.x/.y`` the box
  centre (px), ``dimensions.x/.y`` width and height (px), ``pose.position.z`` the KITTI
  truncation (0..1), ``dimensions.z`` the KITTI occlusion state (0..3), ``label`` the KITTI
  difficulty level from height, occlusion and truncation (0 easy, 1 moderate, 2 hard, -1 none
  of them or DontCare; -2 an ignored box: its matches are neither TP nor FP), ``score`` 1.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from admlops_ros.evaluation.metrics2d import ImageGT
from admlops_ros.evaluation.protocol import kitti_difficulty
from admlops_ros.evaluation.rosbag_io import BagError, open_bag

LOG = logging.getLogger(__name__)

IMAGE_TOPIC = "/camera/image_raw"
COMPRESSED_TOPIC = "/camera/image_raw/compressed"
CAMERA_INFO_TOPIC = "/camera/camera_info"
IMAGE_GT_TOPIC = "/ground_truth/image_objects"
CAMERA_FRAME_ID = "camera"
TF_STATIC_TOPIC = "/tf_static"
TF_TOPIC = "/tf"
IMAGE_TYPE = "sensor_msgs/Image"
COMPRESSED_TYPE = "sensor_msgs/CompressedImage"
GT_TYPE = "admlops_ros/DetectedObjectArray"
IMAGE_FORMATS: Tuple[str, ...] = ("raw", "png")
DONTCARE = "DontCare"
IGNORED = -2  # label of an ignored ground-truth box


# ---------------------------------------------------------------------------------------------
# Messages

def image_to_msg(image: np.ndarray, header: Any, fmt: str = "raw") -> Any:
    """sensor_msgs/Image (bgr8) or CompressedImage (png) of an HxWx3 uint8 BGR image."""
    from sensor_msgs import msg as sensor_msgs
    image = np.ascontiguousarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise BagError(f"image must be HxWx3 uint8 BGR, got {image.dtype} {image.shape}")
    if fmt == "png":
        import cv2
        ok, buf = cv2.imencode(".png", image)
        if not ok:
            raise BagError("cv2.imencode failed to encode the image as png")
        return sensor_msgs.CompressedImage(header=header, format="bgr8; png compressed bgr8",
                                           data=buf.tobytes())
    if fmt != "raw":
        raise BagError(f"image format {fmt!r} unknown; use one of {IMAGE_FORMATS}")
    h, w = image.shape[:2]
    return sensor_msgs.Image(header=header, height=h, width=w, encoding="bgr8",
                             is_bigendian=0, step=3 * w, data=image.tobytes())


def msg_to_image(msg: Any) -> np.ndarray:
    """HxWx3 uint8 BGR from an Image (bgr8, rgb8, mono8) or a CompressedImage.

    Raises:
        BagError: another encoding, or data that does not fit height x step.
    """
    if hasattr(msg, "format") and not hasattr(msg, "encoding"):
        import cv2
        img = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise BagError(f"compressed image ({msg.format!r}) cannot be decoded")
        return img
    channels = {"bgr8": 3, "rgb8": 3, "mono8": 1}.get(msg.encoding)
    if channels is None:
        raise BagError(f"image encoding {msg.encoding!r} is not read by the evaluator; use "
                       f"bgr8, rgb8 or mono8")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.frombuffer(msg.data, np.uint8)
    if h == 0 or w == 0 or step < w * channels or data.size < h * step:
        raise BagError(f"image {w}x{h} step {step} with {data.size} bytes does not fit "
                       f"{msg.encoding}")
    img = data[:h * step].reshape(h, step)[:, :w * channels].reshape(h, w, channels)
    if msg.encoding == "rgb8":
        img = img[:, :, ::-1]
    elif msg.encoding == "mono8":
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img)


def camera_info_msg(P: np.ndarray, width: int, height: int, header: Any) -> Any:
    """sensor_msgs/CameraInfo of a rectified camera with projection ``P`` [3, 4] (KITTI P2)."""
    from sensor_msgs import msg as sensor_msgs
    P = np.asarray(P, np.float64).reshape(3, 4)
    return sensor_msgs.CameraInfo(header=header, height=int(height), width=int(width),
                                  distortion_model="plumb_bob", D=[0.0] * 5,
                                  K=P[:, :3].reshape(-1).tolist(),
                                  R=np.eye(3).reshape(-1).tolist(), P=P.reshape(-1).tolist())


def image_gt_to_msg(gt: ImageGT, header: Any, msgs: Any) -> Any:
    """DetectedObjectArray carrying 2D ground truth (the encoding in the module docstring).

    Args:
        msgs: the generated admlops_ros.msg module (``bags.messages()``).
    """
    n = len(gt)
    occ = np.zeros(n, np.int64) if gt.occluded is None else np.asarray(gt.occluded, np.int64)
    trunc = np.zeros(n) if gt.truncated is None else np.asarray(gt.truncated, np.float64)
    levels = (kitti_difficulty(gt.boxes, occ, trunc) if gt.has_kitti_difficulty
              else np.zeros(n, np.int64))
    if gt.ignore is not None:
        levels[np.asarray(gt.ignore, bool)] = IGNORED
    out = msgs.DetectedObjectArray(header=header)
    rows = [(b, str(c), float(t), int(o), int(lv)) for b, c, t, o, lv
            in zip(gt.boxes, gt.names, trunc, occ, levels)]
    rows += [(b, DONTCARE, -1.0, -1, -1) for b in gt.dontcare]
    for i, (b, name, t, o, lv) in enumerate(rows):
        obj = msgs.DetectedObject(header=header, id=i, label=lv, label_name=name, score=1.0)
        obj.pose.position.x = float(b[0] + b[2]) / 2
        obj.pose.position.y = float(b[1] + b[3]) / 2
        obj.pose.position.z = t
        obj.pose.orientation.w = 1.0
        obj.dimensions.x = float(b[2] - b[0])
        obj.dimensions.y = float(b[3] - b[1])
        obj.dimensions.z = float(o)
        out.objects.append(obj)
    return out


def image_gt_from_msg(msg: Any, frame_id: str = "") -> ImageGT:
    """ImageGT from a 2D ground-truth message (``label`` -2: ignored box)."""
    boxes, names, trunc, occ, ignore, dc = [], [], [], [], [], []
    for o in msg.objects:
        cx, cy, w, h = o.pose.position.x, o.pose.position.y, o.dimensions.x, o.dimensions.y
        box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        if o.label_name == DONTCARE:
            dc.append(box)
            continue
        boxes.append(box)
        names.append(o.label_name)
        trunc.append(o.pose.position.z)
        occ.append(int(round(o.dimensions.z)))
        ignore.append(o.label == IGNORED)
    return ImageGT(np.array(boxes, np.float64).reshape(-1, 4), names,
                   occluded=np.array(occ, np.int64), truncated=np.array(trunc, np.float64),
                   ignore=np.array(ignore, bool), dontcare=np.array(dc).reshape(-1, 4),
                   frame_id=frame_id)


# ---------------------------------------------------------------------------------------------
# KITTI

def kitti_image_gt(objects: Sequence[Any], frame: str = "") -> ImageGT:
    """ImageGT of a label_2 file's objects (every class; DontCare as regions)."""
    care = [o for o in objects if o.type != DONTCARE]
    return ImageGT(np.array([o.bbox for o in care], np.float64).reshape(-1, 4),
                   [o.type for o in care],
                   occluded=np.array([o.occluded for o in care], np.int64),
                   truncated=np.array([o.truncated for o in care], np.float64),
                   dontcare=np.array([o.bbox for o in objects if o.type == DONTCARE],
                                     np.float64).reshape(-1, 4), frame_id=frame)


def read_kitti_image(kitti_dir: os.PathLike, frame: str) -> Tuple[np.ndarray, np.ndarray, ImageGT]:
    """(BGR image, P2 [3, 4], ImageGT) of one KITTI object frame.

    Raises:
        BagError: image_2/<frame>.png, calib or label_2 file missing or unreadable.
    """
    import cv2

    from admlops_ros.evaluation import kitti_io
    root = Path(kitti_dir)
    path = root / "image_2" / f"{frame}.png"
    if not path.is_file():
        raise BagError(f"KITTI frame {frame}: image file {path} is missing (images come from "
                       f"image_2/; pass --images none to write clouds only)")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise BagError(f"KITTI frame {frame}: {path} cannot be decoded as an image")
    calib = kitti_io.read_calib(root / "calib" / f"{frame}.txt")
    objects = kitti_io.read_label(root / "label_2" / f"{frame}.txt")
    return image, np.asarray(calib.P2, np.float64).reshape(3, 4), kitti_image_gt(objects, frame)


def write_transform(writer: Any, parent: str, child: str, child_to_parent: np.ndarray,
                    topic: str = TF_TOPIC, latch: bool = False) -> None:
    """A tf2_msgs/TFMessage (one transform, the stamp of the frame ``writer`` last wrote).

    Args:
        child_to_parent: [4, 4] transform of ``child``-frame points into the ``parent`` frame
            (the pose of ``child`` in ``parent``), e.g. camera -> velodyne.
        topic: /tf for a per-frame transform (bag-from-kitti: each KITTI frame has its own
            calibration), /tf_static (latched) for a fixed one.
    """
    import copy

    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    from admlops_ros.camera.projection import matrix_to_quaternion
    m = np.asarray(child_to_parent, np.float64).reshape(4, 4)
    tf = TransformStamped()
    tf.header = copy.deepcopy(writer.last_header)
    tf.header.frame_id = parent
    tf.child_frame_id = child
    tf.transform.translation.x, tf.transform.translation.y, tf.transform.translation.z = \
        (float(v) for v in m[:3, 3])
    q = tf.transform.rotation
    q.x, q.y, q.z, q.w = matrix_to_quaternion(m[:3, :3])
    writer.write_message(topic, TFMessage(transforms=[tf]), latch=latch)


def write_static_transform(writer: Any, parent: str, child: str, child_to_parent: np.ndarray,
                           topic: str = TF_STATIC_TOPIC) -> None:
    """A latched tf2_msgs/TFMessage on /tf_static at the stamp of the frame ``writer`` last wrote.

    Args:
        child_to_parent: [4, 4] transform of ``child``-frame points into the ``parent`` frame
            (the pose of ``child`` in ``parent``), e.g. camera -> velodyne.
    """
    write_transform(writer, parent, child, child_to_parent, topic, latch=True)


def write_camera(writer: Any, image: Optional[np.ndarray], P: np.ndarray, gt: Optional[ImageGT],
                 fmt: str = "raw", image_size: Optional[Tuple[int, int]] = None) -> None:
    """Image, CameraInfo and 2D ground truth of the frame ``writer`` (a BagWriter) just wrote,
    with its cloud's stamp.

    Args:
        image: HxWx3 BGR, or None for CameraInfo and 2D ground truth without the image
            (then ``image_size`` (height, width) gives the CameraInfo's size).
    """
    import copy
    header = copy.deepcopy(writer.last_header)
    header.frame_id = CAMERA_FRAME_ID
    if image is not None:
        topic = COMPRESSED_TOPIC if fmt == "png" else IMAGE_TOPIC
        writer.write_message(topic, image_to_msg(image, header, fmt))
        image_size = image.shape[:2]
    if image_size is None:
        raise BagError("write_camera without an image needs image_size (height, width)")
    writer.write_message(CAMERA_INFO_TOPIC,
                         camera_info_msg(P, image_size[1], image_size[0], header))
    if gt is not None:
        writer.write_message(IMAGE_GT_TOPIC, image_gt_to_msg(gt, header, writer.messages))


# ---------------------------------------------------------------------------------------------
# Reading

@dataclass
class CameraFrame:
    """One image of a bag with the 2D ground truth of its stamp (None if absent)."""

    index: int
    stamp_ns: int
    image: Optional[np.ndarray]
    gt: Optional[ImageGT]
    error: str = ""

    @property
    def frame_id(self) -> str:
        return f"{self.stamp_ns / 1e9:.3f}"


@dataclass
class CameraBagSummary:
    """What a bag holds on its camera topics."""

    path: str
    image_topic: str
    gt_topic: Optional[str]
    num_images: int
    num_gt: int
    images_without_gt: int
    problems: List[str] = field(default_factory=list)
    duration_s: float = 0.0


def _stamp(msg: Any, t: Any) -> int:
    s = getattr(getattr(msg, "header", None), "stamp", None)
    if s is None or (s.secs == 0 and s.nsecs == 0):
        return int(t.to_nsec())
    return int(s.to_nsec())


def resolve_camera_topics(topics: Dict[str, str], image_topic: Optional[str],
                          gt_topic: Optional[str], path: str) -> Tuple[str, Optional[str]]:
    """The image topic (Image or CompressedImage) and the 2D ground-truth topic (or None).

    Raises:
        BagError: no image topic, or a requested one missing / of another type.
    """
    listing = ", ".join(f"{n} ({t})" for n, t in sorted(topics.items())) or "none"
    images = sorted(n for n, t in topics.items() if t in (IMAGE_TYPE, COMPRESSED_TYPE))
    if image_topic is None:
        for cand in (IMAGE_TOPIC, COMPRESSED_TOPIC):
            if cand in images:
                image_topic = cand
                break
        else:
            if len(images) != 1:
                raise BagError(f"bag {path}: {'no' if not images else len(images)} image "
                               f"topics ({IMAGE_TYPE} / {COMPRESSED_TYPE}); its topics are "
                               f"{listing} (write one with bag-from-kitti, or choose one with "
                               f"--image-topic)")
            image_topic = images[0]
    elif topics.get(image_topic) not in (IMAGE_TYPE, COMPRESSED_TYPE):
        raise BagError(f"bag {path}: image topic {image_topic!r} is "
                       f"{topics.get(image_topic, 'missing')}; image topics: {images or 'none'}")
    want = gt_topic or IMAGE_GT_TOPIC
    if topics.get(want) != GT_TYPE:
        if gt_topic is not None:
            raise BagError(f"bag {path}: 2D ground-truth topic {gt_topic!r} is "
                           f"{topics.get(gt_topic, 'missing')}, not {GT_TYPE}; topics: {listing}")
        return image_topic, None
    return image_topic, want


def read_camera_bag(path: os.PathLike, image_topic: Optional[str] = None,
                    gt_topic: Optional[str] = None
                    ) -> Tuple[CameraBagSummary, Iterator[CameraFrame]]:
    """Open a bag's camera topics: a summary and an iterator of images with their 2D ground
    truth (matched by exact header stamp). Undecodable images become ``CameraFrame.error``.

    Raises:
        BagError: the bag cannot be opened or has no (requested) image topic.
    """
    path = Path(path)
    bag, problems = open_bag(path)
    ok = False
    try:
        info = bag.get_type_and_topic_info()
        topics = {n: t.msg_type for n, t in info.topics.items()}
        image_topic, gt_topic = resolve_camera_topics(topics, image_topic, gt_topic, str(path))
        gt_by_stamp: Dict[int, ImageGT] = {}
        if gt_topic is None:
            problems.append(f"bag {path} has no 2D ground truth on {IMAGE_GT_TOPIC}: accuracy "
                            f"metrics are skipped, latency is kept")
        else:
            for _, msg, t in bag.read_messages(topics=[gt_topic]):
                s = _stamp(msg, t)
                gt_by_stamp[s] = image_gt_from_msg(msg, f"{s / 1e9:.3f}")
        stamps = [_stamp(m, t) for _, m, t in bag.read_messages(topics=[image_topic])]
        if not stamps:
            raise BagError(f"bag {path} has no readable message on {image_topic}")
        duration = bag.get_end_time() - bag.get_start_time()
        ok = True
    except BagError:
        raise
    except Exception as exc:  # noqa: B902 - rosbag raises many kinds
        raise BagError(f"bag {path} cannot be read: {exc}") from exc
    finally:
        if not ok:
            bag.close()
    no_gt = sum(1 for s in stamps if s not in gt_by_stamp) if gt_topic else len(stamps)
    if gt_topic and no_gt:
        problems.append(f"{no_gt} of {len(stamps)} images on {image_topic} have no 2D ground "
                        f"truth with their stamp; they count for latency only")
    summary = CameraBagSummary(str(path), image_topic, gt_topic, len(stamps), len(gt_by_stamp),
                               no_gt, problems, float(duration))

    def frames() -> Iterator[CameraFrame]:
        index = 0
        try:
            for _, msg, t in bag.read_messages(topics=[image_topic]):
                s = _stamp(msg, t)
                try:
                    img, err = msg_to_image(msg), ""
                except BagError as exc:
                    img, err = None, f"image at stamp {s / 1e9:.6f}: {exc}"
                yield CameraFrame(index, s, img, gt_by_stamp.get(s), err)
                index += 1
        finally:
            bag.close()

    return summary, frames()


__all__: Sequence[str] = ("IMAGE_TOPIC", "COMPRESSED_TOPIC", "CAMERA_INFO_TOPIC",
                          "IMAGE_GT_TOPIC", "CAMERA_FRAME_ID", "IMAGE_FORMATS", "image_to_msg",
                          "msg_to_image", "camera_info_msg", "image_gt_to_msg",
                          "image_gt_from_msg", "kitti_image_gt", "read_kitti_image",
                          "write_camera", "write_transform", "write_static_transform",
                          "CameraFrame", "CameraBagSummary",
                          "read_camera_bag", "resolve_camera_topics")
