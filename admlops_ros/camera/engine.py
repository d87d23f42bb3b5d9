"""CameraEngine: an mmdeploy mmdet end2end engine on any backend, checked against its spec."""
from __future__ import annotations

import logging
from typing import Any, Optional, Tuple

import numpy as np

from admlops_ros.backends import Backend, BackendError, create_backend
from admlops_ros.bundle.camera_spec import CameraBundle, CameraSpec

LOG = logging.getLogger(__name__)

__all__ = ["CameraEngine", "open_camera_engine", "check_camera_engine"]


def _dims(shape: Tuple[Optional[int], ...]) -> list:
    return [d if d is not None else "?" for d in shape]


def check_camera_engine(spec: CameraSpec, backend: Backend) -> None:
    """The engine's tensor names and static shapes fit the spec.

    Raises:
        BackendError: naming the tensor, the engine's value and the spec's.
    """
    eng, inp = spec.engine, spec.input
    name = backend.name
    if backend.input_names != [eng.input_name]:
        raise BackendError(f"{name}: engine inputs are {backend.input_names}, the spec's "
                           f"engine.input_name is {eng.input_name!r} (one input [1, 3, H, W])")
    missing = [n for n in eng.output_names if n not in backend.output_names]
    if missing:
        raise BackendError(f"{name}: engine outputs are {backend.output_names}, the spec's "
                           f"engine.output_names {list(eng.output_names)} (missing {missing})")
    shape = backend.inputs[0].shape
    if len(shape) != 4 or shape[1] not in (None, 3) or shape[0] not in (None, 1):
        raise BackendError(f"{name}: input {eng.input_name} has shape {_dims(shape)}, expected "
                           "[1, 3, H, W]")
    if not inp.dynamic_shape:
        for axis, key, want in ((2, "height", inp.height), (3, "width", inp.width)):
            got = shape[axis]
            if got is not None and got != want:
                raise BackendError(f"{name}: input {eng.input_name} {key} is {got} in the "
                                   f"engine but input.{key} is {want} in the spec; re-export "
                                   "the engine or fix spec.yaml")
    dets = next(t for t in backend.outputs if t.name == eng.output_names[0])
    labels = next(t for t in backend.outputs if t.name == eng.output_names[1])
    if len(dets.shape) != 3 or dets.shape[2] not in (None, 5):
        raise BackendError(f"{name}: output {dets.name} has shape {_dims(dets.shape)}, "
                           "expected [1, N, 5] (x1, y1, x2, y2, score)")
    if len(labels.shape) != 2:
        raise BackendError(f"{name}: output {labels.name} has shape {_dims(labels.shape)}, "
                           "expected [1, N]")


class CameraEngine:
    """An opened camera engine: ``input`` in, (dets [1, N, 5], labels [1, N]) out.

    Attributes:
        backend: the engine runner.
        spec: the spec it was checked against.
    """

    def __init__(self, backend: Backend, spec: CameraSpec) -> None:
        check_camera_engine(spec, backend)
        self.backend = backend
        self.spec = spec
        self._in = spec.engine.input_name
        self._dets, self._labels = spec.engine.output_names

    @property
    def name(self) -> str:
        return self.backend.name

    def infer(self, tensor: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Run the engine on one preprocessed image.

        Args:
            tensor: [1, 3, H, W] float32.

        Returns:
            (dets [1, N, 5] float32, labels [1, N] int64).
        """
        out = self.backend.run({self._in: tensor})
        dets = np.asarray(out[self._dets], dtype=np.float32)
        labels = np.asarray(out[self._labels])
        if dets.ndim != 3 or dets.shape[-1] != 5 or labels.shape != dets.shape[:2]:
            raise BackendError(f"{self.name}: outputs {self._dets} {list(dets.shape)} and "
                               f"{self._labels} {list(labels.shape)} are not [1, N, 5] and "
                               "[1, N]")
        return dets, labels.astype(np.int64, copy=False)

    def close(self) -> None:
        self.backend.close()


def open_camera_engine(backend: str, bundle: CameraBundle, **options: Any) -> CameraEngine:
    """Open the bundle's engine on a backend ("auto", "onnxruntime", "openvino", "tensorrt").

    Raises:
        BackendError: no usable backend or model file, or an engine that does not fit.
    """
    runner = create_backend(backend, bundle.model_paths(), **options)
    try:
        return CameraEngine(runner, bundle.spec)
    except Exception:
        runner.close()
        raise
