"""Deployment subcommands of `admlops`: build-engine, gpu-info, optimize."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from admlops_ros.argtypes import NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT
from admlops_ros.errors import UsageError

LOG = logging.getLogger(__name__)


def _check_int8_args(args: argparse.Namespace) -> None:
    """--int8 / --calib-dir / --keep-fp32 go together, and only with --target tensorrt."""
    if args.int8 and args.target != "tensorrt":
        raise UsageError("--int8 builds TensorRT INT8 plans: use it with --target tensorrt "
                         "(--target %s takes --fp16 only)" % args.target)
    if not args.int8:
        given = [flag for flag, value in (("--calib-dir", args.calib_dir),
                                          ("--keep-fp32", args.keep_fp32)) if value is not None]
        if given:
            raise UsageError("%s is used only with --int8" % " and ".join(given))
        return
    if args.fp16:
        raise UsageError("give one of --fp16 and --int8: an --int8 plan already falls back to "
                         "fp16 where the GPU has fast fp16")
    if args.calib_dir is None:
        raise UsageError("--int8 needs --calib-dir DIR, a directory of calibration batches "
                         "(NNNN.npz with the engine's inputs; `admlops optimize` writes one)")


def _build_engine(args: argparse.Namespace) -> int:
    from admlops_ros.backends.tensorrt_calibration import CalibrationError
    from admlops_ros.deploy import build

    _check_int8_args(args)
    if args.target == "openvino":
        path = build.build_openvino(args.bundle, fp16=args.fp16)
    else:
        workspace = args.workspace_mb * (1 << 20) if args.workspace_mb else None
        try:
            path = build.build_tensorrt(args.bundle, fp16=args.fp16, cache_dir=args.cache_dir,
                                        force=args.force, device_index=args.device,
                                        workspace_bytes=workspace,
                                        strict_gpu_model=args.strict_gpu_model,
                                        lock_timeout_s=args.lock_timeout, int8=args.int8,
                                        calib_dir=args.calib_dir, keep_fp32=args.keep_fp32)
        except CalibrationError as exc:  # the data is checked first, before the GPU
            raise UsageError("--calib-dir %s: %s" % (args.calib_dir, exc)) from exc
    sys.stdout.write("%s\n" % path)
    return 0


def _gpu_info(args: argparse.Namespace) -> int:
    from admlops_ros.backends import gpu_info, tensorrt_cache
    from admlops_ros.deploy import build

    gpus = gpu_info.list_gpus()
    out: Any = {"gpus": [g.__dict__ for g in gpus], "tensorrt": gpu_info.tensorrt_version()}
    if args.bundle:
        try:
            out["cache"] = build.describe_cache(args.bundle, args.fp16, args.cache_dir,
                                                args.device, int8=args.int8)
        except (tensorrt_cache.EngineCacheError, build.BuildError) as exc:
            out["cache"] = {"error": str(exc)}
    sys.stdout.write(json.dumps(out, indent=2) + "\n")
    return 0


def _optimize(args: argparse.Namespace) -> int:
    from admlops_ros.deploy.optimize import optimize

    result = optimize(args.bundle, args.calib_bag, args.eval_bag, args.out,
                      calib_frames=args.calib_frames, seed=args.seed,
                      max_map_loss=args.max_map_loss, eval_limit=args.eval_limit,
                      progress=not args.no_progress,
                      tensorrt_calib_dir=args.tensorrt_calib_dir)
    lines = [f"{label}: {path}" for label, path in result.bundles.items()]
    lines += [f"accuracy-aware step: fp32 {', '.join(s['float_layers'])}: held-out mAP loss "
              f"{s['validation_map_loss']:.2f}" for s in result.search]
    lines += ["", f"eval bag {args.eval_bag}: median detect ms per cloud, speed-up and deltas "
              "against fp32 on the same backend, mean AP|R40 strict", result.table]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def add_commands(subparsers: Any) -> None:
    """Register build-engine and gpu-info on the `admlops` parser."""
    p = subparsers.add_parser(
        "build-engine", help="build a TensorRT plan or OpenVINO IR from a bundle's ONNX",
        description="TensorRT: plan for this GPU/TensorRT/precision into <bundle>/tensorrt "
                    "(profile from spec.yaml engine.tensorrt_profile; needs an NVIDIA GPU). "
                    "OpenVINO: IR into <bundle>/openvino/end2end.xml (end2end_fp16.xml).")
    p.add_argument("bundle", help="engine bundle directory (spec.yaml + end2end.onnx)")
    p.add_argument("--target", required=True, choices=("tensorrt", "openvino"))
    p.add_argument("--fp16", action="store_true", help="fp16 plan / fp16-compressed IR")
    p.add_argument("--int8", action="store_true",
                   help="TensorRT INT8 plan, calibrated on --calib-dir (fp16 fallback where the "
                        "GPU has fast fp16); tensorrt target only")
    p.add_argument("--calib-dir", default=None, metavar="DIR",
                   help="calibration batches NNNN.npz (the engine's input arrays per frame); "
                        "the calibration cache beside the plan is reused while they are the same")
    p.add_argument("--keep-fp32", nargs="*", default=None, metavar="SUBSTR",
                   help="with --int8: keep layers whose name contains SUBSTR in fp32 (default: "
                        "the pillar encoder and the head, tensorrt_calibration."
                        "DEFAULT_KEEP_FP32; the option alone: none)")
    p.add_argument("--cache-dir", default=None, help="TensorRT plan dir (default <bundle>/tensorrt)")
    p.add_argument("--force", action="store_true", help="rebuild even if a fitting plan exists")
    p.add_argument("--device", type=NON_NEGATIVE_INT, default=0, help="CUDA device index")
    p.add_argument("--workspace-mb", type=POSITIVE_INT, default=None, help="TensorRT builder workspace")
    p.add_argument("--strict-gpu-model", action="store_true",
                   help="do not reuse plans built on another GPU model of the same capability")
    p.add_argument("--lock-timeout", type=POSITIVE, default=1800.0,
                   help="seconds to wait for another build of the same cache")
    p.set_defaults(func=_build_engine)

    p = subparsers.add_parser("gpu-info", help="GPU, TensorRT version and the plan a bundle "
                                               "would use here (JSON)")
    p.add_argument("bundle", nargs="?", default=None)
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--int8", action="store_true")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--device", type=NON_NEGATIVE_INT, default=0)
    p.set_defaults(func=_gpu_info)

    p = subparsers.add_parser(
        "optimize", help="int8 bundles calibrated on a bag; speed vs AP table against fp32",
        description="Writes <out>/<name>_int8 (all int8 but the pillar front) and, when that "
                    "loses more than --max-map-loss 3D mAP on held-out frames of the "
                    "calibration bag, <out>/<name>_mixed (box regression, head, then neck "
                    "back in fp32); "
                    "then runs fp32, bf16 and the int8 bundles on the eval bag and prints "
                    "speed and AP deltas. Writes <out>/optimize.json.")
    p.add_argument("bundle", help="fp32 engine bundle directory")
    p.add_argument("--calib-bag", required=True,
                   help="bag of clouds to calibrate on (its other frames with ground truth "
                        "decide the fp32 layers); keep it apart from the eval bag")
    p.add_argument("--eval-bag", required=True, help="bag with ground truth for the table")
    p.add_argument("--out", default="build/optimize", help="output directory")
    p.add_argument("--calib-frames", type=POSITIVE_INT, default=64,
                   help="clouds to calibrate on (default 64)")
    p.add_argument("--seed", type=NON_NEGATIVE_INT, default=0,
                   help="picks the calibration clouds (same seed, same bundle)")
    p.add_argument("--max-map-loss", type=POSITIVE, default=1.0,
                   help="3D mAP loss allowed on held-out frames (default 1.0)")
    p.add_argument("--eval-limit", type=POSITIVE_INT, default=None,
                   help="first N clouds of the eval bag only")
    p.add_argument("--tensorrt-calib-dir", default=None,
                   help="also write the calibration clouds' engine inputs here (NNNN.npz), "
                        "for build-engine --target tensorrt --int8 --calib-dir on a GPU")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_optimize)
