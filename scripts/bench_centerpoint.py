#!/usr/bin/env python3
"""CenterPoint pillar02 nuScenes shapes: inference (OpenVINO fp32, ONNX Runtime, PyTorch eager)
against the machine's fp32 GEMM peak, and decode + NMS of the 6-task head.

Usage: .venv/bin/python scripts/bench_centerpoint.py [--runs 10] [--json build/bench_cp.json]

Random weights (time does not depend on them) on a synthetic 10-sweep cloud of 34k-point
32-beam scans (x, y, z, intensity, time lag) whose voxelization gives ~30k pillars, as a
nuScenes frame does. Decode + NMS is timed on the engine's own outputs, on head maps with 200
object peaks ("realistic") and on maps where every cell passes the score threshold ("worst").
Prints tables of medians; figures from one run are ratios that hold on a noisy machine.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import sys
from pathlib import Path
from typing import Dict, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from benchmarking import median_ms  # noqa: E402
from bench import gemm_peak_gflops  # noqa: E402
from admlops_ros.lidar.detector import LidarDetector  # noqa: E402
from admlops_ros.lidar.heads import decoder_from_spec  # noqa: E402
from admlops_ros.lidar.voxelize import with_batch_index  # noqa: E402

LOG = logging.getLogger("bench_centerpoint")
BUNDLE_DIR = REPO / "build" / "bench_engines" / "centerpoint_pillar02_nus"


def nuscenes_like_cloud(sweeps: int = 10, points_per_sweep: int = 34000,
                        seed: int = 0) -> np.ndarray:
    """[sweeps * points_per_sweep, 5] float32 (x, y, z, intensity, time lag): a 32-beam
    spinning lidar 1.8 m above flat ground with walls and objects 6-35 m away, the ego moving
    0.5 m per sweep (older sweeps already in the newest frame, as LoadPointsFromMultiSweeps)."""
    rng = np.random.default_rng(seed)
    beams = np.deg2rad(np.linspace(-30.0, 10.0, 32))
    walls = rng.uniform(6.0, 35.0, 90)  # a facade / vehicle distance per 4-degree sector
    az_n = points_per_sweep // 32
    parts = []
    for s in range(sweeps):
        elev = np.repeat(beams, az_n) + rng.normal(0, 1e-3, 32 * az_n)
        az = np.tile(np.linspace(-math.pi, math.pi, az_n, endpoint=False), 32)
        wall = walls[np.tile(np.arange(az_n) * len(walls) // az_n, 32)]
        ground = np.where(elev < -1e-3, 1.8 / np.tan(np.maximum(-elev, 1e-3)), np.inf)
        r = np.minimum(ground, wall / np.cos(elev))
        r = np.minimum(r, 70.0)
        x = r * np.cos(elev) * np.cos(az) - 0.5 * s
        y = r * np.cos(elev) * np.sin(az)
        z = 1.8 + r * np.sin(elev) - 1.8
        parts.append(np.c_[x, y, z, rng.uniform(0, 255, len(x)), np.full(len(x), 0.05 * s)])
    return np.concatenate(parts).astype(np.float32)


def peaked_maps(seed: int = 0, objects: int = 200, worst: bool = False
                ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """nuScenes head maps (10 classes, 6 tasks, 128 x 128): 3x3 heatmap peaks at ``objects``
    centres over a background far below the threshold, or (``worst``) logits N(0, 1)."""
    rng = np.random.default_rng(seed)
    cls = rng.normal(0.0 if worst else -6.0, 1.0, (1, 10, 128, 128)).astype(np.float32)
    if not worst:
        for _ in range(objects):
            k, y, x = rng.integers(0, 10), rng.integers(2, 126), rng.integers(2, 126)
            cls[0, k, y - 1:y + 2, x - 1:x + 2] = rng.uniform(-1.0, 3.0, (3, 3))
    bbox = rng.normal(0, 0.5, (1, 48, 128, 128)).astype(np.float32)
    rot = rng.normal(0, 1, (1, 12, 128, 128)).astype(np.float32)
    return cls, bbox, rot


def exporter_digest() -> str:
    digest = hashlib.sha256()
    for name in ("network.py", "centerpoint.py", "export.py"):
        digest.update((REPO / "admlops_ros" / "training" / name).read_bytes())
    return digest.hexdigest()


def bundle(config) -> Path:
    """The random-weight bundle of ``config`` under build/, exported again when stale."""
    from admlops_ros.training.centerpoint import export_centerpoint_bundle
    stamp = BUNDLE_DIR / "exporter.sha256"
    digest = exporter_digest()
    if not (stamp.is_file() and stamp.read_text() == digest):
        LOG.info("exporting %s (random weights) to %s", config.name, BUNDLE_DIR)
        export_centerpoint_bundle(config, BUNDLE_DIR, check_voxels=(3000,))
        stamp.write_text(digest)
    return BUNDLE_DIR


def network_gflop(model, inputs) -> float:
    """GFLOP of one forward pass (2 per multiply-add of every Conv2d, ConvTranspose2d and
    Linear, from the shapes the forward pass sees)."""
    import torch
    total = [0.0]

    def hook(mod, args, out):
        if isinstance(mod, torch.nn.ConvTranspose2d):
            total[0] += 2.0 * args[0].numel() * mod.out_channels * mod.kernel_size[0] * \
                mod.kernel_size[1]
        elif isinstance(mod, torch.nn.Conv2d):
            total[0] += 2.0 * out.numel() * mod.in_channels // mod.groups * \
                mod.kernel_size[0] * mod.kernel_size[1]
        else:
            total[0] += 2.0 * args[0].numel() * mod.out_features
    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear))]
    with torch.no_grad():
        model(*inputs)
    for h in handles:
        h.remove()
    return total[0] / 1e9


def run(runs: int = 10) -> Dict[str, float]:
    import torch
    from admlops_ros.training.centerpoint import PILLAR02_NUS, build_centerpoint

    res: Dict[str, float] = {}
    res.update(gemm_peak_gflops())
    root = bundle(PILLAR02_NUS)
    points = nuscenes_like_cloud()
    res["points"] = float(len(points))
    dets = {b: LidarDetector.from_bundle(root, backend=b) for b in ("openvino", "onnxruntime")}
    ov = dets["openvino"]
    ov.warmup(1)
    voxels = ov.preprocess(points)
    res["num_voxels"] = float(voxels.num_voxels)
    res["voxelize_ms"] = median_ms(lambda: ov.preprocess(points), runs)
    model = build_centerpoint(PILLAR02_NUS).eval()
    torch_in = (torch.from_numpy(voxels.voxels), torch.from_numpy(voxels.num_points),
                torch.from_numpy(with_batch_index(voxels.coors)))
    gflop = network_gflop(model, torch_in)
    res["network_gflop"] = gflop
    outputs = None
    for b, d in dets.items():
        outs = d.inference(voxels)
        outputs = outputs or outs
        res[f"inference_{b}_ms"] = median_ms(lambda: d.inference(voxels), runs)
        res[f"inference_{b}_gflops"] = gflop / res[f"inference_{b}_ms"] * 1e3
    with torch.no_grad():
        res["inference_torch_eager_ms"] = median_ms(lambda: model(*torch_in), max(3, runs // 2))
    res["inference_torch_eager_gflops"] = gflop / res["inference_torch_eager_ms"] * 1e3
    res["decode_nms_engine_outputs_ms"] = median_ms(lambda: ov.postprocess(outputs), runs * 3)
    res["detections_engine_outputs"] = float(len(ov.postprocess(outputs)))
    res["detect_total_openvino_ms"] = median_ms(lambda: ov.detect(points), runs)
    for d in dets.values():
        d.close()
    res.update(decode_results(ov.bundle.spec, runs))
    return res


def decode_results(base, runs: int) -> Dict[str, float]:
    """Decode + NMS ms on synthetic head maps (realistic peaks, every cell above threshold)."""
    res: Dict[str, float] = {}
    for nms_type in ("rotate", "circle"):
        spec = dataclasses.replace(base, test_cfg=dataclasses.replace(base.test_cfg,
                                                                      nms_type=nms_type))
        dec = decoder_from_spec(spec)
        dec.warmup()
        for label, worst in (("realistic", False), ("worst", True)):
            maps = [[m] for m in peaked_maps(worst=worst)]
            res[f"decode_nms_{nms_type}_{label}_ms"] = median_ms(lambda: dec.decode(*maps),
                                                                  runs * 3)
            res[f"detections_{nms_type}_{label}"] = float(len(dec.decode(*maps)))
    return res


def print_tables(res: Dict[str, float]) -> None:
    peak = res["gemm_peak_gflops"]
    print(f"CenterPoint pillar02 nuScenes (512x512 canvas, 10 classes, 6 tasks), "
          f"{int(res['points'])} points (10 sweeps) -> {int(res['num_voxels'])} pillars, "
          f"{res['network_gflop']:.1f} GFLOP/frame; fp32 GEMM peak {peak:.0f} GFLOP/s")
    print(f"{'inference':<26}{'median ms':>10}{'GFLOP/s':>9}{'% of peak':>10}")
    for key in ("openvino", "onnxruntime", "torch_eager"):
        ms, gf = res[f"inference_{key}_ms"], res[f"inference_{key}_gflops"]
        print(f"{key + (' fp32' if key == 'openvino' else ''):<26}{ms:>10.1f}{gf:>9.1f}"
              f"{100 * gf / peak:>9.0f}%")
    print(f"{'openvino vs torch eager':<26}{res['inference_torch_eager_ms'] / res['inference_openvino_ms']:>9.2f}x faster")
    print(f"{'voxelize':<26}{res['voxelize_ms']:>10.1f}")
    print(f"{'detect total (openvino)':<26}{res['detect_total_openvino_ms']:>10.1f}")
    print_decode_table(res)


def print_decode_table(res: Dict[str, float]) -> None:
    print(f"{'decode + NMS':<26}{'median ms':>10}{'boxes':>7}")
    if "decode_nms_engine_outputs_ms" in res:
        print(f"{'engine outputs (rotate)':<26}{res['decode_nms_engine_outputs_ms']:>10.2f}"
              f"{int(res['detections_engine_outputs']):>7}")
    for nms in ("rotate", "circle"):
        for label in ("realistic", "worst"):
            print(f"{nms + ', ' + label:<26}{res[f'decode_nms_{nms}_{label}_ms']:>10.2f}"
                  f"{int(res[f'detections_{nms}_{label}']):>7}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--decode-only", action="store_true",
                        help="only the decode + NMS table (no inference, no torch timing)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.decode_only:
        from admlops_ros.bundle.files import load_bundle
        from admlops_ros.training.centerpoint import PILLAR02_NUS
        res = decode_results(load_bundle(bundle(PILLAR02_NUS)).spec, args.runs)
        print_decode_table(res)
    else:
        res = run(args.runs)
        print_tables(res)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
