"""The JSON schema of spec.yaml, derived from the ModelSpec dataclasses (for editors and CI)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Union

from admlops_ros.bundle.schema import section_json_schema
from admlops_ros.bundle.spec import SPEC_VERSION, ModelSpec

SCHEMA_FILE = "spec.schema.json"  # shipped in config/ (kept equal to spec_json_schema())
SCHEMA_ID = "https://admlops.example/admlops_ros/spec.schema.json"


def spec_json_schema() -> Dict[str, Any]:
    """JSON schema (draft-07) of spec.yaml in the current format.

    It states types, ranges, required keys, each family's sections and each field's meaning;
    the rules that tie fields together (a feature map that is the voxel grid divided by an integer stride, one
    anchor range per size, min <= opt <= max) are checked by ``ModelSpec`` itself.
    """
    schema = section_json_schema(ModelSpec)
    props = {"version": {"type": "integer", "minimum": 1, "maximum": SPEC_VERSION,
                         "description": "spec.yaml format version (this runtime reads 1 to "
                                        f"{SPEC_VERSION} and writes {SPEC_VERSION})"},
             "format_version": {"const": 1, "description": "the version key of version-1 "
                                                           "specs (read, no longer written)"}}
    props.update(schema["properties"])
    out: Dict[str, Any] = {"$schema": "http://json-schema.org/draft-07/schema#",
                           "$id": SCHEMA_ID, "title": "admlops_ros engine bundle spec.yaml"}
    out.update(schema)
    out["properties"] = props
    out["oneOf"] = [{"required": ["version"]}, {"required": ["format_version"]}]
    out["allOf"] = [_family_rule(family, section, other)
                    for family, section, other in (("pointpillars", "anchors", "center_head"),
                                                   ("centerpoint", "center_head", "anchors"))]
    return out


def _family_rule(family: str, section: str, other: str) -> Dict[str, Any]:
    """A model of ``family`` has its ``section`` and not the other family's."""
    return {"if": {"properties": {"family": {"const": family}}, "required": ["family"]},
            "then": {"required": [section], "not": {"required": [other]}}}


def write_spec_json_schema(path: Union[str, Path]) -> Path:
    """Write :func:`spec_json_schema` as indented JSON (stable key order); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec_json_schema(), indent=2) + "\n")
    return path
