"""Real KITTI scans as backgrounds with inserted objects; pseudo-labels for unlabelled scans."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from admlops_ros.data.export import check_label_file
from admlops_ros.data.insertion import (InsertedFrame, RealBackgrounds, insert_into,
                                        inserted_frame_fn)
from admlops_ros.data.kitti_dataset import DatasetError, DatasetFrame, KittiDataset, fov_mask
from admlops_ros.data.pseudo_labels import PseudoLabelError, pseudo_label, pseudo_objects
from admlops_ros.evaluation import kitti_io
from admlops_ros.lidar.geometry import points_in_boxes, rotated_iou_bev
from tests.paths import REPO_ROOT, SHARED_KITTI

TRAINING = SHARED_KITTI / "training"
TESTING = SHARED_KITTI / "testing"
ENGINE = REPO_ROOT / "engines" / "pointpillars_sim_3class"
needs_kitti = pytest.mark.skipif(not (TRAINING / "velodyne").is_dir(),
                                 reason=f"real KITTI frames not found at {TRAINING} "
                                        "(../shared beside the repository)")


def _ground_around(points: np.ndarray, box: np.ndarray) -> float:
    """The real ground under and around a box: the median z of the real points within 0.75 m
    of its footprint's circle that lie lower than 0.3 m above its bottom (nothing real stands
    higher inside the footprint: the placement rule)."""
    d = np.hypot(points[:, 0] - box[0], points[:, 1] - box[1])
    near = points[(d < 0.5 * np.hypot(box[3], box[4]) + 0.75) & (points[:, 2] < box[2] + 0.3)]
    assert len(near) >= 6, f"no ground seen around {box}"
    return float(np.median(near[:, 2]))


@needs_kitti
def test_objects_inserted_into_the_real_frames_stand_on_the_ground_in_view():
    bgs = RealBackgrounds(TRAINING)
    assert bgs.frame_ids == [f"{i:06d}" for i in range(6)]
    inserted = 0
    for i in range(len(bgs)):
        bg = bgs[i]
        fr = insert_into(bg, seed=i)
        assert isinstance(fr, InsertedFrame) and isinstance(fr, DatasetFrame)
        n = len(fr.boxes)
        assert len(fr.names) == len(fr.difficulty) == len(fr.num_points) == len(fr.inserted) == n
        assert fr.points.dtype == np.float32 and fr.points.shape[1] == 4
        assert fov_mask(fr.points, bg.calib, bg.image_hw).all()   # the view only, as trained
        real, ins = ~fr.inserted, fr.inserted
        assert fr.names[:int(real.sum())] == bg.frame.names
        assert fr.num_points.tolist() == points_in_boxes(fr.points, fr.boxes).sum(0).tolist()
        if ins.any() and real.any():
            assert rotated_iou_bev(fr.boxes[ins], fr.boxes[real]).max() == 0.0
        for box in fr.boxes[ins]:
            assert abs(box[2] - _ground_around(bg.frame.points, box)) < 0.2, (i, box)
            assert fov_mask(box[None, :3] + [0, 0, 0.5 * box[5]], bg.calib, bg.image_hw)[0]
        assert (fr.num_points[ins] >= 5).all()
        assert len(fr.removed_points) == len(fr.removed_shadow)
        assert len(fr.points) == (len(bg.frame.points) - len(fr.removed_points)
                                  + int((fr.point_source >= 0).sum()))
        inserted += int(ins.sum())
    assert inserted >= 12     # about 3-6 per frame


@needs_kitti
def test_inserted_frames_are_drawn_from_the_seed():
    bgs = RealBackgrounds(TRAINING)
    fn = inserted_frame_fn(bgs, 1.0)
    a, b = fn(17), fn(17)
    assert a.frame_id == b.frame_id and np.array_equal(a.points, b.points)
    assert np.array_equal(a.boxes, b.boxes)
    mixed = inserted_frame_fn(bgs, 0.5, other=lambda seed: seed)
    kinds = [isinstance(mixed(s), InsertedFrame) for s in range(40)]
    assert 8 < sum(kinds) < 32
    with pytest.raises(DatasetError, match="insert ratio"):
        inserted_frame_fn(bgs, 1.5)
    with pytest.raises(DatasetError, match="other frames"):
        inserted_frame_fn(bgs, 0.5)
    with pytest.raises(DatasetError, match="pseudo-label"):
        RealBackgrounds(str(TESTING))


def _fake_dataset(tmp_path: Path) -> Path:
    """A KITTI dir linking one real scan, with pseudo-labels of three fake detections."""
    root = tmp_path / "pseudo"
    for sub in ("velodyne", "calib", "label_2"):
        (root / sub).mkdir(parents=True)
    (root / "velodyne" / "000000.bin").symlink_to(TRAINING / "velodyne" / "000003.bin")
    (root / "calib" / "000000.txt").symlink_to(TRAINING / "calib" / "000003.txt")
    calib = kitti_io.read_calib(root / "calib" / "000000.txt")
    boxes = np.array([[15.0, 1.0, -1.7, 4.0, 1.7, 1.5, 0.0],
                      [25.0, -4.0, -1.7, 4.0, 1.7, 1.5, 0.0],
                      [30.0, 5.0, -1.7, 0.8, 0.6, 1.7, 0.0]])
    objects = pseudo_objects(boxes, ["Car", "Car", "Pedestrian"], np.array([0.9, 0.3, 0.6]),
                             calib, threshold=0.5)
    kitti_io.write_label(root / "label_2" / "000000.txt", objects)
    return root


@needs_kitti
def test_pseudo_labels_parse_and_dontcare_below_the_threshold_blocks_insertion(tmp_path):
    root = _fake_dataset(tmp_path)
    objects = check_label_file(root / "label_2" / "000000.txt")
    assert [o.type for o in objects] == ["Car", "DontCare", "Pedestrian"]
    assert [o.score for o in objects] == [0.9, 0.3, 0.6]
    frame = KittiDataset(root)[0]            # --dataset: the labels, not the DontCare
    assert frame.names == ["Car", "Pedestrian"]
    bg = RealBackgrounds([root])[0]
    assert bg.frame.names == ["Car", "Pedestrian"] and len(bg.blocked) == 1
    np.testing.assert_allclose(bg.blocked[0, :2], [25.0, -4.0], atol=1e-3)
    strict = RealBackgrounds([root], score_threshold=0.7)[0]   # the 0.6 pedestrian demoted
    assert strict.frame.names == ["Car"] and len(strict.blocked) == 2
    fr = insert_into(strict, seed=2)
    ins = fr.inserted
    assert ins.any()
    assert rotated_iou_bev(fr.boxes[ins], np.concatenate([strict.frame.boxes,
                                                          strict.blocked])).max() == 0.0


@needs_kitti
@pytest.mark.skipif(not (TESTING / "velodyne").is_dir() or not ENGINE.is_dir(),
                    reason=f"needs the unlabelled KITTI scans at {TESTING} and {ENGINE}")
def test_pseudo_label_runs_the_engine_on_unlabelled_scans(tmp_path):
    out = tmp_path / "out"
    summary = pseudo_label(TESTING, out, engine=str(ENGINE), backend="onnxruntime",
                           threshold=0.5, limit=2)
    assert sorted(summary.frames) == ["000000", "000001"]
    assert (out / "velodyne").resolve() == (TESTING / "velodyne").resolve()
    for fid, (labels, dontcare) in summary.frames.items():
        objects = check_label_file(out / "label_2" / f"{fid}.txt")
        assert sum(o.type != "DontCare" for o in objects) == labels
        assert all(o.score is not None for o in objects)
        assert all(o.score >= 0.5 for o in objects if o.type != "DontCare")
        assert all(0.1 <= o.score < 0.5 for o in objects if o.type == "DontCare")
    assert json.loads((out / "pseudo_labels.json").read_text())["threshold"] == 0.5
    assert len(KittiDataset(out)) == 2
    with pytest.raises(PseudoLabelError, match="min_score"):
        pseudo_label(TESTING, out, threshold=0.2, min_score=0.4)


@needs_kitti
def test_the_measurement_script_prints_its_tables(tmp_path):
    res = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "measure_insert.py"),
                          "--seeds", "1", "--sim-frames", "2", "--pseudo", str(tmp_path / "x"),
                          "--json", str(tmp_path / "m.json")], capture_output=True, text=True,
                         cwd=str(REPO_ROOT), timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "| inserted (hdl64e_s2_kitti cast into real scans) |" in res.stdout
    assert "time per inserted frame" in res.stdout
    assert json.loads((tmp_path / "m.json").read_text())["times_ms"]


@needs_kitti
def test_insert_preview_cli_writes_the_png(tmp_path, capsys):
    from admlops_ros.cli import main
    out = tmp_path / "p.png"
    assert main(["insert-preview", str(TRAINING), "--frame", "000003", "--seed", "1",
                 "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "objects inserted" in capsys.readouterr().out
    assert main(["insert-preview", str(TRAINING), "--frame", "123456", "-o", str(out)]) == 2
