"""Simulator: determinism, label sanity, sensor presets, scene content."""
from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import Polygon

from admlops_ros.simulation import (LidarFrame, SceneConfig, SceneConfigError, SensorConfig,
                                    SensorConfigError, generate_scene, simulate_frame)
from admlops_ros.simulation.labels import difficulty, occlusion_level
from admlops_ros.simulation.preview import box_corners_bev

SEEDS = (0, 1, 2, 3, 4, 5)
NOISE_TOL = 0.1   # metres: 5 sigma of the default 2 cm range noise


@pytest.fixture(scope="module")
def frames():
    return {seed: simulate_frame(seed) for seed in SEEDS}


def _inside(points: np.ndarray, box: np.ndarray, tol: float = 0.0) -> np.ndarray:
    c, s = np.cos(box[6]), np.sin(box[6])
    dx, dy = points[:, 0] - box[0], points[:, 1] - box[1]
    u, v = c * dx + s * dy, -s * dx + c * dy
    return ((np.abs(u) <= box[3] / 2 + tol) & (np.abs(v) <= box[4] / 2 + tol)
            & (points[:, 2] >= box[2] - tol) & (points[:, 2] <= box[2] + box[5] + tol))


def test_frame_contract(frames):
    f = frames[0]
    assert isinstance(f, LidarFrame)
    assert f.points.dtype == np.float32 and f.points.ndim == 2 and f.points.shape[1] == 4
    assert f.boxes.dtype == np.float32 and f.boxes.shape == (len(f.names), 7)
    assert f.num_points.dtype == np.int32 and f.difficulty.dtype == np.int32
    assert f.occlusion.dtype == np.float32 and f.seed == 0
    assert len(f.point_owner) == len(f.points)
    for frame in frames.values():
        assert 100_000 < len(frame.points) < 150_000
        assert set(frame.names) <= {"Car", "Van", "Pedestrian", "Cyclist"}
        assert frame.points[:, 3].min() >= 0.0 and frame.points[:, 3].max() <= 1.0
        rng3 = np.linalg.norm(frame.points[:, :3], axis=1)
        assert rng3.max() <= 120.0 + NOISE_TOL
        assert set(np.unique(frame.difficulty)) <= {-1, 0, 1, 2}
        assert np.all((frame.occlusion >= 0) & (frame.occlusion <= 1))


def test_deterministic():
    a, b = simulate_frame(11), simulate_frame(11)
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.num_points, b.num_points)
    np.testing.assert_array_equal(a.occlusion, b.occlusion)
    assert a.names == b.names
    c = simulate_frame(12)
    assert len(c.points) != len(a.points) or not np.array_equal(c.points, a.points)


def test_every_box_contains_its_points(frames):
    for frame in frames.values():
        pts = frame.points.astype(np.float64)
        for i, box in enumerate(frame.boxes.astype(np.float64)):
            own = pts[frame.point_owner == i]
            assert _inside(own, box, NOISE_TOL).all(), (frame.seed, i, frame.names[i])
            assert frame.num_points[i] == int(_inside(pts, box).sum())
            assert frame.num_points[i] >= 0.9 * len(own) - 5


def test_no_points_below_ground(frames):
    for seed, frame in frames.items():
        scene = generate_scene(seed)
        pts = frame.points.astype(np.float64)
        ground = scene.ground_height(pts[:, 0], pts[:, 1])
        assert (pts[:, 2] - ground).min() > -NOISE_TOL, seed
        # ground is at about -mount_height under the sensor
        near = np.hypot(pts[:, 0], pts[:, 1]) < 6.0
        assert abs(np.median(pts[near & (frame.point_owner == -2), 2]) + 1.73) < 0.1


def test_scene_content(frames):
    cfg = SceneConfig()
    for frame in frames.values():
        names = frame.names
        vehicles = names.count("Car") + names.count("Van")
        assert vehicles <= cfg.num_cars[1]
        assert names.count("Pedestrian") <= cfg.num_pedestrians[1]
        assert names.count("Cyclist") <= cfg.num_cyclists[1]
        dist = np.hypot(frame.boxes[:, 0], frame.boxes[:, 1])
        assert dist.min() >= cfg.min_distance and dist.max() <= cfg.max_distance
        polys = [Polygon(box_corners_bev(b)) for b in frame.boxes]
        for i in range(len(polys)):
            for j in range(i + 1, len(polys)):
                assert polys[i].intersection(polys[j]).area < 1e-6, (frame.seed, i, j)
        # box bottoms sit on the ground or a sidewalk (<= 0.25 m above the terrain)
        scene = generate_scene(frame.seed)
        ground = scene.ground_height(frame.boxes[:, 0], frame.boxes[:, 1])
        assert np.all(np.abs(frame.boxes[:, 2] - ground) < 0.25)
    all_names = sum((f.names for f in frames.values()), [])
    assert all_names.count("Car") >= 3 * len(frames) // 2
    ped = np.concatenate([f.boxes[[n == "Pedestrian" for n in f.names]] for f in frames.values()])
    assert np.all((ped[:, 5] >= 1.5) & (ped[:, 5] <= 1.95)) and len(ped) > 0
    assert np.all((ped[:, 4] >= 0.5) & (ped[:, 4] <= 0.9))


def test_objects_seen_are_labelled_with_points(frames):
    visible = 0
    for frame in frames.values():
        near = (np.hypot(frame.boxes[:, 0], frame.boxes[:, 1]) < 30) & (frame.occlusion < 0.5)
        if near.any():
            assert frame.num_points[near].min() > 20
            visible += int(near.sum())
    assert visible > 5


def test_difficulty_rule():
    boxes = np.array([[10, 0, -1.7, 3.9, 1.6, 1.56, 0],    # 112 px
                      [35, 0, -1.7, 3.9, 1.6, 1.56, 0],    # 32 px
                      [60, 0, -1.7, 3.9, 1.6, 1.56, 0],    # 19 px
                      [10, 0, -1.7, 3.9, 1.6, 1.56, 0],
                      [10, 0, -1.7, 3.9, 1.6, 1.56, 0]], np.float32)
    occ = np.array([0.0, 0.0, 0.0, 0.6, 0.95], np.float32)
    npts = np.array([100, 100, 100, 100, 100])
    np.testing.assert_array_equal(difficulty(boxes, occ, npts), [0, 1, -1, 2, -1])
    np.testing.assert_array_equal(difficulty(boxes[:1], occ[:1], [0]), [-1])
    np.testing.assert_array_equal(occlusion_level(np.array([0.1, 0.3, 0.7, 0.9])), [0, 1, 2, 3])


@pytest.mark.parametrize("name,beams", [("hdl64", 64), ("hdl32", 32), ("pandar40", 40),
                                        ("vls128", 128)])
def test_sensor_presets_beam_counts(name, beams):
    sensor = SensorConfig.preset(name)
    assert sensor.num_beams == beams
    frame = simulate_frame(5, sensor=sensor)
    pts = frame.points.astype(np.float64)
    elev = np.degrees(np.arctan2(pts[:, 2], np.hypot(pts[:, 0], pts[:, 1])))
    table = np.sort(np.asarray(sensor.elevations_deg))
    nearest = np.abs(elev[:, None] - table[None]).argmin(axis=1)
    assert np.abs(elev - table[nearest]).max() < 0.01
    assert len(np.unique(nearest)) >= int(0.8 * beams)


def test_hdl64_default_geometry():
    sensor = SensorConfig()
    elev = np.asarray(sensor.elevations_deg)
    assert sensor.num_beams == 64 and abs(elev.max() - 2.0) < 1e-6
    assert abs(elev.min() + 24.9) < 1e-6
    gaps = -np.diff(elev)
    assert gaps[:31].mean() < gaps[32:].mean()       # denser upper block
    assert 0.08 <= sensor.azimuth_step_deg <= 0.17
    assert SensorConfig.preset("64") == sensor


def test_config_errors():
    with pytest.raises(SensorConfigError, match="preset"):
        SensorConfig.preset("hdl65")
    with pytest.raises(SensorConfigError, match="azimuth_step_deg"):
        SensorConfig(azimuth_step_deg=0.0)
    with pytest.raises(SceneConfigError, match="num_cars"):
        SceneConfig(num_cars=(5, 2))
    with pytest.raises(SceneConfigError, match="scene_kinds"):
        SceneConfig(scene_kinds=("desert",))


def test_no_noise_sensor_and_custom_scene():
    sensor = SensorConfig().with_overrides(range_noise_std=0.0, dropout_prob=0.0,
                                           intensity_noise_std=0.0)
    frame = simulate_frame(3, scene=SceneConfig(num_cars=(1, 1), num_pedestrians=(0, 0),
                                                num_cyclists=(0, 0), scene_kinds=("rural",)),
                           sensor=sensor)
    assert frame.names in (["Car"], ["Van"])
    assert frame.scene_kind == "rural"
    pts = frame.points.astype(np.float64)
    own = pts[frame.point_owner == 0]
    assert _inside(own, frame.boxes[0].astype(np.float64), 1e-3).all()


def test_preview_writes_png(tmp_path):
    from admlops_ros.simulation.preview import main
    out = tmp_path / "bev.png"
    assert main(["2", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
