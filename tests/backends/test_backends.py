"""Engine runners on real ONNX Runtime and OpenVINO sessions, modality-free (named arrays in
and out); TensorRT pieces that are honest to test without a GPU."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from admlops_ros.backends import BackendError, available_backends, create_backend
from admlops_ros.backends.openvino_backend import convert_onnx_to_ir
from admlops_ros.backends.tensorrt_backend import import_tensorrt
from admlops_ros.bundle.files import write_bundle
from admlops_ros.lidar.engine import INPUT_NAMES, VOXEL_AXES, open_voxel_engine
from tests.fixtures.tiny_model import make_tiny_onnx, random_voxels, tiny_spec
from tests.paths import REPO_ROOT


def feeds(inputs):
    """(voxels, num_points, coors) as the runner's named inputs."""
    return dict(zip(INPUT_NAMES, inputs))


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    return make_tiny_onnx(tmp_path_factory.mktemp("tiny") / "end2end.onnx")


@pytest.fixture(scope="module")
def engines(tiny_onnx):
    ort = create_backend("onnxruntime", {"onnx": tiny_onnx})
    ov = create_backend("openvino", {"onnx": tiny_onnx}, dynamic_axes=VOXEL_AXES)
    yield ort, ov
    ort.close()
    ov.close()


def test_onnxruntime_equals_openvino_f32_for_several_voxel_counts(engines):
    ort, ov = engines
    assert ov.precision == "f32"
    for v in (1, 7, 40, 96, 13):  # V changes every call on the same compiled model
        inputs = random_voxels(v, seed=v)
        a, b = ort.run(feeds(inputs)), ov.run(feeds(inputs))
        assert set(a) == set(b) == {"cls_score0", "bbox_pred0", "dir_cls_pred0"}
        assert a["cls_score0"].shape == (1, 8, 4, 6)
        assert a["bbox_pred0"].shape == (1, 28, 4, 6)
        assert a["dir_cls_pred0"].shape == (1, 8, 4, 6)
        for name in a:
            np.testing.assert_allclose(a[name], b[name], rtol=0, atol=1e-5, err_msg=name)


def test_results_do_not_alias_between_calls(engines):
    _, ov = engines
    first = ov.run(feeds(random_voxels(5, seed=1)))
    kept = {k: v.copy() for k, v in first.items()}
    ov.run(feeds(random_voxels(9, seed=2)))
    for k in kept:
        np.testing.assert_array_equal(first[k], kept[k])


def test_named_feeds_are_checked(engines):
    ort, _ = engines
    vox, npts, coors = random_voxels(4)
    with pytest.raises(BackendError, match=r"missing \['coors'\], unknown \['extra'\]"):
        ort.run({"voxels": vox, "num_points": npts, "extra": coors})
    with pytest.raises(BackendError, match=r"input voxels has shape \[4, 5, 3\], the engine "
                                           r"takes \['\?', 5, 4\]"):
        ort.run({"voxels": vox[..., :3], "num_points": npts, "coors": coors})


def test_a_failure_inside_the_engine_names_the_input_shapes(engines):
    ort, _ = engines
    vox, npts, coors = random_voxels(4)
    # coors outside the canvas: ONNX Runtime's ScatterND refuses them with its own exception
    with pytest.raises(BackendError, match=r"onnxruntime: inference failed on inputs voxels "
                                           r"\[4, 5, 4\] float32, num_points \[4\] int32, "
                                           r"coors \[4, 4\] int32: "):
        ort.run({"voxels": vox, "num_points": npts, "coors": coors * 1000})


def test_openvino_ir_conversion_and_precisions(tmp_path, tiny_onnx, engines):
    ort, _ = engines
    xml = convert_onnx_to_ir(tiny_onnx, tmp_path / "ir" / "end2end.xml")
    assert xml.with_suffix(".bin").is_file()
    inputs = random_voxels(30, seed=3)
    ref = ort.run(feeds(inputs))
    with create_backend("openvino", xml, dynamic_axes=VOXEL_AXES) as ov:
        out = ov.run(feeds(inputs))
    for name in ref:
        np.testing.assert_allclose(out[name], ref[name], atol=1e-5)
    with create_backend("openvino", xml, dynamic_axes=VOXEL_AXES, precision="bf16") as ov16:
        import openvino as ov
        caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        # the precision the compiled model runs, reported as it is: f32 where the CPU lacks bf16
        assert ov16.precision == ("bf16" if "BF16" in caps else "f32")
        out16 = ov16.run(feeds(inputs))
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
    with open_voxel_engine("onnxruntime", tmp_path / "bundle") as b:
        assert b.spec == bundle.spec
    with pytest.raises(BackendError, match="unknown backend 'cuda'"):
        create_backend("cuda", bundle)
    with pytest.raises(BackendError, match="needs a plan"):
        create_backend("tensorrt", {"onnx": tiny_onnx})


def test_static_voxel_axis_model_runs_any_v_on_openvino(tmp_path):
    path = make_tiny_onnx(tmp_path / "static.onnx", dynamic=False)
    with create_backend("onnxruntime", path) as ort, \
            create_backend("openvino", path, dynamic_axes=VOXEL_AXES) as ov:
        inputs = random_voxels(16, seed=4)
        np.testing.assert_allclose(ov.run(feeds(inputs))["cls_score0"],
                                   ort.run(feeds(inputs))["cls_score0"], atol=1e-5)
        assert ov.run(feeds(random_voxels(9)))["cls_score0"].shape == (1, 8, 4, 6)


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
