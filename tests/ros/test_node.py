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


class TimeDetector(FakeDetector):
    """A model with a time-lag feature; keeps a copy of each input (the sweep buffer is reused)."""

    point_features = ("x", "y", "z", "intensity", "time")

    def detect(self, points):
        det = super().detect(points)
        self.calls[-1] = np.array(points, copy=True)
        return det


def fake_poses(table):
    """poses(frame_id, stamp) from {(frame_id, stamp_s): (x, y)}; missing -> PoseError."""
    from admlops_ros.lidar.sweeps import SensorPose
    from admlops_ros.ros.poses import PoseError

    def poses(frame_id, stamp):
        key = (frame_id, round(stamp.to_sec(), 3))
        if key not in table:
            raise PoseError(f"no tf 'odom' <- {frame_id!r} at {stamp.to_sec():.3f}")
        x, y = table[key]
        return SensorPose((x, y, 0.0))
    return poses


def sweep_processor(table, sweeps=3, detector=None):
    msgs = messages_or_skip()
    params = validate_params({"sweeps": sweeps}, check_engine=False)
    return FrameProcessor(detector or TimeDetector(), params, msgs, poses=fake_poses(table))


def test_time_feature_is_zero_with_one_sweep_even_if_the_driver_publishes_time():
    det = TimeDetector()
    msg = cloud(np.array([[5, 0, 0, 1, 0.3]]), fields=("x", "y", "z", "intensity", "time"))
    result = processor(det).process(msg)
    assert det.calls[0].tolist() == [[5, 0, 0, 1, 0]] and result.stats["num_sweeps"] == 1
    processor(det).process(cloud(np.array([[5, 0, 0, 1]])))  # no time field: filled, not refused
    assert det.calls[1].tolist() == [[5, 0, 0, 1, 0]]


def test_sweeps_are_moved_by_ego_motion_and_get_the_time_lag():
    table = {("velodyne", 1.0): (0.0, 0.0), ("velodyne", 1.1): (1.0, 0.0),
             ("velodyne", 1.2): (2.5, 0.0)}
    proc = sweep_processor(table)
    for stamp, k in ((1.0, 1), (1.1, 2), (1.2, 3)):
        result = proc.process(cloud(np.array([[10.0, 3.0, 0.0, k]]), stamp=stamp))
    det = proc.detector
    np.testing.assert_allclose(det.calls[-1], [[10, 3, 0, 3, 0], [8.5, 3, 0, 2, 0.1],
                                               [7.5, 3, 0, 1, 0.2]], atol=1e-5)
    assert result.stats["num_sweeps"] == 3 and result.stats["num_points"] == 3
    assert result.warning == "" and result.stats["sweeps_ms"] >= 0


def test_missing_tf_is_a_warning_naming_frames_and_the_frame_is_still_detected():
    table = {("velodyne", 1.0): (0.0, 0.0), ("velodyne", 1.2): (2.0, 0.0)}
    proc = sweep_processor(table)
    proc.process(cloud(np.array([[10.0, 3.0, 0.0, 1]]), stamp=1.0))
    result = proc.process(cloud(np.array([[10.0, 3.0, 0.0, 2]]), stamp=1.1))
    assert "no tf 'odom' <- 'velodyne' at 1.100" in result.warning
    assert "detected on 1 of 3 sweeps" in result.warning and result.objects is not None
    result = proc.process(cloud(np.array([[10.0, 3.0, 0.0, 3]]), stamp=1.2))
    assert "1 past clouds without a pose in 'odom' left out (velodyne at 1.100)" in \
        result.warning
    assert result.stats["num_sweeps"] == 2
    np.testing.assert_allclose(proc.detector.calls[-1][:, [0, 3, 4]],
                               [[10, 3, 0], [8, 1, 0.2]], atol=1e-5)


def test_bag_loop_resets_the_sweeps_with_a_warning():
    table = {("velodyne", 5.0): (0.0, 0.0), ("velodyne", 5.1): (0.0, 0.0),
             ("velodyne", 1.0): (0.0, 0.0)}
    proc = sweep_processor(table)
    proc.process(cloud(np.array([[10.0, 3.0, 0.0, 1]]), stamp=5.0))
    proc.process(cloud(np.array([[10.0, 3.0, 0.0, 1]]), stamp=5.1))
    result = proc.process(cloud(np.array([[10.0, 3.0, 0.0, 1]]), stamp=1.0))
    assert "sweeps reset: cloud stamp 1.000000 is older than the previous 5.100000" in \
        result.warning
    assert result.stats["num_sweeps"] == 1


def test_sweeps_with_a_model_without_time_feature_merge_clouds():
    table = {("velodyne", 1.0): (0.0, 0.0), ("velodyne", 1.1): (1.0, 0.0)}
    det = FakeDetector()
    proc = sweep_processor(table, sweeps=2, detector=det)
    proc.process(cloud(np.array([[10.0, 3.0, 0.0, 1]]), stamp=1.0))
    result = proc.process(cloud(np.array([[10.0, 3.0, 0.0, 2]]), stamp=1.1))
    assert result.stats["num_points"] == 2 and det.calls[-1].shape == (2, 4)


def test_sweep_count_from_the_spec_unless_the_parameter_overrides_it():
    from types import SimpleNamespace

    from admlops_ros.ros.node import model_sweeps

    det = TimeDetector()
    det.bundle = SimpleNamespace(spec=SimpleNamespace(input=SimpleNamespace(
        sweeps=10, sweeps_remove_close=True, sweeps_pad_empty=True)))
    assert model_sweeps(det, validate_params({}, check_engine=False)) == (10, True, True)
    assert model_sweeps(det, validate_params({"sweeps": 1}, check_engine=False)) == \
        (1, True, True)
    assert model_sweeps(det, validate_params({"sweeps": 3}, check_engine=False)) == \
        (3, True, True)
    assert model_sweeps(FakeDetector(), validate_params({}, check_engine=False)) == \
        (1, False, False)
    proc = sweep_processor({}, sweeps=0, detector=det)
    assert proc.sweeps is not None and proc.sweeps.num_sweeps == 10
    assert proc.sweeps.pad_empty
    assert proc.sweeps.remove_close_m == 1.0
