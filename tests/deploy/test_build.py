"""`admlops build-engine`: OpenVINO IR from a bundle's ONNX (vs ONNX Runtime), TensorRT wiring."""
from __future__ import annotations

import inspect
import shutil
from pathlib import Path

import numpy as np
import pytest

from admlops_ros.backends import tensorrt_cache, tensorrt_calibration
from admlops_ros.backends.tensorrt_backend import build_engine_from_onnx
from admlops_ros.bundle.files import load_bundle, write_bundle
from admlops_ros.cli import main
from admlops_ros.deploy import build
from admlops_ros.lidar.engine import open_voxel_engine
from tests.fixtures.tiny_model import make_tiny_onnx, random_voxels, tiny_spec
from tests.paths import REPO_ROOT as REPO

PROFILE = {"min": 1, "opt": 40, "max": 96}


@pytest.fixture()
def bundle(tmp_path):
    onnx = make_tiny_onnx(tmp_path / "src" / "end2end.onnx")
    spec = tiny_spec(engine={"output_layout": "mmdeploy-1.2", "tensorrt_profile": PROFILE})
    write_bundle(tmp_path / "bundle", spec, onnx)
    return tmp_path / "bundle"


def _compare_ir_with_onnxruntime(root: Path, inputs_list, atol: float) -> float:
    loaded = load_bundle(root)  # hashes verified, IR recorded in spec.yaml
    assert loaded.openvino_xml == root / "openvino" / "end2end.xml"
    worst = 0.0
    with open_voxel_engine("onnxruntime", loaded) as ort, \
            open_voxel_engine("openvino", loaded, precision="f32") as ov:
        for inputs in inputs_list:
            a, b = ort.infer(*inputs), ov.infer(*inputs)
            assert set(a) == set(b)
            for name in a:
                np.testing.assert_allclose(b[name], a[name], rtol=0, atol=atol, err_msg=name)
                worst = max(worst, float(np.abs(b[name] - a[name]).max()))
    return worst


def test_openvino_ir_fp32_matches_onnxruntime(bundle, capsys):
    assert main(["build-engine", str(bundle), "--target", "openvino"]) == 0
    xml = Path(capsys.readouterr().out.strip())
    assert xml == bundle / "openvino" / "end2end.xml" and xml.with_suffix(".bin").is_file()
    _compare_ir_with_onnxruntime(bundle, [random_voxels(v, seed=v) for v in (1, 17, 96)], 1e-4)


def test_openvino_ir_fp16_weights_are_smaller_and_close(bundle):
    fp32 = build.build_openvino(bundle)
    size32 = fp32.with_suffix(".bin").stat().st_size
    fp16 = build.build_openvino(bundle, fp16=True)
    assert fp16 == fp32  # one IR per bundle: replaced, and re-hashed
    assert fp16.with_suffix(".bin").stat().st_size < 0.7 * size32
    _compare_ir_with_onnxruntime(bundle, [random_voxels(30, seed=3)], 5e-2)


def test_openvino_without_onnx_is_a_clear_error(tmp_path, capsys):
    assert main(["build-engine", str(tmp_path), "--target", "openvino"]) == 1
    assert "end2end.onnx not found" in capsys.readouterr().err


def test_tensorrt_without_gpu_names_what_is_missing(bundle, capsys, monkeypatch):
    from admlops_ros.backends import gpu_info

    monkeypatch.setattr(gpu_info, "query_gpu", lambda index=0: None)
    assert main(["build-engine", str(bundle), "--target", "tensorrt", "--fp16"]) == 1
    err = capsys.readouterr().err
    assert "needs an NVIDIA GPU" in err and "onnxruntime or openvino" in err


def test_tensorrt_build_uses_spec_profile_and_workspace(bundle):
    calls = []

    def fake(onnx_path, plan_path, min_v, opt_v, max_v, fp16=False, workspace=1 << 30):
        calls.append((min_v, opt_v, max_v, fp16, workspace))
        Path(plan_path).write_bytes(b"plan")

    sha = tensorrt_cache.sha256_file(bundle / "end2end.onnx")
    key = tensorrt_cache.PlanKey("8.9", "10.3.0", "fp16", sha, (1, 40, 96), "NVIDIA L4")
    plan = build.build_tensorrt(bundle, fp16=True, workspace_bytes=1 << 28, build_fn=fake,
                                key=key)
    assert plan == bundle / "tensorrt" / "end2end.sm89.trt10.3.0.fp16.plan"
    assert calls == [(1, 40, 96, True, 1 << 28)]
    load_bundle(bundle)  # plans are machine-local: the bundle's hashes stay valid


def test_default_builder_accepts_what_the_cache_passes():
    inspect.signature(build_engine_from_onnx).bind("a.onnx", "a.plan", 1, 2, 3, fp16=True,
                                                   workspace=1 << 30)
    inspect.signature(build_engine_from_onnx).bind(
        "a.onnx", "a.plan", 1, 2, 3, fp16=False, workspace=1 << 30, int8=True,
        calib_dir="calib", calib_cache="a.calib", keep_fp32=["voxel_encoder"])


@pytest.fixture()
def calib_dir(tmp_path):
    feeds = [dict(zip(("voxels", "num_points", "coors"), random_voxels(v, seed=v)))
             for v in (10, 40, 96)]
    tensorrt_calibration.write_calibration_batches(feeds, tmp_path / "calib")
    return tmp_path / "calib"


@pytest.mark.parametrize("argv, message", [
    (["--target", "tensorrt", "--int8"], "--int8 needs --calib-dir DIR"),
    (["--target", "openvino", "--int8", "--calib-dir", "c"],
     "--int8 builds TensorRT INT8 plans: use it with --target tensorrt"),
    (["--target", "tensorrt", "--int8", "--fp16", "--calib-dir", "c"],
     "give one of --fp16 and --int8"),
    (["--target", "tensorrt", "--calib-dir", "c"], "--calib-dir is used only with --int8"),
    (["--target", "tensorrt", "--keep-fp32", "bbox_head"], "--keep-fp32 is used only with"),
])
def test_int8_flags_usage_errors(bundle, capsys, argv, message):
    assert main(["build-engine", str(bundle)] + argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_int8_missing_or_empty_calib_dir_is_one_line_naming_the_flag(bundle, tmp_path,
                                                                     capsys):
    # checked before the GPU: this machine has none, the message is still about the data
    assert main(["build-engine", str(bundle), "--target", "tensorrt", "--int8", "--calib-dir",
                 str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("admlops build-engine: error: --calib-dir %s: " % (tmp_path / "nope"))
    assert "does not exist" in err and len(err.splitlines()) == 1
    (tmp_path / "empty").mkdir()
    assert main(["build-engine", str(bundle), "--target", "tensorrt", "--int8", "--calib-dir",
                 str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--calib-dir %s:" % (tmp_path / "empty") in err and "no calibration batches" in err
    assert len(err.splitlines()) == 1


def test_int8_with_good_calib_dir_and_no_gpu_names_what_is_missing(bundle, calib_dir, capsys,
                                                                   monkeypatch):
    from admlops_ros.backends import gpu_info

    monkeypatch.setattr(gpu_info, "query_gpu", lambda index=0: None)
    assert main(["build-engine", str(bundle), "--target", "tensorrt", "--int8", "--calib-dir",
                 str(calib_dir)]) == 1
    assert "needs an NVIDIA GPU" in capsys.readouterr().err


def test_tensorrt_int8_build_wiring(bundle, calib_dir):
    calls = []

    def fake(onnx_path, plan_path, min_v, opt_v, max_v, fp16=False, workspace=1 << 30,
             int8=False, calib_dir=None, calib_cache=None, keep_fp32=None):
        calls.append((min_v, opt_v, max_v, fp16, int8, calib_dir, Path(calib_cache).name,
                      keep_fp32))
        Path(calib_cache).write_bytes(b"calibration cache")
        Path(plan_path).write_bytes(b"plan")

    sha = tensorrt_cache.sha256_file(bundle / "end2end.onnx")
    data_sha = tensorrt_calibration.open_calibration_dir(calib_dir).sha256
    key = tensorrt_cache.PlanKey("8.9", "10.3.0", "int8", sha, (1, 40, 96), "NVIDIA L4",
                                 data_sha, ("pfn",))
    plan = build.build_tensorrt(bundle, int8=True, calib_dir=calib_dir, build_fn=fake, key=key)
    assert plan == bundle / "tensorrt" / "end2end.sm89.trt10.3.0.int8.plan"
    assert calls == [(1, 40, 96, False, True, str(calib_dir), "end2end.sm89.trt10.3.0.int8.calib",
                      ["pfn"])]
    assert tensorrt_cache.read_sidecar(plan) == key
    load_bundle(bundle)  # plans and calibration caches are machine-local: hashes stay valid
    with pytest.raises(build.BuildError, match="needs calibration data"):
        build.build_tensorrt(bundle, int8=True, build_fn=fake, key=key)


def _shipped_bundles():
    return [p.parent for p in sorted((REPO / "engines").glob("*/spec.yaml"))
            if (p.parent / "end2end.onnx").is_file()
            and "modality: camera" not in p.read_text()]  # lidar bundles (voxel engines)


@pytest.mark.slow
@pytest.mark.parametrize("shipped", _shipped_bundles() or [None])
def test_shipped_onnx_to_openvino_matches_onnxruntime(shipped, tmp_path):
    if shipped is None:
        pytest.skip("no engine bundle with end2end.onnx under engines/ yet (make engine)")
    root = tmp_path / shipped.name  # never modify the shipped bundle
    shutil.copytree(shipped, root, ignore=shutil.ignore_patterns("tensorrt"))
    build.build_openvino(root)  # replaces any shipped IR, re-hashes spec.yaml
    spec = load_bundle(root).spec
    vox = spec.voxelization
    rng = np.random.default_rng(0)
    lo = np.asarray(vox.point_cloud_range[:3], np.float32)
    hi = np.asarray(vox.point_cloud_range[3:], np.float32)
    from admlops_ros.lidar.voxelize import Voxelizer, with_batch_index

    voxelizer = Voxelizer(vox.voxel_size, vox.point_cloud_range, vox.max_points, vox.max_voxels)
    inputs = []
    for n in (3000, 20000):
        pts = np.zeros((n, len(spec.input.point_features)), np.float32)
        pts[:, :3] = lo + (hi - lo) * rng.random((n, 3), dtype=np.float32)
        v = voxelizer(pts)
        inputs.append((v.voxels, v.num_points, with_batch_index(v.coors)))
    _compare_ir_with_onnxruntime(root, inputs, 1e-4)
