"""Bags -> a KITTI-format dataset with mmdet3d info files and every frame's lineage.

Layout written under the output directory ``OUT``::

    OUT/training/velodyne/NNNNNN.bin        the cloud as is (float32 x, y, z, intensity)
    OUT/training/velodyne_reduced/NNNNNN.bin  the cloud cut to image 2's frustum (mmdet3d)
    OUT/training/label_2/NNNNNN.txt         labels (see "Labels"); 16th column = score
    OUT/training/calib/NNNNNN.txt           calibration (see "Calib")
    OUT/training/image_2/NNNNNN.png         the frame's camera image, when the bag has one
    OUT/ImageSets/{train,val,trainval,test}.txt   the split (test empty)
    OUT/kitti_infos_{train,val,trainval}.pkl      mmdet3d 1.x info files (:mod:`mmdet3d_infos`)
    OUT/lineage.csv                          frame -> bag, bag sha256/size/mtime, stamp, sources
    OUT/export.json                          the run: options, bags, failures, label imports

Frames are numbered by bag order, then header stamp within a bag, so any way of running the
per-bag tasks (serially, a process pool, Ray: :func:`admlops_ros.parallel.map_tasks`)
writes the same bytes. Each task writes its bag's frames to ``OUT/.staging/<bag>/``; the
driver renames them to their final numbers. On a multi-machine Ray cluster ``OUT`` must be
on a filesystem every node mounts.

Labels (``labels``):

- ``gt``: the bag's ``/ground_truth/objects`` (matched to the cloud by header stamp; a cloud
  without one is skipped). 2D box, truncation and occlusion come from the bag's 2D ground
  truth (``/ground_truth/image_objects``, :mod:`camera_bags`) where it labels the object
  (same list as the 3D one, as ``bag-from-kitti`` writes it, else the same class with
  IoU >= 0.3 against the projected 3D box); otherwise the 2D box is the projected 3D box
  clipped to the image, truncation the part outside (:func:`kitti_io.lidar_boxes_to_objects`),
  and occlusion the lowest KITTI level that gives the bag's difficulty under KITTI's rule
  (3 for ignored objects), so the label file keeps the bag's difficulty where KITTI's rule
  can express it. DontCare regions of the 2D ground truth become DontCare lines.
- ``detections``: pre-annotations from a DetectedObjectArray topic of the bag (default: the
  lidar node's ``objects_topic`` of ``config/lidar_detection.yaml`` if the bag has it, else
  its only such topic besides the ground truth), score in the 16th column.
- ``engine``: pre-annotations from running an engine bundle on each cloud
  (:func:`admlops_ros.evaluation.replay.open_detector`), score in the 16th column.
- ``none``: empty label files (a batch to label from scratch).

``fov``: ``all`` (default) keeps every object, those outside image 2 with bbox 0 0 0 0 and
truncation 1; ``camera`` keeps only what image 2 sees, as KITTI's own labels.

Calib: ``calib`` (a KITTI calib file) for every frame if given; else the bag's CameraInfo
``P`` as P0..P3 with the lidar -> camera transform at the frame's stamp (the bag's ``/tf`` of
that frame, as bag-from-kitti writes one per frame, joined with ``/tf_static``; read by
:func:`admlops_ros.evaluation.fov.read_bag_camera` exactly as ``admlops eval`` reads it) as
``Tr_velo_to_cam`` (``R0_rect`` identity; the CameraInfo's frame taken as the optical frame as
the camera node does), or without one the nominal KITTI extrinsic; else
:func:`kitti_io.nominal_calib`. The lineage names the source of each frame's calib.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import os
import pickle
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from admlops_ros.data import mmdet3d_infos
from admlops_ros.parallel import map_tasks
from admlops_ros.errors import AdmlopsError
from admlops_ros.evaluation import kitti_io
from admlops_ros.evaluation.protocol import kitti_difficulty

LOG = logging.getLogger(__name__)
PathLike = Union[str, "os.PathLike[str]"]

LABEL_SOURCES = ("gt", "detections", "engine", "none")
FOV_MODES = ("all", "camera")
SUBDIRS = (("velodyne", ".bin"), (mmdet3d_infos.REDUCED_DIR, ".bin"), ("label_2", ".txt"),
           ("calib", ".txt"), ("image_2", ".png"))
LINEAGE_FILE = "lineage.csv"
RUN_FILE = "export.json"
STAGING = ".staging"
LINEAGE_FIELDS = ("frame", "split", "bag", "bag_sha256", "bag_size", "bag_mtime_ns",
                  "stamp_ns", "points_topic", "points", "labels", "objects", "calib", "image")
MATCH_IOU = 0.3
DET_TYPE = "admlops_ros/DetectedObjectArray"
CAMERA_INFO_TYPE = "sensor_msgs/CameraInfo"


class ExportError(AdmlopsError, ValueError):
    """A bag or an option that cannot be exported; names the bag, topic or option and the fix."""


@dataclass(frozen=True)
class ExportOptions:
    """What every bag task needs (picklable)."""

    labels: str = "gt"
    detections_topic: Optional[str] = None
    engine: Optional[str] = None
    backend: str = "auto"
    points_topic: Optional[str] = None
    image_topic: Optional[str] = None
    fov: str = "all"
    calib: Optional[str] = None


@dataclass(frozen=True)
class _BagTask:
    index: int
    bag: str
    staging: str
    stamps: Optional[Tuple[int, ...]]
    options: ExportOptions


@dataclass
class FrameLineage:
    """Where one exported frame came from (one row of ``lineage.csv``)."""

    frame: str
    bag: str
    bag_sha256: str
    bag_size: int
    bag_mtime_ns: int
    stamp_ns: int
    points_topic: str
    points: int
    labels: str
    objects: int
    calib: str
    image: str = ""
    split: str = "train"

    def row(self) -> Dict[str, Any]:
        return {k: getattr(self, k) for k in LINEAGE_FIELDS}


@dataclass
class BagExport:
    """What one bag task wrote to its staging directory (frames in stamp order)."""

    bag: str
    frames: List[FrameLineage]
    problems: List[str] = field(default_factory=list)
    infos: Dict[str, bytes] = field(default_factory=dict)  # frame -> pickled (entry, extra)


@dataclass
class ExportSummary:
    """The result of :func:`export_dataset`.

    Attributes:
        out: the dataset directory.
        frames: lineage of every frame written, in frame order.
        failed: bag -> the one-line reason it was not exported.
        problems: what was skipped inside exported bags (frames without labels, ...).
        bags: every bag given, in order.
    """

    out: Path
    frames: List[FrameLineage]
    failed: Dict[str, str]
    problems: List[str]
    bags: List[str]

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def train(self) -> List[str]:
        return [f.frame for f in self.frames if f.split == "train"]

    @property
    def val(self) -> List[str]:
        return [f.frame for f in self.frames if f.split == "val"]

    def line(self) -> str:
        """One summary line (what the CLI prints)."""
        done = len(self.bags) - len(self.failed)
        text = (f"exported {len(self.frames)} frames from {done} of {len(self.bags)} bags to "
                f"{self.out} (train {len(self.train)}, val {len(self.val)})")
        if self.failed:
            text += "; failed: " + "; ".join(f"{b}: {e}" for b, e in self.failed.items())
        return text


# ---------------------------------------------------------------------------------------------
# Files

def file_digest(path: PathLike) -> Tuple[str, int, int]:
    """(sha256 hex, size bytes, mtime ns) of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    st = os.stat(path)
    return h.hexdigest(), int(st.st_size), int(st.st_mtime_ns)


def _frame_paths(training: Path, frame: str) -> Dict[str, Path]:
    return {sub: training / sub / f"{frame}{ext}" for sub, ext in SUBDIRS}


def read_lineage(root: PathLike) -> List[FrameLineage]:
    """The rows of ``root/lineage.csv``.

    Raises:
        ExportError: the file is missing or has other columns.
    """
    path = Path(root) / LINEAGE_FILE
    if not path.is_file():
        raise ExportError(f"{path} is missing: {root} is not a dataset written by admlops export")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != LINEAGE_FIELDS:
            raise ExportError(f"{path}: columns {reader.fieldnames} are not {LINEAGE_FIELDS}")
        rows = list(reader)
    ints = ("bag_size", "bag_mtime_ns", "stamp_ns", "points", "objects")
    return [FrameLineage(**{k: (int(v) if k in ints else v) for k, v in r.items()})
            for r in rows]


def write_lineage(root: PathLike, frames: Sequence[FrameLineage]) -> Path:
    """Write ``root/lineage.csv`` (one row per frame, header first)."""
    path = Path(root) / LINEAGE_FILE
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LINEAGE_FIELDS, lineterminator="\n")
        writer.writeheader()
        for fr in frames:
            writer.writerow(fr.row())
    return path


def write_imagesets(root: PathLike, train: Sequence[str], val: Sequence[str]) -> None:
    """``ImageSets/{train,val,trainval,test}.txt`` (test empty, as mmdet3d's create_data reads)."""
    sets = Path(root) / "ImageSets"
    sets.mkdir(parents=True, exist_ok=True)
    for name, ids in (("train", train), ("val", val), ("trainval", list(train) + list(val)),
                      ("test", [])):
        (sets / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))


def split_frames(n: int, val_fraction: float, seed: int) -> List[str]:
    """``"train"``/``"val"`` per frame: ``round(n * val_fraction)`` val frames drawn with ``seed``."""
    n_val = int(round(n * float(val_fraction)))
    splits = ["train"] * n
    if n_val:
        for i in np.random.default_rng(int(seed)).permutation(n)[:n_val]:
            splits[int(i)] = "val"
    return splits


# ---------------------------------------------------------------------------------------------
# Labels

def _occlusion_for_level(bbox: Sequence[float], truncated: float, level: int) -> int:
    """The lowest KITTI occlusion state whose KITTI difficulty is ``level`` (0 if none)."""
    box = np.asarray(bbox, np.float64).reshape(1, 4)
    for occ in (0, 1, 2, 3):
        if int(kitti_difficulty(box, np.array([occ]), np.array([truncated]))[0]) == int(level):
            return occ
    return 0


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N, M] IoU of (x1, y1, x2, y2) boxes."""
    a, b = a.reshape(-1, 1, 4), b.reshape(1, -1, 4)
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def match_image_gt(proj: np.ndarray, visible: np.ndarray, names: Sequence[str],
                   image_gt: Any) -> Dict[int, int]:
    """3D object index -> index of its 2D ground-truth box (see the module docstring)."""
    if image_gt is None or len(image_gt) == 0 or len(names) == 0:
        return {}
    gt_names = [str(n) for n in image_gt.names]
    if gt_names == [str(n) for n in names]:  # one list, as bag-from-kitti writes them
        return {i: i for i in range(len(names))}
    iou = _iou(np.asarray(proj, np.float64), np.asarray(image_gt.boxes, np.float64))
    same = np.array([[str(a) == b for b in gt_names] for a in names], bool)
    iou = np.where(same & np.asarray(visible, bool)[:, None], iou, 0.0)
    out: Dict[int, int] = {}
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = np.unravel_index(flat, iou.shape)
        if iou[i, j] < MATCH_IOU:
            break
        if i not in out and j not in out.values():
            out[int(i)] = int(j)
    return out


def gt_objects(gt: Any, calib: kitti_io.KittiCalib, image_shape: Tuple[int, int],
               image_gt: Any = None, camera_fov_only: bool = False
               ) -> List[kitti_io.KittiObject]:
    """Label objects of a frame's ground truth (FrameGT, optional ImageGT), as the module says."""
    boxes = np.asarray(gt.boxes, np.float64).reshape(-1, 7)
    names = [str(n) for n in gt.names]
    objects = kitti_io.lidar_boxes_to_objects(boxes, names, calib, image_shape=image_shape,
                                              camera_fov_only=False)
    proj, _, visible = kitti_io.project_boxes_to_image(boxes, calib, image_shape)
    matched = match_image_gt(proj, visible, names, image_gt)
    if gt.difficulty is not None:
        levels = np.asarray(gt.difficulty, np.int64)
    else:
        levels = np.zeros(len(boxes), np.int64)
    if gt.ignore is not None:
        levels = np.where(np.asarray(gt.ignore, bool), -1, levels)
    out = []
    for i, obj in enumerate(objects):
        if i in matched:
            j = matched[i]
            obj = dataclasses.replace(
                obj, bbox=tuple(float(v) for v in image_gt.boxes[j]),
                truncated=float(image_gt.truncated[j]) if image_gt.truncated is not None
                else obj.truncated,
                occluded=int(image_gt.occluded[j]) if image_gt.occluded is not None else 0)
        elif camera_fov_only and not visible[i]:
            continue
        else:  # the occlusion state that keeps the bag's difficulty, on the values written
            bbox = [round(v, 2) for v in obj.bbox]
            obj = dataclasses.replace(obj, occluded=_occlusion_for_level(
                bbox, round(obj.truncated, 2), int(levels[i])))
        out.append(obj)
    if image_gt is not None:
        for box in np.asarray(image_gt.dontcare, np.float64).reshape(-1, 4):
            out.append(kitti_io.KittiObject(
                kitti_io.DONT_CARE, -1.0, -1, -10.0, tuple(float(v) for v in box),
                (-1.0, -1.0, -1.0), (-1000.0, -1000.0, -1000.0), -10.0))
    return out


# ---------------------------------------------------------------------------------------------
# One bag

def _topic_types(bag: Any) -> Dict[str, str]:
    return {n: t.msg_type for n, t in bag.get_type_and_topic_info().topics.items()}


def _listing(topics: Mapping[str, str]) -> str:
    return ", ".join(f"{n} ({t})" for n, t in sorted(topics.items())) or "none"


def _stamp(msg: Any, t: Any) -> int:
    s = getattr(getattr(msg, "header", None), "stamp", None)
    if s is None or (s.secs == 0 and s.nsecs == 0):
        return int(t.to_nsec())
    return int(s.to_nsec())


def _raw_stamp(data: bytes, t: Any) -> int:
    """Header stamp (ns) of a serialized message that starts with std_msgs/Header."""
    _, secs, nsecs = struct.unpack_from("<III", data, 0)
    return int(secs) * 1_000_000_000 + int(nsecs) if (secs or nsecs) else int(t.to_nsec())


def _label_topic(topics: Mapping[str, str], opts: ExportOptions, path: str) -> Optional[str]:
    from admlops_ros.evaluation.bags import GT_TOPIC, GT_TYPE
    from admlops_ros.evaluation.camera_bags import IMAGE_GT_TOPIC
    if opts.labels == "gt":
        if topics.get(GT_TOPIC) != GT_TYPE:
            what = "is " + topics[GT_TOPIC] if GT_TOPIC in topics else "is missing"
            raise ExportError(f"bag {path}: ground-truth topic {GT_TOPIC} ({GT_TYPE}) {what}; "
                              f"its topics are {_listing(topics)}; export it as a labelling "
                              f"batch with --labels detections, engine or none")
        return GT_TOPIC
    if opts.labels != "detections":
        return None
    if opts.detections_topic:
        if topics.get(opts.detections_topic) != DET_TYPE:
            raise ExportError(f"bag {path}: detections topic {opts.detections_topic} "
                              f"({DET_TYPE}) is "
                              f"{topics.get(opts.detections_topic, 'missing')}; its topics "
                              f"are {_listing(topics)} (choose one with --detections-topic)")
        return opts.detections_topic
    cands = sorted(n for n, t in topics.items()
                   if t == DET_TYPE and n not in (GT_TOPIC, IMAGE_GT_TOPIC))
    node = _node_objects_topic()
    if node in cands:
        return node
    if len(cands) != 1:
        raise ExportError(f"bag {path}: {len(cands) or 'no'} {DET_TYPE} detection topics "
                          f"{cands or ''}; its topics are {_listing(topics)} (choose one with "
                          f"--detections-topic, or use --labels engine)")
    return cands[0]


def _node_objects_topic() -> Optional[str]:
    """The lidar node's output topic (``objects_topic`` of config/lidar_detection.yaml)."""
    try:
        import yaml

        from admlops_ros.paths import package_root
        with open(package_root() / "config" / "lidar_detection.yaml") as f:
            return str(yaml.safe_load(f).get("objects_topic") or "") or None
    except Exception:  # noqa: B902 - no config: fall back to the bag's only detection topic
        return None


def _camera_topics(topics: Mapping[str, str], opts: ExportOptions, path: str
                   ) -> Tuple[Optional[str], Optional[str], Optional[str]]:
    """(image topic, CameraInfo topic, 2D ground-truth topic); None where the bag has none."""
    from admlops_ros.evaluation import camera_bags as cb
    from admlops_ros.evaluation.rosbag_io import BagError
    images = [n for n, t in topics.items() if t in (cb.IMAGE_TYPE, cb.COMPRESSED_TYPE)]
    image = None
    if images or opts.image_topic:
        try:
            image, _ = cb.resolve_camera_topics(dict(topics), opts.image_topic, None, path)
        except BagError as exc:
            raise ExportError(str(exc)) from exc
    infos = sorted(n for n, t in topics.items() if t == CAMERA_INFO_TYPE)
    info = cb.CAMERA_INFO_TOPIC if cb.CAMERA_INFO_TOPIC in infos else (
        infos[0] if len(infos) == 1 else None)
    image_gt = (cb.IMAGE_GT_TOPIC if opts.labels == "gt" and topics.get(cb.IMAGE_GT_TOPIC)
                == cb.GT_TYPE else None)
    return image, info, image_gt


def _calib_for(opts: ExportOptions, frame_calib: Any, info_p: Optional[np.ndarray],
               info_topic: Optional[str]) -> Tuple[kitti_io.KittiCalib, str]:
    """The frame's calibration and where it came from (the module docstring's order).

    Args:
        frame_calib: the bag's calibration at the frame's stamp (evaluation.fov.FrameCalib:
            CameraInfo P and the lidar -> camera tf), or None.
        info_p: the frame's CameraInfo P, or None.
    """
    if opts.calib:
        return kitti_io.read_calib(opts.calib), f"file:{opts.calib}"
    calib = kitti_io.nominal_calib()
    if frame_calib is not None:
        p = np.asarray(frame_calib.P, np.float64).reshape(3, 4)
        calib = dataclasses.replace(calib, P0=p.copy(), P1=p.copy(), P2=p.copy(), P3=p.copy(),
                                    R0_rect=np.eye(3),
                                    Tr_velo_to_cam=np.asarray(frame_calib.lidar2cam)[:3].copy())
        return calib, f"bag:{frame_calib.source}, R0_rect identity"
    if info_p is None:
        return calib, "nominal"
    p = np.asarray(info_p, np.float64).reshape(3, 4)
    calib = dataclasses.replace(calib, P0=p.copy(), P1=p.copy(), P2=p.copy(), P3=p.copy())
    return calib, f"bag:{info_topic} P, nominal R0_rect/Tr_velo_to_cam"


class _BagReader:
    """The small topics of one bag read up front; images fetched per stamp from the index."""

    def __init__(self, bag: Any, path: str, opts: ExportOptions) -> None:
        from admlops_ros.evaluation.bags import resolve_topics
        from admlops_ros.evaluation.rosbag_io import BagError
        self.bag, self.path, self.opts = bag, path, opts
        topics = _topic_types(bag)
        try:
            self.points_topic, _, _ = resolve_topics(bag, opts.points_topic, None, path)
        except BagError as exc:
            raise ExportError(str(exc)) from exc
        self.label_topic = _label_topic(topics, opts, path)
        self.image_topic, self.info_topic, self.image_gt_topic = _camera_topics(topics, opts,
                                                                                path)
        self.labels: Dict[int, Any] = {}
        self.image_gt: Dict[int, Any] = {}
        self.info: Dict[int, Tuple[np.ndarray, int, int]] = {}
        self.image_times: Dict[int, List[Any]] = {}
        small = [t for t in (self.label_topic, self.image_gt_topic, self.info_topic) if t]
        for topic, msg, t in (bag.read_messages(topics=small) if small else ()):
            stamp = _stamp(msg, t)
            if topic == self.label_topic:
                self.labels[stamp] = msg
            elif topic == self.image_gt_topic:
                self.image_gt[stamp] = msg
            else:
                self.info[stamp] = (np.asarray(msg.P, np.float64), int(msg.height),
                                    int(msg.width))
        if self.image_topic:
            for _, raw, t in bag.read_messages(topics=[self.image_topic], raw=True):
                self.image_times.setdefault(_raw_stamp(raw[1], t), []).append(t)
        # the lidar -> camera transform per stamp (/tf per frame or /tf_static), as eval reads it
        from admlops_ros.evaluation.fov import read_bag_camera
        self.camera = read_bag_camera(path, self.points_topic, self.info_topic)

    def camera_info(self, stamp: int) -> Optional[Tuple[np.ndarray, int, int]]:
        """The CameraInfo of this stamp, else the first of the bag."""
        if stamp in self.info:
            return self.info[stamp]
        return self.info[min(self.info)] if self.info else None

    def image(self, stamp: int) -> Optional[np.ndarray]:
        """BGR image with this header stamp, None if the bag has none."""
        from admlops_ros.evaluation.camera_bags import msg_to_image
        for t in self.image_times.get(stamp, ()):
            for _, msg, mt in self.bag.read_messages(topics=[self.image_topic], start_time=t,
                                                     end_time=t):
                if _stamp(msg, mt) == stamp:
                    return msg_to_image(msg)
        return None

    def clouds(self, problems: List[str]) -> Any:
        """(stamp ns, raw serialized cloud, pytype) of every cloud, bag order; a corrupt
        tail ends the iteration with a line in ``problems`` (the clouds before it kept)."""
        count = 0
        try:
            for _, raw, t in self.bag.read_messages(topics=[self.points_topic], raw=True):
                count += 1
                yield _raw_stamp(raw[1], t), raw[1], raw[4]
        except Exception as exc:  # noqa: B902 - rosbag raises many kinds on a corrupt chunk
            problems.append(f"bag {self.path}: reading {self.points_topic} stopped after "
                            f"{count} clouds: {exc}")


def _frame_labels(reader: _BagReader, stamp: int, points: np.ndarray,
                  calib: kitti_io.KittiCalib, shape: Tuple[int, int], detector: Any
                  ) -> Tuple[List[kitti_io.KittiObject], str]:
    """(label objects, label source for the lineage) of one frame, per ``--labels``."""
    from admlops_ros.evaluation.bags import gt_from_msg
    from admlops_ros.evaluation.camera_bags import image_gt_from_msg
    from admlops_ros.ros.conversions import msg_to_detections
    opts = reader.opts
    fov_only = opts.fov == "camera"
    if opts.labels == "gt":
        gt = gt_from_msg(reader.labels[stamp], str(stamp))
        img_gt = (image_gt_from_msg(reader.image_gt[stamp]) if stamp in reader.image_gt
                  else None)
        return gt_objects(gt, calib, shape, img_gt, fov_only), f"gt:{reader.label_topic}"
    if opts.labels == "none":
        return [], "none"
    if opts.labels == "detections":
        msg = reader.labels[stamp]
        dets = msg_to_detections(msg)
        names = [o.label_name for o in msg.objects]  # o.label is the model's class index
        source = f"detections:{reader.label_topic}"
    else:
        try:
            dets = detector.detect(points)
        except Exception as exc:  # noqa: B902 - the engine's own errors: name the bag/stamp
            raise ExportError(f"bag {reader.path}: engine {opts.engine or '(default)'} failed "
                              f"on the cloud at stamp {stamp}: {exc}") from exc
        names = list(dets.label_names())
        source = f"engine:{opts.engine or 'default'}@{opts.backend}"
    return kitti_io.lidar_boxes_to_objects(dets.boxes, names, calib, scores=dets.scores,
                                           image_shape=shape,
                                           camera_fov_only=fov_only), source


def _write_png(path: Path, image: np.ndarray) -> None:
    import cv2
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise ExportError(f"cv2 could not encode the image for {path} as PNG")
    path.write_bytes(buf.tobytes())


def _export_bag(task: _BagTask) -> BagExport:
    """One bag -> ``task.staging/training/...`` (frames numbered 0.. in stamp order)."""
    from admlops_ros.evaluation.bags import POINT_FIELDS
    from admlops_ros.evaluation.rosbag_io import BagError, open_bag
    from admlops_ros.lidar.pointcloud import convert_pointcloud2
    opts, path = task.options, task.bag
    try:
        bag, problems = open_bag(Path(path))
    except BagError as exc:
        raise ExportError(str(exc)) from exc
    staging = Path(task.staging) / "training"
    want = None if task.stamps is None else set(int(s) for s in task.stamps)
    detector = None
    try:
        try:
            reader = _BagReader(bag, path, opts)
        except (AdmlopsError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: B902 - rosbag's errors on a corrupt index / chunk
            raise ExportError(f"bag {path} cannot be read: {exc}") from exc
        sha, size, mtime = file_digest(path)
        if opts.labels == "engine":
            from admlops_ros.evaluation.replay import open_detector
            detector = open_detector(opts.engine, opts.backend)
        for sub, _ in SUBDIRS:
            if sub != "image_2" or reader.image_topic:
                (staging / sub).mkdir(parents=True, exist_ok=True)
        kept: List[Tuple[int, int, FrameLineage]] = []   # (stamp, order, lineage)
        infos: Dict[str, bytes] = {}                      # local frame -> mmdet3d entry
        no_label, seen = [], set()
        for order, (stamp, data, pytype) in enumerate(reader.clouds(problems)):
            if want is not None and stamp not in want:
                continue
            seen.add(stamp)
            if reader.label_topic and stamp not in reader.labels:
                no_label.append(stamp)
                continue
            try:
                msg = pytype()
                msg.deserialize(data)
                points = convert_pointcloud2(msg, fields=POINT_FIELDS, missing="zeros").points
            except Exception as exc:  # noqa: B902 - one bad cloud must not end the export
                problems.append(f"bag {path}: cloud at stamp {stamp} skipped: {exc}")
                continue
            local = f"{len(kept):06d}"
            image = reader.image(stamp) if reader.image_topic else None
            info = reader.camera_info(stamp)
            calib, calib_src = _calib_for(opts, reader.camera.calib(stamp),
                                          None if info is None else info[0], reader.info_topic)
            if image is not None:
                shape = image.shape[:2]
            elif info is not None and info[1] > 0 and info[2] > 0:
                shape = (info[1], info[2])
            else:
                shape = kitti_io.IMAGE_SHAPE
            objects, source = _frame_labels(reader, stamp, points, calib, shape, detector)
            files = _frame_paths(staging, local)
            kitti_io.write_velodyne(files["velodyne"], points)
            kitti_io.write_label(files["label_2"], objects)
            kitti_io.write_calib(files["calib"], calib)
            if image is not None:
                _write_png(files["image_2"], image)
            elif reader.image_topic:
                problems.append(f"bag {path}: no image on {reader.image_topic} with stamp "
                                f"{stamp}: frame written without image_2")
            extra: Dict[str, int] = {}
            entry = mmdet3d_infos.frame_info(staging, local, extra, reduced=True)
            # as bytes: the driver unpickles the same bytes whether the task ran here, in a
            # process or on Ray, so the info files it pickles are byte-identical
            infos[local] = pickle.dumps((entry, extra), protocol=4)
            kept.append((stamp, order, FrameLineage(
                local, path, sha, size, mtime, stamp, reader.points_topic, len(points),
                source, len(objects), calib_src,
                reader.image_topic if image is not None else "")))
        if no_label:
            problems.append(f"bag {path}: {len(no_label)} clouds have no message with their "
                            f"stamp on {reader.label_topic} (first at stamp {no_label[0]}); "
                            f"skipped")
        if want is not None and not want:
            problems.append(f"bag {path}: no stamps requested for it; nothing exported")
        elif want is not None and want - seen:
            missing = sorted(want - seen)
            problems.append(f"bag {path}: {len(missing)} requested stamps have no cloud on "
                            f"{reader.points_topic} (first {missing[0]})")
    except (BagError, kitti_io.KittiError) as exc:
        raise ExportError(f"bag {path}: {exc}") from exc
    finally:
        bag.close()
        if detector is not None:
            detector.close()
    frames = _in_stamp_order(staging, kept)
    entries = {fr.frame: infos[old] for fr, old in zip(frames, _old_ids(kept, frames))}
    return BagExport(path, frames, problems, entries)


def _old_ids(kept: List[Tuple[int, int, FrameLineage]], frames: List[FrameLineage]
             ) -> List[str]:
    """Staged ids (write order) of ``frames`` (stamp order)."""
    order = sorted(range(len(kept)), key=lambda i: (kept[i][0], kept[i][1]))
    return [f"{i:06d}" for i in order]


def _in_stamp_order(staging: Path, kept: List[Tuple[int, int, FrameLineage]]
                    ) -> List[FrameLineage]:
    """Renumber the staged frames so that 0.. follows the header stamps (bag order on ties)."""
    order = sorted(kept, key=lambda k: (k[0], k[1]))
    if [k[2].frame for k in order] == [k[2].frame for k in kept]:
        return [k[2] for k in kept]
    moves = []
    for new, (_, _, fr) in enumerate(order):
        for sub, src in _frame_paths(staging, fr.frame).items():
            if src.exists():
                tmp = src.with_name(f"tmp{new:06d}{src.suffix}")
                os.replace(src, tmp)
                moves.append((tmp, _frame_paths(staging, f"{new:06d}")[sub]))
        fr.frame = f"{new:06d}"
    for tmp, dst in moves:
        os.replace(tmp, dst)
    return [k[2] for k in order]


# ---------------------------------------------------------------------------------------------
# Driver

def _check_options(labels: str, val_fraction: float, opts: ExportOptions) -> None:
    if labels not in LABEL_SOURCES:
        raise ExportError(f"--labels {labels!r} unknown; use one of {', '.join(LABEL_SOURCES)}")
    if opts.fov not in FOV_MODES:
        raise ExportError(f"--fov {opts.fov!r} unknown; use one of {', '.join(FOV_MODES)}")
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ExportError(f"--split-ratio {val_fraction} must be in [0, 1) (the fraction of "
                          f"frames in val)")
    if opts.calib and not Path(opts.calib).is_file():
        raise ExportError(f"--calib {opts.calib}: no such file (a KITTI calib .txt)")


def _stamps_for(stamps: Optional[Mapping[str, Collection[int]]], bag: str
                ) -> Optional[Tuple[int, ...]]:
    if stamps is None:
        return None
    for key in (bag, str(Path(bag)), str(Path(bag).resolve())):
        if key in stamps:
            return tuple(sorted(int(s) for s in stamps[key]))
    return ()


def export_dataset(bags: Sequence[PathLike], out: PathLike, *, labels: str = "gt",
                   stamps: Optional[Mapping[str, Collection[int]]] = None,
                   detections_topic: Optional[str] = None, engine: Optional[str] = None,
                   backend: str = "auto", points_topic: Optional[str] = None,
                   val_fraction: float = 0.0, seed: int = 0,
                   ray_address: Optional[str] = None, workers: Optional[int] = None,
                   image_topic: Optional[str] = None, fov: str = "all",
                   calib: Optional[PathLike] = None) -> ExportSummary:
    """Export bags as one KITTI-format dataset (layout, labels, calib: the module docstring).

    Args:
        bags: bag files; frames are numbered in this order, then by stamp.
        out: dataset directory (created; must not hold a dataset already).
        labels: ``gt``, ``detections``, ``engine`` or ``none``.
        stamps: str(bag path) -> header stamps (ns) of the frames to export; a bag missing
            from the mapping exports nothing; None exports every frame.
        detections_topic: DetectedObjectArray topic for ``labels="detections"`` (default: the
            bag's only one besides the ground truth).
        engine, backend: the bundle and backend for ``labels="engine"``.
        points_topic: cloud topic (default ``/points_raw`` or the bag's only PointCloud2).
        val_fraction, seed: fraction of frames drawn into ``val`` and the draw's seed.
        ray_address, workers: where the per-bag tasks run (:func:`parallel.map_tasks`).
        image_topic: camera image topic (default ``/camera/image_raw`` or the only one).
        fov: ``all`` or ``camera`` (objects outside image 2 dropped).
        calib: a KITTI calib file for every frame instead of the bag's / nominal one.

    Returns:
        The summary; bags that failed (missing topic, unreadable) are in ``failed`` and the
        others are exported.

    Raises:
        ExportError: bad options, or ``out`` already holds a dataset.
    """
    opts = ExportOptions(labels, detections_topic, engine, backend, points_topic, image_topic,
                         fov, str(calib) if calib else None)
    _check_options(labels, val_fraction, opts)
    out = Path(out)
    if (out / "training").exists() or (out / LINEAGE_FILE).exists():
        raise ExportError(f"{out} already holds a dataset (training/ or {LINEAGE_FILE}); "
                          f"remove it or choose another output directory")
    paths = [str(b) for b in bags]
    if not paths:
        raise ExportError("no bag given to export")
    staging = out / STAGING
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    tasks = [_BagTask(i, p, str(staging / f"{i:04d}"), _stamps_for(stamps, p), opts)
             for i, p in enumerate(paths)]
    outcomes = map_tasks(_export_bag, tasks, ray_address=ray_address, workers=workers)
    training = out / "training"
    for sub in ("velodyne", mmdet3d_infos.REDUCED_DIR, "label_2", "calib"):
        (training / sub).mkdir(parents=True, exist_ok=True)
    frames: List[FrameLineage] = []
    entries: Dict[str, Any] = {}
    failed: Dict[str, str] = {}
    problems: List[str] = []
    for task, outcome in zip(tasks, outcomes):
        if not outcome.ok:
            failed[task.bag] = outcome.error
            LOG.error("%s", outcome.error)
            continue
        problems += outcome.value.problems
        src_root = Path(task.staging) / "training"
        for fr in outcome.value.frames:
            new = f"{len(frames):06d}"
            dst = _frame_paths(training, new)
            for sub, src in _frame_paths(src_root, fr.frame).items():
                if src.exists():
                    dst[sub].parent.mkdir(exist_ok=True)
                    os.replace(src, dst[sub])
            entry, extra = pickle.loads(outcome.value.infos[fr.frame])
            entries[new] = (mmdet3d_infos.renumber(entry, new), extra)
            fr.frame = new
            frames.append(fr)
    shutil.rmtree(staging)
    for p in problems:
        LOG.warning("%s", p)
    for fr, split in zip(frames, split_frames(len(frames), val_fraction, seed)):
        fr.split = split
    summary = ExportSummary(out, frames, failed, problems, paths)
    write_imagesets(out, summary.train, summary.val)
    write_lineage(out, frames)
    mmdet3d_infos.write_infos(out, {"train": summary.train, "val": summary.val}, entries)
    run = {"bags": paths, "options": dataclasses.asdict(opts), "val_fraction": val_fraction,
           "seed": seed, "frames": len(frames), "failed": failed, "problems": problems,
           "imports": []}
    (out / RUN_FILE).write_text(json.dumps(run, indent=2, sort_keys=True) + "\n")
    return summary


__all__ = ["ExportError", "ExportOptions", "ExportSummary", "FrameLineage", "BagExport",
           "LABEL_SOURCES", "FOV_MODES", "export_dataset", "gt_objects", "match_image_gt",
           "read_lineage", "write_lineage", "write_imagesets", "split_frames", "file_digest"]


# ---------------------------------------------------------------------------------------------
# Labels back from labelling

@dataclass
class ImportSummary:
    """The result of :func:`import_labels`.

    Attributes:
        imported: frames whose label file was replaced.
        errors: one line per file not imported (file and line, what is wrong).
        kept: frames of the dataset without a file in the label directory (labels unchanged).
    """

    dataset: Path
    label_dir: Path
    imported: List[str]
    errors: List[str]
    kept: List[str]

    @property
    def ok(self) -> bool:
        return not self.errors

    def line(self) -> str:
        text = (f"imported {len(self.imported)} label files from {self.label_dir} into "
                f"{self.dataset}; {len(self.kept)} frames kept their labels")
        if self.errors:
            text += f"; {len(self.errors)} files not imported: " + "; ".join(self.errors)
        return text


def check_label_file(path: Path) -> List[kitti_io.KittiObject]:
    """The objects of a label_2 file, checked line by line.

    Raises:
        ExportError: a line that does not parse, a type that is not a KITTI class, a box
            with a size <= 0, or occlusion outside -1..3, named by file and line.
    """
    try:
        objects = kitti_io.read_label(path)
    except (kitti_io.KittiError, UnicodeDecodeError) as exc:
        raise ExportError(str(exc)) from exc
    lines = [n for n, text in enumerate(path.read_text().splitlines(), 1) if text.strip()]
    for lineno, obj in zip(lines, objects):
        if obj.type == kitti_io.DONT_CARE:
            continue
        if obj.type not in mmdet3d_infos.KITTI_CLASSES:
            raise ExportError(f"{path}:{lineno}: type {obj.type!r} is not a KITTI class "
                              f"({', '.join(mmdet3d_infos.KITTI_CLASSES)} or DontCare)")
        if min(obj.dimensions) <= 0:
            raise ExportError(f"{path}:{lineno}: {obj.type} has dimensions (h, w, l) "
                              f"{obj.dimensions}; every size must be > 0")
        if not -1 <= obj.occluded <= 3:
            raise ExportError(f"{path}:{lineno}: occluded {obj.occluded} is not -1..3")
    return objects


def import_labels(label_dir: PathLike, dataset: PathLike) -> ImportSummary:
    """Replace a dataset's label_2 files with labels in KITTI label_2 form (e.g. from a
    labelling company), refresh its mmdet3d info files and record the import in the lineage.

    Every ``LABEL_DIR/NNNNNN.txt`` is checked first; a file with a line that does not parse
    (or a frame the dataset does not have) is reported and left out, the others are copied
    as they are. Frames without a file keep their labels.

    Raises:
        ExportError: ``dataset`` is not an exported dataset or ``label_dir`` has no .txt.
    """
    root, src = Path(dataset), Path(label_dir)
    lineage = read_lineage(root)
    label_root = root / "training" / "label_2"
    if not label_root.is_dir():
        raise ExportError(f"{root}: no training/label_2/ directory (not a KITTI dataset)")
    files = sorted(src.glob("*.txt")) if src.is_dir() else []
    if not files:
        raise ExportError(f"{src}: no label .txt files (expected NNNNNN.txt in KITTI label_2 "
                          f"form, one per frame)")
    by_frame = {fr.frame: fr for fr in lineage}
    good: Dict[str, Tuple[Path, int]] = {}
    errors: List[str] = []
    for path in files:
        if path.stem not in by_frame:
            errors.append(f"{path}: frame {path.stem} is not in {root} (its frames are "
                          f"{lineage[0].frame}..{lineage[-1].frame})" if lineage else
                          f"{path}: the dataset has no frames")
            continue
        try:
            objects = check_label_file(path)
        except ExportError as exc:
            errors.append(" ".join(str(exc).split()))
            continue
        good[path.stem] = (path, sum(o.type != kitti_io.DONT_CARE for o in objects))
    for frame, (path, count) in sorted(good.items()):
        shutil.copyfile(path, label_root / f"{frame}.txt")
        by_frame[frame].labels = f"import:{src}"
        by_frame[frame].objects = count
    for e in errors:
        LOG.error("%s", e)
    if good:
        write_lineage(root, lineage)
        mmdet3d_infos.write_infos(root)
    run_path = root / RUN_FILE
    run = json.loads(run_path.read_text()) if run_path.is_file() else {"imports": []}
    run.setdefault("imports", []).append({"label_dir": str(src), "imported": sorted(good),
                                          "errors": errors})
    run_path.write_text(json.dumps(run, indent=2, sort_keys=True) + "\n")
    kept = [fr.frame for fr in lineage if fr.frame not in good]
    return ImportSummary(root, src, sorted(good), errors, kept)


__all__ += ["ImportSummary", "check_label_file", "import_labels"]
