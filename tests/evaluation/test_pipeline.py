"""Bags with ground truth, offline replay + report, kitti-eval, corrupt bags, online replay."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from admlops_ros.evaluation import bags, replay
from admlops_ros.evaluation.rosbag_io import BagError
from admlops_ros.evaluation.frames import FrameGT
from admlops_ros.lidar.detections import Detections
from tests.paths import REPO_ROOT as REPO

SHARED_KITTI = REPO.parent / "shared" / "data" / "kitti" / "training"


def _messages_or_skip():
    try:
        return bags.messages()
    except BagError as exc:
        pytest.skip(f"admlops_ros messages not built: {exc}")


BOXES = np.array([[10.0, 2.0, -1.7, 3.9, 1.6, 1.56, 0.3],
                  [25.0, -5.0, -1.7, 3.9, 1.6, 1.56, -1.2],
                  [15.0, 8.0, -1.6, 0.8, 0.6, 1.73, 0.0],
                  [-10.0, 0.0, -1.7, 3.9, 1.6, 1.56, 0.0]])  # behind: outside the model range
NAMES = ["Car", "Car", "Pedestrian", "Car"]


def write_bag(path: Path, n: int, skip_gt=()) -> None:
    rng = np.random.default_rng(0)
    with bags.BagWriter(path) as w:
        for i in range(n):
            gt = FrameGT(BOXES, NAMES, difficulty=[0, 1, 2, 0])
            w.write(rng.random((500, 4), dtype=np.float32) * 20, None if i in skip_gt else gt)


class FakeDetector:
    """Returns the ground-truth boxes in range: AP 100 when every frame has them."""

    class _Vox:
        point_cloud_range = (0.0, -39.68, -3.0, 69.12, 39.68, 1.0)

    voxelizer = _Vox()
    class_names = ("Pedestrian", "Cyclist", "Car")
    last_voxels = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def close(self):
        pass

    def warmup(self):
        pass

    def detect(self, points):
        d = Detections(BOXES[:3], [0.9, 0.8, 0.7], [2, 2, 0], self.class_names)
        d.timings_ms = {"preprocess": 1.0, "inference": 5.0, "postprocess": 1.0, "total": 7.0}
        return d

    def infer_raw(self, points):
        return {"cls_score0": np.zeros((1, 2), np.float32)}

    def postprocess(self, out):
        return self.detect(None)


@pytest.fixture
def fake_detector(monkeypatch):
    monkeypatch.setattr(replay, "open_detector", lambda *a, **k: FakeDetector())
    import admlops_ros.lidar.detector as det
    monkeypatch.setattr(det, "detector_summary", lambda d: {"model": "fake"})
    from admlops_ros.evaluation import compare
    monkeypatch.setattr(compare, "open_detector", lambda *a, **k: FakeDetector())


def test_bag_round_trip_and_stamp_matching(tmp_path):
    _messages_or_skip()
    path = tmp_path / "a.bag"
    write_bag(path, 3, skip_gt={1})
    summary, frames = bags.read_bag(path)
    frames = list(frames)
    assert summary.num_clouds == 3 and summary.num_gt == 2
    assert summary.clouds_without_gt == [frames[1].stamp_ns]
    assert "1 of 3 clouds" in summary.problems[0] and "1600000000.100000" in summary.problems[0]
    assert frames[1].gt is None
    np.testing.assert_allclose(frames[0].gt.boxes, BOXES, atol=1e-5)
    assert list(frames[2].gt.names) == NAMES
    assert list(frames[0].gt.difficulty) == [0, 1, 2, 0]
    assert frames[0].points.shape == (500, 4)


def test_missing_topic_and_corrupt_bag_messages(tmp_path, capsys):
    _messages_or_skip()
    from admlops_ros.cli import main
    path = tmp_path / "a.bag"
    write_bag(path, 4)
    with pytest.raises(BagError, match="no point cloud topic '/lidar'.*ground_truth"):
        bags.read_bag(path, points_topic="/lidar")
    summary, _ = bags.read_bag(path, gt_topic="/gt_nope")
    assert summary.gt_topic is None and "/gt_nope" in summary.problems[0]
    # a truncated bag (recording killed): the clouds before the cut are recovered
    cut = tmp_path / "cut.bag"
    data = path.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    try:
        summary, frames = bags.read_bag(cut)
        got = list(frames)
        assert 0 < len(got) < 4
    except BagError as exc:
        assert "cut.bag" in str(exc)
    # garbage file: one error line, exit code 1, no traceback
    junk = tmp_path / "junk.bag"
    junk.write_bytes(b"not a bag at all" * 10)
    assert main(["eval", str(junk), "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    assert main(["eval", str(tmp_path / "nope.bag"), "--out", str(tmp_path / "o")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_offline_eval_writes_results_and_report(tmp_path, fake_detector, capsys):
    _messages_or_skip()
    from admlops_ros.cli import main
    path = tmp_path / "sim.bag"
    write_bag(path, 45, skip_gt={3})
    out = tmp_path / "out"
    assert main(["eval", str(path), "--out", str(out), "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["frames"] == {"clouds": 45, "evaluated": 44, "without_gt": 1, "dropped": 0,
                             "dropped_stamps": []}
    ap = res["metrics"]["ap"]["R40"]["3d"]["strict"]
    assert ap["Car"]["all"] == pytest.approx(100.0)
    assert ap["Pedestrian"]["all"] == pytest.approx(100.0)
    assert ap["Cyclist"]["all"] is None  # no gt
    assert res["metrics"]["num_gt"]["Car"]["all"] == 88  # the car behind is out of range
    assert res["latency_ms"]["p50"] == pytest.approx(7.0)
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4 and "Problems" in html
    assert (out / "figures" / "pr_curves.png").stat().st_size > 1000
    assert len(list((out / "kitti_results").glob("*.txt"))) == 44
    assert "Car 3d @0.70" in capsys.readouterr().out


def test_compare_with_fake_backends(tmp_path, fake_detector, capsys):
    _messages_or_skip()
    from admlops_ros.cli import main
    path = tmp_path / "sim.bag"
    write_bag(path, 3)
    assert main(["compare", str(path), "--backends", "onnxruntime,openvino-f32",
                 "--no-progress", "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "openvino-f32" in out and "1.000" in out
    rows = json.loads((tmp_path / "c.json").read_text())
    assert rows[1]["agreement"] == 1.0 and rows[1]["max_abs_diff"]["cls_score0"] == 0.0


KITTI_CALIB = """P0: 7.07e+02 0 6.04e+02 0 0 7.07e+02 1.80e+02 0 0 0 1 0
P1: 7.07e+02 0 6.04e+02 0 0 7.07e+02 1.80e+02 0 0 0 1 0
P2: 7.070493e+02 0 6.040814e+02 0 0 7.070493e+02 1.805066e+02 0 0 0 1 0
P3: 7.07e+02 0 6.04e+02 0 0 7.07e+02 1.80e+02 0 0 0 1 0
R0_rect: 1 0 0 0 1 0 0 0 1
Tr_velo_to_cam: 0 -1 0 0 0 0 -1 -0.08 1 0 0 -0.27
Tr_imu_to_velo: 1 0 0 0 0 1 0 0 0 0 1 0
"""
# camera (x right, y down, z forward); LiDAR x = z_cam + 0.27, y = -x_cam, z = -(y_cam + 0.08)
KITTI_LABEL = """Car 0.00 0 -1.57 500.0 150.0 700.0 250.0 1.50 1.60 3.90 2.00 1.70 20.00 0.30
Pedestrian 0.10 1 0.20 300.0 160.0 330.0 230.0 1.73 0.60 0.80 -4.00 1.60 12.00 -1.00
DontCare -1 -1 -10 800.0 170.0 850.0 190.0 -1 -1 -1 -1000 -1000 -1000 -10
"""
EXPECTED_LIDAR = np.array([[20.27, -2.0, -1.78, 3.9, 1.6, 1.5, -0.3 - np.pi / 2],
                           [12.27, 4.0, -1.68, 0.8, 0.6, 1.73, 1.0 - np.pi / 2]])


def _write_kitti(root: Path) -> None:
    for sub in ("velodyne", "label_2", "calib"):
        (root / sub).mkdir(parents=True)
    np.random.default_rng(0).random((1000, 4), dtype=np.float32).tofile(
        root / "velodyne" / "000007.bin")
    (root / "label_2" / "000007.txt").write_text(KITTI_LABEL)
    (root / "calib" / "000007.txt").write_text(KITTI_CALIB)


def test_kitti_sample_round_trips_into_bag_with_lidar_boxes(tmp_path):
    _messages_or_skip()
    from admlops_ros.cli import main
    _write_kitti(tmp_path / "kitti")
    (tmp_path / "split.txt").write_text("000007\n")
    out = tmp_path / "k.bag"
    assert main(["bag-from-kitti", str(tmp_path / "kitti"), "--split",
                 str(tmp_path / "split.txt"), "-o", str(out), "--no-progress"]) == 0
    _, frames = bags.read_bag(out)
    frames = list(frames)
    assert len(frames) == 1 and frames[0].points.shape == (1000, 4)
    gt = frames[0].gt
    assert list(gt.names) == ["Car", "Pedestrian"]  # DontCare dropped
    got = gt.boxes.copy()
    got[:, 6] = (got[:, 6] + np.pi) % (2 * np.pi) - np.pi
    exp = EXPECTED_LIDAR.copy()
    exp[:, 6] = (exp[:, 6] + np.pi) % (2 * np.pi) - np.pi
    np.testing.assert_allclose(got, exp, atol=1e-4)
    assert list(gt.difficulty) == [0, 1]  # 100 px high / unoccluded; 70 px, occluded 1


def test_kitti_eval_cli(tmp_path, capsys):
    from admlops_ros.cli import main
    from admlops_ros.evaluation.kitti_eval import kitti_eval
    _write_kitti(tmp_path / "kitti")
    pred = tmp_path / "pred"
    pred.mkdir()
    lines = [ln + " 0.95" for ln in KITTI_LABEL.splitlines() if not ln.startswith("DontCare")]
    (pred / "000007.txt").write_text("\n".join(lines) + "\n")
    res = kitti_eval(tmp_path / "kitti" / "label_2", pred)
    # one gt per class and one threshold: precision 1 at sample point 0 only (devkit)
    assert res.ap("3d", "Car", "easy", kind="R11") == pytest.approx(100 / 11)
    assert res.ap("bbox", "Pedestrian", "moderate", kind="R11") == pytest.approx(100 / 11)
    assert math.isnan(res.ap("3d", "Pedestrian", "easy"))  # occluded 1: not easy
    assert main(["kitti-eval", "--gt", str(tmp_path / "kitti" / "label_2"), "--pred", str(pred),
                 "--calib", str(tmp_path / "kitti" / "calib"),
                 "--json", str(tmp_path / "k.json")]) == 0
    assert "Car bbox @0.70" in capsys.readouterr().out
    assert json.loads((tmp_path / "k.json").read_text())["kitti"]["num_frames"] == 1
    assert main(["kitti-eval", "--gt", str(tmp_path / "nope"), "--pred", str(pred)]) == 1


def test_written_kitti_results_score_like_the_lidar_boxes(tmp_path):
    """LiDAR predictions -> KITTI result files (nominal calib) -> read back -> same 3D IoU."""
    from admlops_ros.evaluation.frames import FramePred
    from admlops_ros.evaluation.kitti_eval import (camera_to_eval_boxes, read_kitti_file,
                                                   write_kitti_results)
    from admlops_ros.evaluation.matching import box_overlaps
    pred = FramePred(BOXES, [0.9, 0.8, 0.7, 0.6], NAMES)
    write_kitti_results(tmp_path, [pred])
    cols = read_kitti_file(tmp_path / "000000.txt")
    assert len(cols["type"]) == 3  # the box behind the camera is left out
    np.testing.assert_allclose(cols["score"], [0.9, 0.8, 0.7], atol=1e-4)
    back = camera_to_eval_boxes(cols["cam"])
    np.testing.assert_allclose(box_overlaps("3d", back, back),
                               box_overlaps("3d", BOXES[:3], BOXES[:3]), atol=0.02)
    assert (cols["bbox"][:, 3] > cols["bbox"][:, 1]).all()


def _engine_or_skip() -> Path:
    engine = REPO / "engines" / "pointpillars_sim_3class"
    if not (engine / "spec.yaml").is_file():
        pytest.skip(f"no engine bundle at {engine}")
    if shutil.which("roscore") is None or shutil.which("roslaunch") is None:
        pytest.skip("roscore / roslaunch not installed")
    if "ROS_PACKAGE_PATH" not in os.environ:
        pytest.skip("catkin workspace not sourced (run via scripts/run_tests.sh)")
    return engine


@pytest.mark.ros
@pytest.mark.slow
def test_online_eval_against_real_roscore(tmp_path):
    engine = _engine_or_skip()
    _messages_or_skip()
    admlops = [sys.executable, str(REPO / "scripts" / "admlops")]
    bag = tmp_path / "sim.bag"
    subprocess.run(admlops + ["bag-from-sim", "--count", "6", "--seed", "5", "-o", str(bag),
                              "--no-progress"], check=True, timeout=300)
    out = tmp_path / "out"
    proc = subprocess.run(admlops + ["eval", str(bag), "--engine", str(engine), "--online",
                                     "--backend", "openvino", "--rate", "0.5", "--out",
                                     str(out), "--no-progress"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    res = json.loads((out / "results.json").read_text())
    assert res["mode"] == "online" and res["frames"]["clouds"] == 6
    assert res["frames"]["dropped"] <= 1
    assert res["latency_ms"]["count"] >= 5 and res["latency_ms"]["p50"] > 0
    assert res["metrics"] is not None
    assert (out / "report.html").is_file()
