"""INT8 bundles: exact deconvolution rewrite, normal load path with sha256, tolerance to fp32,
deterministic calibration, and `admlops optimize` end to end on small simulated bags."""
from __future__ import annotations

import numpy as np
import pytest

from admlops_ros.bundle.files import load_bundle, sha256_file
from admlops_ros.bundle.spec import SpecError
from admlops_ros.deploy.optimize import calibration_feeds
from admlops_ros.deploy.quantize import (PILLAR_FRONT, QuantizationError,
                                         rewrite_strided_deconvolutions, write_int8_bundle)
from admlops_ros.lidar.detector import LidarDetector
from admlops_ros.simulation import simulate_frame
from tests.paths import REPO_ROOT

pytest.importorskip("nncf")
ov = pytest.importorskip("openvino")

ENGINE = REPO_ROOT / "engines" / "pointpillars_sim_3class"
CALIB_SEEDS = range(2_000_000, 2_000_008)  # apart from training (< 400,000) and eval seeds


@pytest.fixture(scope="module")
def fp32():
    with LidarDetector.from_bundle(None, backend="openvino", precision="f32") as det:
        yield det


@pytest.fixture(scope="module")
def feeds(fp32):
    return calibration_feeds(fp32, (simulate_frame(seed).points for seed in CALIB_SEEDS))


@pytest.fixture(scope="module")
def int8_bundle(fp32, feeds, tmp_path_factory):
    return write_int8_bundle(fp32.bundle, tmp_path_factory.mktemp("q") / "int8", feeds,
                             PILLAR_FRONT, "sim.bag", seed=3)


def _deconv_model(stride: int, kernel: int, rng):
    from openvino import opset13 as ops
    x = ops.parameter([1, 8, 5, 7], np.float32, name="x")
    w = rng.standard_normal((8, 6, kernel, kernel)).astype(np.float32)
    y = ops.convolution_backprop_data(x, ops.constant(w), strides=[stride, stride],
                                      pads_begin=[0, 0], pads_end=[0, 0], dilations=[1, 1])
    return ov.Model([ops.relu(y)], [x])


@pytest.mark.parametrize("stride", [2, 4])
def test_deconvolution_rewrite_is_exact(stride):
    original = _deconv_model(stride, stride, np.random.default_rng(stride))
    rewritten = _deconv_model(stride, stride, np.random.default_rng(stride))  # same weights
    assert rewrite_strided_deconvolutions(rewritten) == 1
    assert "ConvolutionBackpropData" not in {op.get_type_name()
                                             for op in rewritten.get_ordered_ops()}
    x = np.random.default_rng(99).standard_normal((1, 8, 5, 7)).astype(np.float32)
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    a = core.compile_model(original, "CPU", config)(x)[0]
    b = core.compile_model(rewritten, "CPU", config)(x)[0]
    assert a.shape == b.shape == (1, 6, 5 * stride, 7 * stride)
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


def test_overlapping_deconvolution_is_left_alone():
    model = _deconv_model(2, 3, np.random.default_rng(0))  # kernel 3 > stride 2: overlaps
    assert rewrite_strided_deconvolutions(model) == 0


def test_int8_bundle_loads_through_the_bundle_path(int8_bundle):
    bundle = load_bundle(int8_bundle.root)  # sha256 of every file checked
    engine = bundle.spec.engine
    assert engine.precision == "int8"
    assert engine.quantization.calibration_frames == len(CALIB_SEEDS)
    assert engine.quantization.seed == 3
    assert engine.quantization.float_layers == PILLAR_FRONT
    assert set(bundle.spec.files) == {"end2end.onnx", "openvino/end2end.xml",
                                      "openvino/end2end.bin"}
    ops = {op.get_type_name() for op in ov.Core().read_model(
        str(bundle.root / "openvino/end2end.xml")).get_ordered_ops()}
    assert "FakeQuantize" in ops
    import onnx
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(
        str(bundle.root / "end2end.onnx")).graph.node}


def test_tampered_int8_bundle_is_refused(int8_bundle, tmp_path):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(int8_bundle.root, copy)
    with open(copy / "openvino/end2end.bin", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(SpecError, match="sha256"):
        load_bundle(copy)


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_int8_outputs_stay_near_fp32(fp32, int8_bundle, backend):
    """Stated tolerance on a fixed held-out scan: sigmoid scores of the anchors fp32 scores
    above 0.3 within 0.1, and every fp32 detection above 0.4 found among the int8 ones above
    0.2 (same class, BEV IoU >= 0.7)."""
    from admlops_ros.evaluation.compare import match_boxes
    from admlops_ros.evaluation.frames import FramePred
    points = simulate_frame(1_000_007).points
    ref = fp32.infer_raw(points)
    with LidarDetector.from_bundle(int8_bundle.root, backend=backend) as det:
        out = det.infer_raw(points)
        dets = det.postprocess(out)
    ref_dets = fp32.postprocess(ref)
    assert set(out) == set(ref)
    for name in ref:
        assert out[name].shape == ref[name].shape
    s_ref = 1.0 / (1.0 + np.exp(-ref["cls_score0"]))
    s_q = 1.0 / (1.0 + np.exp(-out["cls_score0"]))
    sure = s_ref > 0.3
    assert sure.sum() > 0
    assert np.abs(s_q - s_ref)[sure].max() < 0.1
    a = FramePred.from_detections(ref_dets.select(ref_dets.scores > 0.4), "f")
    b = FramePred.from_detections(dets.select(dets.scores > 0.2), "f")
    assert len(a) > 0 and len(match_boxes(a, b)) == len(a)


def test_calibration_is_deterministic(fp32, feeds, int8_bundle, tmp_path):
    again = write_int8_bundle(fp32.bundle, tmp_path / "again", feeds, PILLAR_FRONT, "sim.bag",
                              seed=3)
    for rel in int8_bundle.spec.files:
        assert sha256_file(again.root / rel) == sha256_file(int8_bundle.root / rel), rel


def test_quantizing_an_int8_bundle_is_refused(int8_bundle, feeds, tmp_path):
    with pytest.raises(QuantizationError, match="already int8"):
        write_int8_bundle(int8_bundle, tmp_path / "x", feeds, PILLAR_FRONT, "sim.bag", 0)


def test_empty_calibration_is_refused(fp32, tmp_path):
    with pytest.raises(QuantizationError, match="no calibration clouds"):
        write_int8_bundle(fp32.bundle, tmp_path / "x", [], PILLAR_FRONT, "sim.bag", 0)


@pytest.fixture(scope="module")
def small_bags(tmp_path_factory):
    from admlops_ros.evaluation import bags
    from admlops_ros.evaluation.rosbag_io import BagError
    try:
        bags.messages()
    except BagError as exc:
        pytest.skip(f"admlops_ros messages not built: {exc}")
    root = tmp_path_factory.mktemp("bags")
    bags.bag_from_sim(root / "calib.bag", 6, 2_100_000, progress=False)
    bags.bag_from_sim(root / "eval.bag", 3, 1_000_000, progress=False)
    return root / "calib.bag", root / "eval.bag"


def test_calibration_split_is_seeded(small_bags):
    from admlops_ros.deploy.optimize import calibration_split
    calib_bag, _ = small_bags
    first, held_out = calibration_split(calib_bag, 3, seed=1)
    again, _ = calibration_split(calib_bag, 3, seed=1)
    other, _ = calibration_split(calib_bag, 3, seed=2)
    assert [f.index for f in first] == [f.index for f in again]
    assert {f.index for f in first} != {f.index for f in other}
    assert not {f.index for f in first} & {f.index for f in held_out}
    assert len(first) + len(held_out) == 6


def test_optimize_writes_bundles_and_the_table(small_bags, tmp_path, capsys):
    import json
    from admlops_ros.cli import main
    calib_bag, eval_bag = small_bags
    out = tmp_path / "opt"
    assert main(["optimize", str(ENGINE), "--calib-bag", str(calib_bag),
                 "--eval-bag", str(eval_bag), "--calib-frames", "3", "--max-map-loss", "100",
                 "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    for row in ("fp32    openvino", "bf16    openvino", "int8    openvino",
                "fp32    onnxruntime", "int8    onnxruntime"):
        assert row in text
    report = json.loads((out / "optimize.json").read_text())
    assert set(report["bundles"]) == {"int8"}  # within the (huge) allowed loss at once
    assert report["search"][0]["float_layers"] == list(PILLAR_FRONT)
    rows = {(r["engine"], r["backend"]): r for r in report["rows"]}
    assert rows[("fp32", "openvino")]["speedup"] == 1.0
    assert rows[("fp32", "openvino")]["delta_3d"] == 0.0
    assert rows[("int8", "openvino")]["detect_ms"] > 0
    assert load_bundle(report["bundles"]["int8"]).spec.engine.precision == "int8"


def test_optimize_errors_are_one_line(small_bags, tmp_path, capsys):
    from admlops_ros.cli import main
    calib_bag, eval_bag = small_bags
    assert main(["optimize", str(tmp_path / "nothing"), "--calib-bag", str(calib_bag),
                 "--eval-bag", str(eval_bag), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("admlops optimize: error:")
    assert main(["optimize", str(ENGINE), "--calib-bag",
                 str(tmp_path / "missing.bag"), "--eval-bag", str(eval_bag),
                 "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.bag" in err[0]
