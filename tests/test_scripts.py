"""The benchmark scripts of `make bench` run end to end (one timed run each; no timing checked)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.paths import REPO_ROOT


def run_script(name: str, *args: str, timeout: float = 600) -> str:
    env = dict(os.environ, NUMBA_NUM_THREADS="1")
    res = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / name), *args],
                         capture_output=True, text=True, cwd=str(REPO_ROOT), env=env,
                         timeout=timeout)
    assert res.returncode == 0, f"{name} failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
    return res.stdout


def test_bench_postprocess():
    out = run_script("bench_postprocess.py", "--runs", "1")
    assert "ours: decode + NMS (Anchor3DDecoder.decode)" in out and "full: baseline / ours" in out


def test_bench_sweeps(tmp_path):
    out = run_script("bench_sweeps.py", "--runs", "1", "--points", "2000", "--json",
                     str(tmp_path / "sweeps.json"))
    assert "ours: 10 sweeps (SweepAccumulator.add)" in out and "baseline / ours" in out
    result = json.loads((tmp_path / "sweeps.json").read_text())
    assert result["points_out"]["10"] > 9 * 2000 * 0.9


def test_bench_preprocess(tmp_path):
    run_script("bench_preprocess.py", "--runs", "1", "--json", str(tmp_path / "pre.json"))
    result = json.loads((tmp_path / "pre.json").read_text())
    assert result["voxelize_ms"] > 0 and result["voxelize_numpy_ms"] > 0


def test_bench_eval():
    out = run_script("bench_eval.py", "--frames", "20", "--repeat", "1")
    assert "mAP3d R40" in out


def test_bench_simulation(tmp_path):
    run_script("bench_simulation.py", "--frames", "1", "--json", str(tmp_path / "sim.json"))
    assert json.loads((tmp_path / "sim.json").read_text())


@pytest.mark.slow
def test_bench_pipeline_on_the_shipped_model(tmp_path):
    pytest.importorskip("torch")
    run_script("bench.py", "--skip-full", "--runs", "1", "--out", str(tmp_path / "b.json"))
    result = json.loads((tmp_path / "b.json").read_text())
    small = result["pointpillars_sim_3class"]
    assert small["num_voxels"] > 0 and small["detect_total_openvino_f32_ms"] > 0
