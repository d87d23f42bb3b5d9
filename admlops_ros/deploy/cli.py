"""Deployment subcommands of `admlops`: build-engine, gpu-info."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from admlops_ros.argtypes import NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT

LOG = logging.getLogger(__name__)


def _build_engine(args: argparse.Namespace) -> int:
    from admlops_ros.deploy import build

    if args.target == "openvino":
        path = build.build_openvino(args.bundle, fp16=args.fp16)
    else:
        workspace = args.workspace_mb * (1 << 20) if args.workspace_mb else None
        path = build.build_tensorrt(args.bundle, fp16=args.fp16, cache_dir=args.cache_dir,
                                    force=args.force, device_index=args.device,
                                    workspace_bytes=workspace,
                                    strict_gpu_model=args.strict_gpu_model,
                                    lock_timeout_s=args.lock_timeout)
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
                                                args.device)
        except tensorrt_cache.EngineCacheError as exc:
            out["cache"] = {"error": str(exc)}
    sys.stdout.write(json.dumps(out, indent=2) + "\n")
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
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--device", type=NON_NEGATIVE_INT, default=0)
    p.set_defaults(func=_gpu_info)
