"""The shipped default camera bundle: small, loads (own runner and SDK files), finds cars."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from admlops_ros.camera.detector import CameraDetector
from admlops_ros.simulation.camera import render_frame
from admlops_ros.training.camera_data import EVAL_SEED_BASE

BUNDLE = Path(__file__).resolve().parents[2] / "engines" / "camera_sim_3class"


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2])
                 - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3])
                 - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])   # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter)


def test_bundle_files_and_size():
    for name in ("spec.yaml", "end2end.onnx", "deploy.json", "pipeline.json", "detail.json"):
        assert (BUNDLE / name).is_file(), name
    total = sum(p.stat().st_size for p in BUNDLE.rglob("*") if p.is_file())
    assert total < 5 * 1024 * 1024


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_bundle_detects_cars_on_a_rendered_frame(backend):
    frame = render_frame(EVAL_SEED_BASE + 4)
    gt = np.array([b for b, n in zip(frame.boxes2d, frame.names)
                   if n == "Car" and b[3] - b[1] >= 25], np.float32)
    assert len(gt) >= 1
    with CameraDetector.from_bundle(BUNDLE, backend=backend) as det:
        assert det.class_names == ("Car", "Pedestrian", "Cyclist")
        out = det.detect(frame.image)
    cars = out.boxes[out.labels == 0]
    assert len(cars) >= 1
    best = _iou(gt, cars).max(axis=1)
    assert (best >= 0.5).mean() >= 0.5, (gt, cars, out.scores)
    assert (out.scores >= det.score_threshold).all()
