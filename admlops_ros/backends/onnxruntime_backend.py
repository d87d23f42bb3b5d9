"""ONNX Runtime (CPU) engine runner."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np

from admlops_ros.backends.base import Backend, BackendError, DynamicAxes, TensorInfo

LOG = logging.getLogger(__name__)

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
              "tensor(double)": np.float64, "tensor(int32)": np.int32,
              "tensor(int64)": np.int64, "tensor(bool)": np.bool_}


def _dims(shape: Sequence) -> tuple:
    return tuple(d if isinstance(d, int) and d >= 0 else None for d in shape)


class OnnxRuntimeBackend(Backend):
    """Runs an ONNX model with ONNX Runtime.

    Args:
        onnx_path: the model (mmdeploy ``end2end.onnx``).
        num_threads: intra-op threads; default: every core.
        providers: ONNX Runtime execution providers; default CPU.
        precision: only "f32" (the ONNX file's own precision); accepted so every backend
            takes the same options.
        dynamic_axes: accepted for the same reason; ONNX Runtime runs the model's own
            shapes (export dynamic axes with the model).
        spin_wait: let the intra-op threads spin after a run (ONNX Runtime's default). Off
            here: the spinning threads hold the cores for a while after each inference, and
            what runs next (decode + NMS, the next cloud, another engine) ran 1.5x slower
            measured; a run without it costs about 3 ms more on the shipped model.
    """

    name = "onnxruntime"

    def __init__(self, onnx_path: Union[str, Path], num_threads: Optional[int] = None,
                 providers: Optional[Sequence[str]] = None, precision: str = "f32",
                 dynamic_axes: Optional[DynamicAxes] = None, spin_wait: bool = False) -> None:
        super().__init__()
        if precision != "f32":
            raise BackendError(f"onnxruntime runs the ONNX file in f32 only, got precision "
                               f"{precision!r}; use backend openvino for bf16/f16")
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendError("backend 'onnxruntime' needs `pip install onnxruntime`") from exc
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(num_threads or os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning",
                                      "1" if spin_wait else "0")
        path = Path(onnx_path)
        if not path.is_file():
            raise BackendError(f"onnxruntime: no model at {path}")
        try:
            self._session = ort.InferenceSession(str(path), sess_options=opts,
                                                 providers=list(providers or
                                                                ["CPUExecutionProvider"]))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendError(f"onnxruntime could not load {path}: {exc}") from exc
        self.path = path
        self.inputs = [TensorInfo(i.name, _dims(i.shape),
                                  np.dtype(_ORT_TYPES.get(i.type, np.float32)))
                       for i in self._session.get_inputs()]
        self.outputs = [TensorInfo(o.name, _dims(o.shape),
                                   np.dtype(_ORT_TYPES.get(o.type, np.float32)))
                        for o in self._session.get_outputs()]
        LOG.info("onnxruntime %s: %s with %d threads", ort.__version__, path,
                 opts.intra_op_num_threads)

    def _run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        results = self._session.run(None, feeds)
        return dict(zip(self.output_names, results))

    def close(self) -> None:
        self._session = None
        super().close()
