"""LidarDetector: the one pipeline class, points -> voxels -> engine -> decode -> Detections."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Union

import numpy as np

from admlops_ros.backends.tensorrt_backend import tensorrt_available
from admlops_ros.bundle.files import EngineBundle, load_bundle
from admlops_ros.errors import AdmlopsError
from admlops_ros.lidar.detections import Detections
from admlops_ros.lidar.engine import VoxelEngine, open_voxel_engine
from admlops_ros.lidar.heads import decoder_from_spec
from admlops_ros.lidar.layout import DecodedOutputs, to_head_outputs
from admlops_ros.lidar.voxelize import PointShuffler, Voxelizer, Voxels, with_batch_index
from admlops_ros.paths import default_bundle_path

LOG = logging.getLogger(__name__)


class DetectorError(AdmlopsError):
    """Bad input to, or bad configuration of, a LidarDetector."""


class LidarDetector:
    """3D object detection on one lidar scan with an mmdeploy-style engine.

    The three visible steps are :meth:`preprocess` (validate, scale intensity, voxelize),
    :meth:`inference` (the engine) and :meth:`postprocess` (anchor decode, NMS);
    :meth:`detect` runs them and records the time of each.
    """

    def __init__(self, bundle: EngineBundle, engine: VoxelEngine,
                 score_threshold: Optional[float] = None,
                 intensity_scale: Optional[float] = None,
                 class_filter: Optional[Iterable[str]] = None) -> None:
        """Wire a loaded bundle and an opened backend.

        Args:
            bundle: the engine bundle (spec.yaml and files), see :func:`load_bundle`.
            engine: the bundle's engine, opened on a backend (:func:`open_voxel_engine`).
            score_threshold: overrides the spec's ``test_cfg.score_thr`` when given.
            intensity_scale: overrides the spec's ``input.intensity_scale`` (raw sensor
                intensity is multiplied by it, e.g. 1/255 for 0..255 sensors).
            class_filter: class names to keep; None keeps all.
        """
        spec = bundle.spec
        self.bundle = bundle
        self.engine = engine
        self.class_names = tuple(spec.class_names)
        self.point_features = tuple(spec.input.point_features)
        self.intensity_scale = float(spec.input.intensity_scale if intensity_scale is None
                                     else intensity_scale)
        self._intensity_column = (self.point_features.index("intensity")
                                  if "intensity" in self.point_features else None)
        vox = spec.voxelization
        self.voxelizer = Voxelizer(vox.voxel_size, vox.point_cloud_range, vox.max_points,
                                   vox.max_voxels)
        self.shuffler = PointShuffler() if spec.input.shuffle_points else None
        self.decoder = decoder_from_spec(spec)
        self._with_velocity = spec.box_coder.code_size >= 9
        if score_threshold is not None:
            if not 0.0 <= float(score_threshold) <= 1.0:
                raise DetectorError(
                    f"score_threshold must be in [0, 1], got {score_threshold}")
            self.decoder.score_thr = float(score_threshold)
        self._keep_labels = self._class_filter_labels(class_filter)
        self.last_voxels: Optional[Voxels] = None

    @classmethod
    def from_bundle(cls, path: Union[str, Path, None] = None, backend: str = "auto",
                    score_threshold: Optional[float] = None,
                    intensity_scale: Optional[float] = None,
                    class_filter: Optional[Iterable[str]] = None,
                    **backend_options) -> "LidarDetector":
        """Load an engine bundle directory and open a backend on it.

        Args:
            path: bundle directory holding spec.yaml; None for the shipped default.
            backend: ``auto``, ``onnxruntime``, ``openvino`` or ``tensorrt``.
            score_threshold, intensity_scale, class_filter: see :meth:`__init__`.
            **backend_options: passed to the backend, e.g. ``precision="f32"`` for OpenVINO;
                for TensorRT also ``tensorrt_allow_build`` / ``tensorrt_cache_dir`` (the plan
                is picked from the bundle's cache for this GPU and TensorRT version).

        Raises:
            SpecError: the bundle is invalid or its files do not match their sha256.
            BackendError: the backend cannot run here or the engine does not match the spec.
        """
        bundle = load_bundle(Path(path) if path is not None else default_bundle_path())
        trt_options = {key: backend_options.pop(key) for key in list(backend_options)
                       if key.startswith("tensorrt_")}
        if backend == "tensorrt" or (backend == "auto" and tensorrt_available()):
            backend_options = _with_tensorrt_plan(bundle, {**backend_options, **trt_options})
            backend = "tensorrt"
        engine = open_voxel_engine(backend, bundle, **backend_options)
        try:
            return cls(bundle, engine, score_threshold, intensity_scale, class_filter)
        except Exception:
            engine.close()
            raise

    def __enter__(self) -> "LidarDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the engine."""
        self.engine.close()

    def _class_filter_labels(self, class_filter: Optional[Iterable[str]]) -> Optional[np.ndarray]:
        if class_filter is None:
            return None
        names = list(class_filter)
        unknown = [n for n in names if n not in self.class_names]
        if unknown:
            raise DetectorError(
                f"class_filter has unknown classes {unknown}; this model's classes are "
                f"{list(self.class_names)}")
        return np.array([self.class_names.index(n) for n in names], dtype=np.int64)

    def warmup(self, runs: int = 2) -> None:
        """Compile kernels and run the engine on a synthetic cloud so frame 1 is not slow."""
        self.voxelizer.warmup()
        self.decoder.warmup()
        lo = np.asarray(self.voxelizer.point_cloud_range[:3], np.float32)
        hi = np.asarray(self.voxelizer.point_cloud_range[3:], np.float32)
        rng = np.random.default_rng(0)
        # fewer points than max_voxels: warm-up must not trip the once-only overflow warning
        points = np.zeros((max(1, self.voxelizer.max_voxels // 2), len(self.point_features)),
                          np.float32)
        points[:, :3] = lo + (hi - lo) * rng.random((len(points), 3), dtype=np.float32)
        for _ in range(runs):
            self.detect(points)

    def preprocess(self, points: np.ndarray) -> Voxels:
        """Validate a cloud, drop non-finite rows, shuffle, scale intensity, voxelize.

        The model's shuffle and intensity scale are applied without copying the cloud
        (:meth:`Voxelizer.voxelize_scan`); the result is that of filtering, shuffling and
        scaling a copy, then voxelizing it.

        Args:
            points: [N, C] float32 in the LiDAR frame (metres), columns ``point_features``.

        Returns:
            Voxels with coors (z, y, x).

        Raises:
            DetectorError: wrong shape, channel count or dtype (bool, complex, strings).
        """
        points = np.asarray(points)
        if points.ndim != 2 or points.shape[1] != len(self.point_features):
            raise DetectorError(
                f"points must be [N, {len(self.point_features)}] with columns "
                f"{list(self.point_features)}, got shape {tuple(points.shape)}; convert the "
                "cloud with pointcloud2_to_array(msg, fields=detector.point_features)")
        if points.dtype.kind not in "fiu":  # bool, complex, strings, objects: no coordinates
            raise DetectorError(
                f"points must be a real-valued array (float32), got dtype {points.dtype}; "
                "convert the cloud with pointcloud2_to_array")
        # rows with a non-finite value are dropped, the rest shuffled and scaled, all in one
        # pass that copies only the stored points (1M-point clouds)
        return self.voxelizer.voxelize_scan(points.astype(np.float32, copy=False),
                                            self.shuffler, self._intensity_column,
                                            self.intensity_scale)

    def inference(self, voxels: Voxels) -> Dict[str, np.ndarray]:
        """Run the engine on voxels; returns its raw outputs by name."""
        return self.engine.infer(voxels.voxels, voxels.num_points,
                                 with_batch_index(voxels.coors))

    def postprocess(self, outputs: Dict[str, np.ndarray]) -> Detections:
        """Decode raw engine outputs into boxes (anchor decode, direction, NMS)."""
        head = to_head_outputs(outputs, self.engine.output_layout)
        if isinstance(head, DecodedOutputs):
            keep = head.scores > self.decoder.score_thr
            detections = Detections(head.boxes[keep], head.scores[keep], head.labels[keep],
                                    self.class_names)
        else:
            detections = self.decoder.decode(head.cls_scores, head.bbox_preds,
                                             head.dir_cls_preds)
        if self._keep_labels is not None:
            detections = detections.select(np.isin(detections.labels, self._keep_labels))
        return detections

    def detect(self, points: np.ndarray) -> Detections:
        """Detect objects in one scan.

        Args:
            points: [N, C] float32, LiDAR frame, metres; columns ``point_features``.

        Returns:
            Detections (boxes bottom-centre, LiDAR frame) with ``timings_ms`` for
            preprocess, inference, postprocess and total. An empty cloud, or one with no
            point inside the model's range, gives empty Detections.
        """
        t0 = time.perf_counter()
        voxels = self.preprocess(points)
        self.last_voxels = voxels
        t1 = time.perf_counter()
        if len(voxels.num_points) == 0:
            detections = Detections.empty(self.class_names, self._with_velocity)
            t2 = t3 = t1
        else:
            outputs = self.inference(voxels)
            t2 = time.perf_counter()
            detections = self.postprocess(outputs)
            t3 = time.perf_counter()
        detections.timings_ms = {
            "preprocess": (t1 - t0) * 1e3,
            "inference": (t2 - t1) * 1e3,
            "postprocess": (t3 - t2) * 1e3,
            "total": (t3 - t0) * 1e3,
        }
        return detections

    def infer_raw(self, points: np.ndarray) -> Dict[str, np.ndarray]:
        """Raw engine outputs for a cloud (for backend parity checks)."""
        return self.inference(self.preprocess(points))


def _with_tensorrt_plan(bundle: EngineBundle, options: Dict[str, object]) -> Dict[str, object]:
    """Backend options with the plan the engine cache picks (or builds) for this GPU.

    Options consumed here: ``precision`` (f32 | f16 | int8: an int8 plan built by
    ``build-engine --int8``), ``tensorrt_allow_build`` (build from ONNX
    when no cached plan fits), ``tensorrt_cache_dir`` and ``tensorrt_strict_gpu_model``.
    """
    from admlops_ros.backends.tensorrt_cache import resolve_tensorrt_plan
    options = dict(options)
    precision = str(options.pop("precision", "f32"))
    plan_precision = {"f32": "fp32", "f16": "fp16", "int8": "int8"}.get(precision)
    if plan_precision is None:
        raise DetectorError(f"tensorrt precision must be f32, f16 or int8, got {precision!r}")
    plan = options.pop("tensorrt_plan", None) or resolve_tensorrt_plan(
        bundle, precision=plan_precision,
        allow_build=bool(options.pop("tensorrt_allow_build", False)),
        cache_dir=options.pop("tensorrt_cache_dir", None) or None,
        strict_gpu_model=bool(options.pop("tensorrt_strict_gpu_model", False)))
    options["tensorrt_plan"] = plan
    return options


def detector_summary(detector: LidarDetector) -> Dict[str, object]:
    """A small dict describing a loaded detector (for logs and reports)."""
    return {
        "bundle": str(detector.bundle.root),
        "model": detector.bundle.spec.name,
        "backend": detector.engine.name,
        "output_layout": str(detector.engine.output_layout),
        "classes": list(detector.class_names),
        "point_features": list(detector.point_features),
        "shuffle_points": detector.shuffler is not None,
    }


__all__: Sequence[str] = ("LidarDetector", "DetectorError", "default_bundle_path",
                          "detector_summary")
