"""Rendered camera training/evaluation sets: render once to a cache of arrays, load, sample.

A cache is a directory with ``images.npy`` ([N, H, W, 3] uint8 BGR, memory-mapped on load),
``labels.npz`` (per-box arrays with a frame index) and ``meta.json`` (seeds, camera).
"""
from __future__ import annotations

import json
import multiprocessing as mp
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from admlops_ros.errors import AdmlopsError
from admlops_ros.simulation.camera import CameraConfig, CameraFrame, render_frame
from admlops_ros.simulation.scene import SceneConfig

CAMERA_CLASSES = ("Car", "Pedestrian", "Cyclist")
# KITTI evaluation ignores Van detections for Car: their boxes are ignore regions of Car.
IGNORE_AS = {"Van": "Car", "Person_sitting": "Pedestrian"}
EVAL_SEED_BASE = 1_000_000    # the project's held-out simulator seeds (admlops eval default)
TRAIN_SEED_BASE = 3_000_000   # camera training frames (disjoint from the held-out ones)
TRAIN_SCENE = SceneConfig(num_pedestrians=(1, 12), num_cyclists=(0, 5))


class CameraDataError(AdmlopsError, ValueError):
    """A camera data cache is missing or inconsistent."""


def scaled_camera(width: int, height: int, base: CameraConfig = CameraConfig()) -> CameraConfig:
    """The camera whose image equals ``base``'s resized (no keep-ratio) to width x height."""
    sx, sy = width / base.width, height / base.height
    return CameraConfig(width=width, height=height, fx=base.fx * sx, fy=base.fy * sy,
                        cx=base.cx * sx, cy=base.cy * sy, position=base.position,
                        pitch_deg=base.pitch_deg, noise_std=base.noise_std,
                        min_visible_pixels=max(4, int(base.min_visible_pixels * sx * sy)))


@dataclass
class FrameLabels:
    """2D labels of one frame (pixels of the image they belong to)."""

    boxes: np.ndarray        # [K, 4] float32 x1, y1, x2, y2
    names: List[str]
    occlusion_level: np.ndarray   # [K] int32
    truncation: np.ndarray   # [K] float32


def _render_one(args: Tuple[int, CameraConfig, Optional[SceneConfig]]):
    seed, camera, scene = args
    f: CameraFrame = render_frame(seed, scene, camera)
    return f.image, f.boxes2d, f.names, f.occlusion_level, f.truncation


def render_cache(out_dir: Path, seeds: Sequence[int], camera: CameraConfig,
                 scene: Optional[SceneConfig] = None, workers: int = 1) -> Path:
    """Renders frames of ``seeds`` into ``out_dir`` (see module docstring); returns it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in seeds]
    images = np.lib.format.open_memmap(str(out_dir / "images.npy.part"), mode="w+",
                                       dtype=np.uint8,
                                       shape=(len(seeds), camera.height, camera.width, 3))
    frame_idx, boxes, names, occ, trunc = [], [], [], [], []
    jobs = [(s, camera, scene) for s in seeds]
    if workers > 1:
        pool = mp.get_context("fork").Pool(workers)
        it = pool.imap(_render_one, jobs, chunksize=4)
    else:
        pool = None
        it = map(_render_one, jobs)
    try:
        for i, (img, b, n, o, t) in enumerate(it):
            images[i] = img
            frame_idx.extend([i] * len(n))
            boxes.append(b)
            names.extend(n)
            occ.append(o)
            trunc.append(t)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    images.flush()
    del images
    np.savez(out_dir / "labels.npz", frame=np.asarray(frame_idx, np.int64),
             boxes=np.concatenate(boxes).astype(np.float32).reshape(-1, 4),
             names=np.asarray(names, dtype="U16"),
             occlusion_level=np.concatenate(occ).astype(np.int32),
             truncation=np.concatenate(trunc).astype(np.float32))
    (out_dir / "images.npy.part").replace(out_dir / "images.npy")
    meta = {"seeds": seeds, "camera": asdict(camera)}
    (out_dir / "meta.json").write_text(json.dumps(meta))
    return out_dir


class CameraCache:
    """A rendered cache opened for reading (images memory-mapped)."""

    def __init__(self, path: Path) -> None:
        path = Path(path)
        if not (path / "meta.json").exists():
            raise CameraDataError(
                f"camera cache {path} has no meta.json: render it first (render_cache)")
        self.path = path
        self.meta = json.loads((path / "meta.json").read_text())
        self.images = np.load(path / "images.npy", mmap_mode="r")
        lab = np.load(path / "labels.npz")
        self._lab: Dict[str, np.ndarray] = {k: lab[k] for k in lab.files}
        order = self._lab["frame"]
        self._start = np.searchsorted(order, np.arange(len(self.images) + 1))

    def __len__(self) -> int:
        return len(self.images)

    @property
    def seeds(self) -> List[int]:
        """Frame seeds in cache order."""
        return list(self.meta["seeds"])

    def labels(self, i: int) -> FrameLabels:
        """Labels of frame ``i``."""
        a, b = self._start[i], self._start[i + 1]
        lab = self._lab
        return FrameLabels(boxes=lab["boxes"][a:b].copy(),
                           names=[str(n) for n in lab["names"][a:b]],
                           occlusion_level=lab["occlusion_level"][a:b].copy(),
                           truncation=lab["truncation"][a:b].copy())


def split_targets(labels: FrameLabels, min_height: float, max_occlusion: int = 2,
                  classes: Sequence[str] = CAMERA_CLASSES
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Splits labels into scored ground truth and ignore regions.

    A box is scored if its class is one of ``classes``, its height >= ``min_height`` pixels and
    its occlusion level <= ``max_occlusion``; other boxes of those classes, and boxes of a class
    in `IGNORE_AS`, are ignore regions of their (mapped) class.

    Returns:
        (gt_boxes [G, 4], gt_labels [G] int64, ignore_boxes [I, 4], ignore_labels [I] int64).
    """
    cls_index = {c: i for i, c in enumerate(classes)}
    gb, gl, ib, il = [], [], [], []
    for box, name, occ in zip(labels.boxes, labels.names, labels.occlusion_level):
        h = box[3] - box[1]
        if name in cls_index:
            if h >= min_height and occ <= max_occlusion:
                gb.append(box)
                gl.append(cls_index[name])
            else:
                ib.append(box)
                il.append(cls_index[name])
        elif IGNORE_AS.get(name) in cls_index:
            ib.append(box)
            il.append(cls_index[IGNORE_AS[name]])
    f = lambda x: np.asarray(x, np.float32).reshape(-1, 4)   # noqa: E731
    return f(gb), np.asarray(gl, np.int64), f(ib), np.asarray(il, np.int64)
