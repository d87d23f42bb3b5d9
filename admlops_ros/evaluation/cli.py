"""`admlops` subcommands of the evaluation area: bag-from-kitti, bag-from-sim, eval, compare, kitti-eval."""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from admlops_ros.argtypes import FRACTION, POSITIVE, POSITIVE_INT

LOG = logging.getLogger("admlops.eval")


def _json_default(obj):
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def _clean(obj):
    """nan/inf -> None recursively (strict JSON)."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if not math.isfinite(float(obj)) else float(obj)
    return obj


def write_json(path: Path, data) -> None:
    """Strict JSON (NaN written as null)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(data), indent=1, default=_json_default))


def cmd_bag_from_sim(args: argparse.Namespace) -> int:
    from admlops_ros.evaluation.bags import bag_from_sim
    from admlops_ros.simulation import SceneConfig
    n = bag_from_sim(args.output, args.count, args.seed, args.sensor,
                     scene=SceneConfig.preset(args.scene), progress=not args.no_progress,
                     images=args.images)
    LOG.info("wrote %d simulated frames (seed %d, sensor %s, scene %s) to %s", n, args.seed,
             args.sensor, args.scene, args.output)
    return 0


def cmd_bag_from_kitti(args: argparse.Namespace) -> int:
    from admlops_ros.evaluation.bags import bag_from_kitti, read_split
    from admlops_ros.evaluation.rosbag_io import BagError
    ids = list(args.ids or [])
    if args.split:
        ids += read_split(args.split)
    if not ids:  # default: every frame of velodyne/
        ids = sorted(path.stem for path in (Path(args.kitti_dir) / "velodyne").glob("*.bin"))
    if not ids:
        raise BagError(f"no velodyne/*.bin under {args.kitti_dir}; give the KITTI 'training' "
                       "directory (velodyne/, label_2/, calib/), or --ids / --split")
    n = bag_from_kitti(args.kitti_dir, ids, args.output, progress=not args.no_progress,
                       images=args.images)
    LOG.info("wrote %d KITTI frames from %s to %s", n, args.kitti_dir, args.output)
    return 0


def cmd_eval_camera(args: argparse.Namespace, bundle: str) -> int:
    """`admlops eval` on a camera bundle: 2D detections of the bag's images."""
    from admlops_ros.evaluation import camera_eval, report
    from admlops_ros.evaluation.replay import ReplayError
    if args.online:
        raise ReplayError("--online is not available for camera bundles yet; drop --online "
                          "(the camera eval runs the detector in process)")
    out = Path(args.out)
    result = camera_eval.run_camera_offline(
        args.bag, bundle, backend=args.backend, score_threshold=args.score_threshold,
        limit=args.limit, progress=not args.no_progress, image_topic=args.image_topic,
        gt_topic=args.image_gt_topic)
    op = args.operating_threshold
    results, ev = camera_eval.summarize_camera(result, score_threshold=op,
                                               min_height=args.min_height,
                                               max_occlusion=args.max_occlusion)
    write_json(out / "results.json", results)
    html = report.write_camera_report(out / "report.html", results, ev, result.records,
                                      result.samples, op)
    report.save_camera_pngs(out / "figures", ev, result.records, result.samples, op,
                            results["latency_definition"])
    lat = results["latency_ms"]
    fr = results["frames"]

    def f(v):
        return "-" if v is None or not math.isfinite(v) else f"{v:.1f}"
    lines = [ev.table() if ev is not None else "no 2D ground truth in the bag: accuracy "
             "metrics skipped", "",
             f"images {fr['images']}  evaluated {fr['evaluated']}  dropped {fr['dropped']}  "
             f"without gt {fr['without_gt']}",
             f"latency ms ({results['latency_definition']}): p50 {f(lat['p50'])}  p90 "
             f"{f(lat['p90'])}  max {f(lat['max'])}"]
    sys.stdout.write("\n".join(lines) + "\n")
    LOG.info("wrote %s, %s and figures/", out / "results.json", html)
    return 0


def bag_list(paths: Sequence[str]) -> List[Path]:
    """Bags from the command line: files as given, directories expanded to their sorted *.bag.

    Raises:
        BagError: a directory holds no .bag file.
    """
    from admlops_ros.evaluation.rosbag_io import BagError
    out: List[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            found = sorted(path.glob("*.bag"))
            if not found:
                raise BagError(f"directory {path} holds no .bag file; give bags or a "
                               f"directory of bags")
            out += found
        else:
            out.append(path)
    return out


def eval_bag_task(item: Tuple[str, Dict[str, Any]]):
    """One bag of a multi-bag ``eval`` (a map_tasks task): offline replay of (bag, options)."""
    from admlops_ros.evaluation import replay
    bag, kw = item
    return replay.run_offline(bag, **kw)


def merge_replays(results: Sequence[Any], wall_s: float, failed: Sequence[str] = ()):
    """One ReplayResult of several bags' offline replays, in bag order: frames concatenated
    (records renumbered), so ``summarize`` computes AP once over all frames as a serial run
    over the concatenated frames would; BEV samples evenly over all bags; problems prefixed
    with their bag."""
    from dataclasses import replace

    from admlops_ros.evaluation.bags import BagSummary
    from admlops_ros.evaluation.replay import BEV_SAMPLES, ReplayResult
    first = results[0]
    from admlops_ros.evaluation.fov import merge_stats
    records, gts, preds, samples, problems, calibs = [], [], [], [], [], []
    for r in results:
        offset = len(records)
        records += [replace(rec, index=offset + rec.index) for rec in r.records]
        gts += r.gts
        preds += r.preds
        calibs += r.calibs if len(r.calibs) == len(r.gts) else [None] * len(r.gts)
        samples += r.samples
        problems += [p if r.bag.path in p else f"{r.bag.path}: {p}" for p in r.problems]
    problems += [f"bag not evaluated: {f}" for f in failed]
    keep = np.unique(np.linspace(0, max(len(samples) - 1, 0),
                                 min(BEV_SAMPLES, len(samples))).round().astype(int))
    summary = BagSummary(
        f"{len(results)} bags: " + ", ".join(r.bag.path for r in results),
        first.bag.points_topic,
        next((r.bag.gt_topic for r in results if r.bag.gt_topic), None),
        sum(r.bag.num_clouds for r in results), sum(r.bag.num_gt for r in results),
        [s for r in results for s in r.bag.clouds_without_gt],
        [s for r in results for s in r.bag.gt_without_cloud], problems,
        float(sum(r.bag.duration_s for r in results)))
    return ReplayResult("offline", summary, first.engine, records, gts, preds,
                        [samples[i] for i in keep.tolist()] if samples else [], wall_s,
                        problems, fov=merge_stats([r.fov for r in results]), calibs=calibs)


def eval_bags(bags: Sequence[Path], *, ray_address=None, workers=None, **kw):
    """Offline replay of every bag, one task per bag (serial, process pool or Ray), merged.

    Args:
        bags: bag paths, in the order their frames are concatenated.
        ray_address, workers: where the tasks run (:func:`admlops_ros.parallel.map_tasks`).
        kw: :func:`admlops_ros.evaluation.replay.run_offline` options (progress is off).

    Returns:
        (merged ReplayResult, per-bag summaries, failed bags' messages).

    Raises:
        ReplayError: no bag could be evaluated.
    """
    import time

    from admlops_ros.parallel import map_tasks
    from admlops_ros.evaluation.replay import ReplayError
    t0 = time.perf_counter()
    kw = dict(kw, progress=False)
    outcomes = map_tasks(eval_bag_task, [(str(b), kw) for b in bags], ray_address=ray_address,
                         workers=workers)
    done = [o.value for o in outcomes if o.ok]
    failed = [f"{o.item[0]}: {o.error}" for o in outcomes if not o.ok]
    for f in failed:
        LOG.warning("bag not evaluated: %s", f)
    if not done:
        raise ReplayError("no bag could be evaluated: " + "; ".join(failed))
    per_bag = [{"path": r.bag.path, "clouds": r.bag.num_clouds, "evaluated": len(r.gts),
                "problems": list(r.problems)} for r in done]
    return merge_replays(done, time.perf_counter() - t0, failed), per_bag, failed


def cmd_eval(args: argparse.Namespace) -> int:
    from admlops_ros.evaluation import replay, report
    from admlops_ros.evaluation.camera_eval import is_camera_bundle
    from admlops_ros.errors import UsageError
    bags = bag_list(args.bag)
    camera = args.camera_bundle or (args.engine if is_camera_bundle(args.engine) else None)
    if camera:
        if len(bags) != 1:
            raise UsageError(f"the camera eval takes one bag, got {len(bags)}")
        args.bag = str(bags[0])
        return cmd_eval_camera(args, camera)
    from admlops_ros.evaluation.protocol import EvalConfig
    kw = dict(engine=args.engine, backend=args.backend, score_threshold=args.score_threshold,
              progress=not args.no_progress, points_topic=args.points_topic,
              gt_topic=args.gt_topic, fov=args.fov)
    out = Path(args.out)
    per_bag = None
    if len(bags) > 1 or args.ray or args.workers is not None:
        if args.online:
            raise UsageError("--online replays one bag through the node; give one bag, or "
                             "drop --online to evaluate several bags offline")
        from admlops_ros.parallel import from_args
        result, per_bag, _ = eval_bags(bags, limit=args.limit, **kw, **from_args(args))
    elif args.online:
        result = replay.run_online(bags[0], rate=args.rate, log_dir=out / "logs",
                                   sweeps=args.sweeps, **kw)
    else:
        result = replay.run_offline(bags[0], limit=args.limit, **kw)
    op = args.operating_threshold
    config = EvalConfig(score_threshold=op)
    results, main, bands = replay.summarize(result, config)
    if per_bag is not None:
        results["bags"] = per_bag
    write_json(out / "results.json", results)
    html = report.write_report(out / "report.html", results, main, bands, result.records,
                               result.samples, op)
    report.save_pngs(out / "figures", main, bands, result.records, result.samples, op,
                     results["latency_definition"])
    if result.preds:
        replay.write_kitti_results(result, out / "kitti_results")
    _print_summary(results, main, bands)
    LOG.info("wrote %s, %s, figures/ and kitti_results/", out / "results.json", html)
    return 0


def _print_summary(results, main, bands) -> None:
    lat = results["latency_ms"]
    fr = results["frames"]
    lines = []
    if main is not None:
        lines += [main.table("R40", "strict"), "", main.table("R40", "loose")]
        if bands is not None and bands is not main:
            lines += ["", bands.table("R40", "strict", metrics=("3d",))]
    else:
        lines.append("no ground truth in the bag: accuracy metrics skipped")

    def f(v):
        return "-" if v is None or not math.isfinite(v) else f"{v:.1f}"
    lines += ["", f"clouds {fr['clouds']}  evaluated {fr['evaluated']}  dropped {fr['dropped']}  "
              f"without gt {fr['without_gt']}",
              f"latency ms ({results['latency_definition']}): p50 {f(lat['p50'])}  p90 "
              f"{f(lat['p90'])}  p99 {f(lat['p99'])}  max {f(lat['max'])}",
              f"real-time factor {f(results['real_time_factor'])} "
              f"({results['real_time_factor_definition']})"]
    sys.stdout.write("\n".join(lines) + "\n")


def cmd_compare(args: argparse.Namespace) -> int:
    from admlops_ros.evaluation.compare import compare_backends, parity_table
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    parity = compare_backends(args.bag, args.engine, backends, limit=args.limit,
                              progress=not args.no_progress)
    sys.stdout.write(f"reference: {backends[0]}; agree = same-class boxes matched at BEV IoU "
                     f">= 0.7 / max(boxes); AP = mean AP|R40 strict\n{parity_table(parity)}\n")
    if args.json:
        write_json(Path(args.json), [dict(p.__dict__, agreement=p.agreement,
                                              detect_ms_p50=p.detect_ms_p50) for p in parity])
    return 0


def cmd_kitti_eval(args: argparse.Namespace) -> int:
    from admlops_ros.evaluation.kitti_eval import kitti_eval_with_bands
    res, bands = kitti_eval_with_bands(args.gt, args.pred, args.calib, with_bbox=not args.no_bbox)
    out = [res.table("R40", "strict"), "", res.table("R11", "strict"), "",
           res.table("R40", "loose"), "", bands.table("R40", "strict", metrics=("bev", "3d"))]
    sys.stdout.write("\n".join(out) + "\n")
    if args.json:
        write_json(Path(args.json), {"kitti": res.to_dict(), "by_distance": bands.to_dict()})
        LOG.info("wrote %s", args.json)
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register bag-from-kitti, bag-from-sim, eval, compare and kitti-eval."""
    from admlops_ros.parallel import add_parallel_arguments
    p = subparsers.add_parser("bag-from-sim", help="simulated frames with ground truth -> bag")
    p.add_argument("--count", type=POSITIVE_INT, default=200, help="frames (default 200)")
    p.add_argument("--seed", type=int, default=1_000_000,
                   help="first seed (frame i uses seed + i); the default 1,000,000 is held out "
                        "from training, which uses seeds below 200,000")
    p.add_argument("--sensor", default="hdl64",
                   help="hdl64, hdl64e_s2_kitti, hdl32, hdl32_roof, pandar40, vls128")
    p.add_argument("--scene", default="default", help="scene preset: default, city, kitti_streets")
    p.add_argument("-o", "--output", required=True, help="output .bag")
    p.add_argument("--images", choices=("none", "raw", "png"), default="none",
                   help="also the rendered camera image, CameraInfo and 2D labels: raw "
                        "(sensor_msgs/Image bgr8) or png (CompressedImage); default none")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_bag_from_sim)

    p = subparsers.add_parser("bag-from-kitti",
                              help="KITTI object frames (velodyne, label_2, calib) -> bag")
    p.add_argument("kitti_dir", help="directory with velodyne/, label_2/, calib/")
    p.add_argument("--split", help="ImageSets file with one frame id per line")
    p.add_argument("--ids", nargs="+", help="frame ids, e.g. 000000 000001 (default: all)")
    p.add_argument("-o", "--output", required=True, help="output .bag")
    p.add_argument("--images", choices=("auto", "none", "raw", "png"), default="auto",
                   help="image_2 + CameraInfo (P2) + the labels' 2D boxes: raw "
                        "(sensor_msgs/Image bgr8), png (CompressedImage), none; auto (default): "
                        "raw when image_2/ exists")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_bag_from_kitti)

    p = subparsers.add_parser("eval", help="replay a bag through the detector: AP, latency, "
                                           "drops; results.json + report.html")
    p.add_argument("bag", nargs="+", metavar="BAG",
                   help="bag, several bags or directories of *.bag (several: offline, one "
                        "task per bag, AP over all their frames)")
    p.add_argument("--engine", help="engine bundle directory (default: the shipped one)")
    p.add_argument("--backend", default="auto",
                   help="auto, onnxruntime, openvino[-f32|-bf16], tensorrt; camera bundles "
                        "also mmdeploy_sdk")
    p.add_argument("--online", action="store_true",
                   help="roscore + lidar_detection node + rosbag play (needs the catkin build)")
    p.add_argument("--rate", type=POSITIVE, default=None, help="rosbag play rate (online)")
    p.add_argument("--sweeps", type=POSITIVE_INT, default=None,
                   help="clouds merged per detection by the node (online; default: the spec's "
                        "input.sweeps); the bag's /tf gives the poses")
    p.add_argument("--out", default="eval_out", help="output directory (default eval_out)")
    p.add_argument("--score-threshold", type=FRACTION, default=None,
                   help="detector score threshold (default: the spec's)")
    p.add_argument("--operating-threshold", type=FRACTION, default=0.3,
                   help="score threshold for precision / recall / TP errors (default 0.3)")
    p.add_argument("--limit", type=POSITIVE_INT, default=None,
                   help="first N clouds only (offline; of each bag)")
    p.add_argument("--points-topic", default=None)
    p.add_argument("--gt-topic", default=None)
    p.add_argument("--fov", choices=("camera", "all"), default="camera",
                   help="camera (default): score only the predictions and ground truth seen in "
                        "image 2, with each frame's calibration from the bag (CameraInfo and "
                        "/tf or /tf_static), as mmdet3d / OpenPCDet do for KITTI; bags without "
                        "one are scored whole; all: score everything")
    p.add_argument("--camera-bundle", default=None,
                   help="camera bundle directory: score 2D detections of the bag's images "
                        "(COCO mAP / AP50, KITTI 2D AP); also chosen when --engine is a "
                        "camera bundle (spec.yaml modality: camera)")
    p.add_argument("--image-topic", default=None,
                   help="camera mode: image topic (default /camera/image_raw or its "
                        "/compressed)")
    p.add_argument("--image-gt-topic", default=None,
                   help="camera mode: 2D ground-truth topic (default /ground_truth/image_objects)")
    p.add_argument("--min-height", type=float, default=0.0,
                   help="camera mode, COCO numbers: ignore ground truth (and unmatched "
                        "detections) lower than this many pixels (default 0: COCO 'all')")
    p.add_argument("--max-occlusion", type=int, default=None,
                   help="camera mode, COCO numbers: ignore ground truth with a KITTI occlusion "
                        "state above this (default: none ignored)")
    p.add_argument("--no-progress", action="store_true")
    add_parallel_arguments(p)
    p.set_defaults(func=cmd_eval)

    p = subparsers.add_parser("compare", help="backend parity on a bag: raw output diff, "
                                              "box agreement, AP deltas")
    p.add_argument("bag")
    p.add_argument("--engine", help="engine bundle directory")
    p.add_argument("--backends", default="onnxruntime,openvino-f32,openvino-bf16",
                   help="comma-separated; the first is the reference")
    p.add_argument("--limit", type=POSITIVE_INT, default=None)
    p.add_argument("--json", help="write the table as JSON")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_compare)

    p = subparsers.add_parser("kitti-eval", help="score KITTI result files against label_2 "
                                                 "(KITTI difficulties, AP|R40 and AP|R11)")
    p.add_argument("--gt", required=True, help="label_2 directory")
    p.add_argument("--pred", required=True, help="result directory (label format + score)")
    p.add_argument("--calib", help="calib directory: distance bands measured from the LiDAR")
    p.add_argument("--json", help="write all numbers to this JSON file")
    p.add_argument("--no-bbox", action="store_true", help="skip the 2D bbox AP")
    p.set_defaults(func=cmd_kitti_eval)
