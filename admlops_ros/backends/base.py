"""Backend: one engine runner interface for every modality (named arrays in, named arrays out)."""
from __future__ import annotations

import abc
import logging
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from admlops_ros.errors import AdmlopsError

LOG = logging.getLogger(__name__)

Shape = Tuple[Optional[int], ...]  # None: dynamic dimension
# input name -> the axes a model with static shapes should make dynamic (e.g. the voxel axis)
DynamicAxes = Mapping[str, Sequence[int]]


class BackendError(AdmlopsError, RuntimeError):
    """An engine that cannot be loaded or run here; names the engine, the inputs and the fix."""


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape (None for dynamic dims) and numpy dtype of an engine input or output."""

    name: str
    shape: Shape
    dtype: np.dtype


def describe_shapes(arrays: Mapping[str, np.ndarray]) -> str:
    """'voxels [5000, 32, 4] float32, coors [5000, 4] int32' for error messages."""
    return ", ".join(f"{k} {list(np.shape(v))} {getattr(v, 'dtype', '?')}"
                     for k, v in arrays.items())


class Backend(abc.ABC):
    """An engine runner. Use as a context manager or call ``close()``.

    The runner knows nothing of the model: a pipeline (``lidar.engine``, the camera pipeline)
    checks that the engine fits its spec and feeds it by input name. Subclasses fill
    ``self.inputs`` / ``self.outputs`` when loaded and implement ``_run``.

    Attributes:
        inputs, outputs: the engine's tensors.
        precision: the compute precision actually used ("f32", "bf16", "f16").
        profile: input name -> (min, opt, max) shapes of an optimization profile (TensorRT
            engines with dynamic inputs); empty where any shape is accepted.
    """

    name = "base"

    def __init__(self) -> None:
        self.inputs: List[TensorInfo] = []
        self.outputs: List[TensorInfo] = []
        self.precision = "f32"
        self.profile: Dict[str, Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]] = {}
        self._closed = False

    @property
    def input_names(self) -> List[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> List[str]:
        return [t.name for t in self.outputs]

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Run the engine once.

        Args:
            feeds: input name -> array, every input of the engine (cast to its dtype).

        Returns:
            Output name -> array (owned by the caller).

        Raises:
            BackendError: a missing or unknown input, a static dimension that does not match,
                or a failure inside the engine (with the input shapes).
        """
        if self._closed:
            raise BackendError(f"{self.name}: run() after close()")
        missing = [n for n in self.input_names if n not in feeds]
        extra = sorted(set(feeds) - set(self.input_names))
        if missing or extra:
            raise BackendError(f"{self.name}: engine inputs are {self.input_names}; missing "
                               f"{missing}, unknown {extra}")
        hosts: Dict[str, np.ndarray] = {}
        for t in self.inputs:
            arr = np.ascontiguousarray(feeds[t.name], dtype=t.dtype)
            fixed = [(i, d) for i, d in enumerate(t.shape) if d is not None]
            if arr.ndim != len(t.shape) or any(arr.shape[i] != d for i, d in fixed):
                takes = [d if d is not None else "?" for d in t.shape]
                raise BackendError(f"{self.name}: input {t.name} has shape {list(arr.shape)}, "
                                   f"the engine takes {takes}")
            hosts[t.name] = arr
        try:
            return self._run(hosts)
        except BackendError:
            raise
        except Exception as exc:  # the runtimes raise their own exception types
            raise BackendError(f"{self.name}: inference failed on inputs "
                               f"{describe_shapes(hosts)}: {' '.join(str(exc).split())}"
                               ) from exc

    @abc.abstractmethod
    def _run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Backend-specific inference on checked, contiguous inputs of the engine's dtypes."""

    def close(self) -> None:
        """Release the engine (idempotent)."""
        self._closed = True

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} inputs={self.input_names} outputs={self.output_names}>"
