"""scripts/bench_camera.py runs end to end (one timed run on the tiny net; no timing checked)."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.paths import REPO_ROOT


def test_bench_camera_tiny(tmp_path):
    out = tmp_path / "camera.json"
    res = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "bench_camera.py"),
                          "--tiny", "--runs", "1", "--json", str(out)], capture_output=True,
                         text=True, cwd=str(REPO_ROOT), timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "inference openvino f32" in res.stdout and "preprocess" in res.stdout
    result = json.loads(out.read_text())
    assert result["preprocess"] > 0 and result["total own openvino f32"] > 0
    assert "total mmdeploy SDK" in result
