"""CameraSpec: round trip, errors, sha256-checked loading; readers of pipeline.json and mmdet
3.x configs on fixtures written here."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from admlops_ros.bundle.camera_from_config import (CameraConfigError, camera_spec_from_mmdet_config,
                                                   camera_spec_from_sdk_dir)
from admlops_ros.bundle.camera_spec import (CameraSpec, load_camera_bundle, read_camera_spec,
                                            write_camera_spec)
from admlops_ros.bundle.files import read_spec, sha256_file
from admlops_ros.bundle.schema import SpecError
from tests.paths import REPO_ROOT

SPEC = {
    "version": 1, "modality": "camera", "name": "cam", "class_names": ["Car", "Pedestrian"],
    "input": {"height": 384, "width": 640, "channel_order": "rgb", "dynamic_shape": True},
    "preprocessing": {"resize": {"scale": [640, 384], "keep_ratio": True},
                      "normalize": {"mean": [123.675, 116.28, 103.53],
                                    "std": [58.395, 57.12, 57.375], "to_rgb": True},
                      "pad": {"size_divisor": 32}},
    "postprocess": {"score_threshold": 0.4},
}


def test_round_trip(tmp_path):
    spec = CameraSpec.from_dict(SPEC)
    assert CameraSpec.from_dict(spec.to_dict()) == spec
    write_camera_spec(spec, tmp_path / "spec.yaml")
    assert read_camera_spec(tmp_path) == spec
    assert spec.preprocessing.pad.stage == "normalized" and spec.preprocessing.pad.pad_val == 0
    assert spec.engine.input_name == "input" and spec.engine.output_names == ("dets", "labels")


@pytest.mark.parametrize("change,message", [
    (lambda d: d.pop("modality"), "modality must be 'camera'"),
    (lambda d: d.update(version=7), "version 7 is newer"),
    (lambda d: d.update(colour=1), "unknown top-level key"),
    (lambda d: d["preprocessing"]["resize"].update(scale=[640]), r"resize.scale must be \[w, h\]"),
    (lambda d: d["preprocessing"]["normalize"].update(std=[1, 0, 1]), "normalize.std"),
    (lambda d: d["preprocessing"]["pad"].update(size=[640, 384]), "exactly one of"),
    (lambda d: d["input"].update(channel_order="bgr"), "disagrees with input.channel_order"),
    (lambda d: (d["input"].update(dynamic_shape=False),
                d["preprocessing"]["resize"].update(keep_ratio=False, scale=[640, 200])),
     "input is static 640x384 .* preprocessing gives 640x224"),
    (lambda d: d["postprocess"].update(score_threshold=2), "score_threshold must be"),
])
def test_errors_name_the_field(change, message):
    data = json.loads(json.dumps(SPEC))
    change(data)
    with pytest.raises(SpecError, match=message):
        CameraSpec.from_dict(data)


def test_bundle_hashes_checked_and_lidar_reader_refuses(tmp_path):
    (tmp_path / "end2end.onnx").write_bytes(b"not really onnx")
    spec = dataclasses.replace(CameraSpec.from_dict(SPEC),
                               files={"end2end.onnx": sha256_file(tmp_path / "end2end.onnx")})
    write_camera_spec(spec, tmp_path / "spec.yaml")
    bundle = load_camera_bundle(tmp_path)
    assert bundle.onnx_path == tmp_path / "end2end.onnx" and not bundle.has_sdk_files
    with pytest.raises(SpecError, match="a camera spec"):
        read_spec(tmp_path)
    (tmp_path / "end2end.onnx").write_bytes(b"changed")
    with pytest.raises(SpecError, match="sha256 mismatch for end2end.onnx"):
        load_camera_bundle(tmp_path)
    write_camera_spec(dataclasses.replace(spec, files={}), tmp_path / "spec.yaml")
    with pytest.raises(SpecError, match="lists no engine"):
        load_camera_bundle(tmp_path)


def _sdk_dir(tmp_path, transforms, score_thr=0.25):
    (tmp_path / "deploy.json").write_text(json.dumps({
        "version": "1.3.1", "task": "Detector", "customs": [],
        "models": [{"name": "rtmdet", "net": "end2end.onnx", "weights": "",
                    "backend": "onnxruntime", "precision": "FP32", "batch_size": 1,
                    "dynamic_shape": False}]}))
    (tmp_path / "pipeline.json").write_text(json.dumps({"pipeline": {
        "input": ["img"], "output": ["post_output"], "tasks": [
            {"type": "Task", "module": "Transform", "name": "Preprocess", "input": ["img"],
             "output": ["prep_output"], "transforms": transforms},
            {"name": "rtmdet", "type": "Task", "module": "Net", "input": ["prep_output"],
             "output": ["infer_output"], "input_map": {"img": "input"}, "output_map": {}},
            {"type": "Task", "module": "mmdet", "name": "postprocess",
             "component": "ResizeBBox", "params": {"score_thr": score_thr},
             "input": ["prep_output", "infer_output"], "output": ["post_output"]}]}}))
    return tmp_path


RTMDET_LIKE = [
    {"type": "LoadImageFromFile"},
    {"type": "Resize", "size": [640, 640], "keep_ratio": True},
    {"type": "Pad", "size": [640, 640], "pad_val": {"img": [114, 114, 114]}},
    {"type": "Normalize", "mean": [103.53, 116.28, 123.675], "std": [57.375, 57.12, 58.395],
     "to_rgb": False},
    {"type": "Pad", "size_divisor": 1},
    {"type": "DefaultFormatBundle"},
    {"type": "Collect", "keys": ["img"], "meta_keys": ["ori_shape", "img_shape"]}]


def test_sdk_reader_rtmdet_like(tmp_path):
    spec = camera_spec_from_sdk_dir(_sdk_dir(tmp_path, RTMDET_LIKE), class_names=["a", "b"])
    pre = spec.preprocessing
    assert pre.resize.scale == (640, 640) and pre.resize.keep_ratio
    assert pre.pad.size == (640, 640) and pre.pad.stage == "raw" and pre.pad.pad_val == 114
    assert not pre.normalize.to_rgb and spec.input.channel_order == "bgr"
    assert not spec.input.dynamic_shape and spec.score_threshold == 0.25


def test_sdk_reader_divisor_after_normalize_and_unsupported(tmp_path):
    transforms = [{"type": "LoadImageFromFile"},
                  {"type": "Resize", "size": [1333, 800], "keep_ratio": True},
                  {"type": "Normalize", "mean": [1, 2, 3], "std": [4, 5, 6], "to_rgb": True},
                  {"type": "Pad", "size_divisor": 32},
                  {"type": "ImageToTensor", "keys": ["img"]}, {"type": "Collect"}]
    spec = camera_spec_from_sdk_dir(_sdk_dir(tmp_path, transforms), class_names=["a"])
    assert spec.preprocessing.pad.size_divisor == 32
    assert spec.preprocessing.pad.stage == "normalized" and spec.input.dynamic_shape
    bad = transforms[:1] + [{"type": "LetterResize"}, {"type": "CenterCrop"}] + transforms[1:]
    with pytest.raises(CameraConfigError, match="unsupported transform.s. LetterResize, "
                                                "CenterCrop; supported"):
        camera_spec_from_sdk_dir(_sdk_dir(tmp_path, bad), class_names=["a"])


def test_sdk_reader_reads_exported_files(tmp_path):
    from admlops_ros.training.camera_export import sdk_json_files
    spec = CameraSpec.from_dict(SPEC)
    for name, data in sdk_json_files(spec).items():
        (tmp_path / name).write_text(json.dumps(data))
    back = camera_spec_from_sdk_dir(tmp_path, class_names=spec.class_names, name="cam")
    assert back.preprocessing == spec.preprocessing and back.input == spec.input
    assert back.score_threshold == spec.score_threshold


MMDET_BASE = '''
model = dict(
    type='RetinaNet',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32),
    bbox_head=dict(type='RetinaHead', num_classes=3),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05,
                  nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1242, 375), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                          'scale_factor'))]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline,
                                    metainfo=dict(classes=('Car', 'Pedestrian', 'Cyclist'))))
'''


def test_mmdet_config_reader(tmp_path):
    (tmp_path / "base.py").write_text(MMDET_BASE)
    (tmp_path / "child.py").write_text("_base_ = ['./base.py']\n"
                                       "model = dict(test_cfg=dict(score_thr=0.3))\n")
    spec = camera_spec_from_mmdet_config(tmp_path / "child.py")
    pre = spec.preprocessing
    assert spec.class_names == ("Car", "Pedestrian", "Cyclist")
    assert pre.resize.scale == (1242, 375) and pre.resize.keep_ratio
    assert pre.pad.size_divisor == 32 and pre.pad.stage == "normalized"
    assert pre.normalize.to_rgb and spec.input.dynamic_shape
    assert spec.score_threshold == 0.3 and spec.engine.nms.pre_top_k == 1000


def test_mmdet_config_unsupported_in_one_line(tmp_path):
    text = MMDET_BASE.replace("dict(type='LoadAnnotations', with_bbox=True),",
                              "dict(type='MultiScaleFlipAug'), dict(type='RandomFlip'),")
    (tmp_path / "c.py").write_text(text)
    with pytest.raises(CameraConfigError, match="unsupported transform.s. MultiScaleFlipAug, "
                                                "RandomFlip"):
        camera_spec_from_mmdet_config(tmp_path / "c.py")


def test_cli_writes_camera_spec(tmp_path):
    (tmp_path / "base.py").write_text(MMDET_BASE)
    out = tmp_path / "o" / "spec.yaml"
    proc = subprocess.run([sys.executable, "-m", "admlops_ros", "camera-spec-from-config",
                           str(tmp_path / "base.py"), "-o", str(out)], cwd=str(REPO_ROOT),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert read_camera_spec(out).class_names == ("Car", "Pedestrian", "Cyclist")
