"""Score KITTI-format result files against label_2 with KITTI's rules; write predictions as KITTI."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from admlops_ros.errors import AdmlopsError
from admlops_ros.evaluation.frames import FrameGT, FramePred
from admlops_ros.evaluation.metrics import evaluate
from admlops_ros.evaluation.protocol import EvalConfig
from admlops_ros.evaluation.results import EvalResult

LOG = logging.getLogger(__name__)

class KittiEvalError(AdmlopsError):
    """Missing/unreadable KITTI directories or files."""


def read_kitti_file(path: Path) -> Dict[str, np.ndarray]:
    """Columns of a label_2 / result file via :func:`kitti_io.read_label`: type, truncated,
    occluded, bbox [4], camera boxes (x, y, z, l, h, w, ry), score (1.0 when the file has no
    score column)."""
    from admlops_ros.evaluation import kitti_io
    try:
        objs = kitti_io.read_label(path)
    except (kitti_io.KittiError, OSError) as exc:
        raise KittiEvalError(f"cannot read {path}: {exc}") from exc
    return {"type": np.array([o.type for o in objs], dtype=str).reshape(-1),
            "truncated": np.array([o.truncated for o in objs], np.float64).reshape(-1),
            "occluded": np.array([o.occluded for o in objs], np.int64).reshape(-1),
            "bbox": np.array([o.bbox for o in objs], np.float64).reshape(-1, 4),
            "cam": kitti_io.objects_to_camera_boxes(objs).reshape(-1, 7),
            "score": np.array([1.0 if o.score is None else o.score for o in objs],
                              np.float64).reshape(-1)}


def camera_to_eval_boxes(cam_boxes: np.ndarray) -> np.ndarray:
    """KITTI camera boxes (x, y, z, l, h, w, ry) as (x, y, z, dx, dy, dz, yaw), LiDAR-like axes.

    x = z_cam, y = -x_cam, z = -y_cam (a proper rotation of the rectified camera frame, no
    calibration), so BEV and 3D IoU equal the devkit's camera-frame ones exactly;
    dx = l, dy = w, dz = h, yaw = -ry - pi/2 (mmdet3d's camera -> LiDAR yaw).
    """
    c = np.asarray(cam_boxes, np.float64).reshape(-1, 7)
    return np.column_stack([c[:, 2], -c[:, 0], -c[:, 1], c[:, 3], c[:, 5], c[:, 4],
                            -c[:, 6] - np.pi / 2])


def _frame_gt(cols: Dict[str, np.ndarray], frame: str) -> FrameGT:
    care = cols["type"] != "DontCare"
    return FrameGT(camera_to_eval_boxes(cols["cam"][care]),
                   cols["type"][care], bbox2d=cols["bbox"][care],
                   occluded=cols["occluded"][care], truncated=cols["truncated"][care],
                   dontcare_bbox2d=cols["bbox"][~care], frame_id=frame)


def _frame_pred(cols: Dict[str, np.ndarray], frame: str) -> FramePred:
    keep = cols["type"] != "DontCare"
    return FramePred(camera_to_eval_boxes(cols["cam"][keep]),
                     cols["score"][keep], cols["type"][keep], bbox2d=cols["bbox"][keep],
                     frame_id=frame)


def load_kitti_dirs(gt_dir: os.PathLike, pred_dir: os.PathLike,
                    ids: Optional[Sequence[str]] = None) -> Tuple[List[FrameGT], List[FramePred]]:
    """Ground truth and predictions per frame id (label files in gt_dir define the ids).

    A missing result file counts as a frame with no detections (logged); result files
    without a label file are ignored (logged).
    """
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    for name, d in (("--gt", gt_dir), ("--pred", pred_dir)):
        if not d.is_dir():
            raise KittiEvalError(f"{name} directory {d} does not exist")
    ids = list(ids) if ids else sorted(p.stem for p in gt_dir.glob("*.txt"))
    if not ids:
        raise KittiEvalError(f"no label files (*.txt) in {gt_dir}")
    gts, preds, missing = [], [], []
    for frame in ids:
        gp = gt_dir / f"{frame}.txt"
        if not gp.is_file():
            raise KittiEvalError(f"label file {gp} is missing")
        gts.append(_frame_gt(read_kitti_file(gp), frame))
        pp = pred_dir / f"{frame}.txt"
        if pp.is_file():
            preds.append(_frame_pred(read_kitti_file(pp), frame))
        else:
            missing.append(frame)
            preds.append(FramePred(np.zeros((0, 7)), [], [], bbox2d=np.zeros((0, 4)),
                                   frame_id=frame))
    if missing:
        LOG.warning("%d of %d frames have no result file in %s (first %s): scored as no "
                    "detections", len(missing), len(ids), pred_dir, missing[0])
    extra = sorted(set(p.stem for p in pred_dir.glob("*.txt")) - set(ids))
    if extra:
        LOG.warning("%d result files have no label file (first %s): ignored", len(extra), extra[0])
    return gts, preds


def kitti_eval(gt_dir: os.PathLike, pred_dir: os.PathLike, ids: Optional[Sequence[str]] = None,
               with_bbox: bool = True, classes: Sequence[str] = ("Car", "Pedestrian", "Cyclist"),
               ) -> EvalResult:
    """KITTI protocol (easy/moderate/hard from 2D height, occlusion, truncation) on two dirs.

    Args:
        gt_dir: label_2 directory. pred_dir: result files (label format + score column).
        ids: frame ids to score (default: every label file).
        with_bbox: also the 2D bbox AP (with DontCare regions).
    """
    gts, preds = load_kitti_dirs(gt_dir, pred_dir, ids)
    metrics = ("bbox", "bev", "3d") if with_bbox else ("bev", "3d")
    return evaluate(gts, preds, EvalConfig(classes=tuple(classes), metrics=metrics,
                                           difficulty_mode="kitti"))


def _lidar_origin(calib_file: Path) -> np.ndarray:
    """The LiDAR origin in the eval frame of :func:`camera_to_eval_boxes` (from a calib file)."""
    mats = {}
    for line in calib_file.read_text().splitlines():
        key, _, vals = line.partition(":")
        if vals.strip():
            mats[key.strip()] = np.array([float(v) for v in vals.split()])
    try:
        r0 = np.eye(4)
        r0[:3, :3] = mats["R0_rect"].reshape(3, 3)
        tr = np.eye(4)
        tr[:3] = mats["Tr_velo_to_cam"].reshape(3, 4)
    except KeyError as exc:
        raise KittiEvalError(f"calib file {calib_file} lacks {exc}") from exc
    c = (r0 @ tr)[:3, 3]
    return np.array([c[2], -c[0], -c[1]])


def kitti_eval_with_bands(gt_dir: os.PathLike, pred_dir: os.PathLike,
                          calib_dir: Optional[os.PathLike] = None, with_bbox: bool = True,
                          ids: Optional[Sequence[str]] = None) -> Tuple[EvalResult, EvalResult]:
    """:func:`kitti_eval` plus AP by distance band (from the LiDAR when calib_dir is given,
    else from the camera)."""
    gts, preds = load_kitti_dirs(gt_dir, pred_dir, ids)
    metrics = ("bbox", "bev", "3d") if with_bbox else ("bev", "3d")
    res = evaluate(gts, preds, EvalConfig(metrics=metrics, difficulty_mode="kitti"))
    if calib_dir is not None:
        for g, p in zip(gts, preds):
            cf = Path(calib_dir) / f"{g.frame_id}.txt"
            if not cf.is_file():
                raise KittiEvalError(f"calib file {cf} is missing")
            o = _lidar_origin(cf)
            g.boxes = g.boxes - np.r_[o, 0, 0, 0, 0]
            p.boxes = p.boxes - np.r_[o, 0, 0, 0, 0]
    bands = evaluate(gts, preds, EvalConfig(metrics=("bev", "3d"), difficulty_mode="distance"))
    return res, bands


# ---------------------------------------------------------------------------------------------
# Writing predictions as KITTI result files

def write_kitti_results(out_dir: os.PathLike, preds: Sequence[FramePred],
                        names: Optional[Sequence[str]] = None, calib=None) -> Path:
    """One KITTI result file per frame (``names`` or ``000000``.. by order).

    Boxes are converted with ``calib`` (default :func:`kitti_io.nominal_calib`, for simulated
    frames); only boxes visible in image 2 are written, as KITTI results are.
    """
    from admlops_ros.evaluation import kitti_io
    calib = calib or kitti_io.nominal_calib()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for i, pred in enumerate(preds):
        stem = names[i] if names else f"{i:06d}"
        objs = kitti_io.lidar_boxes_to_objects(pred.boxes, list(pred.names), calib,
                                               scores=pred.scores)
        kitti_io.write_label(out / f"{stem}.txt", objs)
    return out


__all__ = ("KittiEvalError", "kitti_eval", "kitti_eval_with_bands", "load_kitti_dirs",
           "read_kitti_file", "camera_to_eval_boxes", "write_kitti_results")
