"""Build deployable engines from a bundle's end2end.onnx: TensorRT plans and OpenVINO IR."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

from admlops_ros.backends import tensorrt_cache
from admlops_ros.errors import AdmlopsError

LOG = logging.getLogger(__name__)

class BuildError(AdmlopsError):
    """A bundle or build step that cannot be used (names the file and the fix)."""


def _onnx_of(bundle_dir: Path) -> Path:
    onnx_path = bundle_dir / tensorrt_cache.ONNX_FILE
    if not onnx_path.is_file():
        raise BuildError("%s not found: a bundle directory holds spec.yaml and %s (make one "
                         "with scripts/rebuild_engine_mmdeploy.sh or the training export)"
                         % (onnx_path, tensorrt_cache.ONNX_FILE))
    return onnx_path


def build_openvino(bundle_dir: Union[str, Path], fp16: bool = False,
                   record: bool = True) -> Path:
    """Convert the bundle's ONNX to the bundle's OpenVINO IR (bundle.files.OPENVINO_XML + .bin).

    Args:
        bundle_dir: engine bundle directory.
        fp16: store weights as fp16 (compress_to_fp16, half the size); the compute precision
            is still the node's `precision` parameter. The bundle holds one IR: this replaces it.
        record: re-hash the bundle's files into spec.yaml (bundle.files.rehash_bundle) so the bundle
            still loads with verified hashes.

    Returns:
        Path of the .xml.

    Raises:
        BuildError: no ONNX in the bundle, or the conversion failed.
    """
    from admlops_ros.backends import openvino_backend
    from admlops_ros.bundle import files as bundle_files

    root = Path(bundle_dir)
    onnx_path = _onnx_of(root)
    xml = root / bundle_files.OPENVINO_XML
    LOG.info("converting %s -> %s (%s weights)", onnx_path, xml, "fp16" if fp16 else "fp32")
    try:
        openvino_backend.convert_onnx_to_ir(onnx_path, xml, compress_to_fp16=bool(fp16))
    except Exception as exc:
        raise BuildError("OpenVINO conversion of %s failed: %s" % (onnx_path, exc)) from exc
    if not xml.is_file() or not xml.with_suffix(".bin").is_file():
        raise BuildError("OpenVINO conversion wrote no %s / .bin" % xml)
    if record and bundle_files.spec_path(root).is_file():
        bundle_files.rehash_bundle(root)
    return xml


def _precision(fp16: bool, int8: bool) -> str:
    if fp16 and int8:
        raise BuildError("fp16 and int8 both requested: an int8 plan already runs the layers "
                         "without INT8 kernels in fp16 where the GPU has fast fp16; ask for one")
    return "int8" if int8 else "fp16" if fp16 else "fp32"


def build_tensorrt(bundle_dir: Union[str, Path], fp16: bool = False,
                   cache_dir: Optional[Union[str, Path]] = None, force: bool = False,
                   device_index: int = 0, workspace_bytes: Optional[int] = None,
                   strict_gpu_model: bool = False,
                   lock_timeout_s: float = tensorrt_cache.DEFAULT_LOCK_TIMEOUT_S,
                   int8: bool = False, calib_dir: Optional[Union[str, Path]] = None,
                   keep_fp32: Optional[Sequence[str]] = None, **kwargs: Any) -> Path:
    """Build (or find) the TensorRT plan for this GPU, profile min/opt/max from spec.yaml.

    Args:
        bundle_dir: engine bundle directory.
        fp16: fp16 precision (else fp32).
        cache_dir: plan directory (default <bundle>/tensorrt).
        force: rebuild even when a fitting plan exists.
        device_index, workspace_bytes, strict_gpu_model, lock_timeout_s: see tensorrt_cache.
        int8: INT8 plan calibrated on `calib_dir` (fp16 fallback where the GPU has it); the
            calibration cache beside the plan is reused by rebuilds of the same data.
        calib_dir: calibration batches (backends.tensorrt_calibration); required with int8.
        keep_fp32: int8: layer-name substrings kept in fp32 (None:
            tensorrt_calibration.DEFAULT_KEEP_FP32, the pillar encoder and the head).
        **kwargs: passed to tensorrt_cache.resolve_tensorrt_plan (build_fn, key).

    Returns:
        Path of the plan.

    Raises:
        BuildError: no ONNX, fp16 with int8, int8 without calib_dir, or calib_dir without int8.
        CalibrationError: calib_dir missing, empty or malformed (checked before the GPU).
        EngineCacheError: no GPU / TensorRT, or the build failed.
    """
    _onnx_of(Path(bundle_dir))
    precision = _precision(fp16, int8)
    if int8 and calib_dir is None:
        raise BuildError("an int8 plan needs calibration data: give calib_dir, a directory of "
                         "calibration batches (tensorrt_calibration.write_calibration_batches)")
    if not int8 and (calib_dir is not None or keep_fp32 is not None):
        raise BuildError("calibration data and fp32 layers are for int8 plans only")
    return tensorrt_cache.resolve_tensorrt_plan(
        Path(bundle_dir), precision, allow_build=True, cache_dir=cache_dir,
        device_index=device_index, force=force, strict_gpu_model=strict_gpu_model,
        lock_timeout_s=lock_timeout_s, workspace_bytes=workspace_bytes, calib_dir=calib_dir,
        keep_fp32=None if keep_fp32 is None else tuple(keep_fp32), **kwargs)


def describe_cache(bundle_dir: Union[str, Path], fp16: bool = False,
                   cache_dir: Optional[Union[str, Path]] = None,
                   device_index: int = 0, int8: bool = False) -> Dict[str, Any]:
    """What the node would do at start on this machine (for `admlops gpu-info BUNDLE`)."""
    from admlops_ros.bundle.files import load_bundle

    root = Path(bundle_dir)
    bundle = load_bundle(root)
    precision = _precision(fp16, int8)
    key = tensorrt_cache.machine_key(tensorrt_cache.sha256_file(_onnx_of(root)),
                                     tensorrt_cache.spec_profile(bundle.spec), precision,
                                     device_index, root)
    cache = Path(cache_dir) if cache_dir else root / tensorrt_cache.PLAN_DIR
    decision = tensorrt_cache.inspect_cache(cache, key)
    return {"wanted": key.describe(), "plan": str(decision.plan) if decision.plan else None,
            "rejected": decision.rejected, "warnings": decision.warnings,
            "rebuild": tensorrt_cache.rebuild_command(root, precision, cache)}
