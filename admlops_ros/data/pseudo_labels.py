"""Pseudo-labels for unlabelled real scans from an engine bundle (self-training).

``pseudo_label(SCANS, OUT)`` runs a detector (:func:`admlops_ros.evaluation.replay.open_detector`,
as ``admlops export --labels engine`` does for bags) on every ``SCANS/velodyne/*.bin`` and writes
``OUT/label_2/<id>.txt`` in KITTI form with the score in the 16th column
(:func:`kitti_io.lidar_boxes_to_objects`, image 2's view only, as KITTI labels):

- detections with score >= ``threshold`` are labels (their class);
- detections with ``min_score`` <= score < ``threshold`` are ``DontCare`` lines that keep
  their 3D box: `KittiDataset` skips them (no label, as KITTI's DontCare), while
  :class:`~admlops_ros.data.insertion.RealBackgrounds` reads them as places where a real object
  may be (nothing is inserted there).

``OUT/velodyne``, ``OUT/calib`` and ``OUT/image_2`` link to the scans' own directories, so
``OUT`` is a KITTI-format directory for ``admlops train --dataset OUT`` (self-training) and
``--real-backgrounds OUT``; ``OUT/pseudo_labels.json`` records the engine, backend, thresholds
and the counts per frame.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np

from admlops_ros.data.kitti_dataset import image_hw
from admlops_ros.errors import AdmlopsError
from admlops_ros.evaluation import kitti_io

LOG = logging.getLogger(__name__)
PathLike = Union[str, "os.PathLike[str]"]
RUN_FILE = "pseudo_labels.json"
LINKED = ("velodyne", "calib", "image_2")

__all__ = ["PseudoLabelError", "PseudoLabelSummary", "pseudo_label", "pseudo_objects"]


class PseudoLabelError(AdmlopsError, ValueError):
    """Scans, an output directory or a threshold that cannot be used; names it and the fix."""


@dataclass
class PseudoLabelSummary:
    """What :func:`pseudo_label` wrote: per frame (labels, DontCare) counts."""

    out: Path
    frames: Dict[str, List[int]] = field(default_factory=dict)

    def line(self) -> str:
        labels = sum(v[0] for v in self.frames.values())
        dc = sum(v[1] for v in self.frames.values())
        return (f"wrote pseudo-labels of {len(self.frames)} scans to {self.out}/label_2: "
                f"{labels} labels ({labels / max(len(self.frames), 1):.1f} per scan), "
                f"{dc} below the threshold as DontCare")


def pseudo_objects(boxes: np.ndarray, names, scores: np.ndarray, calib: kitti_io.KittiCalib,
                   threshold: float, image_shape=kitti_io.IMAGE_SHAPE
                   ) -> List[kitti_io.KittiObject]:
    """Label objects of detections inside image 2's view: labels at score >= ``threshold``,
    DontCare (3D box and score kept) below it."""
    objects = kitti_io.lidar_boxes_to_objects(boxes, list(names), calib,
                                              scores=np.asarray(scores, np.float64),
                                              image_shape=image_shape, camera_fov_only=True)
    for o in objects:
        if o.score is not None and o.score < threshold:
            o.type = kitti_io.DONT_CARE
    return objects


def _link(out: Path, scans: Path) -> None:
    for sub in LINKED:
        src, dst = (scans / sub).resolve(), out / sub
        if not src.is_dir():
            continue
        if dst.is_symlink() and dst.resolve() == src:
            continue
        if dst.exists() or dst.is_symlink():
            raise PseudoLabelError(f"{dst} exists and is not a link to {src}; give an empty "
                                   f"or new --output directory")
        dst.symlink_to(src, target_is_directory=True)


def pseudo_label(scans: PathLike, out: PathLike, engine: Optional[str] = None,
                 backend: str = "auto", threshold: float = 0.5, min_score: float = 0.1,
                 limit: Optional[int] = None) -> PseudoLabelSummary:
    """Writes pseudo-labels of ``scans`` (KITTI-format: velodyne/, calib/) under ``out``.

    Args:
        scans: directory with ``velodyne/*.bin`` (and ``calib/``; without one a frame uses
            the nominal KITTI calibration, logged).
        out: output directory (created; must not hold other velodyne/calib/image_2).
        engine: engine bundle (None: the shipped default); backend: its backend spec.
        threshold: score at which a detection becomes a label.
        min_score: detections below it are not written at all (the detector's threshold).
        limit: only the first ``limit`` scans.

    Raises:
        PseudoLabelError: no scans, thresholds outside 0 <= min_score <= threshold <= 1, or
            an output directory with other data in the linked places.
    """
    from admlops_ros.evaluation.replay import open_detector
    src, root = Path(scans), Path(out)
    if not 0.0 <= float(min_score) <= float(threshold) <= 1.0:
        raise PseudoLabelError(f"thresholds min_score={min_score}, threshold={threshold}: "
                               f"need 0 <= min_score <= threshold <= 1")
    bins = sorted((src / "velodyne").glob("*.bin"))[:limit]
    if not bins:
        raise PseudoLabelError(f"{src}: no velodyne/*.bin scans; give a KITTI-format "
                               f"directory (e.g. ../shared/data/kitti/testing)")
    if root.resolve() == src.resolve():
        raise PseudoLabelError(f"--output {root} is the scans' own directory; give another "
                               f"one (the scans are linked, never written)")
    (root / "label_2").mkdir(parents=True, exist_ok=True)
    _link(root, src)
    with open_detector(engine, backend, score_threshold=float(min_score)) as detector:
        summary = PseudoLabelSummary(root)
        nominal = []
        for path in bins:
            fid = path.stem
            calib_path = src / "calib" / f"{fid}.txt"
            if calib_path.is_file():
                calib = kitti_io.read_calib(calib_path)
            else:
                calib = kitti_io.nominal_calib()
                nominal.append(fid)
            dets = detector.detect(kitti_io.read_velodyne(path))
            objects = pseudo_objects(dets.boxes, dets.label_names(), dets.scores, calib,
                                     float(threshold), image_hw(src, fid))
            kitti_io.write_label(root / "label_2" / f"{fid}.txt", objects)
            n_dc = sum(o.type == kitti_io.DONT_CARE for o in objects)
            summary.frames[fid] = [len(objects) - n_dc, n_dc]
    if nominal:
        LOG.warning("%d scans without calib/ used the nominal KITTI calibration: %s",
                    len(nominal), nominal[:5])
    run = {"scans": str(src.resolve()), "engine": engine or "default", "backend": backend,
           "threshold": float(threshold), "min_score": float(min_score),
           "frames": summary.frames, "nominal_calib": nominal}
    (root / RUN_FILE).write_text(json.dumps(run, indent=1, sort_keys=True) + "\n")
    return summary
