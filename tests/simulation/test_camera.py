"""Camera renderer: determinism, 2D labels vs projected 3D boxes, occlusion and truncation."""
from __future__ import annotations

import math

import numpy as np
import pytest

from admlops_ros.simulation import generate_scene
from admlops_ros.simulation.camera import (CameraConfig, CameraConfigError, project_box_corners,
                                           render_frame, render_scene, truncation)
from admlops_ros.simulation.primitives import PrimitiveList
from admlops_ros.simulation.scene import Scene
from admlops_ros.simulation.shapes import add_car

SEED = 11


@pytest.fixture(scope="module")
def frame():
    return render_frame(SEED, keep_instance=True)


def _scene_with_cars(cars, seed: int = 0) -> Scene:
    """The terrain/road of scene ``seed`` with only the given cars (x, y, yaw) on flat ground."""
    base = generate_scene(seed)
    terrain = base.terrain.copy()
    terrain[1:] = 0.0                          # flat ground at z = terrain[0]
    z0 = float(terrain[0])
    prims = PrimitiveList()
    boxes = []
    rng = np.random.default_rng(0)
    for k, (x, y, yaw) in enumerate(cars):
        add_car(prims, rng, x, y, z0, yaw, 4.0, 1.7, 1.5, owner=k)
        boxes.append((x, y, z0, 4.0, 1.7, 1.5, yaw))
    table, owner = prims.pack()
    return Scene(prims=table, owner=owner, terrain=terrain, road=base.road,
                 boxes=np.asarray(boxes, np.float32), names=["Car"] * len(cars), kind="urban")


def test_frame_contract(frame):
    cam = CameraConfig()
    assert frame.image.shape == (cam.height, cam.width, 3) and frame.image.dtype == np.uint8
    k = len(frame.names)
    assert k > 0
    assert frame.boxes2d.shape == (k, 4)
    assert frame.occlusion_level.shape == frame.truncation.shape == (k,)
    b = frame.boxes2d
    assert (b[:, 0] >= 0).all() and (b[:, 2] <= cam.width).all()
    assert (b[:, 1] >= 0).all() and (b[:, 3] <= cam.height).all()
    assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
    # the 2D box is the extent of the object's visible pixels in the instance buffer
    for box, idx in zip(b.astype(int), frame.box_index):
        ys, xs = np.nonzero(frame.instance == idx)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == tuple(box)


def test_deterministic_per_seed(frame):
    again = render_frame(SEED)
    assert np.array_equal(frame.image, again.image)
    assert np.array_equal(frame.boxes2d, again.boxes2d) and frame.names == again.names
    other = render_frame(SEED + 1)
    assert not np.array_equal(frame.image[:100], other.image[:100])


def test_fully_visible_car_box_is_projected_3d_box():
    cam = CameraConfig()
    scene = _scene_with_cars([(12.0, 2.0, 0.3)])
    f = render_scene(scene, 0, cam)
    assert f.names == ["Car"]
    assert f.occlusion_level[0] == 0 and f.truncation[0] == 0.0
    ext, n_front = project_box_corners(scene.boxes, cam)
    assert n_front[0] == 8
    # the shape is inset 3 cm (roof more) inside its box: a few pixels at 12 m; the bottom
    # is the near wheels' contact, inset from the box's near bottom corner (~7 % of the height)
    err = np.abs(f.boxes2d[0] - ext[0])
    assert err[:3].max() <= 4.0, (f.boxes2d[0], ext[0])
    assert err[3] <= 0.1 * (ext[0, 3] - ext[0, 1]), (f.boxes2d[0], ext[0])


def test_occlusion_levels_and_truncation():
    cam = CameraConfig()
    # car 1 straight behind car 0: mostly hidden; car 2 half out of the image on the right
    scene = _scene_with_cars([(10.0, 0.0, 0.0), (17.0, 0.0, 0.0), (9.0, -9.0, 0.0)])
    f = render_scene(scene, 0, cam)
    lv = dict(zip(f.box_index.tolist(), f.occlusion_level.tolist()))
    occ = dict(zip(f.box_index.tolist(), f.occlusion.tolist()))
    tr = dict(zip(f.box_index.tolist(), f.truncation.tolist()))
    assert lv[0] == 0 and occ[0] < 0.05
    assert 1 in lv and lv[1] >= 2 and occ[1] > 0.5
    assert tr[0] == 0.0 and 0.2 < tr[2] < 0.9
    # truncation of a box straddling the right image border, computed directly
    t = truncation(scene.boxes, cam)
    assert math.isclose(float(t[2]), tr[2])


def test_config_errors():
    with pytest.raises(CameraConfigError):
        CameraConfig(width=4)
    with pytest.raises(CameraConfigError):
        render_frame(-1)
