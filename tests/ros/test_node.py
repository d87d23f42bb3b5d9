"""FrameProcessor (the node's per-cloud work) with a stand-in detector: no master needed."""
from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import PointField

from admlops_ros.lidar.pointcloud import PointCloudError, array_to_pointcloud2
from admlops_ros.ros.node import CloudError, FrameProcessor
from admlops_ros.ros.params import validate_params
from tests.ros_fakes import FakeDetector, header, messages_or_skip


def processor(detector=None, **overrides):
    msgs = messages_or_skip()
    params = validate_params(overrides, check_engine=False)
    return FrameProcessor(detector or FakeDetector(), params, msgs)


def cloud(points, fields=("x", "y", "z", "intensity"), stamp=7.25):
    return array_to_pointcloud2(np.asarray(points, np.float32), header(stamp), fields)


def test_outputs_carry_the_input_header():
    proc = processor()
    msg = cloud(np.random.default_rng(0).random((100, 4)))
    result = proc.process(msg)
    assert result.objects.header is msg.header
    assert result.objects.objects[0].header.stamp == msg.header.stamp
    assert all(m.header is msg.header for m in result.markers.markers)
    assert result.stats["num_points"] == 100 and result.stats["num_detections"] == 1
    assert result.stats["detect_ms"] == 3.5 and result.warning == ""


def test_markers_skipped_when_not_wanted():
    result = processor().process(cloud(np.ones((5, 4))), want_markers=False)
    assert result.markers is None


def test_too_many_points_dropped():
    proc = processor(max_points=10)
    with pytest.raises(CloudError, match=r"11 points .* > ~max_points 10"):
        proc.process(cloud(np.ones((11, 4))))
    assert proc.detector.calls == []


def test_missing_intensity_error_or_zeros():
    msg = cloud(np.ones((5, 3)), fields=("x", "y", "z"))
    with pytest.raises(PointCloudError, match="intensity"):
        processor().process(msg)
    det = FakeDetector()
    processor(det, intensity_mode="zeros").process(msg)
    assert det.calls[0].shape == (5, 4) and not det.calls[0][:, 3].any()


def test_missing_geometry_never_zero_filled():
    msg = cloud(np.ones((5, 3)), fields=("x", "y", "intensity"))
    with pytest.raises(CloudError, match="no 'z' field"):
        processor(intensity_mode="zeros").process(msg)


def test_unknown_datatype_dropped():
    msg = cloud(np.ones((5, 4)))
    msg.fields[3] = PointField("intensity", 12, 42, 1)
    with pytest.raises(PointCloudError, match="datatype 42"):
        processor().process(msg)


def test_float64_fields_converted():
    pts = np.random.default_rng(1).random((20, 4))
    data = np.zeros(20, dtype=[("x", "<f8"), ("y", "<f8"), ("z", "<f4"), ("intensity", "<f4")])
    for i, n in enumerate(("x", "y", "z", "intensity")):
        data[n] = pts[:, i]
    msg = cloud(np.ones((20, 4)))
    msg.fields = [PointField("x", 0, PointField.FLOAT64, 1), PointField("y", 8, PointField.FLOAT64, 1),
                  PointField("z", 16, PointField.FLOAT32, 1),
                  PointField("intensity", 20, PointField.FLOAT32, 1)]
    msg.point_step, msg.row_step, msg.data = 24, 24 * 20, data.tobytes()
    det = FakeDetector()
    processor(det).process(msg)
    np.testing.assert_allclose(det.calls[0], pts, rtol=1e-6)


def test_nan_only_and_empty_publish_empty_arrays():
    det = FakeDetector()
    proc = processor(det)
    result = proc.process(cloud(np.full((10, 4), np.nan)))
    assert result.objects.objects == [] and "all 10 points are NaN" in result.warning
    result = proc.process(cloud(np.zeros((0, 4))))
    assert result.objects.objects == [] and result.warning == ""


def test_detector_failure_propagates():
    with pytest.raises(RuntimeError, match="engine exploded"):
        processor(FakeDetector(fail=True)).process(cloud(np.ones((3, 4))))
