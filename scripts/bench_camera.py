#!/usr/bin/env python3
"""Benchmark the camera pipeline on a 1242x375 bgr image: preprocess, each backend's inference,
the mmdeploy SDK end to end, totals, interleaved in one process.

Usage: .venv/bin/python scripts/bench_camera.py [--bundle DIR] [--runs 50] [--json OUT]
Bundle: --bundle, else engines/camera_sim_3class when shipped, else the default model's
architecture untrained (training/camera_net.py, 640x192) exported into a temporary directory;
--tiny: the tiny test net (keep-ratio 640x384 / divisor 32). Image: the first KITTI image_2
frame in ../shared/data/kitti when there, else a synthetic one. Each run times, in turn: our
preprocess, our ONNX Runtime and OpenVINO f32 inference on that tensor, our full detect() on
both backends and the SDK's Detector call; medians are printed as a table (and written with
--json), with the ratio own runner / SDK (< 1: ours is faster).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from admlops_ros.camera.detector import CameraDetector  # noqa: E402

DEFAULT_BUNDLE = ROOT / "engines" / "camera_sim_3class"
KITTI_IMAGES = ROOT.parent / "shared" / "data" / "kitti" / "training" / "image_2"


def load_image() -> np.ndarray:
    """A 1242x375 bgr uint8 image (a KITTI frame resized when needed, else synthetic)."""
    import cv2
    frames = sorted(KITTI_IMAGES.glob("*.png")) if KITTI_IMAGES.is_dir() else []
    if frames:
        img = cv2.imread(str(frames[0]), cv2.IMREAD_COLOR)
        if img is not None:
            return cv2.resize(img, (1242, 375)) if img.shape[:2] != (375, 1242) else img
    from admlops_ros.training.camera_export import blob_image
    return blob_image(375, 1242, [(200, 150, 18, 0), (610, 205, 14, 1), (1000, 110, 20, 2)])


def tiny_bundle(root: Path) -> Path:
    from admlops_ros.training.camera_export import TinyCameraNet, export_camera_bundle
    return export_camera_bundle(TinyCameraNet(box_size=64.0, gain=1.5), root / "tiny",
                                input_size=(384, 640), class_names=("Car", "Pedestrian",
                                                                    "Cyclist"),
                                preprocessing=dict(keep_ratio=True, scale=(640, 384),
                                                   size_divisor=32))


def camera_net_bundle(root: Path) -> Path:
    """The default model's architecture (training/camera_net.py), untrained, 640x192."""
    import torch
    from admlops_ros.training.camera_export import export_camera_bundle
    from admlops_ros.training.camera_net import CameraNet
    torch.manual_seed(0)
    return export_camera_bundle(CameraNet(), root / "camera_net_untrained",
                                input_size=(192, 640), class_names=("Car", "Pedestrian",
                                                                    "Cyclist"),
                                preprocessing=dict(keep_ratio=False, scale=(640, 192)),
                                score_threshold=0.3, pre_top_k=1000)


def run(bundle: Path, runs: int) -> Dict[str, float]:
    """Medians in ms of every stage, interleaved over ``runs`` rounds."""
    image = load_image()
    ort = CameraDetector.from_bundle(bundle, backend="onnxruntime")
    ov = CameraDetector.from_bundle(bundle, backend="openvino", precision="f32")
    sdk = None
    try:
        sdk = CameraDetector.from_bundle(bundle, backend="mmdeploy_sdk")
    except Exception as exc:  # SDK missing or no SDK files: bench the rest
        print(f"note: mmdeploy SDK skipped ({exc})", file=sys.stderr)
    tensor, _ = ort.preprocess(image)
    steps: Dict[str, Callable[[], object]] = {
        "preprocess": lambda: ort.preprocess(image),
        "inference onnxruntime": lambda: ort.inference(tensor),
        "inference openvino f32": lambda: ov.inference(tensor),
        "total own onnxruntime": lambda: ort.detect(image),
        "total own openvino f32": lambda: ov.detect(image),
    }
    if sdk is not None:
        steps["total mmdeploy SDK"] = lambda: sdk.detect(image)
    post_times: List[float] = []
    for fn in steps.values():  # warm-up
        fn()
        fn()
    times: Dict[str, List[float]] = {k: [] for k in steps}
    for _ in range(max(1, runs)):
        for key, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            times[key].append((time.perf_counter() - t0) * 1e3)
        post_times.append(ov.detect(image).timings_ms["postprocess"])
    out = {k: statistics.median(v) for k, v in times.items()}
    out["postprocess"] = statistics.median(post_times)
    if sdk is not None:
        out["ratio own openvino / SDK"] = out["total own openvino f32"] / \
            out["total mmdeploy SDK"]
        out["ratio own onnxruntime / SDK"] = out["total own onnxruntime"] / \
            out["total mmdeploy SDK"]
    out["detections"] = float(len(ov.detect(image)))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, help="camera bundle directory")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--json", type=Path, help="write the medians here")
    ap.add_argument("--tiny", action="store_true", help="bench the tiny test net")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            bundle = tiny_bundle(Path(tmp))
        elif args.bundle or (DEFAULT_BUNDLE / "spec.yaml").is_file():
            bundle = args.bundle or DEFAULT_BUNDLE
        else:
            bundle = camera_net_bundle(Path(tmp))
        result = run(bundle, args.runs)
    print(f"camera pipeline, 1242x375 bgr, bundle {bundle.name}, {args.runs} interleaved runs "
          "(medians)")
    print(f"{'stage':32s} {'ms':>9s}")
    for key, value in result.items():
        unit = "" if key.startswith(("ratio", "detections")) else " ms"
        print(f"{key:32s} {value:9.3f}{unit}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"bundle": str(bundle), "runs": args.runs, **result},
                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
