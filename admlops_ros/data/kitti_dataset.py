"""KITTI-format datasets (real or exported) as training frames, alone or mixed with simulated ones.

A dataset directory has KITTI's object layout: ``velodyne/*.bin``, ``label_2/*.txt``,
``calib/*.txt`` (and ``image_2/`` or ``ImageSets/`` optionally). Frames come out in the
trainer's frame form (``points``, ``boxes``, ``names``, ``difficulty``, ``num_points``): boxes in
the LiDAR frame, bottom centre, as the simulator labels them.

KITTI labels only what the left colour camera sees, so by default the points outside its field
of view are dropped, as mmdetection3d's KITTI converter does for training (``velodyne_reduced``:
points whose projection with the frame's calib lands inside the image, depth 0.001-100 m);
otherwise every unlabelled car behind the vehicle would train as background.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from admlops_ros.errors import AdmlopsError
from admlops_ros.evaluation import kitti_io
from admlops_ros.evaluation.bags import kitti_difficulty, kitti_objects_to_gt, read_split
from admlops_ros.lidar.geometry import points_in_boxes

LOG = logging.getLogger(__name__)

PathLike = Union[str, Path]
#: KITTI image_2 size (height, width) used when a frame's image is absent (most frames).
KITTI_IMAGE_HW = (375, 1242)
#: mmdetection3d's frustum for ``velodyne_reduced``: depth range in the camera (m).
FOV_DEPTH_M = (0.001, 100.0)


class DatasetError(AdmlopsError, ValueError):
    """A dataset directory, split or mixing setting that cannot be used; names what and how."""


@dataclass
class DatasetFrame:
    """One labelled frame in the trainer's form.

    Attributes:
        points: [N, 4] float32 x, y, z, intensity (LiDAR frame, m; intensity 0..1).
        boxes: [M, 7] float32 (x, y, z, dx, dy, dz, yaw) LiDAR frame, z at the bottom.
        names: [M] KITTI class names (Car, Van, Pedestrian, Cyclist, ...).
        difficulty: [M] int64 KITTI level 0 easy, 1 moderate, 2 hard, -1 none (ignored).
        num_points: [M] int64 points inside each box.
        occluded: [M] int64 KITTI occlusion state 0..3 (-1 unknown).
        truncated: [M] float64 KITTI truncation 0..1.
        frame_id: the file stem, e.g. ``000123``.
        source: the dataset directory (lineage).
    """

    points: np.ndarray
    boxes: np.ndarray
    names: List[str]
    difficulty: np.ndarray
    num_points: np.ndarray
    frame_id: str
    source: str
    occluded: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    truncated: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))


def fov_mask(points: np.ndarray, calib: kitti_io.KittiCalib,
             image_hw: Tuple[int, int] = KITTI_IMAGE_HW) -> np.ndarray:
    """[N] bool: points whose image-2 projection lies inside the image (mmdet3d frustum).

    Args:
        points: [N, >=3] LiDAR-frame points, m.
        calib: the frame's calibration (P2, R0_rect, Tr_velo_to_cam).
        image_hw: (height, width) of image 2, px.
    """
    xyz = np.asarray(points, np.float64)[:, :3]
    proj = xyz @ calib.lidar2img[:3, :3].T + calib.lidar2img[:3, 3]
    cam = xyz @ calib.lidar2cam[:3, :3].T + calib.lidar2cam[:3, 3]
    depth = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = proj[:, 0] / proj[:, 2]
        v = proj[:, 1] / proj[:, 2]
    h, w = image_hw
    return ((depth > FOV_DEPTH_M[0]) & (depth < FOV_DEPTH_M[1]) & (u >= 0) & (u < w)
            & (v >= 0) & (v < h))


def image_hw(root: Path, frame: str, default: Optional[Tuple[int, int]] = KITTI_IMAGE_HW
             ) -> Optional[Tuple[int, int]]:
    """Image 2's (height, width) from the PNG header of ``root/image_2/<frame>.png``;
    ``default`` (KITTI's usual size) without a readable PNG."""
    path = root / "image_2" / f"{frame}.png"
    try:
        with path.open("rb") as f:
            head = f.read(24)
    except OSError:
        return default
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        return default
    return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")


class KittiDataset:
    """The labelled frames of a KITTI-format directory.

    Args:
        root: directory with velodyne/, label_2/, calib/ (e.g. KITTI ``training``).
        split: an ImageSets file (or a name under ``root/ImageSets``, e.g. ``train``), or a
            list of frame ids; None takes every velodyne/*.bin that has a label file.
        fov_only: drop points outside image 2's field of view (see the module doc).
    """

    def __init__(self, root: PathLike, split: Union[None, str, Sequence[str]] = None,
                 fov_only: bool = True) -> None:
        self.root = Path(root)
        for sub in ("velodyne", "label_2", "calib"):
            if not (self.root / sub).is_dir():
                raise DatasetError(f"dataset {self.root}: no {sub}/ directory; give a "
                                   "KITTI-format directory (velodyne/, label_2/, calib/)")
        self.fov_only = bool(fov_only)
        self.ids = self._ids(split)
        if not self.ids:
            raise DatasetError(f"dataset {self.root}: no frame with velodyne/ and label_2/ "
                               f"files{'' if split is None else f' in split {split!r}'}")

    def _ids(self, split: Union[None, str, Sequence[str]]) -> List[str]:
        if split is None:
            return sorted(p.stem for p in (self.root / "velodyne").glob("*.bin")
                          if (self.root / "label_2" / f"{p.stem}.txt").is_file())
        if isinstance(split, str):
            path = Path(split)
            places = [self.root / "ImageSets" / f"{split}.txt",
                      self.root.parent / "ImageSets" / f"{split}.txt"]  # KITTI/mmdet3d layout
            for place in places if not path.is_file() else ():
                if place.is_file():
                    path = place
                    break
            if not path.is_file():
                raise DatasetError(f"split {split!r}: neither a file nor "
                                   f"{' nor '.join(str(p) for p in places)}")
            split = read_split(path)
        missing = [i for i in split if not (self.root / "velodyne" / f"{i}.bin").is_file()]
        if missing:
            raise DatasetError(f"dataset {self.root}: split frames without velodyne/ files: "
                               f"{missing[:5]}{' ...' if len(missing) > 5 else ''}")
        return list(split)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> DatasetFrame:
        frame = self.ids[int(index) % len(self.ids)]
        points = kitti_io.read_velodyne(self.root / "velodyne" / f"{frame}.bin")
        calib = kitti_io.read_calib(self.root / "calib" / f"{frame}.txt")
        objects = kitti_io.read_label(self.root / "label_2" / f"{frame}.txt")
        if self.fov_only:
            points = points[fov_mask(points, calib, image_hw(self.root, frame))]
        gt = kitti_objects_to_gt(objects, calib, frame)
        boxes = np.asarray(gt.boxes, np.float32).reshape(-1, 7)
        difficulty = kitti_difficulty(gt.bbox2d, gt.occluded, gt.truncated)
        inside = points_in_boxes(points, boxes) if len(boxes) else np.zeros((len(points), 0))
        return DatasetFrame(points=np.ascontiguousarray(points, np.float32), boxes=boxes,
                            names=list(gt.names), difficulty=difficulty.astype(np.int64),
                            num_points=inside.sum(axis=0).astype(np.int64), frame_id=frame,
                            source=str(self.root),
                            occluded=_per_box(gt.occluded, len(boxes), -1, np.int64),
                            truncated=_per_box(gt.truncated, len(boxes), 0.0, np.float64))


def _per_box(values, n: int, fill: float, dtype) -> np.ndarray:
    """A label column as an [n] array (``fill`` where the labels do not carry it)."""
    if values is None:
        return np.full(n, fill, dtype)
    return np.asarray(values, dtype).reshape(-1)


def mixed_frame_fn(dataset: KittiDataset, ratio: float,
                   simulated: Optional[Callable[[int], object]] = None
                   ) -> Callable[[int], object]:
    """``seed -> frame``: a dataset frame with probability ``ratio``, else ``simulated(seed)``.

    The choice and the dataset frame are drawn from the seed alone, so a run is reproducible
    and resumable; ``ratio`` 1 uses the dataset only (no simulator needed).

    Raises:
        DatasetError: ratio outside [0, 1], or below 1 without a simulated frame source.
    """
    if not 0.0 <= float(ratio) <= 1.0:
        raise DatasetError(f"dataset ratio {ratio} must be in [0, 1] (the fraction of "
                           "training frames taken from the dataset)")
    if ratio < 1.0 and simulated is None:
        raise DatasetError("dataset ratio < 1 needs simulated frames to mix with")

    def frame_fn(seed: int) -> object:
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x6B697474])  # 'kitt'
        if ratio >= 1.0 or rng.random() < ratio:
            return dataset[int(rng.integers(len(dataset)))]
        return simulated(seed)  # type: ignore[misc]

    return frame_fn


__all__ = ["DatasetError", "DatasetFrame", "KittiDataset", "fov_mask", "mixed_frame_fn",
           "KITTI_IMAGE_HW"]
