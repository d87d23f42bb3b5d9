"""`admlops spec-from-config`, `admlops bundle` and `admlops spec-schema`: specs and bundles."""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from admlops_ros.argtypes import POSITIVE, POSITIVE_INT
from admlops_ros.errors import UsageError

LOG = logging.getLogger(__name__)


def add_commands(subparsers: "argparse._SubParsersAction") -> None:
    """Register the bundle subcommands on the `admlops` parser."""
    p = subparsers.add_parser("spec-from-config",
                              help="write spec.yaml from an mmdet3d 1.x model config (.py)")
    p.add_argument("config", help="e.g. pointpillars_hv_secfpn_8xb6-160e_kitti-3d-3class.py")
    p.add_argument("-o", "--output", default="spec.yaml", help="spec file to write")
    p.add_argument("--name", help="bundle name (default: config file stem)")
    p.add_argument("--intensity-scale", type=POSITIVE, default=1.0,
                   help="raw sensor intensity * scale = model intensity (default 1.0)")
    p.add_argument("--tensorrt-profile", type=POSITIVE_INT, nargs=3, metavar=("MIN", "OPT", "MAX"),
                   help="voxel-count profile of the TensorRT engine (mmdeploy KITTI: "
                        "2000 5000 9000)")
    p.add_argument("--output-layout", help="engine output layout (default: detect at load)")
    p.set_defaults(func=_spec_from_config)

    b = subparsers.add_parser("bundle", help="write an engine bundle, or re-hash one")
    b.add_argument("dir", help="bundle directory (engines/<name>)")
    b.add_argument("--rehash", action="store_true",
                   help="recompute the sha256 of the bundle's files into its spec.yaml")
    b.add_argument("--spec", help="spec.yaml to put in the bundle (from spec-from-config)")
    b.add_argument("--onnx", help="mmdeploy end2end.onnx")
    b.add_argument("--openvino-xml", help="OpenVINO IR .xml (its .bin beside it)")
    b.add_argument("--convert-openvino", action="store_true",
                   help="convert the ONNX to OpenVINO IR (fp32 weights) into the bundle")
    b.set_defaults(func=_bundle)

    c = subparsers.add_parser("camera-spec-from-config",
                              help="write a camera spec.yaml from an mmdet 3.x config (.py) or "
                                   "an mmdeploy SDK model directory (pipeline.json)")
    c.add_argument("source", help="mmdet config .py, or a directory with pipeline.json and "
                                  "deploy.json")
    c.add_argument("-o", "--output", default="spec.yaml", help="spec file to write")
    c.add_argument("--name", help="bundle name (default: config stem / directory name)")
    c.add_argument("--classes", nargs="+", help="class names in label order (default: the "
                                                "config's metainfo.classes)")
    c.add_argument("--score-threshold", type=float, help="runner score threshold (default: "
                                                         "test_cfg score_thr / score_thr)")
    c.set_defaults(func=_camera_spec_from_config)

    s = subparsers.add_parser("spec-schema", help="print (or write) the JSON schema of "
                                                  "spec.yaml, for editors and CI")
    s.add_argument("-o", "--output", help="file to write (default: stdout)")
    s.set_defaults(func=_spec_schema)


def _spec_from_config(args: argparse.Namespace) -> int:
    from admlops_ros.bundle.files import write_spec
    from admlops_ros.bundle.from_mmdet3d import spec_from_mmdet3d_config
    spec = spec_from_mmdet3d_config(args.config, name=args.name,
                                    intensity_scale=args.intensity_scale,
                                    tensorrt_profile=args.tensorrt_profile,
                                    output_layout=args.output_layout)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_spec(spec, out)
    LOG.info("wrote %s (%s); put end2end.onnx beside it and run `admlops bundle --rehash %s`",
             out, spec.name, out.parent)
    return 0


def _camera_spec_from_config(args: argparse.Namespace) -> int:
    from admlops_ros.bundle.camera_from_config import camera_spec_from_source
    from admlops_ros.bundle.camera_spec import write_camera_spec
    spec = camera_spec_from_source(args.source, class_names=args.classes, name=args.name,
                                   score_threshold=args.score_threshold)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_camera_spec(spec, out)
    LOG.info("wrote %s (%s, %d classes); put end2end.onnx beside it and hash it with "
             "`admlops bundle --rehash %s`", out, spec.name, spec.num_classes, out.parent)
    return 0


def _bundle(args: argparse.Namespace) -> int:
    from admlops_ros.bundle.files import load_bundle, read_spec, rehash_bundle
    if args.rehash and _is_camera_bundle(args.dir):
        from admlops_ros.bundle.camera_spec import hash_camera_bundle, read_camera_spec
        bundle = hash_camera_bundle(args.dir, read_camera_spec(args.dir))
        for rel, digest in bundle.spec.files.items():
            LOG.info("%s  %s", digest, rel)
        return 0
    if args.rehash:
        files = rehash_bundle(args.dir)
        for rel, digest in files.items():
            LOG.info("%s  %s", digest, rel)
        load_bundle(args.dir)
        return 0
    if not args.spec or not args.onnx:
        raise UsageError("give --spec SPEC.yaml and --onnx END2END.onnx to write a bundle, or "
                         "--rehash to re-hash the bundle in DIR")
    spec = read_spec(args.spec)
    root = Path(args.dir)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=str(root.parent)))
    try:  # build and check the bundle aside; DIR changes only once it loads and runs
        _write_checked_bundle(staging, spec, args)
        _install(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    bundle = load_bundle(root)
    LOG.info("bundle %s: %s", bundle.root, ", ".join(bundle.files))
    return 0


def _is_camera_bundle(path: str) -> bool:
    """spec.yaml of ``path`` declares modality camera (read leniently; errors come later)."""
    import yaml
    from admlops_ros.bundle.files import spec_path
    try:
        data = yaml.safe_load(spec_path(path).read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and data.get("modality") == "camera"


def _write_checked_bundle(staging: Path, spec, args: argparse.Namespace) -> None:
    """Write the bundle into ``staging`` and prove it: it loads, its ONNX runs on ONNX Runtime
    and fits the spec (inputs, outputs, scatter canvas), and its IR converts."""
    from admlops_ros.bundle.files import OPENVINO_XML, load_bundle, rehash_bundle, write_bundle
    from admlops_ros.lidar.engine import open_voxel_engine
    bundle = write_bundle(staging, spec, args.onnx, openvino_xml=args.openvino_xml)
    with open_voxel_engine("onnxruntime", bundle):
        pass
    if args.convert_openvino and not args.openvino_xml:
        from admlops_ros.backends.openvino_backend import convert_onnx_to_ir
        convert_onnx_to_ir(bundle.onnx_path, staging / OPENVINO_XML)
        rehash_bundle(staging)
    load_bundle(staging)


def _install(staging: Path, root: Path) -> None:
    """Move a checked bundle into place: a rename when DIR is new; otherwise its files are
    replaced (spec.yaml last, so an interrupted copy fails the sha256 check at load)."""
    if not root.exists():
        staging.rename(root)
        staging.mkdir()  # for the caller's cleanup
        return
    spec_file = None
    for src in sorted(p for p in staging.rglob("*") if p.is_file()):
        dst = root / src.relative_to(staging)
        if src.name == "spec.yaml" and src.parent == staging:
            spec_file = (src, dst)
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
    if spec_file:
        os.replace(*spec_file)


def _spec_schema(args: argparse.Namespace) -> int:
    from admlops_ros.bundle.json_schema import spec_json_schema, write_spec_json_schema
    if args.output:
        LOG.info("wrote %s", write_spec_json_schema(args.output))
    else:
        import json
        sys.stdout.write(json.dumps(spec_json_schema(), indent=2) + "\n")
    return 0
