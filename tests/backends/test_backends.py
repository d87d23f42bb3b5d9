"""Backends on real ONNX Runtime and OpenVINO sessions; layouts; spec/engine checks; TensorRT
pieces that are honest to test without a GPU."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from admlops_ros.backends import (BackendError, DecodedOutputs, HeadOutputs, LayoutError,
                                  available_backends, create_backend, detect_layout,
                                  to_head_outputs)
from admlops_ros.lidar.layout import LAYOUT_NAMES, resolve_layout
from admlops_ros.backends.openvino_backend import convert_onnx_to_ir
from admlops_ros.backends.tensorrt_backend import (check_profile_range, import_tensorrt,
                                                   pad_voxels)
from admlops_ros.bundle.files import write_bundle
from admlops_ros.bundle.spec import ModelSpec
from tests.paths import REPO_ROOT
from tests.fixtures.tiny_model import OUTPUT_NAMES, make_tiny_onnx, random_voxels, tiny_spec

SPEC = ModelSpec.from_dict(tiny_spec())


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    return make_tiny_onnx(tmp_path_factory.mktemp("tiny") / "end2end.onnx")


@pytest.fixture(scope="module")
def engines(tiny_onnx):
    ort = create_backend("onnxruntime", {"onnx": tiny_onnx, "spec": SPEC})
    ov = create_backend("openvino", {"onnx": tiny_onnx, "spec": SPEC})
    yield ort, ov
    ort.close()
    ov.close()


def test_onnxruntime_equals_openvino_f32_for_several_voxel_counts(engines):
    ort, ov = engines
    assert ov.precision == "f32"
    for v in (1, 7, 40, 96, 13):  # V changes every call on the same compiled model
        inputs = random_voxels(v, seed=v)
        a, b = ort.infer(*inputs), ov.infer(*inputs)
        assert set(a) == set(b) == {"cls_score0", "bbox_pred0", "dir_cls_pred0"}
        assert a["cls_score0"].shape == (1, 8, 4, 6)
        assert a["bbox_pred0"].shape == (1, 28, 4, 6)
        assert a["dir_cls_pred0"].shape == (1, 8, 4, 6)
        for name in a:
            np.testing.assert_allclose(a[name], b[name], rtol=0, atol=1e-5, err_msg=name)


def test_backend_io_and_normalized_head_outputs(engines):
    ort, _ = engines
    assert ort.input_names == ["voxels", "num_points", "coors"]
    assert ort.output_layout.name == "mmdeploy-1.2"
    out = to_head_outputs(ort.infer(*random_voxels(5)), ort.output_layout)
    assert isinstance(out, HeadOutputs)
    assert [x.shape for x in out.cls_scores] == [(1, 8, 4, 6)]
    assert [x.shape for x in out.dir_cls_preds] == [(1, 8, 4, 6)]


def test_results_do_not_alias_between_calls(engines):
    _, ov = engines
    first = ov.infer(*random_voxels(5, seed=1))
    kept = {k: v.copy() for k, v in first.items()}
    ov.infer(*random_voxels(9, seed=2))
    for k in kept:
        np.testing.assert_array_equal(first[k], kept[k])


def test_bad_inputs_are_clear(engines):
    ort, _ = engines
    vox, npts, coors = random_voxels(4)
    with pytest.raises(BackendError, match="no voxels"):
        ort.infer(vox[:0], npts[:0], coors[:0])
    with pytest.raises(BackendError, match="voxels have C=3 channels, the engine takes 4"):
        ort.infer(vox[..., :3], npts, coors)
    with pytest.raises(BackendError, match=r"coors \[V, 4\]"):
        ort.infer(vox, npts, coors[:, 1:])


def test_openvino_ir_conversion_and_precisions(tmp_path, tiny_onnx, engines):
    ort, _ = engines
    xml = convert_onnx_to_ir(tiny_onnx, tmp_path / "ir" / "end2end.xml")
    assert xml.with_suffix(".bin").is_file()
    inputs = random_voxels(30, seed=3)
    ref = ort.infer(*inputs)
    with create_backend("openvino", xml, spec=SPEC) as ov:
        out = ov.infer(*inputs)
    for name in ref:
        np.testing.assert_allclose(out[name], ref[name], atol=1e-5)
    with create_backend("openvino", xml, spec=SPEC, precision="bf16") as ov16:
        assert ov16.precision == "bf16"
        out16 = ov16.infer(*inputs)
    for name in ref:  # bf16 is close, not exact
        np.testing.assert_allclose(out16[name], ref[name], atol=0.25)
    with pytest.raises(BackendError, match="precision 'int4' unknown"):
        create_backend("openvino", xml, precision="int4")


def test_bundle_auto_backend_prefers_openvino_ir(tmp_path, tiny_onnx):
    xml = convert_onnx_to_ir(tiny_onnx, tmp_path / "ir" / "m.xml")
    bundle = write_bundle(tmp_path / "bundle", tiny_spec(), tiny_onnx, openvino_xml=xml)
    assert "openvino" in available_backends() and "onnxruntime" in available_backends()
    with create_backend("auto", bundle) as b:
        assert b.name == "openvino" and b.path == bundle.openvino_xml
    with create_backend("onnxruntime", tmp_path / "bundle") as b:
        assert b.spec == bundle.spec
    with pytest.raises(BackendError, match="unknown backend 'cuda'"):
        create_backend("cuda", bundle)
    with pytest.raises(BackendError, match="needs a plan"):
        create_backend("tensorrt", {"onnx": tiny_onnx})


@pytest.mark.parametrize("layout", ["mmdeploy-0.5", "mmdeploy-1.0", "mmdeploy-1.2"])
def test_raw_layouts_detected_from_real_models(tmp_path, layout):
    path = make_tiny_onnx(tmp_path / "m.onnx", layout=layout)
    with create_backend("onnxruntime", path, spec=SPEC) as b:
        assert b.output_layout.name == layout
        out = to_head_outputs(b.infer(*random_voxels(6)), b.output_layout)
    assert isinstance(out, HeadOutputs)
    assert out.cls_scores[0].shape == (1, 8, 4, 6) and out.bbox_preds[0].shape == (1, 28, 4, 6)


def test_decoded_layout_v011(tmp_path):
    path = make_tiny_onnx(tmp_path / "m.onnx", layout="mmdeploy-0.11", num_dets=5)
    with create_backend("openvino", path, spec=SPEC) as b:
        assert b.output_layout.name == "mmdeploy-0.11" and b.output_layout.decoded
        out = to_head_outputs(b.infer(*random_voxels(6)), b.output_layout)
    assert isinstance(out, DecodedOutputs)
    assert out.boxes.shape == (5, 7) and out.boxes.dtype == np.float32
    assert out.scores.shape == (5,) and out.labels.dtype == np.int64
    padded = {"bboxes": np.ones((1, 3, 7), np.float32), "scores": np.array([[0.9, 0.5, 0.0]]),
              "labels": np.array([[2, 0, -1]])}
    dec = to_head_outputs(padded, detect_layout(list(padded)))
    assert dec.labels.tolist() == [2, 0] and dec.boxes.shape == (2, 7)


def test_layout_detection_table():
    for name in ("mmdeploy-0.5", "mmdeploy-1.0", "mmdeploy-0.11"):
        assert detect_layout(list(OUTPUT_NAMES[name])[::-1]).name == name
    two = detect_layout(["cls_score1", "bbox_pred0", "cls_score0", "dir_cls_pred1",
                         "bbox_pred1", "dir_cls_pred0"])
    assert two.name == "mmdeploy-1.2" and two.num_levels == 2
    assert two.cls_names == ("cls_score0", "cls_score1")
    no_dir = detect_layout(["cls_score", "bbox_pred"])
    assert no_dir.name == "mmdeploy-1.0" and no_dir.dir_names == ()
    with pytest.raises(LayoutError) as err:
        detect_layout(["cls_score0", "bbox_pred1"])
    msg = str(err.value)
    assert "['bbox_pred1', 'cls_score0']" in msg
    assert all(name in msg for name in LAYOUT_NAMES)
    with pytest.raises(LayoutError, match="engine.output_layout is 'mmdeploy-1.0'"):
        resolve_layout(["cls_score0", "bbox_pred0", "dir_cls_pred0"], "mmdeploy-1.0")


def test_wrong_output_names_fail_at_load_listing_layouts(tmp_path):
    path = make_tiny_onnx(tmp_path / "m.onnx", output_names=OUTPUT_NAMES["wrong"])
    with pytest.raises(LayoutError) as err:
        create_backend("onnxruntime", path)
    assert "['heatmap', 'reg', 'rot']" in str(err.value) and "mmdeploy-1.2" in str(err.value)


@pytest.mark.parametrize("model_kwargs,spec_changes,needle", [
    ({"num_features": 5}, {}, "voxels last dim (C) is 5 but spec input.point_features has 4"),
    ({"max_points": 6}, {}, "voxels dim 1 (max points per voxel) is 6 but spec "
                            "voxelization.max_points is 5"),
    ({"canvas": (8, 10)}, {}, "cls_score0 map is [4, 5] (H, W) but spec "
                              "anchors.feature_map_size is [4, 6]"),
    ({"num_classes": 3}, {}, "cls_score0 has 12 channels but the spec implies 8 = anchors per "
                             "cell (4) * num_classes (2)"),
    ({"code_size": 9}, {}, "bbox_pred0 has 36 channels but the spec implies 28"),
    ({}, {"anchors": {"rotations": [0.0]}}, "dir_cls_pred0 has 8 channels but the spec "
                                            "implies 4"),
])
def test_spec_engine_mismatch_names_both_values(tmp_path, model_kwargs, spec_changes, needle):
    path = make_tiny_onnx(tmp_path / "m.onnx", **model_kwargs)
    spec = ModelSpec.from_dict(tiny_spec(**spec_changes))
    for name in ("onnxruntime", "openvino"):
        with pytest.raises(BackendError) as err:
            create_backend(name, path, spec=spec)
        assert needle in str(err.value), str(err.value)


def test_static_voxel_axis_model_runs_any_v_on_openvino(tmp_path):
    path = make_tiny_onnx(tmp_path / "static.onnx", dynamic=False)
    with create_backend("onnxruntime", path, spec=SPEC) as ort, \
            create_backend("openvino", path, spec=SPEC) as ov:
        inputs = random_voxels(16, seed=4)
        np.testing.assert_allclose(ov.infer(*inputs)["cls_score0"],
                                   ort.infer(*inputs)["cls_score0"], atol=1e-5)
        assert ov.infer(*random_voxels(9))["cls_score0"].shape == (1, 8, 4, 6)


# ----------------------------------------------------------------------------- TensorRT
def test_tensorrt_module_imports_without_tensorrt():
    code = ("import sys; sys.modules['tensorrt'] = None; "
            "import admlops_ros.backends.tensorrt_backend as t; "
            "from admlops_ros.backends import available_backends; "
            "assert 'tensorrt' not in available_backends(); print('ok')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=str(REPO_ROOT))
    assert res.stdout.strip() == "ok", res.stderr


def test_tensorrt_missing_gives_install_hint(monkeypatch, tiny_onnx):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendError) as err:
        import_tensorrt()
    assert "TensorRT >= 8.6" in str(err.value) and "'openvino'" in str(err.value)
    with pytest.raises(BackendError, match="pip install tensorrt"):
        create_backend("tensorrt", {"tensorrt_plan": tiny_onnx})


def test_tensorrt_profile_range_check():
    check_profile_range(9000, 2000, 9000)
    with pytest.raises(BackendError) as err:
        check_profile_range(12000, 2000, 9000)
    msg = str(err.value)
    assert "12000 voxels exceed" in msg and "min 2000, max 9000" in msg
    assert "max_voxels" in msg and "rebuild the engine" in msg
    with pytest.raises(BackendError, match="no voxels"):
        check_profile_range(0, 2000, 9000)


def test_padding_below_profile_min_repeats_last_voxel_and_keeps_outputs(engines):
    ort, _ = engines
    inputs = random_voxels(7, seed=5)
    padded = pad_voxels(*inputs, min_voxels=20)
    assert padded[0].shape[0] == 20 and (padded[2][7:] == inputs[2][-1]).all()
    a, b = ort.infer(*inputs), ort.infer(*padded)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-6)
    assert pad_voxels(*inputs, min_voxels=3)[0] is inputs[0]
