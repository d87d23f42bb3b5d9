"""scripts/rebuild_engine_mmdeploy.sh with a stub mmdeploy (tools/deploy.py + deploy configs)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from admlops_ros.bundle.files import load_bundle
from tests.paths import REPO_ROOT as REPO

SCRIPT = REPO / "scripts" / "rebuild_engine_mmdeploy.sh"
CONFIG = (REPO / "tests" / "fixtures" / "mmdet3d_configs" / "configs" / "pointpillars" /
          "pointpillars_hv_secfpn_8xb6-160e_kitti-3d-3class.py")

# Stub of mmdeploy's tools/deploy.py: records its arguments, writes what the real one writes.
DEPLOY_STUB = '''
import argparse, sys
from pathlib import Path
sys.path.insert(0, {repo!r})
from tests.fixtures.tiny_model import make_tiny_onnx
p = argparse.ArgumentParser()
for a in ("deploy_cfg", "model_cfg", "checkpoint", "img"):
    p.add_argument(a)
p.add_argument("--work-dir"); p.add_argument("--device"); p.add_argument("--log-level")
a = p.parse_args()
work = Path(a.work_dir); work.mkdir(parents=True, exist_ok=True)
with open(Path(__file__).parent / "calls.txt", "a") as f:
    f.write(" ".join([Path(a.deploy_cfg).name, a.model_cfg, a.checkpoint, a.img, a.device]) + "\\n")
assert Path(a.img).stat().st_size == 20000 * 16
onnx = make_tiny_onnx(work / "end2end.onnx")
if "openvino" in a.deploy_cfg:
    from admlops_ros.backends.openvino_backend import convert_onnx_to_ir
    convert_onnx_to_ir(onnx, work / "end2end.xml")
'''

TRT_CFG = '''_base_ = ['./voxel-detection_dynamic.py']
backend_config = dict(
    common_config=dict(max_workspace_size=1 << 30),
    model_inputs=[dict(input_shapes=dict(
        voxels=dict(min_shape=[2000, 32, 4], opt_shape=[5000, 32, 4], max_shape=[9000, 32, 4]),
        num_points=dict(min_shape=[2000], opt_shape=[5000], max_shape=[9000]),
        coors=dict(min_shape=[2000, 4], opt_shape=[5000, 4], max_shape=[9000, 4])))])
'''


@pytest.fixture()
def mmdeploy(tmp_path):
    root = tmp_path / "mmdeploy"
    (root / "tools").mkdir(parents=True)
    (root / "tools" / "deploy.py").write_text(DEPLOY_STUB.format(repo=str(REPO)))
    cfgs = root / "configs" / "mmdet3d" / "voxel-detection"
    cfgs.mkdir(parents=True)
    (cfgs / "voxel-detection_dynamic.py").write_text("codebase_config = dict(type='mmdet3d')\n")
    (cfgs / "voxel-detection_tensorrt_dynamic-kitti-32x4.py").write_text(TRT_CFG)
    for name in ("onnxruntime_dynamic", "openvino_dynamic-kitti-32x4"):
        (cfgs / ("voxel-detection_%s.py" % name)).write_text(
            "_base_ = ['./voxel-detection_dynamic.py']\n")
    return root


def test_rebuild_packs_a_verified_bundle(mmdeploy, tmp_path):
    ckpt = tmp_path / "model.pth"
    ckpt.write_bytes(b"weights")
    env = dict(os.environ, MMDEPLOY_DIR=str(mmdeploy), PYTHON=sys.executable)
    res = subprocess.run(["bash", str(SCRIPT), "--config", str(CONFIG), "--checkpoint", str(ckpt),
                          "--name", "pp_kitti", "--backends", "onnxruntime,openvino",
                          "--out", str(tmp_path / "engines"), "--device", "cpu"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         universal_newlines=True, env=env, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:]
    calls = (mmdeploy / "tools" / "calls.txt").read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["voxel-detection_onnxruntime_dynamic.py",
                                             "voxel-detection_openvino_dynamic-kitti-32x4.py"]
    assert all(c.split()[1] == str(CONFIG) and c.split()[-1] == "cpu" for c in calls)
    bundle = load_bundle(tmp_path / "engines" / "pp_kitti")
    assert set(bundle.files) == {"end2end.onnx", "openvino/end2end.xml", "openvino/end2end.bin"}
    spec = bundle.spec
    assert spec.name == "pp_kitti" and list(spec.class_names) == ["Pedestrian", "Cyclist", "Car"]
    prof = spec.engine.tensorrt_profile  # read from the TensorRT deploy config
    assert (prof.min, prof.opt, prof.max) == (2000, 5000, 9000)


def test_rebuild_rejects_missing_inputs(mmdeploy, tmp_path):
    env = dict(os.environ, MMDEPLOY_DIR=str(mmdeploy))
    res = subprocess.run(["bash", str(SCRIPT), "--config", str(CONFIG), "--checkpoint",
                          str(tmp_path / "none.pth")], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, universal_newlines=True, env=env, timeout=30)
    assert res.returncode == 2 and "--checkpoint: .pth not found" in res.stderr
