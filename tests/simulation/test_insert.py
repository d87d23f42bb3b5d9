"""Simulated objects inserted into a scan: shadows along the rays, point counts, placement."""
from __future__ import annotations

import numpy as np
import pytest

from admlops_ros.lidar.geometry import points_in_boxes, rotated_iou_bev
from admlops_ros.simulation import raycast as rc
from admlops_ros.simulation.frame import cast
from admlops_ros.simulation.insert import (InsertConfig, InsertError, Placement,
                                           insert_objects, ray_cells, render_insertion)
from admlops_ros.simulation.primitives import PrimitiveList
from admlops_ros.simulation.scene import Scene
from admlops_ros.simulation.sensor import SensorConfig

SENSOR = SensorConfig.preset("hdl64e_s2_kitti")
GROUND_Z = -1.73
WALL_X = 30.0
CAR = Placement("Car", (24.0, 1.0, GROUND_Z, 4.2, 1.75, 1.5, 0.3), shape_seed=7)


@pytest.fixture(scope="module")
def background():
    """A flat ground plane and a wall 30 m ahead (30 m wide, 4 m high) scanned by the S2:
    (points [N, 4], is_wall [N] bool)."""
    prims = PrimitiveList()
    prims.add_box(WALL_X + 0.25, 0.0, GROUND_Z - 0.2, GROUND_Z + 4.0, 0.0, 0.5, 30.0, 0.4)
    table, owner = prims.pack()
    terrain = np.zeros(rc.TERRAIN_PARAMS)
    terrain[0] = GROUND_Z
    road = np.zeros(rc.ROAD_PARAMS)
    road[rc.R_REFL_ROAD] = road[rc.R_REFL_TERRAIN] = 0.35
    road[rc.R_DASH_PERIOD] = 12.0
    road[rc.R_HALF_LEFT] = road[rc.R_HALF_RIGHT] = 1e3
    scene = Scene(prims=table, owner=owner, terrain=terrain, road=road,
                  boxes=np.zeros((0, 7), np.float32), names=[], kind="test")
    points, point_owner, _, _ = cast(scene, SENSOR, 123)
    return points, point_owner == -1


def _ray_crosses(points: np.ndarray, box, grow: float) -> np.ndarray:
    """[N] bool: the segment from each point's laser (its firing height) to the point passes
    through ``box`` grown by ``grow`` metres (sampled every ~2 cm)."""
    elev, origin_z, _ = SENSOR.sorted_beams()
    beam = ray_cells(points, SENSOR)[0] % SENSOR.num_beams
    start = np.c_[np.zeros((len(points), 2)), origin_z[beam]]
    big = np.asarray(box, np.float64).copy()
    big[2] -= grow
    big[3:6] += 2 * grow
    t = np.linspace(0.0, 1.0, 1500)
    out = np.zeros(len(points), bool)
    for i in range(0, len(points), 64):
        seg = start[i:i + 64, None] + t[None, :, None] * (points[i:i + 64, None, :3]
                                                         - start[i:i + 64, None])
        out[i:i + 64] = points_in_boxes(seg.reshape(-1, 3), big[None])[:, 0].reshape(
            len(seg), -1).any(axis=1)
    return out


def test_a_car_removes_the_wall_points_behind_it_along_its_rays_and_none_elsewhere(background):
    points, wall = background
    res = render_insertion(points, [CAR], SENSOR, seed=5)
    assert wall.sum() > 4000 and res.num_points[0] > 200
    # candidates: points whose ray passes near the car's box; everything else is kept
    near = np.flatnonzero(np.abs(np.arctan2(points[:, 1], points[:, 0])
                                 - np.arctan2(CAR.box[1], CAR.box[0])) < 0.15)
    crosses = np.zeros(len(points), bool)
    crosses[near] = _ray_crosses(points[near], CAR.box, 0.02)
    assert not res.removed[~crosses].any(), "points off the car's rays removed"
    # rays through the solid lower body (between the wheel arches' top and the belt line)
    # always hit the car: every wall point behind it is gone
    core = np.array(CAR.box)
    core[2] += 0.74
    core[3] -= 0.2
    core[4] -= 0.1
    core[5] = 0.07
    through_core = np.zeros(len(points), bool)
    through_core[near] = _ray_crosses(points[near], core, 0.0)
    assert (through_core & wall).sum() > 30
    assert res.shadowed[through_core & wall].all()
    assert (res.shadowed & wall).sum() > 0.6 * (wall & crosses).sum()
    # a shadowed point lies beyond the car; the counts per object add up
    assert (np.hypot(points[res.shadowed, 0], points[res.shadowed, 1]) > 21.0).all()
    assert res.shadow_removed.sum() == res.shadowed.sum()
    assert res.inside_removed.sum() == (res.removed & ~res.shadowed).sum()
    assert len(res.points) == len(points) - res.removed.sum() + (res.point_source >= 0).sum()


def test_inserted_boxes_carry_their_points_and_a_real_point_in_front_occludes(background):
    points, _ = background
    res = render_insertion(points, [CAR], SENSOR, seed=5)
    inside = points_in_boxes(res.points, res.boxes)[:, 0]
    assert res.num_points.tolist() == [int(inside.sum())]
    assert (res.point_source[inside] == 0).all()      # no real point left inside the box
    # a real post between the sensor and the car takes the car's returns on its rays
    az = np.arctan2(CAR.box[1], CAR.box[0])
    post = np.array([[12.0 * np.cos(az), 12.0 * np.sin(az), z, 0.3]
                     for z in np.linspace(-1.6, 0.1, 300)], np.float32)
    cells_post = set(ray_cells(post, SENSOR)[0].tolist())
    occluded = render_insertion(np.concatenate([points, post]), [CAR], SENSOR, seed=5)
    car_pts = occluded.points[occluded.point_source == 0]
    assert not set(ray_cells(car_pts, SENSOR)[0].tolist()) & cells_post
    assert occluded.num_points[0] < res.num_points[0]
    assert occluded.occlusion[0] > res.occlusion[0]
    assert not occluded.removed[len(points):].any()   # the post itself stays


def test_sampled_objects_stand_on_the_ground_clear_of_labels_and_blocked_boxes(background):
    points, _ = background
    labelled = np.array([[12.0, -3.0, GROUND_Z, 4.0, 1.7, 1.5, 0.0],
                         [20.0, 4.0, GROUND_Z, 4.0, 1.7, 1.5, 0.1]], np.float32)
    blocked = np.array([[18.0, -6.0, GROUND_Z, 4.0, 1.7, 1.5, 0.0]], np.float32)
    cfg = InsertConfig(num_objects=(("Car", 4, 4), ("Pedestrian", 2, 2), ("Cyclist", 1, 1)),
                       max_distance=28.0, azimuth_deg=(-60.0, 60.0))
    res = insert_objects(points, labelled, ["Car", "Car"], 11, SENSOR, cfg, blocked=blocked)
    assert len(res.boxes) >= 5
    assert np.abs(res.boxes[:, 2] - GROUND_Z).max() < 0.05
    assert (np.hypot(res.boxes[:, 0], res.boxes[:, 1]) <= 28.0).all()
    assert rotated_iou_bev(res.boxes, np.concatenate([labelled, blocked])).max() == 0.0
    iou = rotated_iou_bev(res.boxes, res.boxes)
    assert (iou - np.diag(np.diag(iou))).max() == 0.0
    assert (res.num_points >= cfg.min_points).all()
    inside = points_in_boxes(res.points, res.boxes).sum(axis=0)
    assert res.num_points.tolist() == inside.tolist()
    assert set(res.names) <= {"Car", "Pedestrian", "Cyclist"}
    assert res.difficulty.min() >= -1 and res.occlusion.max() <= 1.0


def test_insertion_is_deterministic_for_a_seed(background):
    points, _ = background
    cfg = InsertConfig(max_distance=28.0, azimuth_deg=(-60.0, 60.0))
    a = insert_objects(points, np.zeros((0, 7)), [], 3, SENSOR, cfg)
    b = insert_objects(points, np.zeros((0, 7)), [], 3, SENSOR, cfg)
    c = insert_objects(points, np.zeros((0, 7)), [], 4, SENSOR, cfg)
    assert np.array_equal(a.points, b.points) and np.array_equal(a.boxes, b.boxes)
    assert a.names == b.names and np.array_equal(a.removed, b.removed)
    assert not (len(a.boxes) == len(c.boxes) and np.array_equal(a.boxes, c.boxes))


def test_no_ground_seen_no_placement_and_bad_settings_name_the_field(background):
    points, wall = background
    cfg = InsertConfig(num_objects=(("Car", 3, 3),), min_distance=35.0, max_distance=60.0,
                       azimuth_deg=(-20.0, 20.0))  # behind the wall: no real point there
    res = insert_objects(points, np.zeros((0, 7)), [], 1, SENSOR, cfg)
    assert len(res.boxes) == 0 and np.array_equal(res.points, points)
    with pytest.raises(InsertError, match="num_objects"):
        InsertConfig(num_objects=(("Van", 1, 2),))
    with pytest.raises(InsertError, match="azimuth_deg"):
        InsertConfig(azimuth_deg=(10.0, -10.0))
    with pytest.raises(InsertError, match=r"\[N, 4\]"):
        insert_objects(points[:, :3], np.zeros((0, 7)), [], 1, SENSOR, cfg)
