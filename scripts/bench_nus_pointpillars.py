#!/usr/bin/env python3
"""nuScenes PointPillars (mmdet3d FPN shapes: 400x400 grid, 10 classes, 3 levels, code 9) timed.

On a 10-sweep cloud made from one simulated HDL-32E scan (the nuScenes sensor; older sweeps
shifted by 0.3 m each, ego at 6 m/s and 20 Hz, time lag in the fourth column): preprocess
(voxelize), OpenVINO fp32 inference, the same network in PyTorch eager on the same voxels, the
machine's fp32 GEMM peak in the same process (and a 2048 GEMM timed in the same rounds as the
networks, which alternate so that load from other jobs hits each alike), and decode + NMS (per-level top-1000, 3 levels,
10-class rotated NMS, max_num 500). Random weights with a class bias that lets a busy frame's
worth of anchors pass score_thr. Medians; the ratios are what to compare across machines.
Writes ``build/bench_nus_pointpillars.json``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Callable, Dict

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench import gemm_peak_gflops, print_table  # noqa: E402
from benchmarking import interleaved_medians, median_ms  # noqa: E402

LOG = logging.getLogger("bench_nus_pointpillars")
CLS_BIAS = -4.0   # logits of order one plus this: ~1% of anchor-class pairs above 0.05
GEMM_N = 2048     # the fp32 GEMM timed in the same rounds as the networks


def exporter_digest() -> str:
    """sha256 of the sources that shape the exported graph and its weights."""
    digest = hashlib.sha256(repr(CLS_BIAS).encode())
    for name in ("pointpillars_nus.py", "network.py", "export.py"):
        digest.update((REPO / "admlops_ros" / "training" / name).read_bytes())
    return digest.hexdigest()


def nus_cloud(seed: int = 7, sweeps: int = 10, step_m: float = 0.3) -> np.ndarray:
    """(x, y, z, time lag) of ``sweeps`` copies of one simulated HDL-32E scan, copy i moved
    back by i * step_m along x with time lag 0.05 * i s (nuScenes lidar: 20 Hz)."""
    from admlops_ros.simulation import simulate_frame
    from admlops_ros.simulation.sensor import SensorConfig
    scan = simulate_frame(seed, sensor=SensorConfig.preset("hdl32")).points[:, :3]
    parts = []
    for i in range(sweeps):
        p = np.array(scan, np.float32)
        p[:, 0] -= step_m * i
        parts.append(np.c_[p, np.full(len(p), 0.05 * i, np.float32)])
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def bundle_dir() -> Path:
    """The exported FPN bundle (random weights), rebuilt when the exporter changed."""
    from admlops_ros.training.pointpillars_nus import NUS_FPN, build_nus_model, \
        export_nus_bundle
    out = REPO / "build" / "bench" / "pointpillars_nus_fpn_random"
    stamp = out / "exporter.sha256"
    digest = exporter_digest()
    if not stamp.exists() or stamp.read_text() != digest:
        shutil.rmtree(out, ignore_errors=True)
        export_nus_bundle(NUS_FPN, out, model=build_nus_model(NUS_FPN, cls_bias=CLS_BIAS),
                          check_voxels=(500,))
        stamp.write_text(digest)
    return out


def bench(runs: int, with_onnxruntime: bool) -> Dict[str, float]:
    import torch
    from admlops_ros.lidar.detector import LidarDetector
    from admlops_ros.lidar.layout import to_head_outputs
    from admlops_ros.lidar.voxelize import with_batch_index
    from admlops_ros.training.pointpillars_nus import NUS_FPN, build_nus_model, \
        count_nus_flops

    res: Dict[str, float] = {}
    points = nus_cloud()
    res["cloud_points"] = float(len(points))
    path = bundle_dir()
    backends = [("openvino_f32", "openvino", {"precision": "f32"})]
    if with_onnxruntime:
        backends.append(("onnxruntime", "onnxruntime", {}))
    detectors = {key: LidarDetector.from_bundle(path, backend=b, **o) for key, b, o in backends}
    first = detectors["openvino_f32"]
    first.warmup(1)
    voxels = first.preprocess(points)
    res["num_voxels"] = float(voxels.num_voxels)
    res["preprocess_ms"] = median_ms(lambda: first.preprocess(points), runs)
    gflop = count_nus_flops(NUS_FPN, voxels.num_voxels)
    res["network_gflop"] = gflop
    model = build_nus_model(NUS_FPN, cls_bias=CLS_BIAS)
    feeds = (torch.from_numpy(voxels.voxels), torch.from_numpy(voxels.num_points),
             torch.from_numpy(with_batch_index(voxels.coors).astype(np.int32)))
    a = np.random.default_rng(0).random((GEMM_N, GEMM_N), dtype=np.float32)
    b = np.random.default_rng(1).random((GEMM_N, GEMM_N), dtype=np.float32)
    fns: Dict[str, Callable[[], object]] = {
        f"inference_{key}_ms": (lambda d=det: d.inference(voxels))
        for key, det in detectors.items()}
    fns["inference_torch_eager_ms"] = lambda: model(*feeds)
    fns["gemm_same_rounds_ms"] = lambda: a @ b
    with torch.no_grad():
        res.update(interleaved_medians(fns, runs))
    for key in list(detectors) + ["torch_eager"]:
        res[f"inference_{key}_gflops"] = gflop / res[f"inference_{key}_ms"] * 1e3
    res["gemm_same_rounds_gflops"] = 2.0 * GEMM_N ** 3 / res["gemm_same_rounds_ms"] / 1e6
    outputs = first.inference(voxels)
    head = to_head_outputs(outputs, first.engine.output_layout)
    _, cand, _ = first.decoder.select(head.cls_scores, head.bbox_preds, head.dir_cls_preds)
    res["candidates_after_topk"] = float(len(cand))
    res["candidate_class_pairs_above_score_thr"] = float(
        (cand > first.decoder.score_thr).sum())
    dets = first.postprocess(outputs)
    res["detections"] = float(len(dets))
    res["postprocess_decode_nms_ms"] = median_ms(lambda: first.postprocess(outputs), runs)
    res["detect_total_openvino_f32_ms"] = median_ms(lambda: first.detect(points), runs, 1)
    for det in detectors.values():
        det.close()
    return res


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7,
                        help="timed runs (rounds for the networks) per stage")
    parser.add_argument("--with-onnxruntime", action="store_true",
                        help="time ONNX Runtime inference too")
    parser.add_argument("--out", default=str(REPO / "build" / "bench_nus_pointpillars.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print("nuScenes PointPillars (FPN, 400x400, 10 classes, 3 levels, random weights): "
          f"medians in ms (GFLOP/s where named), {args.runs} runs after warm-up")
    results: Dict[str, Dict[str, float]] = {"machine": gemm_peak_gflops()}
    print_table("4096x4096 fp32 GEMM (machine peak, GFLOP/s)", results["machine"])
    res = bench(args.runs, args.with_onnxruntime)
    ov = res["inference_openvino_f32_ms"]
    peak = results["machine"]["gemm_peak_gflops"]
    rounds = res["gemm_same_rounds_gflops"]
    res["ratio_openvino_f32_speedup_vs_torch"] = res["inference_torch_eager_ms"] / ov
    res["ratio_openvino_f32_gflops_vs_gemm_peak"] = res["inference_openvino_f32_gflops"] / peak
    res["ratio_openvino_f32_gflops_vs_gemm_same_rounds"] = (
        res["inference_openvino_f32_gflops"] / rounds)
    res["ratio_torch_gflops_vs_gemm_same_rounds"] = res["inference_torch_eager_gflops"] / rounds
    res["ratio_postprocess_vs_inference_openvino_f32"] = res["postprocess_decode_nms_ms"] / ov
    results["pointpillars_nus_fpn"] = res
    print_table("pointpillars_nus_fpn (mmdet3d shapes, random weights)", res)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, sort_keys=True))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
