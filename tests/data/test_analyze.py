"""admlops analyze: known histograms of a synthetic dataset, shift, serial == parallel, holes."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from admlops_ros.data import analyze as A
from admlops_ros.evaluation import kitti_io
from tests.paths import SHARED_KITTI

TRAINING = SHARED_KITTI / "training"

# Four frames, LiDAR boxes (x, y, z bottom, dx, dy, dz, yaw) placed away from every bin edge,
# with their KITTI fields (bbox height px, occluded, truncated) and points put inside each box.
#            name          box                                        pts  h_px occ trunc
OBJECTS = {
    "000000": [("Car",        (10.3, 2.0, -1.7, 4.2, 1.8, 1.6, 0.1),     30, 50, 0, 0.0),
               ("Pedestrian", (6.0, -1.0, -1.7, 0.8, 0.6, 1.7, 1.0),     8, 30, 1, 0.25)],
    "000001": [("Car",        (22.0, -3.0, -1.7, 4.6, 1.9, 1.45, -2.0),  60, 30, 2, 0.45),
               ("Car",        (41.0, 5.0, -1.7, 3.9, 1.7, 1.45, 3.0),    3, 10, 0, 0.0)],
    "000002": [("Cyclist",    (15.2, 4.0, -1.7, 1.7, 0.6, 1.7, -0.4),    12, 45, 0, 0.0),
               ("Van",        (30.0, 0.0, -1.7, 5.1, 2.1, 2.2, 0.2),     0, 60, 3, 0.0)],
    "000003": [],
}
BACKGROUND = 100                     # points per frame at x = -20 m (behind), intensity 0.12
OBJECT_INTENSITY = 0.5


def _points_in(box, n, rng):
    """n points well inside a LiDAR box (the middle 40 % of each side)."""
    x, y, z, dx, dy, dz, yaw = box
    local = rng.uniform(-0.2, 0.2, (n, 3)) * np.array([dx, dy, dz])
    c, s = np.cos(yaw), np.sin(yaw)
    return np.stack([x + c * local[:, 0] - s * local[:, 1], y + s * local[:, 0] + c * local[:, 1],
                     z + dz / 2 + local[:, 2], np.full(n, OBJECT_INTENSITY)], axis=1)


def write_dataset(root: Path, shift_m: float = 0.0) -> Path:
    """The synthetic dataset (objects moved ``shift_m`` further along x) under ``root``."""
    calib = kitti_io.nominal_calib()
    for sub in ("velodyne", "label_2", "calib"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for frame, objects in OBJECTS.items():
        back = np.stack([np.full(BACKGROUND, -20.0), np.linspace(-5, 5, BACKGROUND),
                         np.full(BACKGROUND, -1.0), np.full(BACKGROUND, 0.12)], axis=1)
        clouds, labels = [back], []
        for name, box, n, height, occ, trunc in objects:
            box = (box[0] + shift_m,) + box[1:]
            clouds.append(_points_in(box, n, rng))
            cam = kitti_io.boxes_lidar_to_camera(np.array([box]), calib)[0]
            labels.append(kitti_io.KittiObject(
                name, trunc, occ, 0.0, (100.0, 100.0, 150.0, 100.0 + height),
                (float(cam[4]), float(cam[5]), float(cam[3])), tuple(float(v) for v in cam[:3]),
                float(cam[6])))
        kitti_io.write_velodyne(root / "velodyne" / f"{frame}.bin",
                                np.concatenate(clouds).astype(np.float32))
        kitti_io.write_label(root / "label_2" / f"{frame}.txt", labels)
        kitti_io.write_calib(root / "calib" / f"{frame}.txt", calib)
    return root


def expected(feature: str, bins: dict) -> list:
    counts = [0] * A.FEATURES[feature].bins
    for k, v in bins.items():
        counts[k] = v
    return counts


def run(inputs, **kw):
    return A.analysis(*A.analyze_sets(inputs, **kw))


def test_histograms_equal_the_hand_counts(tmp_path):
    ref = run([[str(write_dataset(tmp_path / "ds"))]], workers=1)["reference"]
    assert ref["frames"] == ref["frames_with_gt"] == 4 and ref["holes"] == []
    assert ref["class_counts"] == {"Car": 3, "Pedestrian": 1, "Cyclist": 1, "Van": 1}
    assert list(ref["class_counts"]) == ["Car", "Pedestrian", "Cyclist", "Van"]
    o = ref["objects"]
    # distance 5 m bins: 6.08 -> 1, 10.49 -> 2, 15.7 -> 3, 22.2 -> 4, 30 -> 6, 41.3 -> 8
    assert o["all"]["distance_m"]["counts"] == expected("distance_m",
                                                        {1: 1, 2: 1, 3: 1, 4: 1, 6: 1, 8: 1})
    assert o["Car"]["distance_m"]["counts"] == expected("distance_m", {2: 1, 4: 1, 8: 1})
    # heading 30 degree bins from -pi: floor((yaw + pi) / (pi / 6))
    assert o["all"]["heading_rad"]["counts"] == expected("heading_rad",
                                                         {2: 1, 5: 1, 6: 2, 7: 1, 11: 1})
    # length 0.5 m bins: 0.8 -> 1, 1.7 -> 3, 3.9 -> 7, 4.2 -> 8, 4.6 -> 9, 5.1 -> 10
    assert o["all"]["length_m"]["counts"] == expected("length_m",
                                                      {1: 1, 3: 1, 7: 1, 8: 1, 9: 1, 10: 1})
    # width 0.25 m bins: 0.6 x2 -> 2, 1.7 -> 6, 1.8 -> 7, 1.9 -> 7, 2.1 -> 8
    assert o["all"]["width_m"]["counts"] == expected("width_m", {2: 2, 6: 1, 7: 2, 8: 1})
    # height 0.25 m bins: 1.45 x2 -> 5, 1.6 -> 6, 1.7 x2 -> 6, 2.2 -> 8
    assert o["all"]["height_m"]["counts"] == expected("height_m", {5: 2, 6: 3, 8: 1})
    # points edges 0 1 5 10 20 50 100: 0 -> 0, 3 -> 1, 8 -> 2, 12 -> 3, 30 -> 4, 60 -> 5
    assert o["all"]["points_in_box"]["counts"] == expected(
        "points_in_box", {0: 1, 1: 1, 2: 1, 3: 1, 4: 1, 5: 1})
    assert o["all"]["occlusion"]["counts"] == [3, 1, 1, 1]
    assert o["all"]["truncation"]["counts"] == expected("truncation", {0: 4, 2: 1, 4: 1})
    # difficulty -1, 0, 1, 2: far car (10 px) and van (occluded 3) none; car + cyclist easy
    assert o["all"]["difficulty"]["counts"] == [2, 2, 1, 1]
    assert o["Car"]["difficulty"]["counts"] == [1, 1, 0, 1]
    per_frame = ref["objects_per_frame"]
    assert per_frame["all"]["counts"] == expected("objects_per_frame", {0: 1, 2: 3})
    assert per_frame["Car"]["counts"] == expected("objects_per_frame", {0: 2, 1: 1, 2: 1})
    assert per_frame["Cyclist"]["counts"] == expected("objects_per_frame", {0: 3, 1: 1})
    scan = ref["scan"]
    sizes = [BACKGROUND + sum(obj[2] for obj in objs) for objs in OBJECTS.values()]
    assert scan["points_per_scan"]["counts"] == expected("points_per_scan", {0: 4})
    assert scan["intensity"]["counts"] == expected("intensity", {2: 4 * BACKGROUND, 10: 113})
    assert scan["intensity"]["total"] == sum(sizes)
    assert ref["ranges"]["x_m"][0] == pytest.approx(-20.0)
    grid = np.array(ref["car_distance_points"]["counts"])
    assert grid.sum() == 3 and grid[2, 4] == grid[4, 5] == grid[8, 1] == 1
    json.dumps(ref, allow_nan=False)


def test_compare_finds_the_shifted_bins_and_identical_data_has_no_shift(tmp_path):
    ds = str(write_dataset(tmp_path / "ds"))
    same = run([[ds], [ds]], workers=1)["shift"]
    assert all(d["jsd_bits"] == 0.0 and d["total_variation"] == 0.0
               for d in same["divergences"] if d["jsd_bits"] is not None)
    assert same["under_covered"] == []
    far = str(write_dataset(tmp_path / "far", shift_m=47.0))
    shift = run([[ds], [far]], workers=1)["shift"]
    rows = {(d["group"], d["feature"]): d for d in shift["divergences"]}
    assert rows[("all", "distance_m")]["jsd_bits"] > 0.9   # disjoint supports: ~1 bit
    assert rows[("all", "distance_m")]["total_variation"] == pytest.approx(1.0)
    assert rows[("all", "length_m")]["jsd_bits"] == 0.0    # sizes did not move
    assert shift["divergences"][0]["jsd_bits"] >= rows[("all", "heading_rad")]["jsd_bits"]
    # min count 1: each shifted distance bin is under-covered (reference has none there)
    loose = A.compare(*(run([[ds], [far]], workers=1)[k] for k in ("reference", "other")),
                      min_count=1)
    bins = sorted(u["low"] for u in loose["under_covered"]
                  if u["group"] == "all" and u["feature"] == "distance_m")
    # hypot after +47 m in x: 57.3 (bin from 55), 53.0 (50), 69.1 (65), 88.1 (85), 62.3 (60),
    # 77.0 (75)
    assert bins == [50.0, 55.0, 60.0, 65.0, 75.0, 85.0]
    hit = [u for u in loose["under_covered"] if u["feature"] == "distance_m"
           and u["group"] == "all"][0]
    assert hit["reference_count"] == 0 and hit["other_count"] == 1
    assert hit["frequency_ratio"] == 0.0


def test_serial_equals_process_pool(tmp_path):
    ds = str(write_dataset(tmp_path / "ds"))
    far = str(write_dataset(tmp_path / "far", shift_m=12.0))
    serial = run([[ds], [far]], workers=1, chunk=1)
    pooled = run([[ds], [far]], workers=2, chunk=1)
    one_shard = run([[ds], [far]], workers=1, chunk=50)
    text = json.dumps(serial, sort_keys=True, allow_nan=False)
    assert text == json.dumps(pooled, sort_keys=True)
    assert text == json.dumps(one_shard, sort_keys=True)


def test_holes_are_named_and_the_rest_is_analysed(tmp_path, capsys):
    from admlops_ros.cli import main
    root = write_dataset(tmp_path / "ds")
    shutil.copy(root / "velodyne" / "000000.bin", root / "velodyne" / "000004.bin")
    shutil.copy(root / "calib" / "000000.txt", root / "calib" / "000004.txt")
    bad = root / "label_2" / "000001.txt"
    bad.write_text("Car 0.00 zero 0.0 1 2 3 4 1.5 1.8 4.2 1 1 10 0.1\n")
    (root / "calib" / "000002.txt").unlink()
    out = tmp_path / "out"
    assert main(["analyze", str(root), "--out", str(out), "--workers", "1"]) == 0
    result = json.loads((out / "analysis.json").read_text())
    ref = result["reference"]
    assert ref["frames"] == 2 and ref["class_counts"] == {"Car": 1, "Pedestrian": 1}
    problems = {h["file"]: h["problem"] for h in ref["holes"]}
    assert "label_2/000004.txt missing" in problems[str(root / "label_2/000004.txt")]
    assert "calib/000002.txt missing" in problems[str(root / "calib/000002.txt")]
    assert "non-number" in problems[f"{bad}"] and f"{bad}:1" in problems[f"{bad}"]
    assert (out / "analysis.html").read_text().count("data:image/png;base64,") >= 12
    printed = capsys.readouterr().out
    assert "2 frames" in printed and "3 holes" in printed
    assert main(["analyze", str(tmp_path / "nothing"), "--out", str(out)]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_split_frames_without_files_are_holes(tmp_path):
    root = write_dataset(tmp_path / "ds")
    (root / "ImageSets").mkdir()
    (root / "ImageSets" / "train.txt").write_text("000000\n000002\n000009\n")
    ids, holes = A.dataset_ids(root, "train")
    assert ids == ["000000", "000002"]
    assert [h["file"] for h in holes] == [str(root / "velodyne/000009.bin")]
    ref = run([[str(root)]], split=["train"], workers=1)["reference"]
    assert ref["frames"] == 2 and len(ref["holes"]) == 1
    with pytest.raises(A.AnalyzeError, match="ImageSets"):
        A.dataset_ids(root, "val")


def test_jsd_by_hand():
    assert A.js_divergence_bits([1, 0], [0, 1]) == pytest.approx(1.0, abs=1e-4)
    assert A.js_divergence_bits([2, 2], [5, 5]) == 0.0
    # p = (1/2, 1/2), q = (1, 0): m = (3/4, 1/4)
    by_hand = 0.5 * (0.5 * np.log2(0.5 / 0.75) + 0.5 * np.log2(0.5 / 0.25)) + 0.5 * np.log2(
        1 / 0.75)
    assert A.js_divergence_bits([1, 1], [1, 0]) == pytest.approx(by_hand, abs=1e-5)
    assert A.total_variation([1, 1], [1, 0]) == pytest.approx(0.5)
    assert A.js_divergence_bits([0, 0], [1, 0]) is None


@pytest.mark.skipif(not (TRAINING / "velodyne").is_dir(),
                    reason=f"real KITTI frames not found at {TRAINING} (../shared beside the "
                           "repository)")
def test_real_kitti_frames(tmp_path):
    result = run([[str(TRAINING)]], workers=1)
    ref = result["reference"]
    assert ref["frames"] == 6 and ref["holes"] == []
    assert ref["class_counts"]["Car"] >= 1
    assert 100_000 < A.FEATURES["points_per_scan"].edges[
        int(np.argmax(ref["scan"]["points_per_scan"]["counts"]))] < 140_000
    assert ref["objects"]["all"]["difficulty"]["missing"] == 0
    assert ref["objects"]["all"]["occlusion"]["missing"] == 0
    fov = run([[str(TRAINING)]], workers=1, fov_only=True)["reference"]
    assert fov["scan"]["intensity"]["total"] < ref["scan"]["intensity"]["total"] / 3


def test_simulated_bag_with_ground_truth(tmp_path):
    from admlops_ros.evaluation import bags
    try:
        bags.bag_from_sim(tmp_path / "a.bag", 3, seed=0, progress=False)
    except Exception as exc:  # noqa: B902 - no generated messages / rosbag here
        pytest.skip(f"cannot write a bag here ({exc}); run under scripts/with_ros_env.sh")
    result = run([[str(tmp_path / "a.bag")], [str(write_dataset(tmp_path / "ds"))]], workers=1)
    ref = result["reference"]
    assert ref["frames"] == ref["frames_with_gt"] == 3
    assert ref["objects"]["all"]["occlusion"]["missing"] == ref["objects_total"] > 0
    assert ref["objects"]["all"]["difficulty"]["missing"] == 0
    assert sum(ref["objects"]["all"]["points_in_box"]["counts"][1:]) > 0
    rows = {(d["group"], d["feature"]): d for d in result["shift"]["divergences"]}
    assert rows[("all", "occlusion")]["jsd_bits"] is None   # the bag carries no occlusion



def test_bag_without_ground_truth_and_a_broken_bag_keep_the_rest(tmp_path):
    from admlops_ros.evaluation import bags
    try:
        with bags.BagWriter(tmp_path / "nogt.bag") as writer:
            for k in range(2):
                writer.write(np.array([[5.0, 0.0, -1.0, 300.0]] * (k + 50), np.float32), None)
    except Exception as exc:  # noqa: B902
        pytest.skip(f"cannot write a bag here ({exc}); run under scripts/with_ros_env.sh")
    (tmp_path / "broken.bag").write_bytes(b"not a bag")
    ds = str(write_dataset(tmp_path / "ds"))
    [stats] = A.analyze_sets([[str(tmp_path / "nogt.bag"), str(tmp_path / "broken.bag"), ds]],
                             workers=1)
    ref = A.stats_json(stats)
    assert ref["frames"] == 6 and ref["frames_with_gt"] == 4 and ref["objects_total"] == 6
    files = [h["file"] for h in ref["holes"]]
    assert files == [str(tmp_path / "nogt.bag"), str(tmp_path / "broken.bag")]
    assert "/ground_truth/objects" in ref["holes"][0]["problem"]
    assert any("intensity > 1" in n for n in ref["notes"])
    assert any("no ground truth" in n for n in ref["notes"])
    with pytest.raises(A.AnalyzeError, match="no readable frame.*broken.bag"):
        A.analyze_sets([[str(tmp_path / "broken.bag")]], workers=1)


@pytest.fixture
def ray_token(monkeypatch):
    from tests.data.test_parallel import TOKEN  # one token per test session (see there)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", TOKEN)


@pytest.mark.slow
def test_ray_equals_serial(tmp_path, ray_token):
    pytest.importorskip("ray")
    from admlops_ros.parallel import LOCAL
    ds = str(write_dataset(tmp_path / "ds"))
    far = str(write_dataset(tmp_path / "far", shift_m=12.0))
    serial = run([[ds], [far]], workers=1, chunk=1)
    on_ray = run([[ds], [far]], workers=2, chunk=1, ray_address=LOCAL)
    assert json.dumps(serial, sort_keys=True) == json.dumps(on_ray, sort_keys=True)
