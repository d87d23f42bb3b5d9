"""Engine runners (ONNX Runtime, OpenVINO, TensorRT) behind one interface, chosen by name."""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any, List, Mapping, Union

from admlops_ros.backends.base import Backend, BackendError, DynamicAxes, TensorInfo
from admlops_ros.bundle.files import EngineBundle, load_bundle

LOG = logging.getLogger(__name__)

BACKEND_NAMES = ("auto", "onnxruntime", "openvino", "tensorrt")

__all__ = ["Backend", "BackendError", "DynamicAxes", "TensorInfo", "BACKEND_NAMES",
           "available_backends", "create_backend", "model_files"]


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


def model_files(source: Union[EngineBundle, str, Path, Mapping[str, Any]]):
    """(spec or None, onnx, openvino_xml, tensorrt_plan) of a bundle, a bundle directory, a
    model file, or a dict with keys spec, onnx, openvino_xml, tensorrt_plan."""
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
            (.onnx, .xml, .engine/.plan); or a dict with keys onnx, openvino_xml, tensorrt_plan.
        **options: passed to the backend (e.g. precision="bf16" for openvino, num_threads,
            dynamic_axes, plugins=[...] and tensorrt_plan=... for tensorrt).

    Raises:
        BackendError: unknown name, or no model file the backend can run.
    """
    if name not in BACKEND_NAMES:
        raise BackendError(f"unknown backend {name!r}; choose one of {list(BACKEND_NAMES)}")
    _, onnx, xml, plan = model_files(bundle_or_paths)
    plan = options.pop("tensorrt_plan", plan)
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
        return OnnxRuntimeBackend(onnx, **options)
    if name == "openvino":
        model = xml or onnx
        if model is None:
            raise BackendError("backend 'openvino' needs an OpenVINO .xml or an .onnx file")
        from admlops_ros.backends.openvino_backend import OpenVINOBackend
        return OpenVINOBackend(model, **options)
    from admlops_ros.backends.tensorrt_backend import TensorRTBackend
    if plan is None:
        raise BackendError("backend 'tensorrt' needs a plan (tensorrt_plan=... or an .engine in "
                           "the bundle); build one with build_engine_from_onnx() or the engine "
                           "cache")
    return TensorRTBackend(plan, **options)
