"""Rosbags with ground truth: write from KITTI / simulation, read clouds matched to ground truth.

Bag layout (what ``admlops eval`` expects):

- ``/points_raw`` sensor_msgs/PointCloud2, float32 x, y, z, intensity, LiDAR frame
  (``header.frame_id`` "velodyne"), one cloud per frame, stamps 0.1 s apart.
- ``/ground_truth/objects`` admlops_ros/DetectedObjectArray, header identical to the cloud
  header it labels (matched by stamp). Per object: ``label_name`` the class (KITTI spelling),
  ``pose`` box centre and yaw quaternion, ``dimensions`` (dx, dy, dz), ``score`` 1.0, and
  ``label`` the difficulty level: 0 easy, 1 moderate, 2 hard, -1 ignore (don't care).
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from admlops_ros.evaluation.frames import FrameGT
from admlops_ros.evaluation.protocol import kitti_difficulty
from admlops_ros.evaluation.rosbag_io import BagError, open_bag
from admlops_ros.lidar.detections import Detections

LOG = logging.getLogger(__name__)

POINTS_TOPIC = "/points_raw"
GT_TOPIC = "/ground_truth/objects"
LIDAR_FRAME_ID = "velodyne"
FRAME_PERIOD_S = 0.1
START_STAMP_S = 1_600_000_000.0  # a fixed, non-zero start so stamps are deterministic
POINT_FIELDS: Tuple[str, ...] = ("x", "y", "z", "intensity")
CLOUD_TYPE = "sensor_msgs/PointCloud2"
GT_TYPE = "admlops_ros/DetectedObjectArray"
TF_TYPES = ("tf2_msgs/TFMessage", "tf/tfMessage")  # /tf, /tf_static: poses for multi-sweep


def messages() -> ModuleType:
    """The generated admlops_ros.msg module (sourced workspace, else this repo's build/).

    Raises:
        BagError: the messages are not built.
    """
    from admlops_ros.ros.conversions import ConversionError, import_messages
    try:
        return import_messages()
    except ConversionError as first:
        devel = (Path(__file__).resolve().parents[2] / "build" / "catkin_ws" / "devel" / "lib")
        for site in sorted(devel.glob("python3*/dist-packages")):
            if str(site) not in sys.path:
                sys.path.append(str(site))
        try:
            return import_messages()
        except ConversionError:
            raise BagError(f"{first}") from first


def gt_to_msg(gt: FrameGT, header: Any, msgs: Optional[ModuleType] = None) -> Any:
    """A DetectedObjectArray carrying ground truth (label = difficulty, score 1)."""
    from admlops_ros.ros.conversions import detections_to_msg
    msgs = msgs or messages()
    names = tuple(str(n) for n in gt.names)
    dets = Detections(gt.boxes, np.ones(len(gt)), np.arange(len(gt)), names)
    msg = detections_to_msg(dets, header, msgs)
    levels = _gt_levels(gt)
    for obj, lvl in zip(msg.objects, levels.tolist()):
        obj.label = int(lvl)
    return msg


def _gt_levels(gt: FrameGT) -> np.ndarray:
    if gt.difficulty is not None:
        levels = np.asarray(gt.difficulty, np.int64).copy()
    elif gt.has_kitti_difficulty:
        levels = kitti_difficulty(gt.bbox2d, gt.occluded, gt.truncated)
    else:
        levels = np.zeros(len(gt), np.int64)
    if gt.ignore is not None:
        levels[np.asarray(gt.ignore, bool)] = -1
    return levels


def gt_from_msg(msg: Any, frame_id: str = "") -> FrameGT:
    """FrameGT (LiDAR frame, bottom-centre boxes, difficulty from ``label``) from a message."""
    from admlops_ros.ros.conversions import msg_to_detections
    dets = msg_to_detections(msg, ("_",))
    levels = np.array([o.label for o in msg.objects], np.int64)
    return FrameGT(dets.boxes, [o.label_name for o in msg.objects], ignore=levels < 0,
                   difficulty=levels, frame_id=frame_id)


def _header(msgs_std: Any, seq: int, stamp_ns: int, frame_id: str) -> Any:
    import genpy
    stamp = genpy.Time(int(stamp_ns // 1_000_000_000), int(stamp_ns % 1_000_000_000))
    return msgs_std.Header(seq=seq, stamp=stamp, frame_id=frame_id)


class BagWriter:
    """Writes clouds and their ground truth to a new bag (context manager).

    Args:
        path: output .bag file (parent directories are created).
        start_stamp_s: stamp of the first frame (s); frames are ``period_s`` apart.
    """

    def __init__(self, path: os.PathLike, start_stamp_s: float = START_STAMP_S,
                 period_s: float = FRAME_PERIOD_S, frame_id: str = LIDAR_FRAME_ID,
                 points_topic: str = POINTS_TOPIC, gt_topic: str = GT_TOPIC) -> None:
        import rosbag
        from std_msgs import msg as std_msgs
        self._msgs = messages()
        self.messages = self._msgs  # the generated admlops_ros.msg module
        self._std = std_msgs
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._bag = rosbag.Bag(str(self.path), "w")
        self.start, self.period, self.frame_id = start_stamp_s, period_s, frame_id
        self.points_topic, self.gt_topic = points_topic, gt_topic
        self.count = 0
        self.last_header: Any = None  # header of the last cloud written

    def write(self, points: np.ndarray, gt: Optional[FrameGT]) -> float:
        """Append one frame; returns its stamp in seconds."""
        from admlops_ros.lidar.pointcloud import array_to_pointcloud2
        stamp_ns = int(round(self.start * 1e9)) + self.count * int(round(self.period * 1e9))
        header = _header(self._std, self.count, stamp_ns, self.frame_id)
        cloud = array_to_pointcloud2(np.asarray(points, np.float32)[:, :len(POINT_FIELDS)],
                                     header, POINT_FIELDS)
        self._bag.write(self.points_topic, cloud, header.stamp)
        if gt is not None:
            self._bag.write(self.gt_topic, gt_to_msg(gt, header, self._msgs), header.stamp)
        self.last_header = header
        self.count += 1
        return stamp_ns / 1e9

    def write_message(self, topic: str, msg: Any, latch: bool = False) -> None:
        """Append a message of the frame last written (at its stamp), e.g. its image.

        Args:
            latch: mark the topic latched (``rosbag play`` then latches it, as /tf_static is).
        """
        if self.last_header is None:
            raise BagError("BagWriter.write_message before the first write(): write the "
                           "frame's cloud first")
        header = None
        if latch:
            header = {"topic": topic, "type": msg._type, "md5sum": msg._md5sum,
                      "message_definition": msg._full_text, "latching": "1"}
        self._bag.write(topic, msg, self.last_header.stamp, connection_header=header)

    def close(self) -> None:
        self._bag.close()

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_split(path: os.PathLike) -> List[str]:
    """Frame ids (e.g. ``000123``) from a KITTI ImageSets split file, one per line."""
    try:
        lines = Path(path).read_text().split()
    except OSError as exc:
        raise BagError(f"split file {path} cannot be read: {exc}") from exc
    return [s.strip() for s in lines if s.strip()]


def kitti_frame_gt(kitti_dir: os.PathLike, frame: str) -> Tuple[np.ndarray, FrameGT]:
    """Points and LiDAR-frame ground truth of one KITTI object frame.

    Args:
        kitti_dir: directory holding velodyne/, label_2/, calib/ (e.g. KITTI ``training``).
        frame: id such as ``000003``.

    Returns:
        ([N, 4] float32 points, FrameGT with LiDAR-frame boxes, KITTI 2D boxes, occlusion,
        truncation; DontCare objects as ``dontcare_bbox2d``).
    """
    from admlops_ros.evaluation import kitti_io
    root = Path(kitti_dir)
    paths = {"velodyne": root / "velodyne" / f"{frame}.bin",
             "label_2": root / "label_2" / f"{frame}.txt",
             "calib": root / "calib" / f"{frame}.txt"}
    for name, p in paths.items():
        if not p.is_file():
            raise BagError(f"KITTI frame {frame}: {name} file {p} is missing")
    points = kitti_io.read_velodyne(paths["velodyne"])
    calib = kitti_io.read_calib(paths["calib"])
    objects = kitti_io.read_label(paths["label_2"])
    return points, kitti_objects_to_gt(objects, calib, frame)


def kitti_objects_to_gt(objects: Sequence[Any], calib: Any, frame: str = "") -> FrameGT:
    """FrameGT (LiDAR frame via the calib) from KittiObjects; DontCare -> dontcare_bbox2d."""
    from admlops_ros.evaluation import kitti_io
    care = [o for o in objects if o.type != "DontCare"]
    dc = [o.bbox for o in objects if o.type == "DontCare"]
    boxes = (kitti_io.boxes_camera_to_lidar(kitti_io.objects_to_camera_boxes(care), calib)
             if care else np.zeros((0, 7)))
    return FrameGT(boxes, [o.type for o in care],
                   bbox2d=np.array([o.bbox for o in care], np.float64).reshape(-1, 4),
                   occluded=np.array([o.occluded for o in care], np.int64),
                   truncated=np.array([o.truncated for o in care], np.float64),
                   dontcare_bbox2d=np.array(dc, np.float64).reshape(-1, 4), frame_id=frame)


def bag_from_kitti(kitti_dir: os.PathLike, frames: Sequence[str], out: os.PathLike,
                   progress: bool = True, images: str = "auto") -> int:
    """Write KITTI object frames (velodyne + label_2 + calib) as a bag; returns frames written.

    Every frame also carries its calibration and the labels' 2D fields, whatever ``images``
    says: ``/tf`` velodyne -> camera at the frame's stamp (the pose of the rectified camera
    in the LiDAR frame, ``inverse(R0_rect @ Tr_velo_to_cam)``; one per frame, as KITTI frames
    of different drives have different calibrations), ``/camera/camera_info`` (P = P2, the
    size of image_2) and ``/ground_truth/image_objects`` (each label's 2D box, truncation,
    occlusion, DontCare regions; the same label_2 lines, in the order of
    ``/ground_truth/objects``), so ``admlops eval`` removes what lies outside the camera view
    and scores with KITTI's difficulty rules (:mod:`admlops_ros.evaluation.fov`).

    Args:
        images: "raw" (sensor_msgs/Image bgr8) or "png" (CompressedImage) adds image_2
            (:mod:`camera_bags`); "none" writes no image (the CameraInfo size is then read
            from the image_2 PNG header when the file exists, else KITTI's 1242x375);
            "auto" is "raw" when ``kitti_dir/image_2`` exists, else "none".
    """
    from tqdm import tqdm

    from admlops_ros.evaluation import camera_bags, kitti_io
    if not frames:
        raise BagError("no KITTI frame ids given (use --ids or --split)")
    if images == "auto":
        images = "raw" if (Path(kitti_dir) / "image_2").is_dir() else "none"
    if images not in ("none",) + camera_bags.IMAGE_FORMATS:
        raise BagError(f"--images {images!r} unknown; use auto, none, "
                       f"{', '.join(camera_bags.IMAGE_FORMATS)}")
    root = Path(kitti_dir)
    with BagWriter(out) as writer:
        for frame in tqdm(frames, desc="bag-from-kitti", unit="frame", disable=not progress):
            points, gt = kitti_frame_gt(kitti_dir, frame)
            writer.write(points, gt)
            calib = kitti_io.read_calib(root / "calib" / f"{frame}.txt")
            camera_bags.write_transform(writer, LIDAR_FRAME_ID, camera_bags.CAMERA_FRAME_ID,
                                        np.linalg.inv(calib.lidar2cam))
            if images != "none":
                image, p2, gt2d = camera_bags.read_kitti_image(kitti_dir, frame)
                camera_bags.write_camera(writer, image, p2, gt2d, images)
            else:
                gt2d = camera_bags.kitti_image_gt(
                    kitti_io.read_label(root / "label_2" / f"{frame}.txt"), frame)
                camera_bags.write_camera(writer, None, calib.P2, gt2d,
                                         image_size=_png_size(root / "image_2" / f"{frame}.png"))
        return writer.count


def _png_size(path: Path) -> Tuple[int, int]:
    """(height, width) from a PNG's IHDR chunk; KITTI's (375, 1242) when there is no PNG."""
    from admlops_ros.evaluation.kitti_io import IMAGE_SHAPE
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError:
        return IMAGE_SHAPE
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return IMAGE_SHAPE
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    return height, width


def bag_from_sim(out: os.PathLike, count: int, seed: int = 0, sensor: str = "hdl64",
                 scene: Any = None, progress: bool = True, images: str = "none") -> int:
    """Write ``count`` simulated frames (seeds seed, seed+1, ...) as a bag; returns count.

    Args:
        images: "raw" / "png" adds the frame's rendered camera image
            (:func:`admlops_ros.simulation.camera.render_frame`, same scene), its CameraInfo
            and 2D box labels as :mod:`camera_bags` lays them out; "none" (default) writes
            clouds only.
    """
    from tqdm import tqdm

    from admlops_ros.simulation import SceneConfig, SensorConfig, simulate_frame
    if count <= 0:
        raise BagError(f"--count must be positive, got {count}")
    sensor_cfg = SensorConfig.preset(sensor)
    scene_cfg = SceneConfig() if scene is None else scene
    with BagWriter(out) as writer:
        for i in tqdm(range(count), desc="bag-from-sim", unit="frame", disable=not progress):
            frame = simulate_frame(seed + i, scene_cfg, sensor_cfg)
            difficulty = np.asarray(frame.difficulty, np.int64)
            gt = FrameGT(frame.boxes, list(frame.names), ignore=difficulty < 0,
                         difficulty=difficulty, frame_id=str(seed + i))
            writer.write(frame.points, gt)
            if images != "none":
                _write_sim_image(writer, seed + i, scene_cfg, sensor_cfg, images, first=i == 0)
        return writer.count


def _write_sim_image(writer: BagWriter, seed: int, scene: Any, sensor: Any, fmt: str,
                     first: bool = False) -> None:
    """The rendered image of simulated frame ``seed`` with its 2D labels; with ``first``, the
    static velodyne -> camera transform on /tf_static as well (the camera is fixed)."""
    from admlops_ros.evaluation import camera_bags
    from admlops_ros.evaluation.metrics2d import ImageGT
    from admlops_ros.simulation.camera import render_frame
    cam = render_frame(seed, scene, mount_height=sensor.mount_height)
    if first:
        camera_bags.write_static_transform(writer, LIDAR_FRAME_ID, camera_bags.CAMERA_FRAME_ID,
                                           np.linalg.inv(cam.config.lidar_to_cam))
    gt2d = ImageGT(cam.boxes2d, cam.names, occluded=np.asarray(cam.occlusion_level, np.int64),
                   truncated=np.asarray(cam.truncation, np.float64), frame_id=str(seed))
    camera_bags.write_camera(writer, cam.image, cam.config.P, gt2d, fmt)


# ---------------------------------------------------------------------------------------------
# Reading

@dataclass
class BagFrame:
    """One cloud of a bag with the ground truth that carries its stamp (None if absent).

    Attributes:
        index: position of the cloud in the bag (0-based).
        stamp_ns: header stamp in nanoseconds (the matching key).
        points: [N, 4] float32 x, y, z, intensity (LiDAR frame), or None when the cloud could
            not be decoded (``error`` says why).
        gt: ground truth, or None when no ground-truth message has this stamp.
        msg: the raw cloud message (for online replay).
    """

    index: int
    stamp_ns: int
    points: Optional[np.ndarray]
    gt: Optional[FrameGT]
    msg: Any = None
    error: str = ""

    @property
    def frame_id(self) -> str:
        return f"{self.stamp_ns / 1e9:.3f}"


@dataclass
class BagSummary:
    """What a bag holds and what was wrong with it (messages kept for the report)."""

    path: str
    points_topic: str
    gt_topic: Optional[str]
    num_clouds: int
    num_gt: int
    clouds_without_gt: List[int]
    gt_without_cloud: List[int]
    problems: List[str]
    duration_s: float
    recovered: bool = False  # the bag had no index: its messages were read from the chunks
    tf_topics: List[str] = field(default_factory=list)  # TF_TYPES topics, played online


def _topics(bag: Any) -> Dict[str, str]:
    info = bag.get_type_and_topic_info()
    return {name: t.msg_type for name, t in info.topics.items()}


def _stamp_ns(msg: Any, t: Any) -> int:
    stamp = getattr(getattr(msg, "header", None), "stamp", None)
    if stamp is None or (stamp.secs == 0 and stamp.nsecs == 0):
        return int(t.to_nsec())
    return int(stamp.to_nsec())


def _listing(topics: Dict[str, str]) -> str:
    return ", ".join(f"{name} ({kind})" for name, kind in sorted(topics.items())) or "none"


def resolve_topics(bag: Any, points_topic: Optional[str], gt_topic: Optional[str],
                   path: str) -> Tuple[str, Optional[str], List[str]]:
    """Pick the cloud and ground-truth topics; problems found are returned as messages.

    Raises:
        BagError: no usable cloud topic; a requested ``points_topic`` missing or not a
            PointCloud2; a requested ``gt_topic`` that is not a DetectedObjectArray. The
            message lists the bag's topics (with types) or its candidates of the right type.
    """
    topics = _topics(bag)
    problems: List[str] = []
    clouds = sorted(n for n, t in topics.items() if t == CLOUD_TYPE)
    if points_topic is None:
        if POINTS_TOPIC in clouds:
            points_topic = POINTS_TOPIC
        elif len(clouds) == 1:
            points_topic = clouds[0]
        elif clouds:
            raise BagError(f"bag {path} has no {POINTS_TOPIC} and {len(clouds)} {CLOUD_TYPE} "
                           f"topics {clouds}; choose one with --points-topic")
        else:
            raise BagError(f"bag {path} has no point cloud topic ({CLOUD_TYPE}); its topics "
                           f"are {_listing(topics)} (record the clouds, or choose a topic with "
                           f"--points-topic)")
    elif points_topic not in topics:
        raise BagError(f"bag {path} has no point cloud topic {points_topic!r}; its topics are "
                       f"{_listing(topics)} (choose one with --points-topic)")
    elif topics[points_topic] != CLOUD_TYPE:
        raise BagError(f"bag {path}: points topic {points_topic} is {topics[points_topic]}, "
                       f"not {CLOUD_TYPE}; the bag's {CLOUD_TYPE} topics are "
                       f"{clouds or 'none'} (choose one with --points-topic)")
    gts = sorted(n for n, t in topics.items() if t == GT_TYPE)
    if gt_topic is not None and gt_topic in topics and topics[gt_topic] != GT_TYPE:
        raise BagError(f"bag {path}: ground-truth topic {gt_topic} is {topics[gt_topic]}, "
                       f"not {GT_TYPE}; the bag's {GT_TYPE} topics are {gts or 'none'} "
                       f"(choose one with --gt-topic)")
    want_gt = gt_topic or GT_TOPIC
    if want_gt not in topics:
        problems.append(f"bag {path} has no ground-truth topic {want_gt!r} (topics: "
                        f"{_listing(topics)}); accuracy metrics are skipped, latency is kept")
        return points_topic, None, problems
    if topics[want_gt] != GT_TYPE:  # the default name carrying something else: not ground truth
        problems.append(f"bag {path}: {want_gt} is {topics[want_gt]}, not {GT_TYPE}, so it is "
                        f"not read as ground truth ({GT_TYPE} topics: {gts or 'none'}; choose "
                        f"one with --gt-topic); accuracy metrics are skipped, latency is kept")
        return points_topic, None, problems
    return points_topic, want_gt, problems


def read_bag(path: os.PathLike, points_topic: Optional[str] = None,
             gt_topic: Optional[str] = None,
             fields: Sequence[str] = POINT_FIELDS) -> Tuple[BagSummary, Iterator[BagFrame]]:
    """Open a bag: a summary (topics, counts, unmatched stamps) and an iterator of frames.

    Ground truth is read first (small) and matched to clouds by exact header stamp. Clouds
    that cannot be decoded, and a corrupt tail, end up in ``summary.problems`` and in
    ``BagFrame.error``; iteration never raises for bad data after the bag opened. A bag
    without an index (recording cut short) is read from its chunks, in place (see
    ``_open_bag``). The bag file stays open until the iterator ends, is closed, or raises.

    Raises:
        BagError: the bag does not exist or cannot be opened / recovered; it has no usable
            cloud topic; a requested topic is missing or of the wrong type.
    """
    from admlops_ros.lidar.pointcloud import convert_pointcloud2
    path = Path(path)
    bag, problems = open_bag(path)
    recovered = bool(problems)
    opened = False
    try:
        points_topic, gt_topic, found = resolve_topics(bag, points_topic, gt_topic, str(path))
        problems += found
        gt_by_stamp: Dict[int, FrameGT] = {}
        if gt_topic:
            try:
                for _, msg, t in bag.read_messages(topics=[gt_topic]):
                    stamp = _stamp_ns(msg, t)
                    gt_by_stamp[stamp] = gt_from_msg(msg, f"{stamp / 1e9:.3f}")
            except Exception as exc:  # noqa: B902 - corrupt chunk: keep what was read
                problems.append(f"reading {gt_topic} stopped after {len(gt_by_stamp)} messages: "
                                f"{exc}")
        cloud_stamps: List[int] = []
        try:
            for _, msg, t in bag.read_messages(topics=[points_topic]):
                cloud_stamps.append(_stamp_ns(msg, t))
        except Exception as exc:  # noqa: B902
            problems.append(f"reading {points_topic} stopped after {len(cloud_stamps)} clouds: "
                            f"{exc}")
        if not cloud_stamps:
            raise BagError(f"bag {path} has no readable message on {points_topic}")
        start, end = bag.get_start_time(), bag.get_end_time()
        tf_topics = sorted(n for n, t in _topics(bag).items() if t in TF_TYPES)
        opened = True
    except BagError:
        raise
    except Exception as exc:  # noqa: B902
        raise BagError(f"bag {path} cannot be read: {exc}") from exc
    finally:
        if not opened:  # an error or Ctrl-C before the frames are handed out
            bag.close()
    cloud_set = set(cloud_stamps)
    no_gt = [s for s in cloud_stamps if s not in gt_by_stamp] if gt_topic else []
    no_cloud = sorted(s for s in gt_by_stamp if s not in cloud_set)
    if gt_topic and no_gt:
        problems.append(f"{len(no_gt)} of {len(cloud_stamps)} clouds on {points_topic} have no "
                        f"ground truth with their stamp on {gt_topic} (first at stamp "
                        f"{no_gt[0] / 1e9:.6f}); they count for latency only")
    if no_cloud:
        problems.append(f"{len(no_cloud)} ground-truth messages on {gt_topic} match no cloud "
                        f"stamp (first {no_cloud[0] / 1e9:.6f}); ignored")
    summary = BagSummary(str(path), points_topic, gt_topic, len(cloud_stamps),
                         len(gt_by_stamp), no_gt, no_cloud, problems, float(end - start),
                         recovered, tf_topics)
    for p in problems:
        LOG.warning("%s", p)

    def frames() -> Iterator[BagFrame]:
        index = 0
        try:
            for _, msg, t in bag.read_messages(topics=[points_topic]):
                stamp = _stamp_ns(msg, t)
                try:
                    points = convert_pointcloud2(msg, fields=fields, missing="zeros").points
                    error = ""
                except Exception as exc:  # noqa: B902 - one bad cloud must not end the run
                    points, error = None, f"cloud at stamp {stamp / 1e9:.6f}: {exc}"
                    LOG.warning("%s", error)
                yield BagFrame(index, stamp, points, gt_by_stamp.get(stamp), msg, error)
                index += 1
        except Exception as exc:  # noqa: B902
            LOG.warning("bag %s: reading %s stopped after %d clouds: %s", path, points_topic,
                        index, exc)
        finally:  # normal end, an error, Ctrl-C, or the caller closing the generator
            bag.close()

    return summary, frames()


__all__: Sequence[str] = ("BagWriter", "BagFrame", "BagSummary", "read_bag",
                          "bag_from_kitti", "bag_from_sim", "kitti_frame_gt",
                          "kitti_objects_to_gt", "gt_to_msg", "gt_from_msg", "read_split",
                          "kitti_difficulty", "messages", "POINTS_TOPIC",
                          "GT_TOPIC")
