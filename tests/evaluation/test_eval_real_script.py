"""scripts/eval_real.py: the README's real-KITTI table (kitti-eval AP, false cars per frame)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.paths import REPO_ROOT, SHARED_KITTI

KITTI_TRAINING = SHARED_KITTI / "training"
needs_kitti = pytest.mark.skipif(not (KITTI_TRAINING / "label_2").is_dir(),
                                 reason=f"real KITTI frames not found at {KITTI_TRAINING} "
                                        "(../shared beside the repo)")


@needs_kitti
def test_table_on_two_real_frames_agrees_with_kitti_eval(tmp_path):
    out = tmp_path / "real"
    run = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "eval_real.py"),
                          "--kitti", str(KITTI_TRAINING), "--ids", "000003", "000004",
                          "--engine", str(REPO_ROOT / "engines" / "pointpillars_sim_3class"),
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "| engine | Car 3D E / M / H | Car BEV E / M / H |" in run.stdout
    row = json.loads((out / "results.json").read_text())[0]
    assert row["frames"] == 2 and row["false_cars_per_frame"] >= 0
    # the script's numbers are kitti-eval's on the result files it wrote
    from admlops_ros.evaluation.kitti_eval import kitti_eval
    res = kitti_eval(KITTI_TRAINING / "label_2", out / "0_pointpillars_sim_3class",
                     ["000003", "000004"], with_bbox=False)
    assert res.ap("bev", "Car", "moderate") == pytest.approx(row["car_bev_moderate"])
    assert sum(row["num_gt_car"]) > 0


def test_missing_labels_is_one_line(tmp_path):
    run = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "eval_real.py"),
                          "--kitti", str(tmp_path), "--engine", "x"], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 1
    assert run.stderr.strip().count("\n") == 0 and "label_2" in run.stderr
