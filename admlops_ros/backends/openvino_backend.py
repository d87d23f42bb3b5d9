"""OpenVINO (CPU) engine runner, fp32 by default, and ONNX -> IR conversion."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

from admlops_ros.backends.base import Backend, BackendError, DynamicAxes, TensorInfo

LOG = logging.getLogger(__name__)

# Accepted spellings -> OpenVINO INFERENCE_PRECISION_HINT value.
PRECISIONS = {"f32": "f32", "fp32": "f32", "float32": "f32", "bf16": "bf16",
              "bfloat16": "bf16", "f16": "f16", "fp16": "f16", "float16": "f16"}
_CAPABILITY = {"f32": "FP32", "bf16": "BF16", "f16": "FP16"}


def _ov():
    try:
        import openvino as ov
    except ImportError as exc:
        raise BackendError("backend 'openvino' needs `pip install openvino` (>= 2023.3)") from exc
    return ov


def port_name(port) -> str:
    """The port's user-facing name: a tensor can carry several (torch export adds internal
    '/module/Op_output_0' names beside 'num_points'); prefer the one not starting with '/'."""
    names = sorted(port.get_names())
    plain = [n for n in names if not n.startswith("/")]
    return plain[0] if plain else port.get_any_name()


def _shape(partial_shape) -> tuple:
    return tuple(d.get_length() if d.is_static else None for d in partial_shape)


class OpenVINOBackend(Backend):
    """Runs an OpenVINO IR (``.xml``) or ONNX model on the CPU.

    Axes named in ``dynamic_axes`` are made dynamic when the model fixes them (an mmdeploy
    static export fixes the voxel count): one compiled model then serves every size (the CPU
    plugin infers shapes per request; no recompilation, no padding).

    Args:
        model_path: ``.xml`` IR (with its ``.bin``) or ``.onnx``.
        precision: "f32" (default; this CPU would otherwise run bf16), "bf16" or "f16".
        num_threads: inference threads; default: OpenVINO's choice (all cores).
        device: OpenVINO device name.
        dynamic_axes: input name -> axes to make dynamic.
    """

    name = "openvino"

    def __init__(self, model_path: Union[str, Path], precision: str = "f32",
                 num_threads: Optional[int] = None, device: str = "CPU",
                 dynamic_axes: Optional[DynamicAxes] = None) -> None:
        super().__init__()
        ov = _ov()
        if str(precision).lower() not in PRECISIONS:
            raise BackendError(f"openvino: precision {precision!r} unknown; use one of "
                               f"{sorted(set(PRECISIONS.values()))}")
        hint = PRECISIONS[str(precision).lower()]
        path = Path(model_path)
        if not path.is_file():
            raise BackendError(f"openvino: no model at {path}")
        core = ov.Core()
        caps = core.get_property(device, "OPTIMIZATION_CAPABILITIES") if device == "CPU" else []
        if caps and _CAPABILITY[hint] not in caps:
            LOG.warning("openvino: %s has no native %s support (capabilities %s); OpenVINO "
                        "falls back to a supported precision", device, hint, caps)
        try:
            model = core.read_model(str(path))
            make_axes_dynamic(ov, model, dynamic_axes or {})
            config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
            if num_threads:
                config["INFERENCE_NUM_THREADS"] = int(num_threads)
            self._compiled = core.compile_model(model, device, config)
        except BackendError:
            raise
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses
            raise BackendError(f"openvino could not load {path}: {exc}") from exc
        self.path = path
        actual = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        self.precision = actual.to_string() if hasattr(actual, "to_string") else str(actual)
        self._request = self._compiled.create_infer_request()
        self.inputs = [TensorInfo(port_name(p), _shape(p.get_partial_shape()),
                                  np.dtype(p.get_element_type().to_dtype()))
                       for p in self._compiled.inputs]
        self.outputs = [TensorInfo(port_name(p), _shape(p.get_partial_shape()),
                                   np.dtype(p.get_element_type().to_dtype()))
                        for p in self._compiled.outputs]
        LOG.info("openvino %s: %s on %s, precision %s", ov.get_version(), path, device,
                 self.precision)

    def _run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        # Fed by port index: a port can carry several names (see port_name).
        self._request.infer({i: feeds[t.name] for i, t in enumerate(self.inputs)})
        # Copy: the request's output buffers are reused by the next inference.
        return {t.name: np.array(self._request.get_output_tensor(i).data, copy=True)
                for i, t in enumerate(self.outputs)}

    def close(self) -> None:
        self._request = None
        self._compiled = None
        super().close()


def make_axes_dynamic(ov: Any, model: Any, dynamic_axes: DynamicAxes) -> None:
    """Make the named axes of the model's inputs dynamic where the model fixes them."""
    shapes = {}
    for port in model.inputs:
        name = port_name(port)
        ps = port.get_partial_shape()
        axes = [a for a in dynamic_axes.get(name, ()) if ps.rank.is_static and a < len(ps)]
        if axes and any(ps[a].is_static for a in axes):
            shapes[name] = ov.PartialShape([-1 if i in axes or not d.is_static else d.get_length()
                                            for i, d in enumerate(ps)])
    if shapes:
        try:
            model.reshape(shapes)
            LOG.info("openvino: made axes dynamic: %s", {k: list(dynamic_axes[k]) for k in shapes})
        except Exception as exc:  # reshape fails if the graph bakes the size in
            LOG.warning("openvino: the model fixes %s and cannot be reshaped (%s); feed the "
                        "exported sizes", sorted(shapes), exc)


def _zero_constants_as_broadcasts(model: Any, min_bytes: int = 1 << 16) -> int:
    """Replace large all-zero constants (a folded scatter canvas) by a broadcast zero.

    The converter folds the canvas the ONNX file makes with ``ConstantOfShape`` back into a
    constant (6.9 MB of zeros for the small model); a Broadcast keeps the IR to the weights
    and is folded again in memory when the model is compiled. Returns the count replaced.
    """
    from openvino import opset13 as ops
    replaced = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Constant":
            continue
        data = op.get_data()
        if data.nbytes < min_bytes or data.any():
            continue
        zero = ops.constant(np.zeros((), data.dtype))
        broadcast = ops.broadcast(zero, ops.constant(np.asarray(data.shape, np.int64)))
        op.output(0).replace(broadcast.output(0))
        replaced += 1
    if replaced:
        model.validate_nodes_and_infer_types()
    return replaced


def convert_onnx_to_ir(onnx_path: Union[str, Path], xml_path: Union[str, Path],
                       compress_to_fp16: bool = False) -> Path:
    """Convert an ONNX model to OpenVINO IR (``.xml`` + ``.bin``).

    Args:
        onnx_path: source model.
        xml_path: destination ``.xml`` (the ``.bin`` is written beside it).
        compress_to_fp16: store weights as fp16 (halves the file; compute precision is still
            chosen at load by ``precision``). Default False keeps fp32 weights.

    Returns:
        ``xml_path``.
    """
    ov = _ov()
    xml = Path(xml_path)
    xml.parent.mkdir(parents=True, exist_ok=True)
    try:
        model = ov.convert_model(str(onnx_path))
        _zero_constants_as_broadcasts(model)
        ov.save_model(model, str(xml), compress_to_fp16=compress_to_fp16)
    except Exception as exc:
        raise BackendError(f"openvino could not convert {onnx_path} to IR: {exc}") from exc
    return xml
