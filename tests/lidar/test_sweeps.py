"""SweepAccumulator against hand-computed transforms: ego motion, time lag, remove-close, order."""
from __future__ import annotations

import math

import numpy as np
import pytest

from admlops_ros.lidar.sweeps import SensorPose, SweepAccumulator, SweepError

FEATURES = ("x", "y", "z", "intensity", "time")


def yaw_pose(x, y, z, yaw):
    """A pose rotated by yaw about +z (quaternion (0, 0, sin(yaw/2), cos(yaw/2)))."""
    return SensorPose((x, y, z), (0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)))


def cloud(*rows):
    return np.array(rows, np.float32).reshape(-1, 5)


def test_past_sweep_mapped_into_newest_frame_by_hand_computed_transform():
    # past sensor at (10, 0, 0) facing +x; newest sensor at (12, 1, 0.5) turned 90 deg left.
    # A point 5 m ahead of the past sensor is at (15, 0, 1) in odom; in the newest frame
    # (x' = forward = +y_odom, y' = left = -x_odom): (0 - 1, -(15 - 12), 1 - 0.5) = (-1, -3, 0.5)
    acc = SweepAccumulator.for_features(3, FEATURES)
    first = acc.add(cloud([5.0, 0.0, 1.0, 7.0, 99.0]), 100.0, yaw_pose(10, 0, 0, 0.0))
    assert first.num_sweeps == 1 and first.points.tolist() == [[5.0, 0.0, 1.0, 7.0, 0.0]]
    newest = cloud([1.0, 2.0, 3.0, 4.0, 0.0])
    out = acc.add(newest, 100.05, yaw_pose(12, 1, 0.5, math.pi / 2))
    assert out.num_sweeps == 2 and out.skipped == () and out.reset == ""
    np.testing.assert_allclose(out.points[0], [1, 2, 3, 4, 0])
    np.testing.assert_allclose(out.points[1], [-1.0, -3.0, 0.5, 7.0, 0.05], atol=1e-5)


def test_rotation_and_translation_of_many_points_match_numpy_reference():
    rng = np.random.default_rng(3)
    past = np.column_stack([rng.uniform(-40, 40, (500, 3)), rng.random(500), np.zeros(500)])
    past = past.astype(np.float32)
    p_past = SensorPose((1000.5, -2000.25, 3.0), (0.01, -0.02, 0.3, 0.95))
    p_now = SensorPose((1003.0, -1999.0, 3.1), (0.0, 0.01, 0.32, 0.947))
    acc = SweepAccumulator.for_features(2, FEATURES, remove_close_m=0.0)
    acc.add(past, 5.0, p_past)
    out = acc.add(np.zeros((0, 5), np.float32), 5.1, p_now).points
    rel = np.linalg.inv(p_now.matrix()) @ p_past.matrix()
    expect = past[:, :3].astype(np.float64) @ rel[:3, :3].T + rel[:3, 3]
    np.testing.assert_allclose(out[:, :3], expect, atol=2e-5)
    np.testing.assert_array_equal(out[:, 3], past[:, 3])
    np.testing.assert_allclose(out[:, 4], 0.1, atol=1e-6)


def test_order_newest_first_then_most_recent_past_and_window_length():
    acc = SweepAccumulator.for_features(3, FEATURES, remove_close_m=0.0)
    ident = yaw_pose(0, 0, 0, 0)
    for k in range(5):
        out = acc.add(cloud([10.0 + k, 0, 0, k, 0], [20.0 + k, 0, 0, k, 0]), k * 0.1, ident)
    assert out.num_sweeps == 3 and len(acc) == 2
    np.testing.assert_allclose(out.points[:, 3], [4, 4, 3, 3, 2, 2])
    np.testing.assert_allclose(out.points[:, 4], [0, 0, 0.1, 0.1, 0.2, 0.2], atol=1e-6)


def test_remove_close_drops_the_square_around_past_sensors_only():
    # mmdet3d: |x| < 1 and |y| < 1 in the sweep's own frame (a square, not a circle)
    pts = cloud([0.5, 0.5, 0, 1, 0], [0.9, -0.9, 0, 2, 0], [1.0, 0.0, 0, 3, 0],
                [0.0, -1.2, 0, 4, 0], [3.0, 3.0, 0, 5, 0])
    acc = SweepAccumulator.for_features(2, FEATURES)
    first = acc.add(pts, 1.0, yaw_pose(0, 0, 0, 0))
    assert len(first.points) == 5  # the newest keeps its close points
    # the past sweep is filtered in its own frame even though the ego moved 0.5 m
    out = acc.add(np.zeros((0, 5), np.float32), 1.1, yaw_pose(0.5, 0, 0, 0))
    np.testing.assert_allclose(out.points[:, 3], [3, 4, 5])
    np.testing.assert_allclose(out.points[:, 0], [0.5, -0.5, 2.5])


def test_missing_pose_of_a_past_sweep_is_skipped_and_reported():
    acc = SweepAccumulator.for_features(4, FEATURES, remove_close_m=0.0)
    acc.add(cloud([5, 0, 0, 1, 0]), 1.0, yaw_pose(0, 0, 0, 0), "lidar")
    acc.add(cloud([5, 0, 0, 2, 0]), 1.1, None, "lidar")
    out = acc.add(cloud([5, 0, 0, 3, 0]), 1.2, yaw_pose(1, 0, 0, 0), "lidar")
    assert out.num_sweeps == 2
    assert [(s.stamp_s, s.frame_id, s.reason) for s in out.skipped] == [(1.1, "lidar", "no pose")]
    np.testing.assert_allclose(out.points[:, [0, 3]], [[5, 3], [4, 1]])
    # the newest without a pose: no past sweep can be placed, every one is reported
    out = acc.add(cloud([5, 0, 0, 4, 0]), 1.3, None, "lidar")
    assert out.num_sweeps == 1 and len(out.skipped) == 3
    assert {s.reason for s in out.skipped} == {"the newest cloud has no pose", }


def test_stamps_going_backwards_reset_the_buffer():
    acc = SweepAccumulator.for_features(3, FEATURES)
    ident = yaw_pose(0, 0, 0, 0)
    acc.add(cloud([5, 0, 0, 1, 0]), 10.0, ident)
    acc.add(cloud([5, 0, 0, 2, 0]), 10.1, ident)
    out = acc.add(cloud([5, 0, 0, 3, 0]), 2.0, ident)  # bag loop
    assert "older than the previous 10.100000" in out.reset and "dropped 2 past sweeps" in out.reset
    assert out.num_sweeps == 1 and len(acc) == 1
    out = acc.add(cloud([5, 0, 0, 4, 0]), 2.0, ident)
    assert "repeats" in out.reset
    out = acc.add(cloud([5, 0, 0, 5, 0]), 2.1, ident)
    assert out.reset == "" and out.num_sweeps == 2


def test_empty_clouds_and_clouds_of_different_sizes():
    acc = SweepAccumulator.for_features(3, FEATURES)
    ident = yaw_pose(0, 0, 0, 0)
    assert len(acc.add(np.zeros((0, 5), np.float32), 1.0, ident).points) == 0
    big = np.full((1000, 5), 7.0, np.float32)
    acc.add(big, 1.1, ident)
    out = acc.add(cloud([5, 0, 0, 1, 0]), 1.2, ident)
    assert out.num_sweeps == 3 and len(out.points) == 1001
    out = acc.add(big[:10], 1.3, ident)  # slots and the output buffer are reused
    assert len(out.points) == 10 + 1 + 1000


def test_wrong_column_count_and_bad_settings_are_refused():
    acc = SweepAccumulator.for_features(3, FEATURES)
    with pytest.raises(SweepError, match=r"shape \(2, 4\), the accumulator holds 5 columns"):
        acc.add(np.zeros((2, 4), np.float32), 1.0, None)
    with pytest.raises(SweepError, match="num_sweeps must be >= 1"):
        SweepAccumulator(0, 5)
    with pytest.raises(SweepError, match="time_column 1"):
        SweepAccumulator(2, 5, time_column=1)


@pytest.mark.parametrize("pose, field", [
    (SensorPose((float("nan"), 0.0, 0.0)), "translation.x"),
    (SensorPose((0.0, 0.0, float("inf"))), "translation.z"),
    (SensorPose((0.0, 0.0, 0.0), (0.0, 0.0, float("nan"), 1.0)), "rotation.z"),
])
def test_non_finite_pose_is_refused_naming_the_field(pose, field):
    acc = SweepAccumulator.for_features(2, FEATURES)
    with pytest.raises(SweepError) as err:
        acc.add(cloud([1, 0, 0, 0, 0]), 1.0, pose)
    assert f"pose {field} is" in str(err.value) and "\n" not in str(err.value)
    assert len(acc) == 0


def test_single_sweep_passes_through_with_time_zero_and_no_time_column_models():
    acc = SweepAccumulator.for_features(1, FEATURES)
    out = acc.add(cloud([1, 2, 3, 4, 9]), 1.0, None)
    assert out.points.tolist() == [[1, 2, 3, 4, 0]] and out.num_sweeps == 1
    acc4 = SweepAccumulator.for_features(2, ("x", "y", "z", "intensity"), remove_close_m=0)
    acc4.add(np.array([[5, 0, 0, 9]], np.float32), 1.0, yaw_pose(0, 0, 0, 0))
    out = acc4.add(np.array([[1, 0, 0, 2]], np.float32), 1.1, yaw_pose(2, 0, 0, 0))
    np.testing.assert_allclose(out.points, [[1, 0, 0, 2], [3, 0, 0, 9]], atol=1e-6)


def test_pad_empty_repeats_the_newest_cloud_only_when_no_past_sweep_is_usable():
    # mmdet3d pad_empty_sweeps: no sweep at all -> sweeps_num copies of the key frame,
    # remove-close applied to the copies, their time 0; a partial window is not padded.
    pts = cloud([0.5, 0.5, 0, 1, 9.0], [3.0, 0.0, 0, 2, 9.0])
    acc = SweepAccumulator.for_features(4, FEATURES, pad_empty=True)
    first = acc.add(pts, 1.0, yaw_pose(0, 0, 0, 0))
    assert first.num_sweeps == 4
    np.testing.assert_allclose(first.points[:, [0, 3, 4]],
                               [[0.5, 1, 0], [3.0, 2, 0], [3.0, 2, 0], [3.0, 2, 0], [3.0, 2, 0]])
    second = acc.add(cloud([7.0, 0, 0, 3, 0]), 1.1, yaw_pose(0, 0, 0, 0))
    assert second.num_sweeps == 2
    np.testing.assert_allclose(second.points[:, 3], [3, 2])
    # the newest without a pose: the past sweeps cannot be placed, so it pads again
    third = acc.add(cloud([8.0, 0, 0, 4, 0]), 1.2, None)
    assert third.num_sweeps == 4 and len(third.skipped) == 2
    np.testing.assert_allclose(third.points[:, 3], [4, 4, 4, 4])
    # without pad_empty the first cloud stays alone
    plain = SweepAccumulator.for_features(4, FEATURES).add(pts, 1.0, yaw_pose(0, 0, 0, 0))
    assert plain.num_sweeps == 1 and len(plain.points) == 2
