"""Training samples from simulated frames: augment, voxelize, BEV crop, anchor targets (numpy)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from admlops_ros.errors import AdmlopsError
from admlops_ros.training.augment import (AugmentConfig, GTSampler, global_rot_scale,
                                          random_flip, range_filter)
from admlops_ros.training.configs import PointPillarsConfig
from admlops_ros.training.targets import AnchorTargets, anchor_grid, assign_targets
from admlops_ros.lidar.voxelize import voxelize

__all__ = [
    "DatasetError",
    "IGNORE_AS",
    "Sample",
    "SampleBuilder",
    "collate",
    "mixed_simulated_frame_fn",
    "preset_mix",
    "simulated_frame_fn",
]

LOG = logging.getLogger(__name__)

# Labelled classes that are not trained but must not be negatives of a trained class
# (KITTI evaluation ignores Van detections for Car and Person_sitting for Pedestrian).
IGNORE_AS = {"Van": "Car", "Truck": "Car", "Person_sitting": "Pedestrian"}

FrameFn = Callable[[int], object]  # seed -> object with points, boxes, names, difficulty


class DatasetError(AdmlopsError, ValueError):
    """Bad frames or sample settings; the message names the field."""


@dataclass
class Sample:
    """One training sample: voxels of a BEV crop and the targets of its anchors.

    coors are (0, z, y, x) on the full grid (for the pillar-centre features); scatter_coors
    are (0, z, y - y0, x - x0) inside the crop canvas.
    """

    voxels: np.ndarray
    num_points: np.ndarray
    coors: np.ndarray
    scatter_coors: np.ndarray
    targets: AnchorTargets
    num_gt: int


def simulated_frame_fn(scene=None, sensor=None) -> FrameFn:
    """``seed -> LidarFrame`` from admlops_ros.simulation (default scene and sensor)."""
    from admlops_ros.simulation import SceneConfig, SensorConfig, simulate_frame
    scene = scene if scene is not None else SceneConfig()
    sensor = sensor if sensor is not None else SensorConfig()
    return lambda seed: simulate_frame(int(seed), scene=scene, sensor=sensor)


def preset_mix(sensors: str, scenes: str) -> List[Tuple[str, str]]:
    """(sensor, scene) preset pairs of comma lists (``"hdl64e_s2_kitti,hdl64"`` and
    ``"kitti_streets,default"``); a single name pairs with every name of the other list.

    Raises:
        DatasetError: lists of different lengths (neither of length 1), or an empty name.
    """
    a = [s.strip() for s in str(sensors).split(",")]
    b = [s.strip() for s in str(scenes).split(",")]
    if not all(a) or not all(b):
        raise DatasetError(f"sim_sensor {sensors!r} / sim_scene {scenes!r}: an empty preset "
                           f"name; give comma lists without empty items")
    if len(a) != len(b) and 1 not in (len(a), len(b)):
        raise DatasetError(f"sim_sensor lists {len(a)} presets and sim_scene {len(b)}: give "
                           f"lists of equal length, or one name for either")
    n = max(len(a), len(b))
    return [(a[i if len(a) > 1 else 0], b[i if len(b) > 1 else 0]) for i in range(n)]


def mixed_simulated_frame_fn(sensors: str = "hdl64", scenes: str = "default") -> FrameFn:
    """``seed -> LidarFrame`` over the :func:`preset_mix` pairs: frame seed ``s`` uses pair
    ``s % n``, so a run with one pair gives the frames ``simulated_frame_fn`` gives."""
    from admlops_ros.simulation import SceneConfig, SensorConfig
    fns = [simulated_frame_fn(SceneConfig.preset(scene), SensorConfig.preset(sensor))
           for sensor, scene in preset_mix(sensors, scenes)]
    if len(fns) == 1:
        return fns[0]
    return lambda seed: fns[int(seed) % len(fns)](seed)


def _crop_origin(size: int, crop: int, centre: Optional[float], align: int,
                 rng: np.random.Generator) -> int:
    """Window start (multiple of ``align``) of length ``crop`` in [0, size], around ``centre``."""
    hi = size - crop
    if hi <= 0:
        return 0
    start = rng.uniform(0, hi) if centre is None else centre - rng.uniform(0.15, 0.85) * crop
    start = int(np.clip(np.floor(start / align) * align, 0, (hi // align) * align))
    return start


class SampleBuilder:
    """Turns frames into training samples (augmentation, voxelization, crop, targets).

    Args:
        config: model config.
        augment: augmentation settings (None: no augmentation, e.g. for validation).
        crop: (rows, cols) canvas cells of the training window (multiples of the total
            backbone stride); None trains on the full canvas.
        gt_sampler: database for ground-truth sampling (used when augment.gt_sampling).
        min_points: labelled boxes with fewer points (or difficulty -1) are ignored, not gts.
        object_crop_prob: probability that a crop window is placed around a random gt.
        shuffle_points: shuffle each frame's points before voxelization; None follows
            ``config.shuffle_points``.
    """

    def __init__(self, config: PointPillarsConfig, augment: Optional[AugmentConfig] = None,
                 crop: Optional[Tuple[int, int]] = None, gt_sampler: Optional[GTSampler] = None,
                 min_points: int = 1, object_crop_prob: float = 0.8,
                 shuffle_points: Optional[bool] = None) -> None:
        self.config = config
        self.shuffle_points = (config.shuffle_points if shuffle_points is None
                               else bool(shuffle_points))
        self.augment = augment
        self.gt_sampler = gt_sampler
        self.min_points = min_points
        self.object_crop_prob = object_crop_prob
        nx, ny = config.grid_size
        self.align = int(np.prod(config.layer_strides))
        self.stride = config.head_stride
        if crop is not None:
            crop = (min(int(crop[0]), ny), min(int(crop[1]), nx))
            if crop[0] % self.align or crop[1] % self.align:
                raise DatasetError(f"crop {crop}: rows and cols must be multiples of the "
                                   f"backbone stride {self.align}")
        self.crop = crop
        self.anchors = anchor_grid(config)
        self.class_index = {n: i for i, n in enumerate(config.class_names)}

    @property
    def canvas_hw(self) -> Tuple[int, int]:
        """(rows, cols) of the scatter canvas of every sample."""
        nx, ny = self.config.grid_size
        return self.crop if self.crop is not None else (ny, nx)

    def _labels(self, boxes: np.ndarray, names: Sequence[str], difficulty: np.ndarray,
                num_points: np.ndarray):
        gt_idx: List[int] = []
        gt_lab: List[int] = []
        ignore: Dict[int, List[int]] = {}
        for j, name in enumerate(names):
            k = self.class_index.get(name)
            if k is not None:
                if difficulty[j] >= 0 and num_points[j] >= self.min_points:
                    gt_idx.append(j)
                    gt_lab.append(k)
                else:
                    ignore.setdefault(k, []).append(j)
            elif IGNORE_AS.get(name) in self.class_index:
                ignore.setdefault(self.class_index[IGNORE_AS[name]], []).append(j)
        ign = {k: boxes[v] for k, v in ignore.items()}
        return boxes[gt_idx].reshape(-1, 7), np.asarray(gt_lab, np.int64), ign

    def _reachable(self, points: np.ndarray, aug: AugmentConfig) -> np.ndarray:
        """Drop points that no rotation / scaling of ``aug`` can bring into the range."""
        r = self.config.point_cloud_range
        reach = np.hypot(max(abs(r[0]), abs(r[3])), max(abs(r[1]), abs(r[4]))) \
            / min(aug.scale_range[0], 1.0) + 1.0
        az_lim = np.arctan2(max(abs(r[1]), abs(r[4])), 1e-3 if r[0] >= 0 else -r[0]) \
            + max(abs(aug.rot_range[0]), abs(aug.rot_range[1])) + 0.05
        az = np.abs(np.arctan2(points[:, 1], points[:, 0]))
        keep = (points[:, 0] ** 2 + points[:, 1] ** 2 < reach ** 2) & (az < az_lim)
        return points[keep]

    def build(self, frame, rng: np.random.Generator) -> Sample:
        """A sample from one frame (points [N, C], boxes [M, 7], names, difficulty[, num_points])."""
        cfg = self.config
        points = np.asarray(frame.points, np.float32)
        if points.ndim != 2 or points.shape[1] != cfg.in_channels:
            raise DatasetError(f"frame.points: expected [N, {cfg.in_channels}], got "
                               f"{points.shape}")
        boxes = np.asarray(frame.boxes, np.float32).reshape(-1, 7)
        names = list(frame.names)
        difficulty = np.asarray(frame.difficulty, np.int64).reshape(-1)
        npts = np.asarray(getattr(frame, "num_points", np.full(len(names), 1 << 30)),
                          np.int64).reshape(-1)
        aug = self.augment
        if aug is not None:
            points = self._reachable(points, aug)
            if aug.gt_sampling and self.gt_sampler is not None:
                n0 = len(names)
                points, boxes, names = self.gt_sampler(points, boxes, names, rng)
                extra = len(names) - n0
                difficulty = np.concatenate([difficulty, np.zeros(extra, np.int64)])
                npts = np.concatenate([npts, np.full(extra, 1 << 30, np.int64)])
            points, boxes = random_flip(points, boxes, rng, aug.flip_ratio)
            points, boxes = global_rot_scale(points, boxes, rng, aug.rot_range, aug.scale_range)
        points, keep = range_filter(points, boxes, cfg.point_cloud_range)
        boxes = boxes[keep]
        names = [n for n, k in zip(names, keep) if k]
        difficulty, npts = difficulty[keep], npts[keep]
        gt_boxes, gt_labels, ignore = self._labels(boxes, names, difficulty, npts)

        if self.shuffle_points:
            points = points[rng.permutation(len(points))]
        vox = voxelize(points, cfg.voxel_size, cfg.point_cloud_range, cfg.max_points,
                       cfg.max_voxels[0])
        coors = vox.coors.astype(np.int32)  # (z, y, x)
        nx, ny = cfg.grid_size
        rows, cols = self.canvas_hw
        y0 = x0 = 0
        if self.crop is not None:
            cy = cx = None
            if len(gt_boxes) and rng.random() < self.object_crop_prob:
                g = gt_boxes[rng.integers(len(gt_boxes))]
                cx = (g[0] - cfg.point_cloud_range[0]) / cfg.voxel_size[0]
                cy = (g[1] - cfg.point_cloud_range[1]) / cfg.voxel_size[1]
            y0 = _crop_origin(ny, rows, cy, self.align, rng)
            x0 = _crop_origin(nx, cols, cx, self.align, rng)
        sel = ((coors[:, 1] >= y0) & (coors[:, 1] < y0 + rows)
               & (coors[:, 2] >= x0) & (coors[:, 2] < x0 + cols))
        zeros = np.zeros((int(sel.sum()), 1), np.int32)
        c = coors[sel]
        full = np.concatenate([zeros, c], axis=1)
        local = np.concatenate([zeros, c[:, :1], c[:, 1:2] - y0, c[:, 2:3] - x0], axis=1)
        s = self.stride
        anchors = self.anchors[y0 // s:(y0 + rows) // s, x0 // s:(x0 + cols) // s]
        targets = assign_targets(cfg, anchors, gt_boxes, gt_labels, ignore)
        return Sample(voxels=vox.voxels[sel], num_points=vox.num_points[sel], coors=full,
                      scatter_coors=local.astype(np.int32), targets=targets,
                      num_gt=len(gt_boxes))


def collate(samples: Sequence[Sample]) -> Dict[str, np.ndarray]:
    """Stack samples into one batch (coors column 0 = sample index)."""
    out: Dict[str, List[np.ndarray]] = {k: [] for k in (
        "voxels", "num_points", "coors", "scatter_coors", "labels", "label_weights",
        "bbox_targets", "pos_mask", "dir_targets")}
    for b, smp in enumerate(samples):
        out["voxels"].append(smp.voxels)
        out["num_points"].append(smp.num_points)
        for key in ("coors", "scatter_coors"):
            c = getattr(smp, key).copy()
            c[:, 0] = b
            out[key].append(c)
        t = smp.targets
        out["labels"].append(t.labels)
        out["label_weights"].append(t.label_weights)
        out["bbox_targets"].append(t.bbox_targets)
        out["pos_mask"].append(t.pos_mask)
        out["dir_targets"].append(t.dir_targets)
    batch = {k: np.concatenate(v) for k, v in out.items()}
    batch["avg_factor"] = np.float32(sum(max(s.targets.num_pos, 1) for s in samples))
    batch["num_pos"] = np.int64(sum(s.targets.num_pos for s in samples))
    return batch
