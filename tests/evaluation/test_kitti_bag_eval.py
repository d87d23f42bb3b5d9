"""KITTI difficulty from label_2 into a bag, and `admlops eval` on a KITTI bag == `admlops kitti-eval`.

The agreement test runs the shipped engine offline on ../shared/data/kitti/training (6 frames)
through a bag (bag_from_kitti -> replay.run_offline, FOV filter "camera") and, on the same
detections, through KITTI result files (the project's writer with each frame's calib file
and image size, which keeps what lies in image 2) scored by kitti_eval on label_2.
"""
from __future__ import annotations

import numpy as np
import pytest

from admlops_ros.evaluation import bags, kitti_io
from admlops_ros.evaluation.protocol import kitti_difficulty
from admlops_ros.evaluation.rosbag_io import BagError
from tests.paths import REPO_ROOT

KITTI = (REPO_ROOT / ".." / "shared" / "data" / "kitti" / "training").resolve()
FRAMES = sorted(p.stem for p in (KITTI / "velodyne").glob("*.bin")) if KITTI.is_dir() else []
needs_kitti = pytest.mark.skipif(
    not FRAMES, reason=f"no KITTI frames under {KITTI} (velodyne, label_2, calib, image_2): "
                       f"the real-data agreement test needs ../shared/data/kitti/training")

# Hand-made label_2 lines (type trunc occ alpha left top right bottom h w l x y z ry) and the
# KITTI level each must get: easy needs height > 40 px, occlusion <= 0, truncation <= 0.15;
# moderate > 25 px, <= 1, <= 0.3; hard > 25 px, <= 2, <= 0.5 (devkit: ignored when
# height <= MIN_HEIGHT, occlusion > MAX_OCCLUSION or truncation > MAX_TRUNCATION).
LABEL_LINES = [
    ("Car 0.00 0 0.0 600.00 150.00 700.00 190.01 1.5 1.6 3.9 1.0 1.6 20.0 0.0", 0),  # 40.01 px
    ("Car 0.00 0 0.0 600.00 150.00 700.00 190.00 1.5 1.6 3.9 1.0 1.6 21.0 0.0", 1),  # 40 px
    ("Car 0.15 0 0.0 600.00 150.00 700.00 200.00 1.5 1.6 3.9 1.0 1.6 22.0 0.0", 0),  # t .15
    ("Car 0.16 0 0.0 600.00 150.00 700.00 200.00 1.5 1.6 3.9 1.0 1.6 23.0 0.0", 1),  # t .16
    ("Car 0.00 1 0.0 600.00 150.00 700.00 200.00 1.5 1.6 3.9 1.0 1.6 24.0 0.0", 1),  # occ 1
    ("Car 0.30 1 0.0 600.00 150.00 700.00 175.01 1.5 1.6 3.9 1.0 1.6 25.0 0.0", 1),  # 25.01
    ("Car 0.00 0 0.0 600.00 150.00 700.00 175.00 1.5 1.6 3.9 1.0 1.6 26.0 0.0", -1),  # 25 px
    ("Car 0.31 0 0.0 600.00 150.00 700.00 200.00 1.5 1.6 3.9 1.0 1.6 27.0 0.0", 2),  # t .31
    ("Pedestrian 0.50 2 0.0 600.00 150.00 620.00 176.00 1.7 0.6 0.8 -1.0 1.6 28.0 0.0", 2),
    ("Pedestrian 0.51 0 0.0 600.00 150.00 620.00 200.00 1.7 0.6 0.8 -2.0 1.6 29.0 0.0", -1),
    ("Cyclist 0.00 3 0.0 600.00 150.00 620.00 200.00 1.7 0.6 1.8 -3.0 1.6 30.0 0.0", -1),
]
DONTCARE_LINE = "DontCare -1 -1 -10 10.00 150.00 60.00 190.00 -1 -1 -1 -1000 -1000 -1000 -10"


def _messages_or_skip() -> None:
    try:
        bags.messages()
    except BagError as exc:
        pytest.skip(f"admlops_ros messages not built: {exc}")


def _label_dir(tmp_path):
    """A one-frame KITTI directory with the hand-made labels (nominal calib, no image)."""
    root = tmp_path / "training"
    for sub in ("velodyne", "label_2", "calib"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    pts = np.c_[rng.uniform(0, 40, (500, 2)), rng.uniform(-2, 1, (500, 1)),
                rng.uniform(0, 1, (500, 1))].astype(np.float32)
    kitti_io.write_velodyne(root / "velodyne" / "000000.bin", pts)
    kitti_io.write_calib(root / "calib" / "000000.txt", kitti_io.nominal_calib())
    (root / "label_2" / "000000.txt").write_text(
        "\n".join([line for line, _ in LABEL_LINES] + [DONTCARE_LINE]) + "\n")
    return root


def test_difficulty_from_label_lines_as_kitti_defines_it(tmp_path):
    root = _label_dir(tmp_path)
    objs = [o for o in kitti_io.read_label(root / "label_2" / "000000.txt")
            if o.type != "DontCare"]
    levels = kitti_difficulty(np.array([o.bbox for o in objs]),
                              np.array([o.occluded for o in objs]),
                              np.array([o.truncated for o in objs]))
    assert levels.tolist() == [lvl for _, lvl in LABEL_LINES]


def test_difficulty_travels_in_the_bag_and_eval_uses_kitti_rules(tmp_path):
    _messages_or_skip()
    from admlops_ros.evaluation import fov, replay
    root = _label_dir(tmp_path)
    out = tmp_path / "labels.bag"
    assert bags.bag_from_kitti(root, ["000000"], out, progress=False) == 1
    summary, frames = bags.read_bag(out)
    frame = next(iter(frames))
    want = [lvl for _, lvl in LABEL_LINES]
    assert frame.gt.difficulty.tolist() == want                 # DetectedObject.label
    assert frame.gt.ignore.tolist() == [lvl < 0 for lvl in want]
    cam = fov.read_bag_camera(out, summary.points_topic)
    joined = fov.with_kitti_fields(frame.gt, cam.image_gt[frame.stamp_ns])
    assert joined.has_kitti_difficulty
    objs = [o for o in kitti_io.read_label(root / "label_2" / "000000.txt")
            if o.type != "DontCare"]
    np.testing.assert_allclose(joined.bbox2d, [o.bbox for o in objs], atol=1e-9)
    assert joined.occluded.tolist() == [o.occluded for o in objs]
    np.testing.assert_allclose(joined.truncated, [o.truncated for o in objs])
    np.testing.assert_allclose(joined.dontcare_bbox2d, [[10, 150, 60, 190]])
    # the per-frame /tf and CameraInfo give back the calib file's lidar2cam and P2
    calib = cam.calib(frame.stamp_ns)
    nominal = kitti_io.nominal_calib()
    np.testing.assert_allclose(calib.lidar2cam, nominal.lidar2cam, atol=1e-6)
    np.testing.assert_allclose(calib.P, nominal.P2)
    assert calib.image_size == kitti_io.IMAGE_SHAPE
    # a 2D list that is not the 3D one (other names / levels) is not joined
    other = fov.FrameGT(frame.gt.boxes, ["Van"] * len(frame.gt), difficulty=want)
    assert not fov.with_kitti_fields(other, cam.image_gt[frame.stamp_ns]).has_kitti_difficulty
    assert replay.restrict_to_range(joined, (0, -40, -3, 70, 40, 1)).has_kitti_difficulty


@pytest.fixture(scope="module")
def kitti_runs(tmp_path_factory):
    if not FRAMES:
        pytest.skip(f"no KITTI frames under {KITTI}")
    _messages_or_skip()
    from admlops_ros.evaluation import replay
    out = tmp_path_factory.mktemp("kitti_eval") / "kitti.bag"
    assert bags.bag_from_kitti(KITTI, FRAMES, out, progress=False) == len(FRAMES)
    try:
        camera = replay.run_offline(out, progress=False, fov="camera")
        everything = replay.run_offline(out, progress=False, fov="all")
    except replay.ReplayError as exc:
        pytest.skip(f"the shipped engine cannot run here: {exc}")
    return out, camera, everything


def write_results(preds, out_dir, fov_only: bool = True):
    """KITTI result files of LiDAR predictions, frame i -> FRAMES[i], each frame's own calib
    file and image size (the writer keeps what projects into image 2 when ``fov_only``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for frame, pred in zip(FRAMES, preds):
        calib = kitti_io.read_calib(KITTI / "calib" / f"{frame}.txt")
        size = bags._png_size(KITTI / "image_2" / f"{frame}.png")
        objs = kitti_io.lidar_boxes_to_objects(pred.boxes, list(pred.names), calib,
                                               scores=pred.scores, image_shape=size,
                                               camera_fov_only=fov_only)
        kitti_io.write_label(out_dir / f"{frame}.txt", objs)
    return out_dir


@needs_kitti
def test_eval_on_a_kitti_bag_agrees_with_kitti_eval(kitti_runs, tmp_path):
    from admlops_ros.evaluation import replay
    from admlops_ros.evaluation.kitti_eval import kitti_eval
    _, camera, everything = kitti_runs
    assert camera.fov["frames_with_calibration"] == len(FRAMES)
    assert camera.fov["predictions_removed"] > 0 and camera.fov["ground_truth_removed"] == 0
    _, bag_res, _ = replay.summarize(camera)
    assert bag_res.difficulty_mode == "kitti"
    assert bag_res.difficulties == ["easy", "moderate", "hard"]
    # the same detections (the unfiltered run), through result files and label_2
    results = write_results(everything.preds, tmp_path / "results")
    ref = kitti_eval(KITTI / "label_2", results, with_bbox=False)
    assert ref.classes == bag_res.classes and ref.metrics == bag_res.metrics
    np.testing.assert_array_equal(ref.num_gt, bag_res.num_gt)
    np.testing.assert_allclose(bag_res.ap_r40, ref.ap_r40, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(bag_res.ap_r11, ref.ap_r11, atol=1e-6, equal_nan=True)
    # what was written is what the bag path scored
    n_written = sum(len(kitti_io.read_label(p)) for p in sorted(results.glob("*.txt")))
    assert n_written == sum(len(p) for p in camera.preds)
    # the eval's own result files (each frame's calibration from the bag) score the same
    own = replay.write_kitti_results(camera, tmp_path / "own", FRAMES)
    again = kitti_eval(KITTI / "label_2", own, with_bbox=False)
    np.testing.assert_allclose(again.ap_r40, ref.ap_r40, atol=1e-6, equal_nan=True)


@needs_kitti
def test_report_draws_detections_against_labels(kitti_runs, tmp_path):
    from admlops_ros.evaluation import replay, report
    _, camera, _ = kitti_runs
    assert camera.samples and all(s["calib"] is not None and s["image"] is not None
                                  for s in camera.samples)
    results, main, bands = replay.summarize(camera)
    assert results["fov"]["mode"] == "camera"
    html = report.write_report(tmp_path / "report.html", results, main, bands, camera.records,
                               camera.samples[:1], 0.3).read_text()
    assert "Detections against labels: camera view and bird's-eye view" in html
    assert html.count("data:image/png;base64,") >= 5  # pr, bands, latency, camera, fov bev, bev
