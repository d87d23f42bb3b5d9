"""Camera mode of `admlops eval`: a CameraDetector on the images of a bag, 2D boxes scored."""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from admlops_ros.errors import AdmlopsError
from admlops_ros.evaluation.camera_bags import CameraBagSummary, read_camera_bag
from admlops_ros.evaluation.metrics2d import Eval2DResult, ImageGT, ImagePred, evaluate_2d
from admlops_ros.evaluation.replay import detect_recorded, latency_stats, parse_backend

LOG = logging.getLogger(__name__)

IMAGE_SAMPLES = 4  # annotated images kept for the report


class CameraEvalError(AdmlopsError, RuntimeError):
    """The camera evaluation could not run (bundle, backend); the message says which."""


def is_camera_bundle(path: Optional[os.PathLike]) -> bool:
    """Whether ``path`` is a bundle directory whose spec.yaml declares ``modality: camera``."""
    if path is None:
        return False
    spec = Path(path) / "spec.yaml"
    if not spec.is_file():
        return False
    import yaml

    from admlops_ros.bundle.camera_spec import is_camera_spec_data
    try:
        return is_camera_spec_data(yaml.safe_load(spec.read_text()))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return False


@dataclass
class ImageRecord:
    """What happened to one image (the fields report.latency_png reads: latency_ms)."""

    index: int
    stamp_ns: int
    has_gt: bool
    detected: bool = False
    num_detections: int = 0
    latency_ms: float = math.nan
    timings_ms: Dict[str, float] = field(default_factory=dict)


@dataclass
class CameraReplayResult:
    """Per-image records, aligned ground truth / predictions and a few annotated samples."""

    bag: CameraBagSummary
    engine: Dict[str, Any]
    class_names: Tuple[str, ...]
    records: List[ImageRecord]
    gts: List[ImageGT]
    preds: List[ImagePred]
    samples: List[Dict[str, Any]]  # {"stamp_ns", "image" BGR, "gt", "pred"}
    wall_s: float
    problems: List[str] = field(default_factory=list)


def open_camera_detector(bundle: Optional[os.PathLike], backend: str = "auto",
                         score_threshold: Optional[float] = None) -> Any:
    """A CameraDetector on ``bundle`` with a backend spec such as ``openvino-f32``."""
    from admlops_ros.camera.detector import CameraDetector
    if bundle is None:
        raise CameraEvalError("camera eval needs a camera bundle: pass --camera-bundle DIR "
                              "(e.g. engines/camera_sim_3class)")
    name, opts = (backend, {}) if backend == "mmdeploy_sdk" else parse_backend(backend)
    try:
        return CameraDetector.from_bundle(bundle, backend=name, score_threshold=score_threshold,
                                          **opts)
    except Exception as exc:  # noqa: B902 - SpecError / BackendError: report, no traceback
        raise CameraEvalError(f"cannot open camera bundle {bundle} with backend {backend!r}: "
                              f"{exc}") from exc


def run_camera_offline(bag: os.PathLike, bundle: Optional[os.PathLike] = None,
                       backend: str = "auto", score_threshold: Optional[float] = None,
                       limit: Optional[int] = None, progress: bool = True,
                       image_topic: Optional[str] = None, gt_topic: Optional[str] = None,
                       detector: Any = None) -> CameraReplayResult:
    """Run the camera detector in process on every image of the bag.

    Args:
        bag: bag with camera topics (:mod:`admlops_ros.evaluation.camera_bags`).
        bundle: camera bundle directory. backend: auto, onnxruntime, openvino[-f32],
            tensorrt, mmdeploy_sdk.
        limit: first N images only.
        detector: an opened detector to use instead (``detect(image) -> Detections2D``,
            ``class_names``); it is not closed.

    Raises:
        BagError, CameraEvalError: naming the bag / topic / bundle.
    """
    from tqdm import tqdm
    summary, frames = read_camera_bag(bag, image_topic, gt_topic)
    owned = detector is None
    det = open_camera_detector(bundle, backend, score_threshold) if owned else detector
    problems = list(summary.problems)
    records: List[ImageRecord] = []
    gts: List[ImageGT] = []
    preds: List[ImagePred] = []
    samples: List[Dict[str, Any]] = []
    total = summary.num_images if limit is None else min(limit, summary.num_images)
    keep = set(np.linspace(0, max(total - 1, 0), min(IMAGE_SAMPLES, total)).round()
               .astype(int).tolist()) if total else set()
    engine = {"bundle": str(bundle) if bundle else None,
              "backend": getattr(det, "backend_name", backend),
              "classes": list(det.class_names)}
    t0 = time.perf_counter()
    try:
        if hasattr(det, "warmup"):
            det.warmup()
        for frame in tqdm(frames, total=total, desc="eval (camera)", unit="image",
                          disable=not progress):
            if limit is not None and frame.index >= limit:
                break
            rec = ImageRecord(frame.index, frame.stamp_ns, frame.gt is not None)
            records.append(rec)
            if frame.image is None:
                problems.append(frame.error)
                continue
            dets = detect_recorded(det.detect, frame.image, rec, "image", problems,
                                   "camera detector")
            if dets is None:
                continue
            pred = ImagePred.from_detections(dets, frame.frame_id)
            if frame.gt is not None:
                gts.append(frame.gt)
                preds.append(pred)
            if frame.index in keep:
                samples.append({"stamp_ns": frame.stamp_ns, "image": frame.image,
                                "gt": frame.gt, "pred": pred})
    finally:
        if owned and hasattr(det, "close"):
            det.close()
    return CameraReplayResult(summary, engine, tuple(det.class_names), records, gts, preds,
                              samples, time.perf_counter() - t0, problems)


def summarize_camera(result: CameraReplayResult, classes: Optional[Sequence[str]] = None,
                     score_threshold: float = 0.3, min_height: float = 0.0,
                     max_occlusion: Optional[int] = None
                     ) -> Tuple[Dict[str, Any], Optional[Eval2DResult]]:
    """results.json content and the 2D evaluation (None without ground truth); min_height /
    max_occlusion: the COCO numbers' ignore rule (:func:`metrics2d.coco_evaluate`)."""
    classes = list(classes or result.class_names)
    ev = (evaluate_2d(result.gts, result.preds, classes, score_threshold, min_height,
                      max_occlusion) if result.gts else None)
    recs = result.records
    busy_s = sum(r.latency_ms for r in recs if math.isfinite(r.latency_ms)) / 1e3
    stage_keys = sorted({k for r in recs for k in r.timings_ms})
    out: Dict[str, Any] = {
        "mode": "camera-offline",
        "bag": {"path": result.bag.path, "image_topic": result.bag.image_topic,
                "gt_topic": result.bag.gt_topic, "images": result.bag.num_images,
                "gt_messages": result.bag.num_gt, "duration_s": result.bag.duration_s},
        "engine": result.engine,
        "frames": {"images": len(recs), "evaluated": len(result.gts),
                   "without_gt": sum(1 for r in recs if not r.has_gt),
                   "dropped": sum(1 for r in recs if not r.detected)},
        "latency_ms": latency_stats([r.latency_ms for r in recs]),
        "latency_definition": "camera detector total in process",
        "stages_ms": {k: latency_stats([r.timings_ms.get(k, math.nan) for r in recs])
                      for k in stage_keys},
        "real_time_factor": result.bag.duration_s / busy_s if busy_s > 0 else math.nan,
        "real_time_factor_definition": "bag duration / summed detector time",
        "wall_s": result.wall_s, "problems": list(result.problems),
        "metrics_2d": ev.to_dict() if ev is not None else None,
    }
    return out, ev


__all__: Sequence[str] = ("CameraEvalError", "CameraReplayResult", "ImageRecord",
                          "is_camera_bundle", "open_camera_detector", "run_camera_offline",
                          "summarize_camera")
