"""Bundles on disk: write/load round trip, sha256 checks, re-hashing, reading spec.yaml."""
from __future__ import annotations

import pytest
import yaml

from admlops_ros.bundle.files import (load_bundle, read_spec, rehash_bundle, update_file_hashes,
                                      write_bundle)
from admlops_ros.bundle.spec import ModelSpec, SpecError
from tests.fixtures.tiny_model import make_tiny_onnx, tiny_spec


def test_bundle_round_trip_and_hashes(tmp_path):
    onnx = make_tiny_onnx(tmp_path / "src" / "model.onnx")
    bundle = write_bundle(tmp_path / "b", tiny_spec(), onnx)
    assert bundle.onnx_path == tmp_path / "b" / "end2end.onnx"
    assert bundle.openvino_xml is None and bundle.tensorrt_plan is None
    loaded = load_bundle(tmp_path / "b" / "spec.yaml")
    assert loaded.spec == bundle.spec
    assert set(loaded.spec.files) == {"end2end.onnx"}
    assert len(loaded.spec.files["end2end.onnx"]) == 64


def test_sha256_mismatch_names_file_hashes_and_fix(tmp_path):
    onnx = make_tiny_onnx(tmp_path / "m.onnx")
    bundle = write_bundle(tmp_path / "b", tiny_spec(), onnx)
    expected = bundle.spec.files["end2end.onnx"]
    make_tiny_onnx(tmp_path / "b" / "end2end.onnx", seed=7)  # replaced by another model
    with pytest.raises(SpecError) as err:
        load_bundle(tmp_path / "b")
    msg = str(err.value)
    assert "sha256 mismatch for end2end.onnx" in msg and expected in msg
    assert "admlops bundle --rehash" in msg
    files = rehash_bundle(tmp_path / "b")
    assert files["end2end.onnx"] != expected
    assert load_bundle(tmp_path / "b").spec.files == files


def test_rehash_adds_standard_files_and_missing_file_is_named(tmp_path):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(tiny_spec()))
    with pytest.raises(SpecError, match="files lists no engine"):
        load_bundle(tmp_path)
    make_tiny_onnx(tmp_path / "end2end.onnx")
    rehash_bundle(tmp_path)
    assert set(load_bundle(tmp_path).spec.files) == {"end2end.onnx"}
    (tmp_path / "end2end.onnx").unlink()
    with pytest.raises(SpecError, match="files.end2end.onnx is listed but .* does not exist"):
        load_bundle(tmp_path)


def test_bad_hash_text_and_missing_spec(tmp_path):
    data = tiny_spec()
    data["files"] = {"end2end.onnx": "abc"}
    with pytest.raises(SpecError, match="files.end2end.onnx must be a sha256 hex digest"):
        ModelSpec.from_dict(data)
    with pytest.raises(SpecError, match="no spec.yaml"):
        read_spec(tmp_path)
    (tmp_path / "spec.yaml").write_text("a: [1, 2")
    with pytest.raises(SpecError, match="not valid YAML"):
        read_spec(tmp_path)


def test_update_file_hashes_records_new_files(tmp_path):
    onnx = make_tiny_onnx(tmp_path / "m.onnx")
    write_bundle(tmp_path / "b", tiny_spec(anchors={"scales": [1.0]}), onnx)
    (tmp_path / "b" / "tensorrt").mkdir()
    (tmp_path / "b" / "tensorrt" / "x.plan").write_bytes(b"plan")
    files = update_file_hashes(tmp_path / "b", ["tensorrt/x.plan"])
    assert set(files) == {"end2end.onnx", "tensorrt/x.plan"}
    assert load_bundle(tmp_path / "b").tensorrt_plan == tmp_path / "b" / "tensorrt" / "x.plan"
    with pytest.raises(SpecError, match="cannot record files.nope.xml"):
        update_file_hashes(tmp_path / "b", ["nope.xml"])
