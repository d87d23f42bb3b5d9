"""CameraDetector: image in, Detections2D out, with preprocess/inference/postprocess visible."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Optional, Tuple, Union

import numpy as np

from admlops_ros.bundle.camera_spec import CameraBundle, CameraSpec, load_camera_bundle
from admlops_ros.camera.detections import Detections2D, warm_up
from admlops_ros.camera.engine import CameraEngine, open_camera_engine
from admlops_ros.camera.postprocess import postprocess, score_threshold_of
from admlops_ros.camera.preprocess import ImageMeta, Preprocessor
from admlops_ros.errors import AdmlopsError

LOG = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "openvino", "tensorrt", "mmdeploy_sdk")


class CameraDetectorError(AdmlopsError, ValueError):
    """A backend name that is not one of BACKENDS."""


class CameraDetector:
    """One 2D detection pipeline over a camera bundle's engine.

    Args:
        bundle: the loaded camera bundle.
        engine: its opened engine.
        score_threshold: overrides the spec's postprocess.score_threshold.
    """

    def __init__(self, bundle: CameraBundle, engine: CameraEngine,
                 score_threshold: Optional[float] = None) -> None:
        self.bundle = bundle
        self.spec: CameraSpec = bundle.spec
        self.engine = engine
        self.preprocessor = Preprocessor(self.spec)
        self.score_threshold = score_threshold_of(self.spec, score_threshold)

    @property
    def class_names(self) -> Tuple[str, ...]:
        return self.spec.class_names

    @property
    def backend_name(self) -> str:
        return self.engine.name

    @classmethod
    def from_bundle(cls, path: Union[str, Path], backend: str = "auto",
                    score_threshold: Optional[float] = None, **options: Any):
        """Load a camera bundle directory and open a backend on it.

        Args:
            path: bundle directory holding spec.yaml (modality camera).
            backend: auto, onnxruntime, openvino (f32 unless ``precision=``), tensorrt, or
                mmdeploy_sdk (the mmdeploy SDK on the bundle directory; returns an
                :class:`admlops_ros.camera.sdk.SdkDetector` with the same interface).
            score_threshold: overrides the spec's.
            **options: backend options (precision, num_threads, tensorrt_plan, ...).

        Raises:
            SpecError: invalid bundle or sha256 mismatch.
            BackendError: the backend cannot run here or the engine does not fit the spec.
            CameraDetectorError: an unknown backend name.
        """
        if backend not in BACKENDS:
            raise CameraDetectorError(f"backend {backend!r} unknown; choose one of "
                                      f"{list(BACKENDS)}")
        bundle = load_camera_bundle(path)
        if backend == "mmdeploy_sdk":
            from admlops_ros.camera.sdk import SdkDetector
            return SdkDetector(bundle, score_threshold=score_threshold, **options)
        engine = open_camera_engine(backend, bundle, **options)
        try:
            return cls(bundle, engine, score_threshold)
        except Exception:
            engine.close()
            raise

    # ------------------------------------------------------------------ the three steps
    def preprocess(self, image: np.ndarray) -> Tuple[np.ndarray, ImageMeta]:
        """[H, W, 3] uint8 bgr -> (input [1, 3, H', W'] float32, ImageMeta)."""
        return self.preprocessor(image)

    def inference(self, tensor: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """input -> (dets [1, N, 5] network pixels, labels [1, N] int64)."""
        return self.engine.infer(tensor)

    def postprocess(self, dets: np.ndarray, labels: np.ndarray,
                    meta: ImageMeta) -> Detections2D:
        """dets -> Detections2D in original-image pixels (threshold, rescale, clip)."""
        return postprocess(dets, labels, meta, self.score_threshold, self.class_names)

    def detect(self, image: np.ndarray) -> Detections2D:
        """Detect objects in one image.

        Args:
            image: [H, W, 3] uint8, bgr (OpenCV order).

        Returns:
            Detections2D with timings_ms preprocess, inference, postprocess, total.
        """
        t0 = time.perf_counter()
        tensor, meta = self.preprocess(image)
        t1 = time.perf_counter()
        dets, labels = self.inference(tensor)
        t2 = time.perf_counter()
        out = self.postprocess(dets, labels, meta)
        t3 = time.perf_counter()
        out.timings_ms = {"preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3,
                          "postprocess": (t3 - t2) * 1e3, "total": (t3 - t0) * 1e3}
        return out

    def warmup(self, runs: int = 2, image_size: Optional[Tuple[int, int]] = None) -> None:
        """Run the pipeline on a synthetic image (``image_size`` (h, w); default the input)."""
        warm_up(self, runs, image_size)

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> "CameraDetector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
