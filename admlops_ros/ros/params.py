"""lidar_detection node parameters: defaults (config/*.yaml), JSON-schema validation, engine path."""
from __future__ import annotations

import difflib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import yaml

from admlops_ros.errors import AdmlopsError
from admlops_ros.paths import DEFAULT_ENGINE, package_root

LOG = logging.getLogger(__name__)

CONFIG_NAME = "lidar_detection.yaml"
SCHEMA_NAME = "lidar_detection.schema.json"


class ParamError(AdmlopsError, ValueError):
    """A node parameter has a bad value (the message names the parameter, value and allowed range)."""


@dataclass(frozen=True)
class NodeParams:
    """Validated parameters of the lidar_detection node (see config/lidar_detection.yaml).

    Attributes:
        engine: engine bundle directory (absolute, resolved).
        backend: auto | tensorrt | openvino | onnxruntime.
        precision: f32 | bf16 | f16.
        input_topic, objects_topic, markers_topic, stats_topic: ROS topic names.
        score_threshold: detection score cutoff in [0, 1]; None keeps the spec's value.
        class_filter: class names to publish; empty keeps all.
        intensity_scale: raw intensity multiplier; None keeps the spec's value.
        intensity_mode: "error" drops clouds without intensity, "zeros" fills it with 0.
        max_points: clouds with more points (height * width) are dropped.
        max_processing_ms: per-frame processing time above which diagnostics report WARN (ms).
        error_after_failures: consecutive bad frames after which diagnostics report ERROR.
        publish_markers: publish the visualization_msgs/MarkerArray.
        tensorrt_allow_build: build a TensorRT plan from ONNX when no cached plan fits.
        tensorrt_build_only: resolve/build the TensorRT plan, then exit (provisioning).
        tensorrt_cache_dir: TensorRT plan cache directory; "" for <engine>/tensorrt.
        master_check_period_s: how often (wall-clock s) the node asks the ROS master whether it
            still knows it; a restarted master makes the node exit (code 4); 0 disables.
        sweeps: clouds merged per detection, the newest included; 0 = the engine spec's
            ``input.sweeps`` (mmdet3d's ``sweeps_num`` + 1: 11 for its nuScenes PointPillars,
            10 for CenterPoint; 1 for single-cloud models), 1 = off, N > 1 overrides the spec.
            Past clouds are moved into the newest cloud's frame with tf and their time lag
            fills the model's "time" point feature.
        sweeps_fixed_frame: the frame in which each cloud's sensor pose is looked up with tf
            (ego-motion compensation), e.g. odom.
    """

    engine: Path
    backend: str
    precision: str
    input_topic: str
    objects_topic: str
    markers_topic: str
    stats_topic: str
    score_threshold: Optional[float]
    class_filter: Tuple[str, ...]
    intensity_scale: Optional[float]
    intensity_mode: str
    max_points: int
    max_processing_ms: float
    error_after_failures: int
    publish_markers: bool
    tensorrt_allow_build: bool = False
    tensorrt_build_only: bool = False
    tensorrt_cache_dir: str = ""
    master_check_period_s: float = 2.0
    sweeps: int = 0
    sweeps_fixed_frame: str = "odom"


def load_defaults(path: Optional[Path] = None) -> Dict[str, Any]:
    """Default parameters from config/lidar_detection.yaml."""
    path = path or package_root() / "config" / CONFIG_NAME
    with open(path, "r", encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ParamError(f"{path} must hold a mapping of parameter names to values")
    return data


def load_schema(path: Optional[Path] = None) -> Dict[str, Any]:
    """The JSON schema of the node parameters (config/lidar_detection.schema.json)."""
    path = path or package_root() / "config" / SCHEMA_NAME
    with open(path, "r", encoding="utf-8") as fh:
        return json.load(fh)


def describe_allowed(prop: Mapping[str, Any]) -> str:
    """Human-readable allowed values of one schema property, derived from the schema itself."""
    if "enum" in prop:
        return "one of " + ", ".join(str(v) for v in prop["enum"])
    kind = prop.get("type", "value")
    if kind in ("number", "integer"):
        lo = prop.get("minimum", prop.get("exclusiveMinimum"))
        hi = prop.get("maximum", prop.get("exclusiveMaximum"))
        left = "(" if "exclusiveMinimum" in prop else "["
        right = ")" if "exclusiveMaximum" in prop else "]"
        text = f"{kind} in {left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
        if "not" in prop and "const" in prop["not"]:
            text += f", not {prop['not']['const']}"
    elif kind == "array":
        text = f"list of {prop.get('items', {}).get('type', 'value')}s"
        if prop.get("uniqueItems"):
            text += " without duplicates"
    elif kind == "string" and "pattern" in prop:
        text = "a ROS name (letters, digits, _ and /)"
    elif kind == "boolean":
        text = "true or false"
    else:
        text = str(kind)
    if "description" in prop:
        text += f" ({prop['description']})"
    return text


def schema_errors(values: Mapping[str, Any], schema: Mapping[str, Any]) -> List[str]:
    """One message per schema violation of ``values`` (unknown names with a close match)."""
    import jsonschema  # noqa: WPS433 (import cost only at node start)

    props = schema.get("properties", {})
    validator = jsonschema.Draft7Validator(schema)
    messages = []
    for err in sorted(validator.iter_errors(dict(values)), key=lambda e: list(e.path)):
        if err.validator == "additionalProperties":
            for name in sorted(set(values) - set(props)):
                close = difflib.get_close_matches(name, list(props), n=1)
                hint = f"; did you mean ~{close[0]}?" if close else ""
                messages.append(f"unknown parameter ~{name} = {values[name]!r}{hint} "
                                f"(known: {', '.join(sorted(props))})")
            continue
        if err.validator == "required":
            messages.append(f"parameter missing: {err.message}")
            continue
        name = str(err.path[0]) if err.path else "?"
        value = values.get(name, err.instance)
        messages.append(f"invalid parameter ~{name} = {value!r}: {err.message}; "
                        f"allowed: {describe_allowed(props.get(name, {}))}")
    return messages


def resolve_engine(engine: str, root: Optional[Path] = None,
                   default: str = DEFAULT_ENGINE) -> Path:
    """Engine bundle directory: "" -> the shipped default; relative paths -> the package dir.

    Raises:
        ParamError: the directory or its spec.yaml does not exist.
    """
    root = root or package_root()
    if not engine:
        path = root / "engines" / default
    else:
        path = Path(engine).expanduser()
        if not path.is_absolute():
            path = root / path
    if not (path / "spec.yaml").is_file():
        raise ParamError(
            f"invalid parameter ~engine = {engine!r}: no spec.yaml in {path}; pass an engine "
            f"bundle directory (e.g. engines/{default}) or build the default one with "
            "`make engine`")
    return path.resolve()


def validate_params(values: Mapping[str, Any], defaults: Optional[Mapping[str, Any]] = None,
                    schema: Optional[Mapping[str, Any]] = None,
                    check_engine: bool = True) -> NodeParams:
    """Merge private parameters over the defaults and validate them against the schema.

    Args:
        values: parameters as read from the parameter server (``rospy.get_param("~")``).
        defaults: default values; None loads config/lidar_detection.yaml.
        schema: JSON schema; None loads config/lidar_detection.schema.json.
        check_engine: resolve the engine directory and require its spec.yaml.

    Returns:
        NodeParams.

    Raises:
        ParamError: every bad value, one per line, each naming parameter, value and allowed range.
    """
    merged = dict(load_defaults() if defaults is None else defaults)
    merged.update(values)
    errors = schema_errors(merged, load_schema() if schema is None else schema)
    if errors:
        raise ParamError("bad lidar_detection parameters:\n  " + "\n  ".join(errors))
    engine = (resolve_engine(merged["engine"]) if check_engine
              else Path(merged["engine"] or "."))
    score = float(merged["score_threshold"])
    scale = float(merged["intensity_scale"])
    return NodeParams(
        engine=engine,
        backend=str(merged["backend"]),
        precision=str(merged["precision"]),
        input_topic=str(merged["input_topic"]),
        objects_topic=str(merged["objects_topic"]),
        markers_topic=str(merged["markers_topic"]),
        stats_topic=str(merged["stats_topic"]),
        score_threshold=score if score >= 0 else None,
        class_filter=tuple(str(c) for c in merged["class_filter"]),
        intensity_scale=scale if scale > 0 else None,
        intensity_mode=str(merged["intensity_mode"]),
        max_points=int(merged["max_points"]),
        max_processing_ms=float(merged["max_processing_ms"]),
        error_after_failures=int(merged["error_after_failures"]),
        publish_markers=bool(merged["publish_markers"]),
        tensorrt_allow_build=bool(merged["tensorrt_allow_build"]),
        tensorrt_build_only=bool(merged["tensorrt_build_only"]),
        tensorrt_cache_dir=str(merged["tensorrt_cache_dir"]),
        master_check_period_s=float(merged["master_check_period_s"]),
        sweeps=int(merged["sweeps"]),
        sweeps_fixed_frame=str(merged["sweeps_fixed_frame"]),
    )

