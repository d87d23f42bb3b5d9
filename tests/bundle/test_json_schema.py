"""The JSON schema of spec.yaml: derived from the dataclasses, shipped, accepts real specs."""
from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from admlops_ros.bundle.json_schema import SCHEMA_FILE, spec_json_schema
from admlops_ros.bundle.spec import ModelSpec
from admlops_ros.paths import default_bundle_path, package_root
from tests.bundle.kitti_spec import KITTI


def _validator():
    schema = spec_json_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_shipped_schema_is_the_generated_one():
    shipped = json.loads((package_root() / "config" / SCHEMA_FILE).read_text())
    assert shipped == spec_json_schema(), \
        "config/spec.schema.json is stale: run `admlops spec-schema -o config/spec.schema.json`"


def test_schema_validates_the_shipped_spec_and_a_version_1_spec():
    validator = _validator()
    shipped = yaml.safe_load((default_bundle_path() / "spec.yaml").read_text())
    assert shipped["version"] == 2
    assert list(validator.iter_errors(shipped)) == []
    assert list(validator.iter_errors(KITTI)) == []  # format_version: 1
    assert list(validator.iter_errors(ModelSpec.from_dict(KITTI).to_dict())) == []


@pytest.mark.parametrize("path,value", [
    (("voxelization", "max_points"), 0),
    (("voxelization", "voxel_size"), [0.16, 0.16]),
    (("test_cfg", "nms_thr"), 1.5),
    (("input", "shuffle_points"), "yes"),
    (("engine", "output_layout"), "mmdeploy-2.0"),
    (("family",), "centerpoint"),
    (("version",), 4),
])
def test_schema_rejects_what_the_spec_rejects(path, value):
    data = ModelSpec.from_dict(KITTI).to_dict()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert list(_validator().iter_errors(data))
    with pytest.raises(Exception):
        ModelSpec.from_dict(data)


def test_every_field_is_documented():
    def walk(node, where):
        for name, prop in node.get("properties", {}).items():
            assert prop.get("description"), f"{where}{name} has no description"
            walk(prop, f"{where}{name}.")
    walk(spec_json_schema(), "")
