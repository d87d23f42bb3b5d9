"""mmdetection3d 1.x info files (``kitti_infos_{train,val,trainval}.pkl``) of a KITTI-format dataset.

What mmdet3d 1.x writes, checked in its sources (``tools/create_data.py kitti`` ->
``tools/dataset_converters/kitti_converter.py`` ``create_kitti_info_file`` +
``kitti_data_utils.py`` ``get_kitti_image_info`` / ``get_label_anno`` /
``add_difficulty_to_annos``, then ``update_infos_to_v2.py`` ``update_kitti_infos``), and
mirrored here:

- The pickle is ``{"metainfo": {"categories": {name: index}, "dataset": "kitti",
  "info_version": "1.1"}, "data_list": [...]}``; categories are
  ``Pedestrian, Cyclist, Car, Van, Truck, Person_sitting, Tram, Misc`` = 0..7, and every other
  name met in the labels (``DontCare``) is added with -1. The files sit at the dataset root,
  beside ``training/`` and ``ImageSets/``; ``trainval`` is train + val in that order.
- A ``data_list`` entry: ``sample_idx`` the frame number as an int (``image_idx``);
  ``images``: ``CAM0``..``CAM3`` each with ``cam2img`` (P0..P3 extended to 4x4, float64
  lists) and ``lidar2img`` (``P @ lidar2cam``), ``CAM2`` also ``img_path`` (file name only,
  ``000123.png``), ``height``, ``width`` and ``lidar2cam`` (``R0_rect(4x4) @ Tr_velo_to_cam(4x4)``
  in float32), and ``images["R0_rect"]`` (4x4, float32); ``lidar_points``: ``num_pts_feats`` 4,
  ``lidar_path`` (file name, ``000123.bin``), ``Tr_velo_to_cam`` and ``Tr_imu_to_velo`` (4x4,
  float32); ``instances`` one per label line, in file order (DontCare included). Unset keys are
  dropped (``clear_data_info_unused_keys``), so there is no ``CAM4``, ``lidar2ego``,
  ``radar_points``, ``plane`` (only with ``--with-plane``) or sweeps.
- An instance: ``bbox`` [x1, y1, x2, y2]; ``bbox_label`` = ``bbox_label_3d`` the category index
  (-1 for a name outside the 8 classes); ``bbox_3d`` the label's camera box
  ``[x, y, z, l, h, w, ry]`` (location, dimensions reordered h, w, l -> l, h, w, rotation_y:
  exactly :func:`kitti_io.objects_to_camera_boxes`); ``center_2d`` / ``depth``: the box's
  gravity centre ``location + (0, -h/2, 0)`` projected with P2 (4x4): ``u, v`` and the third
  homogeneous coordinate (``points_cam2img(..., with_depth=True)``); ``num_lidar_pts``: points
  of the velodyne scan inside the LiDAR box after ``remove_outside_points`` (only points whose
  image-2 projection is inside the image, depth 0.001-100 m; :func:`kitti_dataset.fov_mask`),
  -1 for DontCare; ``difficulty`` KITTI's rule on 2D box height (> 40 / 25 / 25 px),
  occlusion (<= 0, 1, 2) and truncation (<= 0.15, 0.3, 0.5), else -1; ``truncated``,
  ``occluded``, ``alpha`` from the line; ``score`` the 16th column, else 0.0; ``index`` 0..n-1
  over the non-DontCare objects in file order, -1 for DontCare; ``group_id`` 0..m-1 over all
  lines. Every value is a Python builtin (``.tolist()``): the pickle loads without numpy.
- Not written (mmdet3d writes it but needs shapely's polygon clipping): ``cam_instances``, the
  mono-3D 2D boxes of CAM2 used only by image-only detectors.
- mmdet3d reads points from ``training/velodyne_reduced`` in its KITTI configs
  (``create_data.py`` writes it: the scan cut to image 2's frustum); :func:`write_reduced`
  writes it the same way.
"""
from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from admlops_ros.camera.kitti_calib import pad4
from admlops_ros.data.kitti_dataset import image_hw
from admlops_ros.errors import AdmlopsError
from admlops_ros.evaluation import kitti_io
from admlops_ros.evaluation.protocol import kitti_difficulty
from admlops_ros.lidar.geometry import points_in_boxes

LOG = logging.getLogger(__name__)
PathLike = Union[str, Path]

#: mmdet3d 1.x ``update_kitti_infos`` METAINFO classes, in index order.
KITTI_CLASSES = ("Pedestrian", "Cyclist", "Car", "Van", "Truck", "Person_sitting", "Tram", "Misc")
SPLITS = ("train", "val", "trainval")
REDUCED_DIR = "velodyne_reduced"


class InfoError(AdmlopsError, ValueError):
    """A dataset whose info files cannot be written (missing files, bad split)."""


def info_path(root: PathLike, split: str) -> Path:
    """``ROOT/kitti_infos_<split>.pkl``."""
    return Path(root) / f"kitti_infos_{split}.pkl"


def _f32(mat: np.ndarray) -> List[List[float]]:
    return np.asarray(mat, np.float64).astype(np.float32).tolist()


def frame_info(training: PathLike, frame: str,
               categories: Optional[Dict[str, int]] = None,
               reduced: bool = False) -> Dict[str, Any]:
    """The ``data_list`` entry of one frame of ``training/`` (see the module docstring).

    Args:
        training: the ``training`` directory (velodyne/, label_2/, calib/, image_2/).
        frame: frame id, e.g. ``000123``.
        categories: filled with every label name not in :data:`KITTI_CLASSES` (-1).
        reduced: also write ``velodyne_reduced/<frame>.bin`` (the frustum points counted).

    Raises:
        InfoError: the frame's velodyne, label or calib file is missing or malformed.
    """
    training = Path(training)
    paths = {"velodyne": training / "velodyne" / f"{frame}.bin",
             "label_2": training / "label_2" / f"{frame}.txt",
             "calib": training / "calib" / f"{frame}.txt"}
    for name, path in paths.items():
        if not path.is_file():
            raise InfoError(f"frame {frame}: {name} file {path} is missing (every frame of "
                            f"ImageSets needs velodyne/, label_2/ and calib/ files)")
    try:
        calib = kitti_io.read_calib(paths["calib"])
        objects = kitti_io.read_label(paths["label_2"])
        points = kitti_io.read_velodyne(paths["velodyne"])
    except kitti_io.KittiError as exc:
        raise InfoError(f"frame {frame}: {exc}") from exc
    hw = image_hw(training, frame, default=None)
    height, width = hw if hw is not None else kitti_io.IMAGE_SHAPE
    p = {k: pad4(getattr(calib, k)) for k in ("P0", "P1", "P2", "P3")}
    rect = pad4(calib.R0_rect).astype(np.float32)
    trv2c = pad4(calib.Tr_velo_to_cam).astype(np.float32)
    lidar2cam = rect @ trv2c                                       # float32, as mmdet3d
    images: Dict[str, Any] = {}
    for i in range(4):
        cam = {"cam2img": p[f"P{i}"].tolist(), "lidar2img": (p[f"P{i}"] @ lidar2cam).tolist()}
        if i == 2:
            cam = {"img_path": f"{frame}.png", "height": int(height), "width": int(width),
                   "cam2img": cam["cam2img"], "lidar2img": cam["lidar2img"],
                   "lidar2cam": lidar2cam.tolist()}
        images[f"CAM{i}"] = cam
    images["R0_rect"] = rect.tolist()
    from admlops_ros.data.kitti_dataset import fov_mask
    in_fov = points[fov_mask(points, calib, (height, width))]
    if reduced:
        (training / REDUCED_DIR).mkdir(exist_ok=True)
        kitti_io.write_velodyne(training / REDUCED_DIR / f"{frame}.bin", in_fov)
    lidar_points = {"num_pts_feats": 4, "lidar_path": f"{frame}.bin",
                    "Tr_velo_to_cam": trv2c.tolist(),
                    "Tr_imu_to_velo": _f32(pad4(calib.Tr_imu_to_velo))}
    return {"sample_idx": int(frame), "images": images, "lidar_points": lidar_points,
            "instances": _instances(objects, calib, in_fov, p["P2"],
                                    categories if categories is not None else {})}


def _instances(objects: Sequence[kitti_io.KittiObject], calib: kitti_io.KittiCalib,
               in_fov: np.ndarray, p2: np.ndarray,
               categories: Dict[str, int]) -> List[Dict[str, Any]]:
    """Instances of the label objects; ``in_fov`` the frustum points (num_lidar_pts)."""
    if not objects:
        return []
    cam_boxes = kitti_io.objects_to_camera_boxes(objects)          # x, y, z, l, h, w, ry
    care = np.array([o.type != kitti_io.DONT_CARE for o in objects])
    counts = np.full(len(objects), -1, np.int64)
    if care.any():
        lidar_boxes = kitti_io.boxes_camera_to_lidar(cam_boxes[care], calib)
        counts[care] = points_in_boxes(in_fov, lidar_boxes).sum(axis=0)
    bbox = np.array([o.bbox for o in objects], np.float64)
    occluded = np.array([o.occluded for o in objects], np.int64)
    truncated = np.array([o.truncated for o in objects], np.float64)
    difficulty = kitti_difficulty(bbox, occluded, truncated)
    centre = cam_boxes[:, :3] + cam_boxes[:, 3:6] * np.array([0.0, -0.5, 0.0])
    proj = np.concatenate([centre, np.ones((len(centre), 1))], axis=1) @ p2.T
    uv = proj[:, :2] / proj[:, 2:3]
    out: List[Dict[str, Any]] = []
    index = 0
    for i, obj in enumerate(objects):
        label = KITTI_CLASSES.index(obj.type) if obj.type in KITTI_CLASSES else -1
        if label < 0:
            categories.setdefault(obj.type, -1)
        out.append({
            "bbox": [float(v) for v in obj.bbox], "bbox_label": label,
            "bbox_3d": cam_boxes[i].tolist(), "bbox_label_3d": label,
            "depth": float(proj[i, 2]), "center_2d": uv[i].tolist(),
            "num_lidar_pts": int(counts[i]), "difficulty": int(difficulty[i]),
            "truncated": float(obj.truncated), "occluded": int(obj.occluded),
            "alpha": float(obj.alpha),
            "score": float(obj.score) if obj.score is not None else 0.0,
            "index": index if care[i] else -1, "group_id": i})
        index += int(care[i])
    return out


def build_infos(root: PathLike, frames: Sequence[str],
                cache: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """``{"metainfo", "data_list"}`` of the given frames of ``root/training``.

    Args:
        cache: frame -> (entry, names outside the classes), reused and filled, so that
            train, val and trainval compute each frame once.
    """
    cache = {} if cache is None else cache
    categories = {name: i for i, name in enumerate(KITTI_CLASSES)}
    for f in frames:
        if f not in cache:
            extra: Dict[str, int] = {}
            cache[f] = (frame_info(Path(root) / "training", f, extra), extra)
        categories.update(cache[f][1])
    return {"metainfo": {"categories": categories, "dataset": "kitti", "info_version": "1.1"},
            "data_list": [cache[f][0] for f in frames]}


def read_imagesets(root: PathLike) -> Dict[str, List[str]]:
    """``{"train": ids, "val": ids}`` from ``root/ImageSets`` (a missing file: no frames)."""
    out = {}
    for split in ("train", "val"):
        path = Path(root) / "ImageSets" / f"{split}.txt"
        out[split] = path.read_text().split() if path.is_file() else []
    return out


def write_infos(root: PathLike, splits: Optional[Mapping[str, Sequence[str]]] = None,
                entries: Optional[Mapping[str, Any]] = None) -> Dict[str, Path]:
    """Write ``kitti_infos_{train,val,trainval}.pkl`` at ``root`` (plain pickle, protocol 4).

    Args:
        root: dataset root (``training/``, ``ImageSets/``).
        splits: ``{"train": ids, "val": ids}``; None reads ``root/ImageSets``.
        entries: frame -> (entry, extra names) already computed (e.g. by the export tasks);
            the other frames are read from the files.

    Returns:
        split name -> file written.

    Raises:
        InfoError: a frame of a split lacks a file or has a malformed one.
    """
    splits = dict(splits) if splits is not None else read_imagesets(root)
    train, val = list(splits.get("train", [])), list(splits.get("val", []))
    written = {}
    cache: Dict[str, Any] = dict(entries or {})
    for split, frames in (("train", train), ("val", val), ("trainval", train + val)):
        infos = build_infos(root, frames, cache)
        path = info_path(root, split)
        with path.open("wb") as f:
            pickle.dump(infos, f, protocol=4)
        written[split] = path
    LOG.info("wrote mmdet3d info files for %d train and %d val frames under %s", len(train),
             len(val), root)
    return written


def write_reduced(training: PathLike, frame: str) -> Path:
    """``training/velodyne_reduced/<frame>.bin``: the scan cut to image 2's frustum (mmdet3d)."""
    frame_info(training, frame, reduced=True)
    return Path(training) / REDUCED_DIR / f"{frame}.bin"


def renumber(entry: Dict[str, Any], frame: str) -> Dict[str, Any]:
    """The entry of a frame file renamed to ``frame`` (sample_idx, file names)."""
    entry["sample_idx"] = int(frame)
    entry["images"]["CAM2"]["img_path"] = f"{frame}.png"
    entry["lidar_points"]["lidar_path"] = f"{frame}.bin"
    return entry


__all__ = ["InfoError", "KITTI_CLASSES", "build_infos", "frame_info", "info_path",
           "read_imagesets", "renumber", "write_infos", "write_reduced"]
