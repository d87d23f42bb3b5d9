"""Real KITTI scans as training backgrounds with simulated objects inserted.

A background directory has KITTI's layout (``velodyne/``, ``calib/``, ``label_2/``): real
labels, or pseudo-labels from `admlops pseudo-label` (:mod:`pseudo_labels`). Its labelled
objects stay labels; lines whose 16th column (score) is below ``score_threshold``, and
``DontCare`` lines that carry a 3D box (the pseudo-labels under their threshold), mark where
real objects are: nothing is inserted there and their points are kept. The objects are
inserted by :func:`admlops_ros.simulation.insert.insert_objects` (shadows and occlusion
recomputed along the rays of ``hdl64e_s2_kitti``, KITTI's HDL-64E S2), inside the camera view
the labels cover. Frames come out in the trainer's form (:class:`InsertedFrame`, a
:class:`~admlops_ros.data.kitti_dataset.DatasetFrame`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from admlops_ros.data.kitti_dataset import (DatasetError, DatasetFrame, KittiDataset,
                                            fov_mask, image_hw)
from admlops_ros.evaluation import kitti_io
from admlops_ros.lidar.geometry import points_in_boxes
from admlops_ros.simulation.insert import InsertConfig, Insertion, insert_objects
from admlops_ros.simulation.labels import occlusion_level
from admlops_ros.simulation.sensor import SensorConfig

LOG = logging.getLogger(__name__)
PathLike = Union[str, Path]

#: The sensor of KITTI's scans (the simulator's measured HDL-64E S2 preset).
KITTI_SENSOR = "hdl64e_s2_kitti"
#: Insertion settings for KITTI backgrounds: centres inside the camera's +-41 deg view.
KITTI_INSERT = InsertConfig(azimuth_deg=(-45.0, 45.0))

__all__ = ["Background", "InsertedFrame", "RealBackgrounds", "insert_into",
           "inserted_frame_fn", "KITTI_INSERT", "KITTI_SENSOR"]


@dataclass
class InsertedFrame(DatasetFrame):
    """A `DatasetFrame` of a real scan with simulated objects inserted.

    Attributes (besides `DatasetFrame`'s; boxes list the real labels first, then the inserted
    objects):
        inserted: [M] bool the box was inserted.
        shadow_removed: [M] int64 real points removed behind each inserted object (0 for real).
        removed_points: [R, 4] float32 the background points removed (shadows and inside).
        removed_shadow: [R] bool which of them were shadowed (the rest lay inside a box).
        point_source: [N] int32 -1 for a real point, else the box index of the inserted object
            whose return it is.
        seed: the insertion seed.
    """

    inserted: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    shadow_removed: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    removed_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    removed_shadow: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    point_source: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    seed: int = 0


@dataclass
class Background:
    """One real scan to insert into: its frame (labels only), the boxes of real objects that
    are not labels, and what bounds the insertion (calib, image size, whether the frame keeps
    only the camera view)."""

    frame: DatasetFrame
    blocked: np.ndarray
    calib: kitti_io.KittiCalib
    image_hw: Tuple[int, int]
    fov_only: bool


def _care_scores(objects: Sequence[kitti_io.KittiObject]) -> List[Optional[float]]:
    return [o.score for o in objects if o.type != kitti_io.DONT_CARE]


def _dontcare_boxes(objects: Sequence[kitti_io.KittiObject], calib: kitti_io.KittiCalib
                    ) -> np.ndarray:
    """LiDAR boxes of the DontCare lines that carry a 3D box (every size > 0)."""
    dc = [o for o in objects if o.type == kitti_io.DONT_CARE and min(o.dimensions) > 0.0]
    if not dc:
        return np.zeros((0, 7), np.float32)
    return kitti_io.objects_to_lidar(dc, calib, skip_dontcare=False)[0].reshape(-1, 7)


class RealBackgrounds:
    """The frames of one or more KITTI-format directories, as insertion backgrounds.

    Args:
        roots: directories (or one string of comma-separated directories), each with
            velodyne/, calib/ and label_2/ (real or pseudo-labels).
        fov_only: keep only the points image 2 sees (as `KittiDataset` does for training).
        score_threshold: label lines with a score below it are not labels but block
            insertion (None: every non-DontCare line is a label).

    Raises:
        DatasetError: a directory that is not KITTI-format or has no labelled frame.
    """

    def __init__(self, roots: Union[str, Sequence[PathLike]], fov_only: bool = True,
                 score_threshold: Optional[float] = None) -> None:
        if isinstance(roots, str):
            roots = [r.strip() for r in roots.split(",") if r.strip()]
        elif isinstance(roots, Path):
            roots = [roots]
        if not roots:
            raise DatasetError("real backgrounds: no directory given; give KITTI-format "
                               "directories (velodyne/, calib/, label_2/), comma-separated")
        for r in roots:
            if (Path(r) / "velodyne").is_dir() and not (Path(r) / "label_2").is_dir():
                raise DatasetError(f"real backgrounds {r}: no label_2/ (where the real objects "
                                   f"are); label the scans first: admlops pseudo-label {r} -o "
                                   f"OUT, and give OUT")
        self.sets = [KittiDataset(r, fov_only=fov_only) for r in roots]
        self.fov_only = bool(fov_only)
        self.score_threshold = score_threshold
        self.index = [(s, i) for s, ds in enumerate(self.sets) for i in range(len(ds))]

    def __len__(self) -> int:
        return len(self.index)

    @property
    def frame_ids(self) -> List[str]:
        """The frame id of each background, in index order."""
        return [self.sets[s].ids[i] for s, i in self.index]

    def __getitem__(self, index: int) -> Background:
        s, i = self.index[int(index) % len(self.index)]
        ds = self.sets[s]
        frame = ds[i]
        fid = frame.frame_id
        calib = kitti_io.read_calib(ds.root / "calib" / f"{fid}.txt")
        objects = kitti_io.read_label(ds.root / "label_2" / f"{fid}.txt")
        blocked = [_dontcare_boxes(objects, calib)]
        if self.score_threshold is not None:
            scores = _care_scores(objects)
            low = np.array([sc is not None and sc < self.score_threshold for sc in scores],
                           bool).reshape(-1)
            if low.any():
                blocked.append(frame.boxes[low])
                keep = ~low
                frame = replace(frame, boxes=frame.boxes[keep],
                                names=[n for n, k in zip(frame.names, keep) if k],
                                difficulty=frame.difficulty[keep],
                                num_points=frame.num_points[keep],
                                occluded=frame.occluded[keep], truncated=frame.truncated[keep])
        return Background(frame=frame, blocked=np.concatenate(blocked).reshape(-1, 7),
                          calib=calib, image_hw=image_hw(ds.root, fid) or kitti_io.IMAGE_SHAPE,
                          fov_only=self.fov_only)


def insert_into(background: Background, seed: int, config: InsertConfig = KITTI_INSERT,
                sensor: Optional[SensorConfig] = None) -> InsertedFrame:
    """The background with simulated objects inserted (deterministic for ``seed``).

    Object centres stand inside image 2's view (the labelled region); with a frame that keeps
    only that view, the returns outside it are cut as well. The real boxes keep their labels;
    their point counts are recounted (an inserted object may hide some of their points).
    """
    sensor = sensor if sensor is not None else SensorConfig.preset(KITTI_SENSOR)
    fr = background.frame
    calib, hw = background.calib, background.image_hw

    def in_view(p: np.ndarray) -> np.ndarray:
        return fov_mask(p, calib, hw)

    res: Insertion = insert_objects(fr.points, fr.boxes, fr.names, int(seed), sensor, config,
                                    blocked=background.blocked,
                                    fov=in_view if background.fov_only else None,
                                    place_in=in_view)
    n_real, k = len(fr.boxes), len(res.boxes)
    boxes = np.concatenate([fr.boxes.reshape(-1, 7), res.boxes]).astype(np.float32)
    real_np = (points_in_boxes(res.points, fr.boxes).sum(axis=0).astype(np.int64) if n_real
               else np.zeros(0, np.int64))
    removed = np.asarray(fr.points, np.float32)[res.removed]
    return InsertedFrame(
        points=res.points, boxes=boxes, names=list(fr.names) + list(res.names),
        difficulty=np.concatenate([fr.difficulty, res.difficulty]).astype(np.int64),
        num_points=np.concatenate([real_np, res.num_points]).astype(np.int64),
        frame_id=fr.frame_id, source=fr.source,
        occluded=np.concatenate([fr.occluded, occlusion_level(res.occlusion)]).astype(np.int64),
        truncated=np.concatenate([fr.truncated, np.zeros(k)]).astype(np.float64),
        inserted=np.r_[np.zeros(n_real, bool), np.ones(k, bool)],
        shadow_removed=np.r_[np.zeros(n_real, np.int64), res.shadow_removed],
        removed_points=removed, removed_shadow=res.shadowed[res.removed],
        point_source=np.where(res.point_source >= 0, res.point_source + n_real,
                              -1).astype(np.int32), seed=int(seed))


def inserted_frame_fn(backgrounds: Union[RealBackgrounds, str, Sequence[PathLike]],
                      ratio: float, other: Optional[Callable[[int], object]] = None,
                      config: InsertConfig = KITTI_INSERT,
                      sensor: Optional[SensorConfig] = None) -> Callable[[int], object]:
    """``seed -> frame``: with probability ``ratio`` a real background (drawn from the seed)
    with objects inserted by that seed, else ``other(seed)``; reproducible and resumable.

    Raises:
        DatasetError: ratio outside [0, 1], or below 1 without ``other``.
    """
    if not 0.0 <= float(ratio) <= 1.0:
        raise DatasetError(f"insert ratio {ratio} must be in [0, 1] (the fraction of training "
                           "frames that are real backgrounds with inserted objects)")
    if ratio < 1.0 and other is None:
        raise DatasetError("insert ratio < 1 needs other frames (simulated or a dataset) to "
                           "mix with")
    bgs = backgrounds if isinstance(backgrounds, RealBackgrounds) else \
        RealBackgrounds(backgrounds)
    sensor = sensor if sensor is not None else SensorConfig.preset(KITTI_SENSOR)
    LOG.info("insertion backgrounds: %d frames from %s (ratio %.2f)", len(bgs),
             ", ".join(str(s.root) for s in bgs.sets), ratio)

    def frame_fn(seed: int) -> object:
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x696E7372])  # 'insr'
        if ratio >= 1.0 or rng.random() < ratio:
            return insert_into(bgs[int(rng.integers(len(bgs)))], int(seed) & 0x7FFFFFFF,
                               config, sensor)
        return other(seed)  # type: ignore[misc]

    return frame_fn
