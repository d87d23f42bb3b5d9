"""KITTI-format datasets as training frames: real frames, the camera-view filter, mixing."""
from __future__ import annotations

import numpy as np
import pytest

from admlops_ros.data.kitti_dataset import (DatasetError, KittiDataset, fov_mask,
                                            mixed_frame_fn)
from admlops_ros.evaluation import kitti_io
from tests.paths import SHARED_KITTI

TRAINING = SHARED_KITTI / "training"
needs_kitti = pytest.mark.skipif(not (TRAINING / "velodyne").is_dir(),
                                 reason=f"real KITTI frames not found at {TRAINING} "
                                        "(../shared beside the repository)")


def test_fov_of_the_nominal_calib_by_hand():
    """Nominal KITTI calib: straight ahead in view; behind, far to the side, too near or too
    far (mmdet3d's 0.001-100 m frustum depth) out."""
    calib = kitti_io.nominal_calib()
    pts = np.array([[10.0, 0.0, -1.0], [-10.0, 0.0, -1.0], [5.0, 30.0, -1.0],
                    [150.0, 0.0, 0.0], [20.0, -15.0, -1.0], [0.2, 0.0, -1.0]])
    assert fov_mask(pts, calib).tolist() == [True, False, False, False, True, False]
    assert fov_mask(pts, calib, image_hw=(375, 600)).tolist()[4] is False  # right edge moves


@needs_kitti
def test_real_frames_load_with_lidar_boxes_difficulty_and_points_in_view():
    ds = KittiDataset(TRAINING)
    assert ds.ids == [f"{i:06d}" for i in range(6)]
    for i in range(len(ds)):
        frame = ds[i]
        calib = kitti_io.read_calib(TRAINING / "calib" / f"{frame.frame_id}.txt")
        assert frame.points.dtype == np.float32 and frame.points.shape[1] == 4
        assert fov_mask(frame.points, calib).all()
        assert 10_000 < len(frame.points) < 40_000  # ~1/5 of a 120k scan is in view
        assert frame.boxes.shape == (len(frame.names), 7)
        assert len(frame.difficulty) == len(frame.num_points) == len(frame.names)
        assert frame.source == str(TRAINING)
    car = ds[3]  # 000003: one easy Car, well sampled
    assert car.names == ["Car"] and car.difficulty.tolist() == [0]
    assert car.num_points[0] > 300 and 3.0 < car.boxes[0, 3] < 5.0  # dx = length in LiDAR
    assert len(KittiDataset(TRAINING, fov_only=False)[3].points) > 100_000


@needs_kitti
def test_split_by_ids_and_errors_name_the_problem(tmp_path):
    assert KittiDataset(TRAINING, split=["000002", "000004"]).ids == ["000002", "000004"]
    with pytest.raises(DatasetError, match="without velodyne"):
        KittiDataset(TRAINING, split=["999999"])
    with pytest.raises(DatasetError, match="ImageSets"):
        KittiDataset(TRAINING, split="val")
    with pytest.raises(DatasetError, match="no velodyne/ directory"):
        KittiDataset(tmp_path)


@needs_kitti
def test_mixed_frames_are_drawn_from_the_seed_at_the_ratio():
    ds = KittiDataset(TRAINING)
    sim = lambda seed: ("sim", seed)  # noqa: E731
    fn = mixed_frame_fn(ds, 0.3, sim)
    kinds = ["sim" if isinstance(fn(s), tuple) else "kitti" for s in range(400)]
    assert 0.22 < kinds.count("kitti") / 400 < 0.38
    again = mixed_frame_fn(ds, 0.3, sim)
    for s in (0, 7, 123):
        a, b = fn(s), again(s)
        assert (a == b) if isinstance(a, tuple) else a.frame_id == b.frame_id
    assert all(not isinstance(mixed_frame_fn(ds, 1.0)(s), tuple) for s in range(20))
    with pytest.raises(DatasetError, match="in \\[0, 1\\]"):
        mixed_frame_fn(ds, 1.5, sim)
    with pytest.raises(DatasetError, match="simulated"):
        mixed_frame_fn(ds, 0.5)


def test_split_name_found_beside_training_and_occlusion_carried(tmp_path):
    """The KITTI/mmdet3d layout keeps ImageSets/ beside training/ (admlops export writes it)."""
    from admlops_ros.evaluation import kitti_io
    from admlops_ros.data.kitti_dataset import KittiDataset
    training = tmp_path / "training"
    for sub in ("velodyne", "label_2", "calib"):
        (training / sub).mkdir(parents=True)
    kitti_io.write_velodyne(training / "velodyne" / "000000.bin", np.zeros((10, 4), np.float32))
    kitti_io.write_calib(training / "calib" / "000000.txt", kitti_io.nominal_calib())
    (training / "label_2" / "000000.txt").write_text(
        "Car 0.25 2 -1.5 100 150 200 250 1.5 1.6 3.9 2.0 1.6 15.0 -1.57\n"
        "DontCare -1 -1 -10 10 10 20 20 -1 -1 -1 -1000 -1000 -1000 -10\n")
    (tmp_path / "ImageSets").mkdir()
    (tmp_path / "ImageSets" / "train.txt").write_text("000000\n")
    frame = KittiDataset(training, split="train")[0]
    assert frame.names == ["Car"]
    assert frame.occluded.tolist() == [2] and frame.truncated.tolist() == [0.25]
