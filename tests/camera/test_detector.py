"""CameraDetector on ONNX Runtime and OpenVINO, and the mmdeploy SDK on the same bundles."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from admlops_ros.backends import BackendError
from admlops_ros.bundle.camera_spec import (CameraInputSpec, load_camera_bundle,
                                            write_camera_spec)
from admlops_ros.bundle.files import sha256_file
from admlops_ros.camera.detector import CameraDetector, CameraDetectorError
from tests.camera.fixtures import PIPELINES, images


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_onnxruntime_equals_openvino_raw(camera_bundles, pipeline):
    with CameraDetector.from_bundle(camera_bundles[pipeline], backend="onnxruntime") as ort, \
            CameraDetector.from_bundle(camera_bundles[pipeline], backend="openvino") as ov:
        assert ov.engine.backend.precision == "f32"
        for image in images():
            tensor, _ = ort.preprocess(image)
            d1, l1 = ort.inference(tensor)
            d2, l2 = ov.inference(tensor)
            assert d1.shape == d2.shape and d1.shape[1] >= 4
            np.testing.assert_allclose(d1, d2, atol=1e-4, rtol=0)
            np.testing.assert_array_equal(l1, l2)


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_sdk_equals_own_runner(camera_bundles, pipeline):
    pytest.importorskip("mmdeploy_runtime")
    own = CameraDetector.from_bundle(camera_bundles[pipeline], backend="onnxruntime")
    sdk = CameraDetector.from_bundle(camera_bundles[pipeline], backend="mmdeploy_sdk")
    total = 0
    for image in images():
        a, b = own.detect(image), sdk.detect(image)
        assert len(a) == len(b), (pipeline, a.boxes, b.boxes)
        assert 2 <= len(a) <= 30  # a handful of confident boxes, not noise
        total += len(a)
        iou = iou_matrix(a.boxes, b.boxes)
        match = iou.argmax(axis=1)
        assert (iou[np.arange(len(a)), match] >= 0.99).all()
        assert len(set(match.tolist())) == len(a)
        np.testing.assert_array_equal(a.labels, b.labels[match])
        np.testing.assert_allclose(a.scores, b.scores[match], atol=1e-3)
        assert a.image_size == b.image_size == image.shape[:2]
    assert total >= 9


def test_detect_timings_and_types(camera_bundles):
    with CameraDetector.from_bundle(camera_bundles["keep_ratio"], backend="onnxruntime") as det:
        out = det.detect(images()[0])
    assert set(out.timings_ms) == {"preprocess", "inference", "postprocess", "total"}
    assert out.boxes.dtype == np.float32 and out.labels.dtype == np.int64
    assert out.names() and set(out.names()) <= set(det.class_names)
    h, w = out.image_size
    assert (out.boxes[:, 0::2] <= w).all() and (out.boxes[:, 1::2] <= h).all()
    assert (out.boxes >= 0).all()


def test_engine_shape_mismatch_names_both_numbers(camera_bundles, tmp_path):
    import shutil
    src = camera_bundles["no_keep_ratio"]
    dst = tmp_path / "b"
    shutil.copytree(src, dst)
    bundle = load_camera_bundle(dst)
    spec = bundle.spec
    pre = dataclasses.replace(spec.preprocessing, resize=dataclasses.replace(
        spec.preprocessing.resize, scale=(640, 224)))
    bad = dataclasses.replace(spec, input=CameraInputSpec(height=224, width=640),
                              preprocessing=pre)
    write_camera_spec(bad, dst / "spec.yaml")
    with pytest.raises(BackendError, match=r"height is 192 in the engine but input.height is "
                                           r"224"):
        CameraDetector.from_bundle(dst, backend="onnxruntime")
    assert sha256_file(dst / "end2end.onnx") == spec.files["end2end.onnx"]


def test_unknown_backend(camera_bundles):
    with pytest.raises(CameraDetectorError, match="choose one of"):
        CameraDetector.from_bundle(camera_bundles["keep_ratio"], backend="tvm")


def test_sdk_isolated_worker_same_result_and_survives_an_abort(camera_bundles, tmp_path):
    pytest.importorskip("mmdeploy_runtime")
    import json
    import shutil
    image = images()[0]
    with CameraDetector.from_bundle(camera_bundles["keep_ratio"], backend="mmdeploy_sdk") as a, \
            CameraDetector.from_bundle(camera_bundles["keep_ratio"], backend="mmdeploy_sdk",
                                       isolate=True) as b:
        x, y = a.detect(image), b.detect(image)
        np.testing.assert_array_equal(x.boxes, y.boxes)
        np.testing.assert_array_equal(x.labels, y.labels)
    # a Pad smaller than the resized image makes the SDK abort its process: only the worker
    dst = tmp_path / "bad"
    shutil.copytree(camera_bundles["keep_ratio_pad_raw"], dst)
    pipeline = json.loads((dst / "pipeline.json").read_text())
    for t in pipeline["pipeline"]["tasks"][0]["transforms"]:
        if t["type"] == "Pad":
            t["size"] = [64, 64]
    (dst / "pipeline.json").write_text(json.dumps(pipeline))
    from admlops_ros.bundle.camera_spec import hash_camera_bundle
    hash_camera_bundle(dst, load_camera_bundle(dst, verify_hashes=False).spec)
    with CameraDetector.from_bundle(dst, backend="mmdeploy_sdk", isolate=True) as det:
        for _ in range(2):
            with pytest.raises(BackendError, match="worker died while detecting"):
                det.detect(image)
