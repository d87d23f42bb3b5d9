"""Backend interface: run an engine on (voxels, num_points, coors) and check it fits the spec."""
from __future__ import annotations

import abc
import logging
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from admlops_ros.errors import AdmlopsError
from admlops_ros.lidar.layout import OutputLayout, resolve_layout
from admlops_ros.bundle.spec import ModelSpec

LOG = logging.getLogger(__name__)

INPUT_NAMES = ("voxels", "num_points", "coors")  # mmdeploy 1.x engine inputs, in this order

Shape = Tuple[Optional[int], ...]  # None: dynamic dimension


class BackendError(AdmlopsError, RuntimeError):
    """An engine that cannot be loaded or run, or that does not fit the spec."""


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape (None for dynamic dims) and numpy dtype of an engine input or output."""

    name: str
    shape: Shape
    dtype: np.dtype


class Backend(abc.ABC):
    """An engine runner. Use as a context manager or call ``close()``.

    Subclasses fill ``self.inputs`` / ``self.outputs`` and call ``_finish_init`` once loaded.
    """

    name = "base"

    def __init__(self) -> None:
        self.inputs: List[TensorInfo] = []
        self.outputs: List[TensorInfo] = []
        self.output_layout: Optional[OutputLayout] = None
        self.spec: Optional[ModelSpec] = None
        self._runtime_checked = False
        self._closed = False

    @property
    def input_names(self) -> List[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> List[str]:
        return [t.name for t in self.outputs]

    def _finish_init(self, spec: Optional[ModelSpec], output_layout: Optional[str]) -> None:
        """Check input names, detect the output layout and check static shapes against the spec."""
        if set(self.input_names) != set(INPUT_NAMES):
            raise BackendError(f"{self.name}: engine inputs are {self.input_names}, expected "
                               f"{list(INPUT_NAMES)} (mmdeploy 1.x voxel detection)")
        self.spec = spec
        expected = output_layout or (spec.engine.output_layout if spec else None)
        self.output_layout = resolve_layout(self.output_names, expected)
        LOG.info("%s: output layout %s (%s)", self.name, self.output_layout.name,
                 self.output_layout.description)
        if spec is not None:
            check_engine_against_spec(spec, {t.name: t.shape for t in self.inputs},
                                      {t.name: t.shape for t in self.outputs},
                                      self.output_layout, engine=self.name)

    def infer(self, voxels: np.ndarray, num_points: np.ndarray,
              coors: np.ndarray) -> Dict[str, np.ndarray]:
        """Run the engine on one frame.

        Args:
            voxels: [V, max_points, C] float32, zero-padded points per voxel (LiDAR frame).
            num_points: [V] int32 points per voxel.
            coors: [V, 4] int32 (batch=0, z, y, x) voxel indices.

        Returns:
            Engine output name -> array (see ``output_layout``).
        """
        if self._closed:
            raise BackendError(f"{self.name}: infer() after close()")
        voxels = np.ascontiguousarray(voxels, dtype=np.float32)
        num_points = np.ascontiguousarray(num_points, dtype=np.int32)
        coors = np.ascontiguousarray(coors, dtype=np.int32)
        v = voxels.shape[0] if voxels.ndim == 3 else -1
        if voxels.ndim != 3 or num_points.shape != (v,) or coors.shape != (v, 4):
            raise BackendError(f"{self.name}: inputs must be voxels [V, M, C], num_points [V], "
                               f"coors [V, 4]; got {voxels.shape}, {num_points.shape}, "
                               f"{coors.shape}")
        if v == 0:
            raise BackendError(f"{self.name}: no voxels (empty cloud); the caller returns empty "
                               "detections without running the engine")
        static_c = self._input_shape("voxels")[2]
        if static_c is not None and voxels.shape[2] != static_c:
            raise BackendError(f"{self.name}: voxels have C={voxels.shape[2]} channels, the "
                               f"engine takes {static_c}")
        out = self._infer(voxels, num_points, coors)
        if not self._runtime_checked and self.spec is not None:
            check_engine_against_spec(
                self.spec, {"voxels": voxels.shape, "num_points": num_points.shape,
                            "coors": coors.shape},
                {k: a.shape for k, a in out.items()}, self.output_layout, engine=self.name)
        self._runtime_checked = True
        return out

    def _input_shape(self, name: str) -> Shape:
        for t in self.inputs:
            if t.name == name:
                return t.shape
        raise KeyError(name)

    @abc.abstractmethod
    def _infer(self, voxels: np.ndarray, num_points: np.ndarray,
               coors: np.ndarray) -> Dict[str, np.ndarray]:
        """Backend-specific inference on validated, contiguous inputs."""

    def close(self) -> None:
        """Release the engine (idempotent)."""
        self._closed = True

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        layout = self.output_layout.name if self.output_layout else "?"
        return f"<{type(self).__name__} inputs={self.input_names} layout={layout}>"


def _dims(shape: Sequence[Optional[int]], idx: int) -> Optional[int]:
    return shape[idx] if len(shape) > idx else None


def check_engine_against_spec(spec: ModelSpec, input_shapes: Mapping[str, Sequence],
                              output_shapes: Mapping[str, Sequence], layout: OutputLayout,
                              engine: str = "engine") -> None:
    """Raise ``BackendError`` naming both values when the engine does not fit the spec.

    Dimensions given as None (dynamic) are skipped; call again with the shapes of a real
    inference to check them.
    """
    problems: List[str] = []
    vox = tuple(input_shapes.get("voxels", ()))
    c = _dims(vox, 2)
    if c is not None and c != spec.input.num_features:
        problems.append(f"voxels last dim (C) is {c} but spec input.point_features has "
                        f"{spec.input.num_features} ({', '.join(spec.input.point_features)})")
    m = _dims(vox, 1)
    if m is not None and m != spec.voxelization.max_points:
        problems.append(f"voxels dim 1 (max points per voxel) is {m} but spec "
                        f"voxelization.max_points is {spec.voxelization.max_points}")
    if layout.decoded:
        boxes = tuple(output_shapes.get(layout.decoded_names[0], ()))
        code = _dims(boxes, len(boxes) - 1) if boxes else None
        if code is not None and code != spec.box_coder.code_size:
            problems.append(f"{layout.decoded_names[0]} last dim is {code} but spec "
                            f"box_coder.code_size is {spec.box_coder.code_size}")
    else:
        if layout.num_levels != 1:
            problems.append(f"engine has {layout.num_levels} output levels but the spec "
                            "describes one (anchors.feature_map_size)")
        n_cls, n_bbox, n_dir = spec.head_channels
        a, k = spec.anchors.num_anchors, spec.num_classes
        fm = tuple(spec.anchors.feature_map_size)
        checks = [(layout.cls_names, n_cls, f"anchors per cell ({a}) * num_classes ({k})"),
                  (layout.bbox_names, n_bbox,
                   f"anchors per cell ({a}) * box_coder.code_size ({spec.box_coder.code_size})")]
        if spec.head.use_direction_classifier:
            if not layout.dir_names:
                problems.append("spec head.use_direction_classifier is true but the engine has "
                                "no direction output")
            checks.append((layout.dir_names, n_dir, f"anchors per cell ({a}) * 2"))
        elif layout.dir_names:
            problems.append(f"engine has direction output {layout.dir_names[0]} but spec "
                            "head.use_direction_classifier is false")
        for names, want, why in checks:
            if not names:
                continue
            shape = tuple(output_shapes.get(names[0], ()))
            ch = _dims(shape, 1)
            if ch is not None and ch != want:
                problems.append(f"{names[0]} has {ch} channels but the spec implies {want} = {why}")
            hw = (_dims(shape, 2), _dims(shape, 3))
            if None not in hw and hw != fm:
                problems.append(f"{names[0]} map is {list(hw)} (H, W) but spec "
                                f"anchors.feature_map_size is {list(fm)}")
    if problems:
        raise BackendError(f"{engine} does not match spec {spec.name!r}: " + "; ".join(problems)
                           + ". Use the spec.yaml written for this engine (admlops "
                           "spec-from-config with the model config it was exported from).")
