"""KITTI object format: label/calib/velodyne round trips and camera <-> LiDAR boxes."""
from __future__ import annotations

import math

import numpy as np
import pytest

from admlops_ros.evaluation import kitti_io
from admlops_ros.simulation import simulate_frame
from admlops_ros.simulation.raycast import count_points_in_boxes
from tests.paths import SHARED_KITTI  # ../shared beside the repo

KITTI_TRAINING = SHARED_KITTI / "training"
needs_kitti = pytest.mark.skipif(
    not (KITTI_TRAINING / "velodyne" / "000001.bin").exists(),
    reason=f"real KITTI frames not found at {KITTI_TRAINING} (../shared is absent in a user's "
           "clone)")

# camera = R @ lidar: x_cam = -y_lidar, y_cam = -z_lidar, z_cam = x_lidar (mmdet3d default).
AXES_ONLY = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], np.float64)


def test_camera_to_lidar_known_values():
    cam = np.array([[1.0, 1.5, 10.0, 4.0, 1.5, 1.6, 0.0],
                    [-2.0, 1.7, 20.0, 0.8, 1.7, 0.6, math.pi / 2]])
    lidar = kitti_io.boxes_camera_to_lidar(cam, AXES_ONLY)
    np.testing.assert_allclose(lidar[0], [10.0, -1.0, -1.5, 4.0, 1.6, 1.5, -math.pi / 2],
                               atol=1e-9)
    # ry = +pi/2 -> yaw = -pi, wrapped into [-pi, pi)
    np.testing.assert_allclose(lidar[1], [20.0, 2.0, -1.7, 0.8, 0.6, 1.7, -math.pi], atol=1e-9)


def test_lidar_camera_round_trip():
    rng = np.random.default_rng(0)
    boxes = np.concatenate([rng.uniform(-40, 40, (50, 3)), rng.uniform(0.5, 5, (50, 3)),
                            rng.uniform(-math.pi, math.pi, (50, 1))], axis=1)
    calib = kitti_io.nominal_calib()
    cam = kitti_io.boxes_lidar_to_camera(boxes, calib)
    np.testing.assert_allclose(cam[:, 3:6], boxes[:, [3, 5, 4]])        # (l, h, w)
    back = kitti_io.boxes_camera_to_lidar(cam, calib)
    np.testing.assert_allclose(back[:, :6], boxes[:, :6], atol=1e-9)
    dyaw = kitti_io.limit_period(back[:, 6] - boxes[:, 6], 0.5, 2 * math.pi)
    np.testing.assert_allclose(dyaw, 0.0, atol=1e-9)
    assert np.all((cam[:, 6] >= -math.pi) & (cam[:, 6] < math.pi))


def test_label_round_trip(tmp_path):
    objs = [kitti_io.KittiObject("Car", 0.0, 1, -1.57, (599.41, 156.4, 629.75, 189.25),
                                 (1.67, 1.87, 3.69), (-16.53, 2.39, 58.49), 1.57),
            kitti_io.KittiObject("Pedestrian", 0.25, 0, 0.2, (1.0, 2.0, 3.0, 4.0),
                                 (1.8, 0.6, 0.8), (3.0, 1.6, 9.0), -0.5, score=0.875),
            kitti_io.KittiObject("DontCare", -1, -1, -10, (5.0, 229.89, 214.12, 367.61),
                                 (-1, -1, -1), (-1000, -1000, -1000), -10)]
    path = tmp_path / "000000.txt"
    kitti_io.write_label(path, objs)
    back = kitti_io.read_label(path)
    assert [o.type for o in back] == ["Car", "Pedestrian", "DontCare"]
    assert back[0].score is None and back[1].score == pytest.approx(0.875)
    for a, b in zip(objs, back):
        np.testing.assert_allclose(kitti_io.objects_to_camera_boxes([a]),
                                   kitti_io.objects_to_camera_boxes([b]), atol=1e-4)
        np.testing.assert_allclose(a.bbox, b.bbox, atol=5e-3)
        assert a.occluded == b.occluded
    boxes, names = kitti_io.objects_to_lidar(back, kitti_io.nominal_calib())
    assert names == ["Car", "Pedestrian"] and boxes.shape == (2, 7)


def test_label_line_errors(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("Car 0 0 0 1 2 3\n")
    with pytest.raises(kitti_io.KittiError, match="15 or 16 columns"):
        kitti_io.read_label(path)
    path.write_text("P0: 1 2 3\n")
    with pytest.raises(kitti_io.KittiError, match="P0 needs 12"):
        kitti_io.read_calib(path)
    with pytest.raises(kitti_io.KittiError, match=r"\[N, 4\]"):
        kitti_io.write_velodyne(tmp_path / "x.bin", np.zeros((3, 3), np.float32))


def test_calib_and_velodyne_round_trip(tmp_path):
    calib = kitti_io.nominal_calib()
    kitti_io.write_calib(tmp_path / "c.txt", calib)
    back = kitti_io.read_calib(tmp_path / "c.txt")
    for key in ("P0", "P1", "P2", "P3", "R0_rect", "Tr_velo_to_cam", "Tr_imu_to_velo"):
        np.testing.assert_allclose(getattr(back, key), getattr(calib, key), rtol=1e-10)
    pts = np.random.default_rng(1).normal(size=(1000, 4)).astype(np.float32)
    kitti_io.write_velodyne(tmp_path / "p.bin", pts)
    np.testing.assert_array_equal(kitti_io.read_velodyne(tmp_path / "p.bin"), pts)


def test_write_frame_round_trip(tmp_path):
    frame = simulate_frame(5)
    calib = kitti_io.nominal_calib()
    objs = kitti_io.write_frame(tmp_path / "training", 7, frame, calib, camera_fov_only=False)
    points, back, calib_back = kitti_io.read_frame(tmp_path / "training", 7)
    np.testing.assert_array_equal(points, frame.points)
    boxes, names = kitti_io.objects_to_lidar(back, calib_back)
    assert names == frame.names and len(objs) == len(frame.names)
    np.testing.assert_allclose(boxes[:, :6], frame.boxes[:, :6], atol=2e-3)
    dyaw = kitti_io.limit_period(boxes[:, 6] - frame.boxes[:, 6], 0.5, 2 * math.pi)
    np.testing.assert_allclose(dyaw, 0.0, atol=2e-3)
    # camera-FOV labels: only objects in front, inside the image, with sane 2D boxes
    fov = kitti_io.write_frame(tmp_path / "fov", 0, frame, calib)
    assert 0 < len(fov) < len(frame.names)
    for o in fov:
        assert o.location[2] > 0
        assert 0 <= o.bbox[0] < o.bbox[2] <= 1242 and 0 <= o.bbox[1] < o.bbox[3] <= 375
        assert 0.0 <= o.truncated <= 1.0 and o.occluded in (0, 1, 2, 3)
        assert -math.pi <= o.alpha <= math.pi


@needs_kitti
@pytest.mark.parametrize("idx", [1, 3, 4])
def test_real_kitti_cars_contain_points_and_sit_on_ground(idx):
    points, objects, calib = kitti_io.read_frame(KITTI_TRAINING, idx)
    assert points.shape[1] == 4 and 100_000 < len(points) < 130_000
    boxes, names = kitti_io.objects_to_lidar(objects, calib)
    cars = boxes[[n == "Car" for n in names]].astype(np.float64)
    assert len(cars) > 0
    counts = count_points_in_boxes(points[:, :3].astype(np.float64), cars)
    dist = np.hypot(cars[:, 0], cars[:, 1])
    # near cars are dense; far ones (51 m, 59 m in these frames) still hold some points
    assert np.all(counts[dist < 45.0] > 50)
    assert np.all(counts >= 5)
    for box in cars:
        d = np.hypot(points[:, 0] - box[0], points[:, 1] - box[1])
        reach = 0.5 * max(box[3], box[4])
        ring = points[(d > reach + 0.5) & (d < reach + 3.0)]
        ground = np.percentile(ring[:, 2], 10)
        assert abs(box[2] - ground) < 0.3


@needs_kitti
def test_real_kitti_reprojection_matches_label_2d_boxes():
    for idx in (1, 3, 4):
        _, objects, calib = kitti_io.read_frame(KITTI_TRAINING, idx)
        objects = [o for o in objects if o.type in ("Car", "Cyclist", "Truck")]
        boxes, names = kitti_io.objects_to_lidar(objects, calib)
        again = kitti_io.lidar_boxes_to_objects(boxes, names, calib, camera_fov_only=False)
        for a, b in zip(objects, again):
            np.testing.assert_allclose(b.bbox, a.bbox, atol=3.0)
            assert b.alpha == pytest.approx(a.alpha, abs=0.02)
            assert b.rotation_y == pytest.approx(a.rotation_y, abs=1e-6)
