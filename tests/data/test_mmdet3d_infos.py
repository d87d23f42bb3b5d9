"""mmdet3d 1.x info files: plain-pickle readable, mmdet3d's keys and conventions, values that agree
with the label, calib and velodyne files."""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest

from admlops_ros.data import mmdet3d_infos as infos
from admlops_ros.evaluation import kitti_io
from admlops_ros.evaluation.protocol import kitti_difficulty

INSTANCE_KEYS = {"bbox", "bbox_label", "bbox_3d", "bbox_label_3d", "depth", "center_2d",
                 "num_lidar_pts", "difficulty", "truncated", "occluded", "alpha", "score",
                 "index", "group_id"}
DONTCARE = "DontCare -1 -1 -10 500.00 170.00 540.00 200.00 -1 -1 -1 -1000 -1000 -1000 -10\n"


class _BuiltinsOnly(pickle.Unpickler):
    """Refuses every global: a pickle of dicts, lists, str, int, float only loads."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"pickle needs {module}.{name}")


def _load(path: Path):
    return _BuiltinsOnly(io.BytesIO(path.read_bytes())).load()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Three simulated frames as KITTI (nominal calib), one with a DontCare line and scores."""
    from admlops_ros.simulation import SceneConfig, SensorConfig, simulate_frame
    root = tmp_path_factory.mktemp("kitti")
    for i in range(3):
        frame = simulate_frame(40 + i, SceneConfig(), SensorConfig.preset("hdl64"))
        kitti_io.write_frame(root / "training", i, frame)
    label = root / "training" / "label_2" / "000001.txt"
    objects = kitti_io.read_label(label)
    for k, obj in enumerate(objects):
        obj.score = 0.5 + 0.01 * k
    kitti_io.write_label(label, objects)
    with label.open("a") as f:
        f.write(DONTCARE.replace("\n", " 0.0\n"))
    infos.write_infos(root, {"train": ["000000", "000001"], "val": ["000002"]})
    return root


def _count_inside(points: np.ndarray, box: np.ndarray) -> int:
    """Points strictly inside a bottom-centre LiDAR box (rotate into the box frame)."""
    d = points[:, :3].astype(np.float64) - box[:3]
    c, s = np.cos(-box[6]), np.sin(-box[6])
    x, y = c * d[:, 0] - s * d[:, 1], s * d[:, 0] + c * d[:, 1]
    return int(np.sum((np.abs(x) < box[3] / 2) & (np.abs(y) < box[4] / 2)
                      & (d[:, 2] >= 0) & (d[:, 2] <= box[5])))


def test_files_load_with_plain_pickle_and_have_mmdet3d_shape(dataset):
    loaded = {s: _load(infos.info_path(dataset, s)) for s in infos.SPLITS}
    train = loaded["train"]
    assert set(train) == {"metainfo", "data_list"}
    assert train["metainfo"] == {
        "categories": {"Pedestrian": 0, "Cyclist": 1, "Car": 2, "Van": 3, "Truck": 4,
                       "Person_sitting": 5, "Tram": 6, "Misc": 7, "DontCare": -1},
        "dataset": "kitti", "info_version": "1.1"}
    assert [d["sample_idx"] for d in train["data_list"]] == [0, 1]
    assert [d["sample_idx"] for d in loaded["val"]["data_list"]] == [2]
    assert "DontCare" not in loaded["val"]["metainfo"]["categories"]  # per file, as mmdet3d
    assert loaded["trainval"]["data_list"] == train["data_list"] + loaded["val"]["data_list"]
    info = train["data_list"][0]
    assert set(info) == {"sample_idx", "images", "lidar_points", "instances"}
    assert set(info["images"]) == {"CAM0", "CAM1", "CAM2", "CAM3", "R0_rect"}
    assert set(info["images"]["CAM0"]) == {"cam2img", "lidar2img"}
    assert set(info["images"]["CAM2"]) == {"img_path", "height", "width", "cam2img",
                                           "lidar2img", "lidar2cam"}
    assert info["images"]["CAM2"]["img_path"] == "000000.png"
    assert (info["images"]["CAM2"]["height"], info["images"]["CAM2"]["width"]) == (375, 1242)
    assert info["lidar_points"]["lidar_path"] == "000000.bin"
    assert set(info["lidar_points"]) == {"num_pts_feats", "lidar_path", "Tr_velo_to_cam",
                                         "Tr_imu_to_velo"}
    assert info["lidar_points"]["num_pts_feats"] == 4
    for mat in (info["images"]["CAM2"]["cam2img"], info["images"]["CAM2"]["lidar2img"],
                info["images"]["CAM2"]["lidar2cam"], info["images"]["R0_rect"],
                info["lidar_points"]["Tr_velo_to_cam"], info["lidar_points"]["Tr_imu_to_velo"]):
        assert np.asarray(mat).shape == (4, 4)
    assert info["instances"] and all(set(i) == INSTANCE_KEYS for i in info["instances"])


def test_calib_matrices_follow_mmdet3d(dataset):
    info = _load(infos.info_path(dataset, "train"))["data_list"][0]
    calib = kitti_io.read_calib(dataset / "training" / "calib" / "000000.txt")
    cam2 = info["images"]["CAM2"]
    np.testing.assert_allclose(cam2["lidar2cam"], calib.lidar2cam, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(cam2["cam2img"])[:3], calib.P2)
    np.testing.assert_allclose(cam2["lidar2img"],
                               np.asarray(cam2["cam2img"]) @ np.asarray(cam2["lidar2cam"]))
    np.testing.assert_allclose(np.asarray(info["images"]["R0_rect"])[:3, :3], calib.R0_rect,
                               rtol=1e-6)
    np.testing.assert_allclose(np.asarray(info["lidar_points"]["Tr_velo_to_cam"])[:3],
                               calib.Tr_velo_to_cam, rtol=1e-6, atol=1e-7)


def test_instances_agree_with_label_files(dataset):
    from admlops_ros.data.kitti_dataset import fov_mask
    data = _load(infos.info_path(dataset, "train"))["data_list"]
    for info in data:
        frame = f"{info['sample_idx']:06d}"
        objects = kitti_io.read_label(dataset / "training" / "label_2" / f"{frame}.txt")
        calib = kitti_io.read_calib(dataset / "training" / "calib" / f"{frame}.txt")
        points = kitti_io.read_velodyne(dataset / "training" / "velodyne" / f"{frame}.bin")
        points = points[fov_mask(points, calib)]
        cam = kitti_io.objects_to_camera_boxes(objects)
        level = kitti_difficulty(np.array([o.bbox for o in objects]),
                                 np.array([o.occluded for o in objects]),
                                 np.array([o.truncated for o in objects]))
        assert len(info["instances"]) == len(objects)
        index = 0
        for k, (inst, obj) in enumerate(zip(info["instances"], objects)):
            np.testing.assert_allclose(inst["bbox_3d"], cam[k])
            assert inst["bbox"] == list(obj.bbox)
            assert inst["difficulty"] == level[k]
            assert inst["group_id"] == k
            assert inst["score"] == (obj.score if obj.score is not None else 0.0)
            p2 = np.asarray(info["images"]["CAM2"]["cam2img"])
            centre = np.append(cam[k, :3] + [0.0, -cam[k, 4] / 2, 0.0], 1.0) @ p2.T
            np.testing.assert_allclose(inst["center_2d"], centre[:2] / centre[2])
            assert inst["depth"] == pytest.approx(centre[2])
            if obj.type == "DontCare":
                assert (inst["bbox_label"], inst["num_lidar_pts"], inst["index"]) == (-1, -1, -1)
                continue
            assert inst["bbox_label"] == inst["bbox_label_3d"] == infos.KITTI_CLASSES.index(
                obj.type)
            assert inst["index"] == index
            index += 1
            box = kitti_io.boxes_camera_to_lidar(cam[k:k + 1], calib)[0]
            assert inst["num_lidar_pts"] == _count_inside(points, box)
    assert any(i["num_lidar_pts"] > 0 for d in data for i in d["instances"])
    assert any(i["score"] > 0 for d in data for i in d["instances"])


def test_missing_file_is_named(dataset, tmp_path):
    with pytest.raises(infos.InfoError, match=r"frame 000009: velodyne file .*000009.bin"):
        infos.build_infos(dataset, ["000009"])


def test_reduced_cloud_is_the_camera_frustum(dataset):
    from admlops_ros.data.kitti_dataset import fov_mask
    path = infos.write_reduced(dataset / "training", "000000")
    points = kitti_io.read_velodyne(dataset / "training" / "velodyne" / "000000.bin")
    calib = kitti_io.read_calib(dataset / "training" / "calib" / "000000.txt")
    reduced = kitti_io.read_velodyne(path)
    assert 0 < len(reduced) < len(points)
    np.testing.assert_array_equal(reduced, points[fov_mask(points, calib)])
