"""Engine runners (ONNX Runtime, OpenVINO, TensorRT) behind one interface, chosen by name."""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any, List, Mapping, Union

from admlops_ros.backends.base import Backend, BackendError, TensorInfo
from admlops_ros.lidar.layout import (LAYOUT_NAMES, DecodedOutputs, HeadOutputs, LayoutError,
                                         OutputLayout, detect_layout, to_head_outputs)
from admlops_ros.bundle.files import EngineBundle, load_bundle
from admlops_ros.bundle.spec import ModelSpec

LOG = logging.getLogger(__name__)

BACKEND_NAMES = ("auto", "onnxruntime", "openvino", "tensorrt")

__all__ = ["Backend", "BackendError", "TensorInfo", "LAYOUT_NAMES", "DecodedOutputs",
           "HeadOutputs", "LayoutError", "OutputLayout", "detect_layout", "to_head_outputs",
           "BACKEND_NAMES", "available_backends", "create_backend"]


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def available_backends() -> List[str]:
    """Backends usable on this machine (tensorrt only with a GPU and CUDA bindings)."""
    names = []
    if _importable("tensorrt"):
        from admlops_ros.backends.tensorrt_backend import tensorrt_available
        if tensorrt_available():
            names.append("tensorrt")
    if _importable("openvino"):
        names.append("openvino")
    if _importable("onnxruntime"):
        names.append("onnxruntime")
    return names


def _resolve_paths(source: Union[EngineBundle, str, Path, Mapping[str, Any]]):
    """-> (spec or None, onnx, openvino_xml, tensorrt_plan) from a bundle, a path or a dict."""
    if isinstance(source, Mapping):
        spec = source.get("spec")
        return (spec, source.get("onnx"), source.get("openvino_xml"),
                source.get("tensorrt_plan"))
    if not isinstance(source, EngineBundle):
        path = Path(source)
        suffix = path.suffix.lower()
        if suffix == ".onnx":
            return None, path, None, None
        if suffix == ".xml":
            return None, None, path, None
        if suffix in (".engine", ".plan"):
            return None, None, None, path
        source = load_bundle(path)
    return source.spec, source.onnx_path, source.openvino_xml, source.tensorrt_plan


def create_backend(name: str, bundle_or_paths: Union[EngineBundle, str, Path, Mapping[str, Any]],
                   **options: Any) -> Backend:
    """Open an engine with the named backend.

    Args:
        name: "auto" (tensorrt if usable and a plan exists, else openvino, else onnxruntime),
            "onnxruntime", "openvino" or "tensorrt".
        bundle_or_paths: an ``EngineBundle``; a bundle directory / spec.yaml; a model file
            (.onnx, .xml, .engine/.plan); or a dict with keys spec, onnx, openvino_xml,
            tensorrt_plan.
        **options: passed to the backend (e.g. precision="bf16" for openvino, num_threads,
            plugins=[...] and tensorrt_plan=... for tensorrt, output_layout).

    Raises:
        BackendError: unknown name, missing model file, or an engine that does not fit the spec.
    """
    if name not in BACKEND_NAMES:
        raise BackendError(f"unknown backend {name!r}; choose one of {list(BACKEND_NAMES)}")
    spec, onnx, xml, plan = _resolve_paths(bundle_or_paths)
    spec = options.pop("spec", spec)
    plan = options.pop("tensorrt_plan", plan)
    if spec is not None and not isinstance(spec, ModelSpec):
        raise BackendError(f"spec must be a ModelSpec, got {type(spec).__name__}")
    if name == "auto":
        usable = available_backends()
        if "tensorrt" in usable and plan is not None:
            name = "tensorrt"
        elif "openvino" in usable and (xml or onnx):
            name = "openvino"
        elif "onnxruntime" in usable and onnx:
            name = "onnxruntime"
        else:
            raise BackendError(f"no usable backend: available {usable}, model files onnx={onnx},"
                               f" openvino_xml={xml}, tensorrt_plan={plan}")
        LOG.info("backend auto -> %s", name)
    if name == "onnxruntime":
        if onnx is None:
            raise BackendError("backend 'onnxruntime' needs an .onnx file in the bundle")
        from admlops_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
        return OnnxRuntimeBackend(onnx, spec=spec, **options)
    if name == "openvino":
        model = xml or onnx
        if model is None:
            raise BackendError("backend 'openvino' needs an OpenVINO .xml or an .onnx file")
        from admlops_ros.backends.openvino_backend import OpenVINOBackend
        return OpenVINOBackend(model, spec=spec, **options)
    from admlops_ros.backends.tensorrt_backend import TensorRTBackend
    if plan is None:
        raise BackendError("backend 'tensorrt' needs a plan (tensorrt_plan=... or an .engine in "
                           "the bundle); build one with build_engine_from_onnx() or the engine "
                           "cache")
    return TensorRTBackend(plan, spec=spec, **options)
