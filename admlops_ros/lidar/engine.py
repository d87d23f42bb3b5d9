"""VoxelEngine: an mmdeploy voxel-detection engine on any backend, checked against its spec.

The backends run named arrays; this module knows what a voxel engine takes (voxels [V, M, C],
num_points [V], coors [V, 4] with a dynamic V), which output layout it has, and whether its
shapes fit the bundle's spec. TensorRT plans have a minimum V: smaller frames are padded.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from admlops_ros.backends import Backend, BackendError, create_backend, model_files
from admlops_ros.bundle.files import EngineBundle
from admlops_ros.bundle.spec import ModelSpec
from admlops_ros.lidar.layout import OutputLayout, resolve_layout

LOG = logging.getLogger(__name__)

__all__ = ["INPUT_NAMES", "VoxelEngine", "open_voxel_engine", "check_engine_against_spec",
           "check_scatter_canvas", "check_profile_range", "pad_voxels"]

INPUT_NAMES = ("voxels", "num_points", "coors")  # mmdeploy 1.x engine inputs, in this order
VOXEL_AXES = {name: (0,) for name in INPUT_NAMES}  # V is dynamic in every input


class VoxelEngine:
    """An opened voxel-detection engine: (voxels, num_points, coors) in, head outputs out.

    Attributes:
        backend: the engine runner (``backend.name``, ``backend.precision``, ...).
        spec: the bundle spec it was checked against, or None.
        output_layout: which output holds what (detected from the names, checked against
            the spec's ``engine.output_layout``).
    """

    def __init__(self, backend: Backend, spec: Optional[ModelSpec] = None,
                 output_layout: Optional[str] = None, probe_canvas: bool = True) -> None:
        """Check the engine's inputs, detect its output layout and check it against the spec.

        With a spec, the engine's scatter canvas is probed too (``check_scatter_canvas``:
        three one-pillar inferences; not on TensorRT, where an out-of-range voxel is not a
        clean error).

        Raises:
            BackendError: inputs other than mmdeploy's, or shapes that do not fit the spec.
            LayoutError: output names of no known layout, or not the spec's layout.
        """
        if set(backend.input_names) != set(INPUT_NAMES):
            raise BackendError(f"{backend.name}: engine inputs are {backend.input_names}, "
                               f"expected {list(INPUT_NAMES)} (mmdeploy 1.x voxel detection)")
        self.backend = backend
        self.spec = spec
        expected = output_layout or (spec.engine.output_layout if spec else None)
        self.output_layout: OutputLayout = resolve_layout(backend.output_names, expected)
        LOG.info("%s: output layout %s (%s)", backend.name, self.output_layout.name,
                 self.output_layout.description)
        self._runtime_checked = False
        if spec is not None:
            check_engine_against_spec(spec, {t.name: t.shape for t in backend.inputs},
                                      {t.name: t.shape for t in backend.outputs},
                                      self.output_layout, engine=backend.name)
            if probe_canvas and not self.output_layout.decoded and backend.name != "tensorrt":
                check_scatter_canvas(self, spec)

    @property
    def name(self) -> str:
        return self.backend.name

    def _input_shape(self, name: str) -> Tuple[Optional[int], ...]:
        return next(t.shape for t in self.backend.inputs if t.name == name)

    def infer(self, voxels: np.ndarray, num_points: np.ndarray,
              coors: np.ndarray) -> Dict[str, np.ndarray]:
        """Run the engine on one frame.

        Args:
            voxels: [V, max_points, C] float32, zero-padded points per voxel (LiDAR frame).
            num_points: [V] int32 points per voxel.
            coors: [V, 4] int32 (batch=0, z, y, x) voxel indices.

        Returns:
            Engine output name -> array (see ``output_layout``).

        Raises:
            BackendError: inputs of the wrong shapes, more voxels than a TensorRT profile
                takes, or a failure inside the engine.
        """
        voxels = np.ascontiguousarray(voxels, dtype=np.float32)
        num_points = np.ascontiguousarray(num_points, dtype=np.int32)
        coors = np.ascontiguousarray(coors, dtype=np.int32)
        name = self.backend.name
        v = voxels.shape[0] if voxels.ndim == 3 else -1
        if voxels.ndim != 3 or num_points.shape != (v,) or coors.shape != (v, 4):
            raise BackendError(f"{name}: inputs must be voxels [V, M, C], num_points [V], "
                               f"coors [V, 4]; got {voxels.shape}, {num_points.shape}, "
                               f"{coors.shape}")
        if v == 0:
            raise BackendError(f"{name}: no voxels (empty cloud); the caller returns empty "
                               "detections without running the engine")
        static_c = self._input_shape("voxels")[2]
        if static_c is not None and voxels.shape[2] != static_c:
            raise BackendError(f"{name}: voxels have C={voxels.shape[2]} channels, the "
                               f"engine takes {static_c}")
        profile = self.backend.profile.get("voxels")
        if profile is not None:
            lo, hi = profile[0][0], profile[2][0]
            check_profile_range(v, lo, hi)
            voxels, num_points, coors = pad_voxels(voxels, num_points, coors, lo)
        out = self.backend.run({"voxels": voxels, "num_points": num_points, "coors": coors})
        if not self._runtime_checked and self.spec is not None:
            check_engine_against_spec(
                self.spec, {"voxels": voxels.shape, "num_points": num_points.shape,
                            "coors": coors.shape},
                {k: a.shape for k, a in out.items()}, self.output_layout, engine=name)
        self._runtime_checked = True
        return out

    def close(self) -> None:
        """Release the engine (idempotent)."""
        self.backend.close()

    def __enter__(self) -> "VoxelEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<VoxelEngine {self.backend.name} inputs={self.backend.input_names} "
                f"layout={self.output_layout.name}>")


def open_voxel_engine(backend: str,
                      bundle_or_paths: Union[EngineBundle, str, Path, Mapping[str, Any]],
                      spec: Optional[ModelSpec] = None, output_layout: Optional[str] = None,
                      **options: Any) -> VoxelEngine:
    """Open a voxel engine with the named backend and check it against the spec.

    Args:
        backend: "auto", "onnxruntime", "openvino" or "tensorrt" (see ``create_backend``).
        bundle_or_paths: an ``EngineBundle`` (its spec is used), a bundle directory, a model
            file, or a dict with keys spec, onnx, openvino_xml, tensorrt_plan.
        spec: the spec to check against (default: the bundle's).
        output_layout: force a layout name instead of the spec's / detection.
        **options: backend options (precision, num_threads, plugins, tensorrt_plan, ...).

    Raises:
        BackendError, LayoutError: see ``VoxelEngine``; SpecError for an invalid bundle.
    """
    bundle_spec = model_files(bundle_or_paths)[0]
    spec = spec if spec is not None else bundle_spec
    if spec is not None and not isinstance(spec, ModelSpec):
        raise BackendError(f"spec must be a ModelSpec, got {type(spec).__name__}")
    runner = create_backend(backend, bundle_or_paths, dynamic_axes=VOXEL_AXES, **options)
    try:
        return VoxelEngine(runner, spec, output_layout)
    except Exception:
        runner.close()
        raise


def check_profile_range(num_voxels: int, profile_min: int, profile_max: int,
                        tensor: str = "voxels") -> None:
    """Raise if V is above the optimization profile (below it is padded, see ``pad_voxels``).

    Args:
        num_voxels: V of this frame.
        profile_min, profile_max: the engine profile's first-dimension range of ``tensor``.
    """
    if num_voxels > profile_max:
        raise BackendError(
            f"{num_voxels} voxels exceed the TensorRT optimization profile of input {tensor!r} "
            f"(min {profile_min}, max {profile_max}); lower voxelization.max_voxels in spec.yaml "
            f"to <= {profile_max}, or rebuild the engine with max_voxels >= {num_voxels} "
            "(build_engine_from_onnx / engine.tensorrt_profile)")
    if num_voxels < 1:
        raise BackendError(f"no voxels for input {tensor!r}: skip inference for empty clouds")


def pad_voxels(voxels: np.ndarray, num_points: np.ndarray, coors: np.ndarray,
               min_voxels: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pad V up to ``min_voxels`` by repeating the last voxel (same points, same cell).

    A repeated voxel yields the same pillar feature scattered to the same canvas cell, so the
    network output is unchanged; this lets frames with few voxels run on engines whose
    profile minimum is above V (mmdeploy KITTI: 2000).
    """
    v = len(voxels)
    if v >= min_voxels or v == 0:
        return voxels, num_points, coors
    idx = np.concatenate([np.arange(v), np.full(min_voxels - v, v - 1)])
    return voxels[idx], num_points[idx], coors[idx]


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
        problems += _head_output_problems(spec, output_shapes, layout)
    if problems:
        raise BackendError(f"{engine} does not match spec {spec.name!r}: " + "; ".join(problems)
                           + ". Use the spec.yaml written for this engine (admlops "
                           "spec-from-config with the model config it was exported from).")


def _head_output_problems(spec: ModelSpec, output_shapes: Mapping[str, Sequence],
                          layout: OutputLayout) -> List[str]:
    """What in the raw head outputs (levels, channels, maps) does not fit the spec."""
    problems: List[str] = []
    maps = spec.head_feature_map_sizes
    where = ("center_head.out_size_factor" if spec.family == "centerpoint"
             else "anchors.feature_map_size")
    if layout.num_levels != len(maps):
        problems.append(f"engine has {layout.num_levels} output levels but the spec "
                        f"describes {len(maps)} ({where})")
    n_cls, n_bbox, n_dir = spec.head_channels
    k, code = spec.num_classes, spec.box_coder.code_size
    if spec.family == "centerpoint":
        tasks = spec.center_head.num_tasks
        why = (f"num_classes ({k}) over {tasks} tasks",
               f"{tasks} tasks * (reg 2, height 1, dim 3{', vel 2' if code == 9 else ''})",
               f"{tasks} tasks * (sin, cos)")
        use_dir = True
    else:
        a = spec.anchors.num_anchors
        why = (f"anchors per cell ({a}) * num_classes ({k})",
               f"anchors per cell ({a}) * box_coder.code_size ({code})",
               f"anchors per cell ({a}) * 2")
        use_dir = spec.head.use_direction_classifier
    checks = [(layout.cls_names, n_cls, why[0]), (layout.bbox_names, n_bbox, why[1])]
    if use_dir:
        if not layout.dir_names:
            problems.append("the spec needs a direction output (head.use_direction_classifier "
                            "or CenterHead rot) but the engine has none")
        checks.append((layout.dir_names, n_dir, why[2]))
    elif layout.dir_names:
        problems.append(f"engine has direction output {layout.dir_names[0]} but spec "
                        "head.use_direction_classifier is false")
    for names, want, reason in checks:
        for level, name in enumerate(names[:len(maps)]):
            shape = tuple(output_shapes.get(name, ()))
            ch = _dims(shape, 1)
            if ch is not None and ch != want:
                problems.append(f"{name} has {ch} channels but the spec implies {want} = "
                                f"{reason}")
            hw = (_dims(shape, 2), _dims(shape, 3))
            if None not in hw and hw != tuple(maps[level]):
                problems.append(f"{name} map is {list(hw)} (H, W) but the spec's {where} "
                                f"gives {list(maps[level])}")
    return problems


def _pillar(spec: ModelSpec, y: int, x: int, points: np.ndarray):
    """Engine inputs of one voxel at canvas cell (y, x) holding ``points`` (offsets in [0, 1)
    of the voxel's extent, LiDAR frame)."""
    vox = spec.voxelization
    size = np.asarray(vox.voxel_size, np.float32)
    lo = np.asarray(vox.point_cloud_range[:3], np.float32)
    voxels = np.zeros((1, vox.max_points, spec.input.num_features), np.float32)
    pts = points.copy()
    pts[:, :3] = lo + (np.array([x, y, 0], np.float32) + points[:, :3]) * size
    voxels[0, :len(pts)] = pts
    return voxels, np.array([len(pts)], np.int32), np.array([[0, 0, y, x]], np.int32)


def check_scatter_canvas(engine: VoxelEngine, spec: ModelSpec) -> None:
    """Check that the engine scatters voxels on the canvas the spec's voxel grid implies.

    The canvas is internal to the engine, so it is probed: one pillar at the far corner of the
    spec's grid (A), at (0, 0) (B) and at (0, far x) (C), with the same points. A spec whose
    grid is larger than the engine's canvas makes A fail (the scatter index is out of range).
    One whose grid is smaller (e.g. voxel_size doubled) runs but lies: A's response, the only
    one present in both |A - B| and |A - C|, then lands inside the head map instead of at its
    far corner. A model that does not respond to one pillar is not judged.

    Raises:
        BackendError: naming the spec's grid, where the probe landed and the fix.
    """
    ny, nx = spec.voxelization.canvas_shape
    fix = ("use the spec.yaml written for this engine (voxelization.voxel_size and "
           "point_cloud_range of the model config it was exported from)")
    rng = np.random.default_rng(0)
    points = rng.uniform(0.0, 1.0, (min(spec.voxelization.max_points, 8),
                                    spec.input.num_features)).astype(np.float32)
    cls_name = engine.output_layout.cls_names[0]

    def response(y: int, x: int) -> np.ndarray:
        out = engine.backend.run(dict(zip(INPUT_NAMES, _pillar(spec, y, x, points))))
        return np.asarray(out[cls_name], np.float64)[0]

    try:
        far = response(ny - 1, nx - 1)
    except BackendError as exc:
        raise BackendError(
            f"{engine.name}: spec {spec.name!r} has a voxel grid of {ny} x {nx} (y, x) cells, "
            f"larger than the engine's scatter canvas: a voxel at its far corner (y {ny - 1}, "
            f"x {nx - 1}) fails ({exc}); {fix}") from None
    diff = np.minimum(np.abs(far - response(0, 0)), np.abs(far - response(0, nx - 1)))
    diff = diff.sum(axis=0)
    if not diff.max() > 1e-6 * (np.abs(far).max() + 1e-12):
        LOG.debug("%s: scatter canvas not probed (no response to one pillar)", engine.name)
        return
    h, w = diff.shape
    found = np.unravel_index(int(diff.argmax()), diff.shape)
    tol_y, tol_x = max(2, h // 8), max(2, w // 8)
    if abs(found[0] - (h - 1)) > tol_y or abs(found[1] - (w - 1)) > tol_x:
        raise BackendError(
            f"{engine.name}: spec {spec.name!r} has a voxel grid of {ny} x {nx} (y, x) cells, "
            f"but the engine's scatter canvas is larger: a pillar at the grid's far corner "
            f"shows in head map cell {[int(found[0]), int(found[1])]} instead of near "
            f"{[h - 1, w - 1]} (the {h} x {w} map's corner), so every box would be misplaced; "
            f"{fix}")
