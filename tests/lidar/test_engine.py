"""VoxelEngine on real ONNX Runtime and OpenVINO sessions: mmdeploy output layouts, spec/engine
checks, input checks and the TensorRT profile rules (range, padding) of voxel engines."""
from __future__ import annotations

import numpy as np
import pytest

from admlops_ros.backends import BackendError
from admlops_ros.bundle.spec import ModelSpec
from admlops_ros.lidar.engine import check_profile_range, open_voxel_engine, pad_voxels
from admlops_ros.lidar.layout import (DecodedOutputs, HeadOutputs, LayoutError, detect_layout,
                                      to_head_outputs)
from tests.fixtures.tiny_model import OUTPUT_NAMES, make_tiny_onnx, random_voxels, tiny_spec

SPEC = ModelSpec.from_dict(tiny_spec())


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    return make_tiny_onnx(tmp_path_factory.mktemp("tiny") / "end2end.onnx")


@pytest.fixture(scope="module")
def engines(tiny_onnx):
    ort = open_voxel_engine("onnxruntime", {"onnx": tiny_onnx, "spec": SPEC})
    ov = open_voxel_engine("openvino", {"onnx": tiny_onnx, "spec": SPEC})
    yield ort, ov
    ort.close()
    ov.close()


def test_backend_io_and_normalized_head_outputs(engines):
    ort, _ = engines
    assert ort.backend.input_names == ["voxels", "num_points", "coors"]
    assert ort.output_layout.name == "mmdeploy-1.2"
    out = to_head_outputs(ort.infer(*random_voxels(5)), ort.output_layout)
    assert isinstance(out, HeadOutputs)
    assert [x.shape for x in out.cls_scores] == [(1, 8, 4, 6)]
    assert [x.shape for x in out.dir_cls_preds] == [(1, 8, 4, 6)]


def test_bad_inputs_are_clear(engines):
    ort, _ = engines
    vox, npts, coors = random_voxels(4)
    with pytest.raises(BackendError, match="no voxels"):
        ort.infer(vox[:0], npts[:0], coors[:0])
    with pytest.raises(BackendError, match="voxels have C=3 channels, the engine takes 4"):
        ort.infer(vox[..., :3], npts, coors)
    with pytest.raises(BackendError, match=r"coors \[V, 4\]"):
        ort.infer(vox, npts, coors[:, 1:])


@pytest.mark.parametrize("layout", ["mmdeploy-0.5", "mmdeploy-1.0", "mmdeploy-1.2"])
def test_raw_layouts_detected_from_real_models(tmp_path, layout):
    path = make_tiny_onnx(tmp_path / "m.onnx", layout=layout)
    with open_voxel_engine("onnxruntime", path, spec=SPEC) as b:
        assert b.output_layout.name == layout
        out = to_head_outputs(b.infer(*random_voxels(6)), b.output_layout)
    assert isinstance(out, HeadOutputs)
    assert out.cls_scores[0].shape == (1, 8, 4, 6) and out.bbox_preds[0].shape == (1, 28, 4, 6)


def test_decoded_layout_v011(tmp_path):
    path = make_tiny_onnx(tmp_path / "m.onnx", layout="mmdeploy-0.11", num_dets=5)
    with open_voxel_engine("openvino", path, spec=SPEC) as b:
        assert b.output_layout.name == "mmdeploy-0.11" and b.output_layout.decoded
        out = to_head_outputs(b.infer(*random_voxels(6)), b.output_layout)
    assert isinstance(out, DecodedOutputs)
    assert out.boxes.shape == (5, 7) and out.boxes.dtype == np.float32
    assert out.scores.shape == (5,) and out.labels.dtype == np.int64
    padded = {"bboxes": np.ones((1, 3, 7), np.float32), "scores": np.array([[0.9, 0.5, 0.0]]),
              "labels": np.array([[2, 0, -1]])}
    dec = to_head_outputs(padded, detect_layout(list(padded)))
    assert dec.labels.tolist() == [2, 0] and dec.boxes.shape == (2, 7)


def test_wrong_output_names_fail_at_load_listing_layouts(tmp_path):
    path = make_tiny_onnx(tmp_path / "m.onnx", output_names=OUTPUT_NAMES["wrong"])
    with pytest.raises(LayoutError) as err:
        open_voxel_engine("onnxruntime", path)
    assert "['heatmap', 'reg', 'rot']" in str(err.value) and "mmdeploy-1.2" in str(err.value)


@pytest.mark.parametrize("model_kwargs,spec_changes,needle", [
    ({"num_features": 5}, {}, "voxels last dim (C) is 5 but spec input.point_features has 4"),
    ({"max_points": 6}, {}, "voxels dim 1 (max points per voxel) is 6 but spec "
                            "voxelization.max_points is 5"),
    ({"canvas": (8, 10)}, {}, "cls_score0 map is [4, 5] (H, W) but the spec's "
                              "anchors.feature_map_size gives [4, 6]"),
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
            open_voxel_engine(name, path, spec=spec)
        assert needle in str(err.value), str(err.value)


# ----------------------------------------------------------------------------- TensorRT profile
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


# ----------------------------------------------------------------------------- scatter canvas
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_spec_grid_smaller_than_the_canvas_is_caught_at_load(tmp_path, backend):
    """issue 18: voxel_size doubled in the spec loaded and returned misplaced boxes."""
    path = make_tiny_onnx(tmp_path / "m.onnx", down_kernel=3)  # canvas 8 x 12, 0.5 m cells
    assert open_voxel_engine(backend, path, spec=SPEC).output_layout.name == "mmdeploy-1.2"
    coarse = ModelSpec.from_dict(tiny_spec(voxelization={"voxel_size": [1.0, 1.0, 4.0]},
                                           anchors={"feature_map_size": [4, 6]}))
    assert coarse.voxelization.canvas_shape == (4, 6)  # a valid spec, stride 1
    with pytest.raises(BackendError) as err:
        open_voxel_engine(backend, path, spec=coarse)
    msg = str(err.value)
    assert "voxel grid of 4 x 6 (y, x) cells, but the engine's scatter canvas is larger" in msg
    assert "instead of near [3, 5]" in msg and "use the spec.yaml written for this engine" in msg


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_spec_grid_larger_than_the_canvas_is_caught_at_load(tmp_path, backend):
    path = make_tiny_onnx(tmp_path / "m.onnx", down_kernel=3)
    fine = ModelSpec.from_dict(tiny_spec(voxelization={"voxel_size": [0.25, 0.25, 4.0]},
                                         anchors={"feature_map_size": [4, 6]}))
    with pytest.raises(BackendError) as err:
        open_voxel_engine(backend, path, spec=fine)
    msg = str(err.value)
    assert "voxel grid of 16 x 24 (y, x) cells, larger than the engine's scatter canvas" in msg
    assert "far corner (y 15, x 23) fails" in msg


def test_a_model_that_ignores_one_pillar_is_not_judged(tmp_path):
    # the default tiny model's 1x1 stride-2 convolution drops odd cells, the far corner's too
    path = make_tiny_onnx(tmp_path / "m.onnx")
    coarse = ModelSpec.from_dict(tiny_spec(voxelization={"voxel_size": [1.0, 1.0, 4.0]},
                                           anchors={"feature_map_size": [4, 6]}))
    with open_voxel_engine("onnxruntime", path, spec=coarse) as engine:
        assert engine.output_layout.name == "mmdeploy-1.2"
