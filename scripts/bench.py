#!/usr/bin/env python3
"""`make bench`: per-stage medians of the lidar pipeline, as ratios to in-process baselines.

For the full mmdet3d KITTI PointPillars shapes (random weights) and the shipped small model, on
one 120k-point simulated HDL-64 scan: msg -> array, voxelize, each backend's inference,
decode + NMS and total ``LidarDetector.detect``; in the same run the same network in PyTorch
eager (as mmdet3d writes it, and as the folded graph we export) and a 4096x4096 fp32 GEMM (the
machine's peak), so the figures are ratios that hold on a noisy machine. Writes
``build/bench.json``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarking import median_ms  # noqa: E402
from admlops_ros.lidar.detector import LidarDetector, default_bundle_path  # noqa: E402
from admlops_ros.lidar.pointcloud import array_to_pointcloud2, pointcloud2_to_array  # noqa: E402
from admlops_ros.lidar.voxelize import with_batch_index  # noqa: E402

LOG = logging.getLogger("bench")


def gemm_peak_gflops(n: int = 4096, runs: int = 7) -> Dict[str, float]:
    """fp32 GEMM throughput (GFLOP/s) of numpy and torch; the larger is the machine's peak."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = np.random.default_rng(1).random((n, n), dtype=np.float32)
    flop = 2.0 * n ** 3
    out = {"gemm_numpy_gflops": flop / median_ms(lambda: a @ b, runs, 1) / 1e6}
    try:
        import torch
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        with torch.no_grad():
            out["gemm_torch_gflops"] = flop / median_ms(lambda: torch.mm(ta, tb), runs, 1) / 1e6
    except ImportError:
        pass
    out["gemm_peak_gflops"] = max(out.values())
    return out


def exporter_digest() -> str:
    """sha256 of the sources that shape the exported graph (a cached bundle older is stale)."""
    digest = hashlib.sha256()
    for name in ("network.py", "deploy_graph.py", "export.py"):
        digest.update((REPO / "admlops_ros" / "training" / name).read_bytes())
    return digest.hexdigest()


def scan_120k(seed: int = 7) -> np.ndarray:
    """A simulated HDL-64E scan with ~120,000 points (x, y, z, intensity), LiDAR frame."""
    from admlops_ros.simulation import simulate_frame
    points = simulate_frame(seed).points
    return np.ascontiguousarray(points[:120000], dtype=np.float32)


def bench_model(name: str, bundle: Path, config, points: np.ndarray, runs: int,
                backends: List[str], unfolded: Optional[Path] = None,
                int8: Optional[Dict[str, Path]] = None) -> Dict[str, float]:
    """All stage medians of one model bundle on one cloud.

    ``unfolded``: the same network exported without the pillar-front fold (the graph mmdeploy
    traces), timed on OpenVINO fp32 as the export's baseline. ``int8``: its int8 bundles by
    label (``int8``, and ``mixed`` where `admlops optimize` wrote one).
    """
    from admlops_ros.training.deploy_graph import deploy_model
    from admlops_ros.training.flops import count_flops
    from admlops_ros.training.network import build_model
    import torch

    res: Dict[str, float] = {}
    msg = array_to_pointcloud2(points, None)
    res["msg_to_array_ms"] = median_ms(lambda: pointcloud2_to_array(msg), runs)
    det = {b: LidarDetector.from_bundle(bundle, backend=b.split(":")[0],
                                        **({"precision": b.split(":")[1]} if ":" in b else {}))
           for b in backends}
    first = det[backends[0]]
    first.warmup()
    voxels = first.preprocess(points)
    res["num_voxels"] = float(voxels.num_voxels)
    res["voxelize_ms"] = median_ms(lambda: first.preprocess(points), runs)  # + shuffle if any
    if first.shuffler is not None:
        res["shuffle_points_ms"] = median_ms(lambda: first.shuffler(points), runs)
    gflop = count_flops(config, voxels.num_voxels)
    res["network_gflop"] = gflop
    outputs = None
    for b, d in det.items():
        key = b.replace(":", "_")
        outs = d.inference(voxels)
        res[f"inference_{key}_ms"] = median_ms(lambda: d.inference(voxels), runs)
        res[f"inference_{key}_gflops"] = gflop / res[f"inference_{key}_ms"] * 1e3
        if outputs is None:
            outputs = outs
    if unfolded is not None:
        with LidarDetector.from_bundle(unfolded, backend="openvino", precision="f32") as traced:
            traced.inference(voxels)
            res["inference_openvino_f32_unfolded_graph_ms"] = median_ms(
                lambda: traced.inference(voxels), runs)
    res["decode_nms_ms"] = median_ms(lambda: first.postprocess(outputs), runs)
    for label, path in (int8 or {}).items():  # int8 bundles of the same network
        q = det[f"openvino:{label}"] = LidarDetector.from_bundle(path, backend="openvino")
        q.warmup()
        ref = det["openvino:f32"].inference(voxels)
        outs = q.inference(voxels)
        res[f"inference_openvino_{label}_ms"] = median_ms(lambda: q.inference(voxels), runs)
        res[f"inference_openvino_{label}_gflops"] = (
            gflop / res[f"inference_openvino_{label}_ms"] * 1e3)
        # largest RMS error of an output, in units of that output's fp32 standard deviation
        res[f"{label}_raw_rel_rms_error"] = max(
            float(np.sqrt(np.mean((outs[k] - ref[k]) ** 2)) / ref[k].std()) for k in ref)
    for b, d in det.items():
        key = b.replace(":", "_")
        d.warmup(1)
        res[f"detect_total_{key}_ms"] = median_ms(lambda: d.detect(points), runs)
    # PyTorch eager, same network and voxels (weights do not change the time): the module as
    # mmdet3d writes it (what a PyTorch ROS wrapper runs) and the folded graph we export.
    model = build_model(config).eval()
    torch_in = (torch.from_numpy(voxels.voxels), torch.from_numpy(voxels.num_points),
                torch.from_numpy(with_batch_index(voxels.coors)))
    for key, module in (("torch_eager", model), ("torch_eager_deploy_graph", deploy_model(model))):
        with torch.no_grad():
            res[f"inference_{key}_ms"] = median_ms(lambda: module(*torch_in), max(5, runs // 4))
        res[f"inference_{key}_gflops"] = gflop / res[f"inference_{key}_ms"] * 1e3
    for d in det.values():
        d.close()
    return res


def int8_bundle(bundle: Path, out: Path, frames: int = 8) -> Path:
    """The bundle's int8 twin (pillar front in fp32, as `admlops optimize` writes ``_int8``),
    calibrated on simulated scans of held-out seeds; rebuilt when the source changed."""
    from admlops_ros.bundle.files import load_bundle
    from admlops_ros.deploy.optimize import calibration_feeds
    from admlops_ros.deploy.quantize import PILLAR_FRONT, write_int8_bundle
    from admlops_ros.simulation import simulate_frame
    source = load_bundle(bundle)
    stamp = out / "source.sha256"
    digest = hashlib.sha256(repr(sorted(source.spec.files.items())).encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return out
    with LidarDetector.from_bundle(bundle, backend="openvino", precision="f32") as det:
        feeds = calibration_feeds(det, (simulate_frame(2_000_000 + i).points
                                        for i in range(frames)))
    write_int8_bundle(source, out, feeds, PILLAR_FRONT, "simulated seeds 2,000,000+", 0)
    stamp.write_text(digest)
    return out


def print_table(title: str, rows: Dict[str, float]) -> None:
    print(f"\n{title}")
    width = max(len(k) for k in rows)
    for key, value in rows.items():
        print(f"  {key:<{width}}  {value:10.3f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20, help="timed runs per stage (>= 20)")
    parser.add_argument("--skip-full", action="store_true",
                        help="skip the full KITTI-shaped network (about 1 min)")
    parser.add_argument("--out", default=str(REPO / "build" / "bench.json"))
    parser.add_argument("--optimized", default=str(REPO / "build" / "optimize"),
                        help="`admlops optimize --out` directory: its _mixed bundle is timed too")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from admlops_ros.bundle.files import load_bundle
    from admlops_ros.training.configs import KITTI_3CLASS, SIM_SMALL
    from admlops_ros.training.export import export_bundle

    results: Dict[str, Dict[str, float]] = {}
    print("admlops_ros benchmark: medians in ms (GFLOP/s where named), "
          f"{args.runs} runs after warm-up")
    results["machine"] = gemm_peak_gflops()
    print_table("4096x4096 fp32 GEMM (machine peak, GFLOP/s)", results["machine"])
    points = scan_120k()
    print(f"\ncloud: simulated HDL-64E scan, {len(points)} points")

    backends = ["onnxruntime", "openvino:f32", "openvino:bf16"]
    models = []
    if not args.skip_full:
        full_dir = REPO / "build" / "bench" / "pointpillars_kitti_3class_random"
        traced_dir = REPO / "build" / "bench" / "pointpillars_kitti_3class_random_unfolded"
        digest = exporter_digest()
        for bundle_dir, fold in ((full_dir, True), (traced_dir, False)):
            stamp = bundle_dir / "exporter.sha256"
            if not stamp.exists() or stamp.read_text() != digest:
                shutil.rmtree(bundle_dir, ignore_errors=True)
                export_bundle(KITTI_3CLASS, bundle_dir, checkpoint=None, check_voxels=(500,),
                              fold=fold)
                stamp.write_text(digest)
        models.append(("kitti_3class (mmdet3d shapes, random weights)", full_dir, KITTI_3CLASS,
                       traced_dir))
    models.append(("sim_small (shipped default)", default_bundle_path(), SIM_SMALL, None))

    peak = results["machine"]["gemm_peak_gflops"]
    for title, bundle, config, unfolded in models:
        int8 = {"int8": int8_bundle(bundle, REPO / "build" / "bench" / f"{config.name}_int8")}
        mixed = Path(args.optimized) / f"{load_bundle(bundle).spec.name}_mixed"
        if (mixed / "spec.yaml").exists():
            int8["mixed"] = mixed
        res = bench_model(title, bundle, config, points, args.runs, backends, unfolded, int8)
        ov = res["inference_openvino_f32_ms"]
        res["ratio_openvino_f32_speedup_vs_torch"] = res["inference_torch_eager_ms"] / ov
        res["ratio_openvino_f32_speedup_vs_torch_deploy_graph"] = (
            res["inference_torch_eager_deploy_graph_ms"] / ov)
        res["ratio_openvino_f32_gflops_vs_gemm_peak"] = res["inference_openvino_f32_gflops"] / peak
        res["ratio_pre_post_vs_inference_openvino_f32"] = (
            (res["voxelize_ms"] + res["decode_nms_ms"]) / ov)
        if unfolded is not None:
            res["ratio_openvino_f32_speedup_vs_unfolded_graph"] = (
                res["inference_openvino_f32_unfolded_graph_ms"] / ov)
        res["ratio_openvino_bf16_speedup_vs_f32"] = ov / res["inference_openvino_bf16_ms"]
        for label in int8:
            res[f"ratio_openvino_{label}_speedup_vs_f32"] = (
                ov / res[f"inference_openvino_{label}_ms"])
            res[f"ratio_detect_total_openvino_{label}_speedup_vs_f32"] = (
                res["detect_total_openvino_f32_ms"] / res[f"detect_total_openvino_{label}_ms"])
        results[config.name] = res
        print_table(title, res)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, sort_keys=True))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
