"""camera_detection core without a master: headers, drops, parameters, lidar matching and fusion."""
from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("cv_bridge", reason="needs Debian python3-cv-bridge")

from admlops_ros.camera.detections import Detections2D  # noqa: E402
from admlops_ros.camera.projection import CameraModel  # noqa: E402
from admlops_ros.ros.camera_node import (CameraFrameProcessor, LidarBuffer,  # noqa: E402
                                         validate_camera_params)
from admlops_ros.ros.image_conversions import ImageError  # noqa: E402
from admlops_ros.ros.params import ParamError  # noqa: E402
from tests.ros_fakes import header, messages_or_skip  # noqa: E402

K = np.array([[700.0, 0.0, 600.0, 0.0], [0.0, 700.0, 180.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
OPTICAL = [0.0, -1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
CAR = np.array([[10.0, 0.0, -1.0, 4.0, 2.0, 1.5, 0.0]])


class FakeCameraDetector:
    """One box per image: the projected CAR box (so fusion confirms it) or a fixed one."""

    class_names = ("Pedestrian", "Cyclist", "Car")

    def __init__(self, box=(100.0, 50.0, 200.0, 150.0), fail=False):
        self.box = box
        self.fail = fail
        self.images = []

    def detect(self, image):
        if self.fail:
            raise RuntimeError("engine exploded")
        self.images.append(image)
        return Detections2D(np.array([self.box, (0, 0, 10, 10)], np.float32), [0.9, 0.2],
                            [2, 0], self.class_names,
                            {"preprocess": 1.0, "inference": 2.0, "postprocess": 0.5,
                             "total": 3.5}, image.shape[:2])


def _params(**values):
    return validate_camera_params(values, check_engine=False)


def _image(h=375, w=1242, stamp=12.5):
    from sensor_msgs.msg import Image

    return Image(header=header(stamp, "camera"), height=h, width=w, encoding="bgr8",
                 step=w * 3, data=bytes(h * w * 3))


def _lidar_msg(msgs, stamp=12.48):
    from admlops_ros.lidar.detections import Detections
    from admlops_ros.ros.conversions import detections_to_msg

    det = Detections(np.concatenate([CAR, [[-8.0, 0.0, -1.0, 4.0, 2.0, 1.5, 0.0]]]),
                     [0.8, 0.7], [2, 2], ("Pedestrian", "Cyclist", "Car"))
    return detections_to_msg(det, header(stamp, "velodyne"), msgs)


def test_header_copied_stats_and_threshold():
    msgs = messages_or_skip()
    proc = CameraFrameProcessor(FakeCameraDetector(), _params(score_threshold=0.5), msgs)
    img = _image()
    result = proc.process(img, want_annotated=True)
    out = result.detections
    assert out.header == img.header and out.detections[0].header == img.header
    assert len(out.detections) == 1                       # 0.2 below ~score_threshold
    d = out.detections[0]
    assert (d.class_id, d.class_name, d.object_index) == (2, "Car", -1)
    assert (d.center_x, d.center_y, d.size_x, d.size_y) == (150.0, 100.0, 100.0, 100.0)
    assert not out.fused
    assert result.annotated.header == img.header and result.annotated.encoding == "bgr8"
    assert result.stats["num_detections"] == 1 and result.stats["inference_ms"] == 2.0
    assert result.stats["image_width"] == 1242 and np.isnan(result.stats["fusion_ms"])
    assert proc.process(img, want_annotated=False).annotated is None


def test_bad_images_raise_image_error_and_detector_failures_propagate():
    msgs = messages_or_skip()
    proc = CameraFrameProcessor(FakeCameraDetector(), _params(max_pixels=100000), msgs)
    bad = _image(10, 10)
    bad.encoding = "mono16"
    with pytest.raises(ImageError, match="mono16"):
        proc.process(bad)
    with pytest.raises(ImageError, match="larger than ~max_pixels 100000"):
        proc.process(_image())
    failing = CameraFrameProcessor(FakeCameraDetector(fail=True), _params(), msgs)
    with pytest.raises(RuntimeError, match="exploded"):
        failing.process(_image(20, 20))


def test_lidar_buffer_latest_within_tolerance():
    msgs = messages_or_skip()
    buf = LidarBuffer(size=3)
    for t in (1.0, 1.1, 1.2, 1.3):
        buf.add(msgs.DetectedObjectArray(header=header(t)))
    assert len(buf) == 3
    assert buf.match(1.22, 0.05).header.stamp.to_sec() == pytest.approx(1.2)
    assert buf.match(1.25, 0.06).header.stamp.to_sec() == pytest.approx(1.3)  # latest wins
    assert buf.match(1.0, 0.05) is None                                      # dropped


def test_lidar_buffer_waits_for_the_array_of_the_image_stamp():
    """The lidar node answers a cloud after the camera image of the same instant arrived."""
    msgs = messages_or_skip()
    buf = LidarBuffer()
    buf.add(msgs.DetectedObjectArray(header=header(1.0)))
    late = threading.Timer(0.05, buf.add, (msgs.DetectedObjectArray(header=header(1.1)),))
    late.start()
    try:
        assert buf.match(1.1, 0.01, wait_s=5.0).header.stamp.to_sec() == pytest.approx(1.1)
    finally:
        late.cancel()
    assert buf.match(1.2, 0.01, wait_s=0.01) is None  # gives up after wait_s


def test_fusion_confirms_the_projected_object():
    msgs = messages_or_skip()
    camera = CameraModel(K, np.asarray(OPTICAL).reshape(4, 4), (375, 1242))
    box = tuple(camera.project_boxes(CAR).boxes2d[0] + 1.5)
    params = _params(lidar_objects_topic="/objects", fusion=True, lidar_to_camera=OPTICAL,
                     camera_info_topic="/info")
    proc = CameraFrameProcessor(FakeCameraDetector(box), params, msgs)
    img = _image()
    no_cal = proc.process(img)
    assert "no camera calibration" not in no_cal.warning  # no lidar yet: nothing to project
    lidar = _lidar_msg(msgs)
    proc.lidar.add(lidar)
    missing = proc.process(img)
    assert "no camera calibration" in missing.warning and not missing.detections.fused

    class Info:
        K = [700.0, 0, 600, 0, 700, 180, 0, 0, 1]
        P = [0.0] * 12
        width, height = 1242, 375
        header = header(0.0, "camera")

    proc.set_camera_info(Info())
    result = proc.process(img)
    assert result.warning == ""
    out = result.detections
    assert out.fused and out.objects_header == lidar.header and out.num_objects == 2
    assert list(out.confirmed_objects) == [0]
    assert out.detections[0].object_index == 0 and out.detections[0].fusion_iou > 0.9
    assert out.detections[1].object_index == -1
    assert result.confirmed_objects.header == lidar.header
    assert len(result.confirmed_objects.objects) == 1
    assert result.stats["num_projected"] == 1 and result.stats["num_confirmed"] == 1
    late = proc.process(_image(stamp=13.0))
    assert "no lidar objects within 0.05 s" in late.warning and not late.detections.fused


def test_kitti_calib_parameter(tmp_path):
    from tests.camera.test_projection import KITTI

    calib = KITTI / "calib" / "000000.txt"
    if not calib.exists():
        pytest.skip(f"{calib} not found")
    assert _params(kitti_calib=str(calib)).kitti_calib == str(calib)
    bad = tmp_path / "calib.txt"
    bad.write_text("P2: 1 2\n")
    with pytest.raises(ParamError, match="~kitti_calib"):
        _params(kitti_calib=str(bad))


@pytest.mark.parametrize("values, words", [
    (dict(backend="cuda"), "~backend = 'cuda'"),
    (dict(max_pixels=0), "~max_pixels = 0"),
    (dict(lidar_to_camera=[1.0, 2.0]), "~lidar_to_camera"),
    (dict(fusion_iou_threshold=0.0), "~fusion_iou_threshold"),
    (dict(score_treshold=0.5), "did you mean ~score_threshold"),
])
def test_bad_parameters_named(values, words):
    with pytest.raises(ParamError, match=words.replace("(", r"\(").replace("[", r"\[")):
        _params(**values)


def test_engine_default_message():
    with pytest.raises(ParamError, match="engines/camera_sim_3class"):
        validate_camera_params({"engine": "/nonexistent/bundle"})


def test_processor_with_the_real_detector_on_the_tiny_bundle(tmp_path):
    """CameraDetector (ONNX Runtime) on blobs: boxes come out in image pixels with the header."""
    pytest.importorskip("torch", reason="the tiny test bundle is exported with torch")
    from sensor_msgs.msg import Image

    from admlops_ros.camera.detector import CameraDetector
    from tests.camera.fixtures import images, make_bundle

    msgs = messages_or_skip()
    bundle = make_bundle(tmp_path / "bundle", "keep_ratio")
    bgr = images()[0]
    img = Image(header=header(3.0, "camera"), height=bgr.shape[0], width=bgr.shape[1],
                encoding="rgb8", step=bgr.shape[1] * 3,
                data=np.ascontiguousarray(bgr[..., ::-1]).tobytes())
    with CameraDetector.from_bundle(bundle, backend="onnxruntime") as detector:
        expect = detector.detect(bgr)
        result = CameraFrameProcessor(detector, _params(), msgs).process(img)
    out = result.detections
    assert len(expect) > 0 and len(out.detections) == len(expect)
    for d, box, label in zip(out.detections, expect.boxes, expect.labels):
        assert d.header == img.header and d.class_id == int(label)
        assert d.center_x == pytest.approx(0.5 * (box[0] + box[2]), abs=1e-3)
        assert d.size_y == pytest.approx(box[3] - box[1], abs=1e-3)
    assert result.stats["detect_ms"] > 0 and result.annotated.width == bgr.shape[1]
