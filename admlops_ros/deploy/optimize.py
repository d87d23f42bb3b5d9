"""`admlops optimize`: int8 bundles of a float bundle, calibrated on a bag, chosen for accuracy on
held-out frames of that bag, and measured (speed and AP against fp32) on another bag.

Steps:
1. Calibration: ``calib_frames`` clouds of the calibration bag, picked by ``seed``, voxelized by
   the runtime's own preprocessing (:meth:`LidarDetector.preprocess`).
2. ``int8``: everything int8 but the pillar front (which int8 cannot represent, see
   :mod:`admlops_ros.deploy.quantize`).
3. ``mixed`` (accuracy-aware): layer groups go back to fp32 in order (the head's box
   regression, the rest of the head, then the neck)
   until the 3D mAP on the calibration bag's other frames (those with ground truth, never the
   evaluation bag) is within ``max_map_loss`` of fp32. Skipped when ``int8`` already is.
4. The table: every bundle on the evaluation bag, fp32 / bf16 / int8 on OpenVINO and fp32 /
   int8 on ONNX Runtime, one after the other on each cloud: median detect time (preprocess to
   decode + NMS), speed-up against fp32 on the same backend, mean 3D / BEV AP|R40 and deltas.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from admlops_ros.bundle.files import EngineBundle, load_bundle
from admlops_ros.deploy.quantize import HEAD, PILLAR_FRONT, QuantizationError, write_int8_bundle
from admlops_ros.lidar.voxelize import with_batch_index

LOG = logging.getLogger(__name__)

NECK = ("neck",)
BOX_REGRESSION = ("bbox_head/conv_reg",)  # the head's box deltas: IoU 0.7 needs them precise
#: fp32 layer groups added in order by the accuracy-aware step, after the pillar front.
MIXED_STEPS: Tuple[Tuple[str, ...], ...] = (BOX_REGRESSION, HEAD, NECK)
VALIDATION_FRAMES = 128  # most held-out calibration-bag frames scored per accuracy step


@dataclass
class OptimizeResult:
    """What `optimize` wrote and measured."""

    bundles: Dict[str, str] = field(default_factory=dict)  # label -> bundle directory
    search: List[Dict[str, object]] = field(default_factory=list)  # accuracy-aware steps
    rows: List[Dict[str, object]] = field(default_factory=list)  # the evaluation table
    table: str = ""


def calibration_split(bag: Union[str, Path], count: int, seed: int,
                      validation: int = VALIDATION_FRAMES):
    """Clouds of a bag: ``count`` picked by ``seed`` for calibration, and up to ``validation``
    of the others that carry ground truth (for the accuracy-aware step).

    Returns:
        (calibration BagFrames, validation BagFrames)
    """
    from admlops_ros.evaluation.bags import read_bag
    summary, frames = read_bag(bag)
    total = int(summary.num_clouds)
    if total == 0:
        raise QuantizationError(f"{bag} has no clouds to calibrate on")
    picked = set(np.random.default_rng(seed).choice(total, min(count, total),
                                                    replace=False).tolist())
    calib, val = [], []
    for frame in frames:
        if frame.points is None:
            continue
        if frame.index in picked:
            calib.append(frame)
        elif frame.gt is not None and len(val) < validation:
            val.append(frame)
    if not calib:
        raise QuantizationError(f"{bag}: none of the {len(picked)} picked clouds decoded")
    return calib, val


def calibration_feeds(detector, clouds) -> List[Dict[str, np.ndarray]]:
    """Engine inputs of clouds ([N, C] point arrays), made by the detector's own preprocessing
    (clouds without a voxel left out)."""
    feeds = []
    for points in clouds:
        voxels = detector.preprocess(points)
        if voxels.num_voxels:
            feeds.append({"voxels": voxels.voxels, "num_points": voxels.num_points,
                          "coors": with_batch_index(voxels.coors)})
    return feeds


def mean_ap_3d(bundle: Union[str, Path], frames, backend: str = "openvino-f32") -> float:
    """Mean 3D AP|R40 (strict IoU) of a bundle over frames with ground truth."""
    from admlops_ros.evaluation.frames import FramePred
    from admlops_ros.evaluation.metrics import evaluate
    from admlops_ros.evaluation.replay import open_detector, restrict_to_range
    with open_detector(str(bundle), backend) as det:
        preds = [FramePred.from_detections(det.detect(f.points), f.frame_id) for f in frames]
        gts = [restrict_to_range(f.gt, det.voxelizer.point_cloud_range) for f in frames]
    return float(evaluate(gts, preds).mean_ap("3d"))


def optimize(bundle_dir: Union[str, Path], calib_bag: Union[str, Path],
             eval_bag: Union[str, Path], out_dir: Union[str, Path], calib_frames: int = 64,
             seed: int = 0, max_map_loss: float = 1.0, eval_limit: Optional[int] = None,
             progress: bool = True,
             tensorrt_calib_dir: Optional[Union[str, Path]] = None) -> OptimizeResult:
    """Write ``<out>/<name>_int8`` (and ``<name>_mixed``) and measure them; see the module.

    ``tensorrt_calib_dir``: also write the calibration feeds there, for
    ``admlops build-engine --target tensorrt --int8 --calib-dir`` on an NVIDIA machine.
    """
    from admlops_ros.evaluation.cli import write_json
    from admlops_ros.evaluation.compare import Candidate, compare_engines
    from admlops_ros.evaluation.replay import open_detector
    source: EngineBundle = load_bundle(bundle_dir)
    if source.spec.engine.precision == "int8":
        raise QuantizationError(f"{bundle_dir} is int8 already; give its fp32 original")
    out = Path(out_dir)
    name = source.spec.name
    calib, val = calibration_split(calib_bag, calib_frames, seed)
    with open_detector(str(bundle_dir), "openvino-f32") as det:
        feeds = calibration_feeds(det, (frame.points for frame in calib))
    LOG.info("calibrating on %d clouds of %s (seed %d); %d held-out frames for accuracy",
             len(feeds), calib_bag, seed, len(val))
    result = OptimizeResult()
    if tensorrt_calib_dir is not None:
        from admlops_ros.backends.tensorrt_calibration import write_calibration_batches
        write_calibration_batches(feeds, tensorrt_calib_dir, overwrite=True)

    def build(label: str, float_layers: Sequence[str]) -> Path:
        path = out / f"{name}_{label}"
        write_int8_bundle(source, path, feeds, float_layers, Path(calib_bag).name, seed,
                          name=f"{name}_{label}")
        result.bundles[label] = str(path)
        return path

    layers: Tuple[str, ...] = PILLAR_FRONT
    int8_dir = build("int8", layers)
    if val:
        ref = mean_ap_3d(source.root, val)
        loss = ref - mean_ap_3d(int8_dir, val)
        result.search.append({"float_layers": list(layers), "validation_map_loss": loss})
        chosen = None
        for step in MIXED_STEPS:
            if loss <= max_map_loss:
                break
            layers = layers + tuple(p for p in step if p not in layers)
            chosen = build("mixed", layers)
            loss = ref - mean_ap_3d(chosen, val)
            result.search.append({"float_layers": list(layers), "validation_map_loss": loss})
        if loss > max_map_loss:
            LOG.warning("no mix of fp32 layers tried kept the held-out mAP loss within %.2f "
                        "(%.2f with %s in fp32)", max_map_loss, loss, ", ".join(layers))
    else:
        LOG.warning("%s has no held-out frames with ground truth: accuracy-aware step skipped",
                    calib_bag)

    candidates = [Candidate("fp32 openvino", str(source.root), "openvino-f32"),
                  Candidate("bf16 openvino", str(source.root), "openvino-bf16")]
    candidates += [Candidate(f"{label} openvino", path, "openvino-f32")
                   for label, path in result.bundles.items()]
    candidates += [Candidate("fp32 onnxruntime", str(source.root), "onnxruntime"),
                   Candidate("int8 onnxruntime", str(int8_dir), "onnxruntime")]
    parity = compare_engines(eval_bag, candidates, limit=eval_limit, progress=progress)
    result.rows = _rows(parity)
    result.table = format_table(result.rows)
    write_json(out / "optimize.json",
               {"source": str(source.root), "calib_bag": str(calib_bag),
                "eval_bag": str(eval_bag), "calib_frames": len(feeds), "seed": seed,
                "max_map_loss": max_map_loss, "bundles": result.bundles,
                "search": result.search, "rows": result.rows})
    return result


def _rows(parity) -> List[Dict[str, object]]:
    base: Dict[str, object] = {}
    rows = []
    for p in parity:
        precision, backend = p.backend.split(" ", 1)
        row: Dict[str, object] = {"engine": precision, "backend": backend, "error": p.error}
        if not p.error:
            if precision == "fp32":
                base[backend] = p
            ref = base.get(backend)
            row.update(detect_ms=p.detect_ms_p50, map_3d=p.ap.get("3d", math.nan),
                       map_bev=p.ap.get("bev", math.nan),
                       max_raw_diff=max(p.max_abs_diff.values(), default=math.nan),
                       agreement=p.agreement)
            row["speedup"] = (ref.detect_ms_p50 / p.detect_ms_p50) if ref is not None else \
                math.nan
            row["delta_3d"] = row["map_3d"] - ref.ap.get("3d", math.nan) if ref else math.nan
            row["delta_bev"] = row["map_bev"] - ref.ap.get("bev", math.nan) if ref else math.nan
        rows.append(row)
    return rows


def format_table(rows: Sequence[Dict[str, object]]) -> str:
    """The speed vs accuracy table (deltas and speed-ups against fp32 on the same backend)."""
    head = (f"{'engine':<8}{'backend':<13}{'detect ms':>10}{'speed-up':>10}{'mAP 3D':>9}"
            f"{'delta':>8}{'mAP BEV':>9}{'delta':>8}{'max|raw diff|':>15}{'agree':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if r.get("error"):
            lines.append(f"{r['engine']:<8}{r['backend']:<13}not run: {r['error']}")
            continue
        lines.append(f"{r['engine']:<8}{r['backend']:<13}{r['detect_ms']:>10.1f}"
                     f"{r['speedup']:>9.2f}x{r['map_3d']:>9.2f}{r['delta_3d']:>+8.2f}"
                     f"{r['map_bev']:>9.2f}{r['delta_bev']:>+8.2f}{r['max_raw_diff']:>15.3g}"
                     f"{r['agreement']:>7.3f}")
    return "\n".join(lines)


__all__ = ["OptimizeResult", "optimize", "calibration_split", "calibration_feeds",
           "mean_ap_3d", "format_table", "MIXED_STEPS"]
