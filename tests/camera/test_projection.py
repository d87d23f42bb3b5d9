"""Lidar boxes into the image: KITTI boxes re-projected vs label_2 boxes, near plane, fusion."""
from __future__ import annotations


import numpy as np
import pytest

from admlops_ros.camera.projection import (CameraModel, ProjectionError, fuse, iou_matrix,
                                           transform_matrix)
from tests.paths import REPO_ROOT

KITTI = REPO_ROOT.parent / "shared" / "data" / "kitti" / "training"
RIGID = ("Car", "Van", "Truck", "Tram", "Misc", "Cyclist")

# Lidar (x fwd, y left, z up) -> camera optical (x right, y down, z fwd).
OPTICAL = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0],
                    [0.0, 0.0, 0.0, 1.0]])
K = np.array([[700.0, 0.0, 600.0, 0.0], [0.0, 700.0, 180.0, 0.0], [0.0, 0.0, 1.0, 0.0]])


def test_hand_computed_box():
    """A 2 x 2 x 2 m cube 10 m ahead, centred on the axis: corners at 9 and 11 m depth."""
    cam = CameraModel(K, OPTICAL, (375, 1242))
    proj = cam.project_boxes(np.array([[10.0, 0.0, -1.0, 2.0, 2.0, 2.0, 0.0]]))
    # nearest face (x = 9 m) spans +-1 m: u = 600 +- 700/9, v = 180 +- 700/9
    expect = [600 - 700 / 9, 180 - 700 / 9, 600 + 700 / 9, 180 + 700 / 9]
    np.testing.assert_allclose(proj.boxes2d[0], expect, atol=1e-9)
    assert proj.valid[0] and proj.depth[0] == pytest.approx(10.0)
    uv, depth = cam.project_points(np.array([[10.0, 1.0, 0.5]]))
    np.testing.assert_allclose(uv[0], [600 - 70, 180 - 35])
    assert depth[0] == 10.0


def test_box_behind_camera_is_invalid_and_clipping_to_image():
    cam = CameraModel(K, OPTICAL, (375, 1242))
    proj = cam.project_boxes(np.array([[-10.0, 0.0, -1.0, 2.0, 2.0, 2.0, 0.0],
                                       [10.0, 40.0, -1.0, 2.0, 2.0, 2.0, 0.0]]))
    assert not proj.valid.any()
    np.testing.assert_array_equal(proj.boxes2d, 0.0)
    assert not proj.edge_visible[0].any()


def test_near_plane_clipping_of_a_box_through_the_camera():
    """A long box from 5 m behind to 5 m ahead, 2 m to the right: its visible part runs from the
    near plane (clipped edges, not dropped corners) to 5 m."""
    near = 0.5
    cam = CameraModel(K, OPTICAL, None, near=near)
    box = np.array([[0.0, -2.0, -1.0, 10.0, 1.0, 2.0, 0.0]])   # x from -5 to 5, y -2.5..-1.5
    proj = cam.project_boxes(box)
    assert proj.valid[0]
    # visible vertices: far corners at depth 5, cut points at depth `near`
    u_left = 600 + 700 * 1.5 / 5.0            # inner far edge (y = -1.5 -> x_cam 1.5)
    u_right = 600 + 700 * 2.5 / near          # outer edge cut at the near plane
    v_top = 180 - 700 * 1.0 / near            # z = 1 cut at the near plane
    v_bottom = 180 + 700 * 1.0 / near
    np.testing.assert_allclose(proj.unclipped[0], [u_left, v_top, u_right, v_bottom], rtol=1e-9)
    # dropping the corners behind would have given only the far face:
    far_only = [600 + 700 * 1.5 / 5, 180 - 140, 600 + 700 * 2.5 / 5, 180 + 140]
    assert proj.unclipped[0, 2] > far_only[2] * 2
    vis = proj.edge_visible[0]
    assert vis.sum() == 8   # the 4 edges of the back face (x = -5 m) are all behind
    assert not vis[[0, 4, 8, 9]].any()


def test_kitti_calib_reader_and_errors(tmp_path):
    path = tmp_path / "calib.txt"
    path.write_text("P2: " + " ".join(["1"] * 12) + "\nR0_rect: 1 0 0 0 1 0 0 0 1\n")
    with pytest.raises(ProjectionError, match="Tr_velo_to_cam"):
        CameraModel.from_kitti(path)
    path.write_text("P2: 1 2 3\nR0_rect: 1 0 0 0 1 0 0 0 1\nTr_velo_to_cam: " + "0 " * 12)
    with pytest.raises(ProjectionError, match="P2 needs 12 numbers"):
        CameraModel.from_kitti(path)
    with pytest.raises(ProjectionError, match="cannot read"):
        CameraModel.from_kitti(tmp_path / "missing.txt")
    with pytest.raises(ProjectionError, match="singular"):
        CameraModel(K, np.zeros((4, 4)) + np.diag([0, 0, 0, 1.0]))


def test_camera_info_and_transform_matrix():
    class Info:
        K = [700.0, 0, 600, 0, 700, 180, 0, 0, 1]
        P = [0.0] * 12
        width, height = 1242, 375

    ext = transform_matrix((0, 0, 0), (0.5, -0.5, 0.5, 0.5))
    np.testing.assert_allclose(ext, OPTICAL, atol=1e-12)
    cam = CameraModel.from_camera_info(Info(), ext)           # P zero -> K
    np.testing.assert_allclose(cam.projection, K)
    assert cam.image_size == (375, 1242)
    Info.K = [0.0] * 9
    with pytest.raises(ProjectionError, match="no calibration"):
        CameraModel.from_camera_info(Info(), ext)


def test_fusion_greedy_one_to_one_same_class():
    cam = CameraModel(K, OPTICAL, (375, 1242))
    boxes3d = np.array([[10.0, 0.0, -1.0, 4.0, 2.0, 1.5, 0.0],
                        [10.0, 3.0, -1.0, 0.8, 0.8, 1.8, 0.0],
                        [-5.0, 0.0, -1.0, 4.0, 2.0, 1.5, 0.0]])
    proj = cam.project_boxes(boxes3d)
    boxes2d = np.concatenate([proj.boxes2d[:2] + 2.0, proj.boxes2d[:1] + 20.0])
    result = fuse(boxes2d, ["Car", "Pedestrian", "Car"], proj, ["Car", "Pedestrian", "Car"], 0.5)
    assert result.object_index.tolist() == [0, 1, -1]     # third: object 0 already taken
    assert result.confirmed.tolist() == [True, True, False]   # object 2 behind the camera
    assert result.iou[0] > 0.9
    other = fuse(boxes2d[:1], ["Pedestrian"], proj, ["Car", "Pedestrian", "Car"], 0.5)
    assert other.object_index.tolist() == [-1]             # class differs
    mapped = fuse(boxes2d[:1], ["Van"], proj, ["Car", "Pedestrian", "Car"], 0.5,
                  class_map={"Van": "Car"})
    assert mapped.pairs[0][:2] == (0, 0)
    np.testing.assert_allclose(iou_matrix([[0, 0, 2, 2]], [[1, 1, 3, 3], [5, 5, 5, 6]]),
                               [[1 / 7, 0.0]])
    with pytest.raises(ProjectionError, match="in \\(0, 1\\]"):
        fuse(boxes2d, ["Car"] * 3, proj, ["Car"] * 3, 0.0)


@pytest.mark.skipif(not (KITTI / "label_2").is_dir(),
                    reason=f"KITTI frames not found in {KITTI} (../shared/data/kitti/training "
                           "is laid beside the repo in sessions and CI)")
def test_kitti_label_boxes_project_onto_label_2d_boxes():
    """label_2 3D boxes (camera frame) -> lidar frame -> projected back: the 2D label boxes within
    1.5 px for rigid objects, 10 px for pedestrians (arms and legs outside the 3D box fit)."""
    from admlops_ros.evaluation.kitti_io import (boxes_camera_to_lidar, objects_to_camera_boxes,
                                                 read_calib, read_label)

    checked = 0
    for label_path in sorted((KITTI / "label_2").glob("*.txt")):
        calib_path = KITTI / "calib" / label_path.name
        objs = [o for o in read_label(label_path) if o.type != "DontCare"]
        lidar = boxes_camera_to_lidar(objects_to_camera_boxes(objs), read_calib(calib_path))
        cam = CameraModel.from_kitti(calib_path, (375, 1242))
        proj = cam.project_boxes(lidar)
        for obj, box, valid in zip(objs, proj.boxes2d, proj.valid):
            assert valid, obj
            err = np.abs(np.asarray(obj.bbox) - box).max()
            tol = 1.5 if obj.type in RIGID else 10.0
            assert err <= tol, (label_path.name, obj.type, obj.bbox, box.tolist())
            checked += 1
    assert checked >= 8


@pytest.mark.parametrize("seed", range(6))
def test_matrix_to_quaternion_inverts_transform_matrix(seed):
    from admlops_ros.camera.projection import matrix_to_quaternion, transform_matrix
    rng = np.random.default_rng(seed)
    q = rng.normal(size=4)
    if seed == 0:
        q = np.array([0.0, 0.0, 0.0, 1.0])  # identity
    elif seed == 1:
        q = np.array([1.0, 0.0, 0.0, 0.0])  # 180 degrees about x: w = 0
    m = transform_matrix((1, 2, 3), q)
    back = transform_matrix((1, 2, 3), matrix_to_quaternion(m[:3, :3]))
    np.testing.assert_allclose(back, m, atol=1e-12)
