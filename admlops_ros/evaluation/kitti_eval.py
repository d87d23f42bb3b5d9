"""Score KITTI-format result files against label_2 with KITTI's rules; write predictions as KITTI."""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from admlops_ros.evaluation.metrics import (EvalConfig, EvalResult, FrameGT, FramePred,
                                            evaluate)

LOG = logging.getLogger(__name__)

# KITTI nominal camera calibration (object set, 000000): used to write simulated frames'
# predictions as KITTI result files when no calib is given.
NOMINAL_P2 = np.array([[707.0493, 0.0, 604.0814, 45.75831],
                       [0.0, 707.0493, 180.5066, -0.3454157],
                       [0.0, 0.0, 1.0, 0.004981016]])
NOMINAL_R0 = np.array([[0.9999128, 0.01009263, -0.008511932],
                       [-0.01012729, 0.9999406, -0.004037671],
                       [0.008470675, 0.004123522, 0.9999556]])
NOMINAL_TR = np.array([[0.006927964, -0.9999722, -0.002757829, -0.02457729],
                       [-0.001162982, 0.002749836, -0.9999955, -0.06127237],
                       [0.9999753, 0.006931141, -0.001143899, -0.3321029]])
IMAGE_SIZE = (1242, 375)  # (width, height) px, to clip projected 2D boxes


class KittiEvalError(Exception):
    """Missing/unreadable KITTI directories or files."""


def parse_kitti_lines(text: str, path: str = "") -> Dict[str, np.ndarray]:
    """Columns of a label_2 / result file: type, truncated, occluded, alpha, bbox [4],
    dimensions (h, w, l) [3], location (x, y, z camera, bottom centre) [3], rotation_y, score
    (1.0 when the file has no score column)."""
    rows = [ln.split() for ln in text.splitlines() if ln.strip()]
    bad = [i for i, r in enumerate(rows) if len(r) not in (15, 16)]
    if bad:
        raise KittiEvalError(f"{path}: line {bad[0] + 1} has {len(rows[bad[0]])} fields, "
                             "KITTI object lines have 15 (labels) or 16 (results with score)")
    num = np.array([[float(v) for v in r[1:15]] + [float(r[15]) if len(r) == 16 else 1.0]
                    for r in rows], np.float64).reshape(-1, 15)
    return {"type": np.array([r[0] for r in rows], dtype=str), "truncated": num[:, 0],
            "occluded": num[:, 1].astype(np.int64), "alpha": num[:, 2], "bbox": num[:, 3:7],
            "dimensions": num[:, 7:10], "location": num[:, 10:13], "rotation_y": num[:, 13],
            "score": num[:, 14]}


def camera_to_eval_boxes(location: np.ndarray, dimensions_hwl: np.ndarray,
                         rotation_y: np.ndarray) -> np.ndarray:
    """KITTI camera boxes as (x, y, z, dx, dy, dz, yaw) in a LiDAR-like axis order.

    x = z_cam, y = -x_cam, z = -y_cam (a proper rotation of the rectified camera frame), so
    BEV and 3D IoU equal the devkit's camera-frame ones exactly; dx = l, dy = w, dz = h,
    yaw = -ry - pi/2 (mmdet3d's camera -> LiDAR yaw).
    """
    loc = np.asarray(location, np.float64).reshape(-1, 3)
    hwl = np.asarray(dimensions_hwl, np.float64).reshape(-1, 3)
    ry = np.asarray(rotation_y, np.float64).reshape(-1)
    return np.column_stack([loc[:, 2], -loc[:, 0], -loc[:, 1], hwl[:, 2], hwl[:, 1], hwl[:, 0],
                            -ry - np.pi / 2])


def _frame_gt(cols: Dict[str, np.ndarray], frame: str) -> FrameGT:
    care = cols["type"] != "DontCare"
    return FrameGT(camera_to_eval_boxes(cols["location"][care], cols["dimensions"][care],
                                        cols["rotation_y"][care]),
                   cols["type"][care], bbox2d=cols["bbox"][care],
                   occluded=cols["occluded"][care], truncated=cols["truncated"][care],
                   dontcare_bbox2d=cols["bbox"][~care], frame_id=frame)


def _frame_pred(cols: Dict[str, np.ndarray], frame: str) -> FramePred:
    keep = cols["type"] != "DontCare"
    return FramePred(camera_to_eval_boxes(cols["location"][keep], cols["dimensions"][keep],
                                          cols["rotation_y"][keep]),
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
        gts.append(_frame_gt(parse_kitti_lines(gp.read_text(), str(gp)), frame))
        pp = pred_dir / f"{frame}.txt"
        if pp.is_file():
            preds.append(_frame_pred(parse_kitti_lines(pp.read_text(), str(pp)), frame))
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

def lidar_to_camera_boxes(boxes: np.ndarray, velo_to_cam: np.ndarray) -> np.ndarray:
    """LiDAR boxes -> KITTI camera (location bottom centre, dims h, w, l, rotation_y) [N, 7].

    Args:
        boxes: [N, 7] LiDAR (x, y, z bottom, dx, dy, dz, yaw).
        velo_to_cam: [4, 4] R0_rect @ Tr_velo_to_cam (rectified camera <- LiDAR).

    Returns:
        [N, 7] (x, y, z camera bottom centre, h, w, l, rotation_y).
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    hom = np.column_stack([boxes[:, :3], np.ones(len(boxes))])
    loc = hom @ np.asarray(velo_to_cam, np.float64)[:3].T
    ry = -boxes[:, 6] - np.pi / 2
    ry = (ry + np.pi) % (2 * np.pi) - np.pi
    return np.column_stack([loc, boxes[:, 5], boxes[:, 4], boxes[:, 3], ry])


def project_2d_boxes(cam_boxes: np.ndarray, p2: np.ndarray,
                     image_size: Tuple[int, int] = IMAGE_SIZE) -> np.ndarray:
    """2D image boxes (left, top, right, bottom) of camera boxes' 8 corners, clipped."""
    cam = np.asarray(cam_boxes, np.float64).reshape(-1, 7)
    h, w, l, ry = cam[:, 3], cam[:, 4], cam[:, 5], cam[:, 6]
    sx = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * 0.5
    sz = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * 0.5
    sy = np.array([0, 0, 0, 0, -1, -1, -1, -1])
    x = l[:, None] * sx
    z = w[:, None] * sz
    y = h[:, None] * sy
    c, s = np.cos(ry)[:, None], np.sin(ry)[:, None]
    cx = c * x + s * z + cam[:, None, 0]
    cz = -s * x + c * z + cam[:, None, 2]
    cy = y + cam[:, None, 1]
    pts = np.stack([cx, cy, cz, np.ones_like(cx)], -1) @ np.asarray(p2, np.float64).T
    depth = np.maximum(pts[..., 2], 1e-3)
    u, v = pts[..., 0] / depth, pts[..., 1] / depth
    box = np.column_stack([u.min(1), v.min(1), u.max(1), v.max(1)])
    box[:, [0, 2]] = box[:, [0, 2]].clip(0, image_size[0] - 1)
    box[:, [1, 3]] = box[:, [1, 3]].clip(0, image_size[1] - 1)
    return box


def nominal_velo_to_cam() -> np.ndarray:
    """[4, 4] R0_rect @ Tr_velo_to_cam of the nominal calibration."""
    r0 = np.eye(4)
    r0[:3, :3] = NOMINAL_R0
    tr = np.eye(4)
    tr[:3] = NOMINAL_TR
    return r0 @ tr


def format_result_lines(pred: FramePred, velo_to_cam: Optional[np.ndarray] = None,
                        p2: Optional[np.ndarray] = None) -> str:
    """KITTI result lines (label format + score) for LiDAR-frame predictions; boxes behind
    the camera (z_cam <= 0) are left out as the image-based devkit cannot score them."""
    v2c = nominal_velo_to_cam() if velo_to_cam is None else velo_to_cam
    p2 = NOMINAL_P2 if p2 is None else p2
    cam = lidar_to_camera_boxes(pred.boxes, v2c)
    front = cam[:, 2] > 0.1
    cam = cam[front]
    bbox = project_2d_boxes(cam, p2)
    alpha = cam[:, 6] - np.arctan2(cam[:, 0], cam[:, 2])
    alpha = (alpha + np.pi) % (2 * np.pi) - np.pi
    lines = []
    for name, a, b, c, s in zip(np.asarray(pred.names)[front], alpha, bbox, cam,
                                pred.scores[front]):
        lines.append(f"{name} 0.00 0 {a:.2f} {b[0]:.2f} {b[1]:.2f} {b[2]:.2f} {b[3]:.2f} "
                     f"{c[3]:.2f} {c[4]:.2f} {c[5]:.2f} {c[0]:.2f} {c[1]:.2f} {c[2]:.2f} "
                     f"{c[6]:.2f} {s:.4f}")
    return "\n".join(lines) + ("\n" if lines else "")


def write_kitti_results(out_dir: os.PathLike, preds: Sequence[FramePred],
                        names: Optional[Sequence[str]] = None) -> Path:
    """One result file per frame (``names`` or ``000000``.. by order), nominal calibration."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for i, pred in enumerate(preds):
        stem = names[i] if names else f"{i:06d}"
        (out / f"{stem}.txt").write_text(format_result_lines(pred))
    return out


__all__ = ("KittiEvalError", "kitti_eval", "kitti_eval_with_bands", "load_kitti_dirs", "parse_kitti_lines",
           "camera_to_eval_boxes", "lidar_to_camera_boxes", "project_2d_boxes",
           "format_result_lines", "write_kitti_results", "nominal_velo_to_cam")
