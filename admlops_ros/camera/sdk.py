"""SdkDetector: the real mmdeploy SDK (mmdeploy_runtime.Detector) on a camera bundle directory.

The SDK reads deploy.json, pipeline.json and detail.json beside end2end.onnx and does its own
preprocessing (pipeline.json transforms), inference (its bundled ONNX Runtime 1.15.1) and
ResizeBBox postprocess; this class gives its result as the same Detections2D as
:class:`admlops_ros.camera.detector.CameraDetector`. The SDK's bundled ONNX Runtime and the
onnxruntime wheel were checked to load and run in one process (either import order); with
``isolate=True`` the SDK runs in a child process instead, so an SDK abort does not end the
caller.
"""
from __future__ import annotations

import time
from typing import Any, Optional, Tuple

import numpy as np

from admlops_ros.backends import BackendError
from admlops_ros.bundle.camera_spec import SDK_FILES, CameraBundle, CameraSpec
from admlops_ros.camera.detections import Detections2D, warm_up
from admlops_ros.camera.postprocess import score_threshold_of
from admlops_ros.camera.preprocess import PreprocessError

SDK_PIP = "pip install mmdeploy-runtime==1.3.1"
WORKER_TIMEOUT_S = 60.0  # one image (model load included in the first answer)


def _sdk_worker(conn, model_path: str, device_name: str, device_id: int) -> None:
    """Child process of ``isolate=True``: load the SDK detector, answer images until None."""
    try:
        import mmdeploy_runtime
        det = mmdeploy_runtime.Detector(model_path=model_path, device_name=device_name,
                                        device_id=device_id)
        conn.send(("ready", None))
    except Exception as exc:  # reported to the parent, which raises BackendError
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    while True:
        image = conn.recv()
        if image is None:
            return
        try:
            result = det(image)
            conn.send(("ok", (np.asarray(result[0]), np.asarray(result[1]))))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class _IsolatedSdk:
    """The SDK detector in a spawned child process: an SDK abort (C++ terminate on a failed
    transform) kills the child, not the caller; the next image starts a new child."""

    def __init__(self, model_path: str, device_name: str, device_id: int) -> None:
        self._args = (model_path, device_name, device_id)
        self._proc = None
        self._conn = None
        self._start()

    def _start(self) -> None:
        import multiprocessing
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_sdk_worker, args=(child,) + self._args, daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent
        self._answer("loading the model")

    def _answer(self, what: str):
        try:
            if not self._conn.poll(WORKER_TIMEOUT_S):
                raise EOFError("timeout")
            status, payload = self._conn.recv()
        except (EOFError, OSError) as exc:
            self._proc.join(1.0)
            code = self._proc.exitcode
            self.close()
            raise BackendError(f"mmdeploy_sdk worker died while {what} (exit code {code}, "
                               f"{exc or 'no answer'}); the next image starts a new one"
                               ) from None
        if status == "error":
            raise BackendError(f"mmdeploy_sdk failed while {what}: {payload}")
        return payload

    def __call__(self, image: np.ndarray):
        if self._proc is None:
            self._start()
        self._conn.send(image)
        return self._answer(f"detecting on a {image.shape[1]}x{image.shape[0]} image")

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.send(None)
            except (OSError, ValueError):
                pass
            self._conn.close()
        if self._proc is not None:
            self._proc.join(2.0)
            if self._proc.is_alive():
                self._proc.kill()
        self._proc = self._conn = None


def _runtime():
    try:
        import mmdeploy_runtime
    except ImportError as exc:
        raise BackendError(f"backend 'mmdeploy_sdk' needs the mmdeploy SDK: `{SDK_PIP}` "
                           f"(CPU wheel, bundles ONNX Runtime 1.15.1); import failed: {exc}"
                           ) from exc
    return mmdeploy_runtime


class SdkDetector:
    """mmdeploy_runtime.Detector over a camera bundle, with CameraDetector's interface.

    Args:
        bundle: a loaded camera bundle holding the SDK json files.
        score_threshold: keep score > this (default the spec's; the SDK's ResizeBBox applies
            pipeline.json's score_thr first).
        device_name, device_id: the SDK device ("cpu", 0).
        isolate: run the SDK in a child process (spawned): an SDK abort then costs that
            image, not the process; images cross a pipe (~1 ms for 1242x375). Default False:
            the SDK runs in-process (its ONNX Runtime 1.15.1 and the onnxruntime wheel
            coexist).

    Raises:
        BackendError: mmdeploy_runtime missing, SDK files missing, or the SDK refuses the
            directory.
    """

    backend_name = "mmdeploy_sdk"

    def __init__(self, bundle: CameraBundle, score_threshold: Optional[float] = None,
                 device_name: str = "cpu", device_id: int = 0, isolate: bool = False,
                 **options: Any) -> None:
        if options:
            raise BackendError(f"mmdeploy_sdk: unknown option(s) {sorted(options)}; it takes "
                               "device_name, device_id, isolate")
        missing = [f for f in SDK_FILES if not (bundle.root / f).is_file()]
        if missing:
            raise BackendError(f"mmdeploy_sdk: {bundle.root} has no {', '.join(missing)}; "
                               "re-export the bundle with sdk_files=True (export_camera_bundle)"
                               " or run mmdeploy's tools/deploy.py with --dump-info")
        runtime = _runtime()
        self.bundle = bundle
        self.spec: CameraSpec = bundle.spec
        self.score_threshold = score_threshold_of(self.spec, score_threshold)
        if isolate:
            self._detector = _IsolatedSdk(str(bundle.root), device_name, device_id)
            return
        try:
            self._detector = runtime.Detector(model_path=str(bundle.root),
                                              device_name=device_name, device_id=device_id)
        except Exception as exc:  # the SDK raises RuntimeError without details
            raise BackendError(f"mmdeploy_sdk could not load {bundle.root}: {exc} (run with "
                               "the SDK's log to see which json key it refused)") from exc

    @property
    def class_names(self) -> Tuple[str, ...]:
        return self.spec.class_names

    def detect(self, image: np.ndarray) -> Detections2D:
        """Detect objects in one [H, W, 3] uint8 bgr image with the SDK.

        Returns:
            Detections2D; timings_ms: sdk (= inference: the SDK's preprocess, inference and
            ResizeBBox together; preprocess is 0), postprocess (threshold here), total.
        """
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or \
                image.dtype != np.uint8 or 0 in image.shape:
            got = f"{list(image.shape)} {image.dtype}" if isinstance(image, np.ndarray) else \
                type(image).__name__
            raise PreprocessError(f"camera image must be non-empty [H, W, 3] uint8 bgr, got "
                                  f"{got}")
        t0 = time.perf_counter()
        result = self._detector(np.ascontiguousarray(image))
        t1 = time.perf_counter()
        bboxes = np.asarray(result[0], np.float32).reshape(-1, 5)
        labels = np.asarray(result[1]).reshape(-1).astype(np.int64)
        keep = (bboxes[:, 4] > self.score_threshold) & (labels >= 0) & \
            (labels < len(self.class_names))
        out = Detections2D(bboxes[keep, :4], bboxes[keep, 4], labels[keep], self.class_names,
                           image_size=image.shape[:2])
        t2 = time.perf_counter()
        sdk = (t1 - t0) * 1e3
        out.timings_ms = {"preprocess": 0.0, "inference": sdk, "sdk": sdk,
                          "postprocess": (t2 - t1) * 1e3, "total": (t2 - t0) * 1e3}
        return out

    def warmup(self, runs: int = 2, image_size: Optional[Tuple[int, int]] = None) -> None:
        """Run the pipeline on a synthetic image (``image_size`` (h, w); default the input)."""
        warm_up(self, runs, image_size)

    def close(self) -> None:
        if isinstance(self._detector, _IsolatedSdk):
            self._detector.close()
        self._detector = None

    def __enter__(self) -> "SdkDetector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
