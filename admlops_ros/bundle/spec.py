"""ModelSpec: spec.yaml as typed dataclasses, the one description of a model's numbers.

Every section is a frozen dataclass whose fields carry their kind (check, dump, JSON schema)
and documentation (units, frames). ``ModelSpec.from_dict`` reads a parsed spec.yaml,
``to_dict`` writes one, ``bundle.json_schema`` derives the JSON schema from the same fields;
nothing else in the project knows the layout of the file. A ModelSpec built directly in Python
(the mmdet3d converter, the training exporter) is checked the same way.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from admlops_ros import __version__
from admlops_ros.bundle.grid import (GridError, feature_map_stride, voxel_grid_size,
                                     voxel_limit_problem)
from admlops_ros.bundle.schema import (Boolean, Choice, Integer, Kind, ListOf, Names, Nullable,
                                       Number, Numbers, PositiveInts, Section, SpecError, Text,
                                       check_fields, dump_section, invalid, parse_section,
                                       section_json_schema, short_repr, spec_field)

LOG = logging.getLogger(__name__)

__all__ = ["SpecError", "SPEC_FILE", "SPEC_VERSION", "FAMILIES", "BOX_CODERS", "OUTPUT_LAYOUTS",
           "InputSpec", "VoxelSpec", "AnchorSpec", "BoxCoderSpec", "HeadSpec", "PostprocessSpec",
           "CenterHeadSpec", "CenterPointTestSpec", "TensorRTProfile", "QuantizationSpec",
           "EngineSpec", "ModelSpec", "PRECISIONS", "NMS_TYPES"]

SPEC_FILE = "spec.yaml"
# The spec.yaml format this runtime writes. 1: the first format (key `format_version: 1`);
# 2: the key is `version`, test_cfg keeps nms_across_levels / min_bbox_size; 3: family
# centerpoint (center_head, its test_cfg), anchors of several levels, anchors.custom_values,
# input.sweeps / sweeps_remove_close.
# A spec is written with the lowest version that holds it (a v2 model stays v2). A spec of a
# version above this was written by a newer admlops_ros and is refused with that message.
SPEC_VERSION = 3
FAMILIES = ("pointpillars", "centerpoint")
# box coder of each family (mmdet3d class names)
BOX_CODERS = ("DeltaXYZWLHRBBoxCoder", "CenterPointBBoxCoder")
FAMILY_BOX_CODER = {"pointpillars": "DeltaXYZWLHRBBoxCoder", "centerpoint": "CenterPointBBoxCoder"}
NMS_TYPES = ("circle", "rotate")
DEFAULT_POINT_FEATURES = ("x", "y", "z", "intensity")
PRECISIONS = ("int8",)  # engine.precision besides fp32 (absent)
REHASH_HINT = "re-run `admlops bundle --rehash <bundle dir>` if the change is intended"
DOCS_HINT = " (see docs/design.md for the spec.yaml format)"
# Engine output layouts of mmdeploy's voxel-detection export, by the names of the outputs:
# layout -> (description, output names). Raw layouts: (cls, bbox, dir) of one level.
OUTPUT_LAYOUTS: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    "mmdeploy-0.5": ("mmdeploy v0.5-v0.10, raw head outputs",
                     ("scores", "bbox_preds", "dir_scores")),
    "mmdeploy-0.11": ("mmdeploy v0.11-v0.14, decoded + NMS inside the engine",
                      ("bboxes", "scores", "labels")),
    "mmdeploy-1.0": ("mmdeploy v1.0-v1.1, raw head outputs",
                     ("cls_score", "bbox_pred", "dir_cls_pred")),
    "mmdeploy-1.2": ("mmdeploy v1.2+, raw head outputs per level",
                     ("cls_score0", "bbox_pred0", "dir_cls_pred0", "[cls_score1, ...]")),
}

_WARNED: set = set()  # warnings already logged (a spec is often loaded several times)


def _warn_once(msg: str, *args: Any) -> None:
    key = (msg,) + args
    if key not in _WARNED:
        _WARNED.add(key)
        LOG.warning(msg, *args)


def _starts_with_xyz(names: Sequence[str]) -> bool:
    return len(names) >= 3 and tuple(names[:3]) == ("x", "y", "z")


def _feature_map_list(value: Tuple[Any, ...]) -> Tuple[Tuple[int, int], ...]:
    if value and isinstance(value[0], tuple):
        return tuple(value)
    return (tuple(value),)


class _FeatureMaps(Kind):
    """[H, W] of one level, or a list of [H, W] (one per level) -> a tuple (of tuples)."""

    expected = "[H, W] positive integers, or a list of [H, W] (one per level)"
    _one = PositiveInts(2, "[H, W] positive integers")

    def parse(self, value: Any, key: str) -> Tuple[Any, ...]:
        if isinstance(value, (list, tuple)) and value and \
                all(isinstance(v, (list, tuple)) for v in value):
            maps = tuple(self._one.parse(v, f"{key}[{i}]") for i, v in enumerate(value))
            return maps[0] if len(maps) == 1 else maps
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return self._one.parse(value, key)
        raise invalid(key, self.expected, value)

    def dump(self, value: Any) -> List[Any]:
        return [list(v) for v in value] if value and isinstance(value[0], tuple) else list(value)

    def json_schema(self) -> Dict[str, Any]:
        one = self._one.json_schema()
        return {"oneOf": [one, {"type": "array", "items": one, "minItems": 1}]}


class _NumberPerTask(Kind):
    """A number, or a list of numbers (one per task head) -> a tuple."""

    def __init__(self, lo: float, hi: float) -> None:
        self._one = Number(lo=lo, hi=hi)
        self.expected = f"{self._one.expected}, or a list of them (one per task)"

    def parse(self, value: Any, key: str) -> Tuple[float, ...]:
        if isinstance(value, (list, tuple)) and value:
            return tuple(self._one.parse(v, f"{key}[{i}]") for i, v in enumerate(value))
        if isinstance(value, (list, tuple)):
            raise invalid(key, self.expected, value)
        return (self._one.parse(value, key),)

    def dump(self, value: Any) -> Any:
        return value[0] if len(value) == 1 else list(value)

    def json_schema(self) -> Dict[str, Any]:
        one = self._one.json_schema()
        return {"oneOf": [one, {"type": "array", "items": one, "minItems": 1}]}


# ----------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class InputSpec:
    """Point columns the engine expects (LiDAR frame, metres)."""

    point_features: Tuple[str, ...] = spec_field(
        Names("distinct names starting with x, y, z", _starts_with_xyz, min_items=3),
        "columns of a point, in the engine's channel order; C = their count",
        default=DEFAULT_POINT_FEATURES)
    intensity_scale: float = spec_field(
        Number(lo=0.0, lo_open=True), "raw sensor intensity * scale = the model's intensity",
        default=1.0)
    shuffle_points: bool = spec_field(
        Boolean(), "shuffle the points (a fixed pseudo-random order) before voxelization, for "
        "models trained on shuffled scans; false keeps mmdet3d's test-time scan order",
        default=False)
    sweeps: int = spec_field(
        Integer(lo=1, hi=100), "clouds per detection, the newest included (mmdet3d "
        "LoadPointsFromMultiSweeps sweeps_num + 1): older ones are moved into the newest "
        "cloud's frame and their time lag (s) fills the point feature `time`", default=1)
    sweeps_remove_close: bool = spec_field(
        Boolean(), "drop points within 1 m (x, y) of the sensor from the older sweeps "
        "(LoadPointsFromMultiSweeps remove_close)", default=False)
    sweeps_pad_empty: bool = spec_field(
        Boolean(), "with no older sweep at all (the first cloud, or none placeable), repeat "
        "the newest cloud as the sweeps_num older ones, time lag 0, remove-close applied "
        "(LoadPointsFromMultiSweeps pad_empty_sweeps)", default=False)

    def __post_init__(self) -> None:
        check_fields(self, "input")
        if self.sweeps > 1 and "time" not in self.point_features:
            raise SpecError(f"input.sweeps {self.sweeps} needs a point feature `time` (the time "
                            f"lag of each sweep) in input.point_features "
                            f"{list(self.point_features)}")

    @property
    def num_features(self) -> int:
        """C: the last dimension of the engine's ``voxels`` input."""
        return len(self.point_features)


@dataclass(frozen=True)
class VoxelSpec:
    """mmcv hard-voxelization settings (test-time values)."""

    voxel_size: Tuple[float, float, float] = spec_field(
        Numbers(3, positive=True), "(x, y, z) size of a voxel, metres")
    point_cloud_range: Tuple[float, float, float, float, float, float] = spec_field(
        Numbers(6), "(x_min, y_min, z_min, x_max, y_max, z_max), metres, LiDAR frame")
    max_points: int = spec_field(Integer(lo=1), "points kept per voxel (mmcv max_num_points)")
    max_voxels: int = spec_field(Integer(lo=1), "voxels kept per frame (the test-time value)")

    def __post_init__(self) -> None:
        check_fields(self, "voxelization")
        pcr, size = self.point_cloud_range, self.voxel_size
        if not all(pcr[i + 3] > pcr[i] for i in range(3)):
            raise invalid("voxelization.point_cloud_range",
                          "[x_min, y_min, z_min, x_max, y_max, z_max] with max > min", list(pcr))
        try:
            grid = self.grid_size
        except GridError as exc:
            raise SpecError(f"voxelization: {exc}") from None
        if min(grid) < 1:
            raise SpecError(f"voxelization.voxel_size {list(size)} is larger than the "
                            f"point_cloud_range {list(pcr)}: grid {list(grid)} is empty")
        problem = voxel_limit_problem(grid, self.max_points, self.max_voxels)
        if problem:
            raise SpecError(f"voxelization: {problem}")
        for i, axis in enumerate("xyz"):
            exact = (pcr[i + 3] - pcr[i]) / size[i]
            if abs(exact - grid[i]) > 1e-3:
                _warn_once("voxelization range along %s spans %.4f voxels, rounded to %d as "
                           "mmcv does", axis, exact, grid[i])

    @property
    def grid_size(self) -> Tuple[int, int, int]:
        """(nx, ny, nz) voxel cells, with mmcv's rounding (``bundle.grid.voxel_grid_size``)."""
        return voxel_grid_size(self.voxel_size, self.point_cloud_range)

    @property
    def canvas_shape(self) -> Tuple[int, int]:
        """(ny, nx): the PointPillarsScatter canvas (H, W)."""
        nx, ny, _ = self.grid_size
        return ny, nx


@dataclass(frozen=True)
class AnchorSpec:
    """mmdet3d AlignedAnchor3DRangeGenerator settings (one feature-map level)."""

    ranges: Tuple[Tuple[float, ...], ...] = spec_field(
        ListOf(Numbers(6), "a non-empty list of ranges [x0, y0, z0, x1, y1, z1]"),
        "anchor centre ranges, metres (z0 = z1 is the anchors' bottom height); one per size, "
        "or one shared by every size")
    sizes: Tuple[Tuple[float, float, float], ...] = spec_field(
        ListOf(Numbers(3, positive=True), "a non-empty list of [dx, dy, dz]"),
        "anchor sizes (dx, dy, dz), metres (KITTI models: one per class, in class order)")
    rotations: Tuple[float, ...] = spec_field(Numbers(), "anchor yaws, radians")
    align_corner: bool = spec_field(Boolean(), "anchor centres on grid corners", default=False)
    feature_map_size: Tuple[Any, ...] = spec_field(
        _FeatureMaps(),
        "[H, W] of the head outputs (one level), or a list of [H, W], one per level (FPN "
        "necks); each is the scatter canvas divided by an integer stride")
    scales: Tuple[float, ...] = spec_field(
        Numbers(positive=True), "anchor size scale of each level (mmdet3d scales), one per "
        "feature map", default=(1.0,))
    custom_values: Optional[Tuple[float, ...]] = spec_field(
        Nullable(Numbers()), "extra box-code values of each anchor (nuScenes: velocity [0, 0]); "
        "mmdet3d fills those anchor columns with zeros whatever the values, so only their "
        "count matters: box_coder.code_size = 7 + their count", default=None)

    def __post_init__(self) -> None:
        check_fields(self, "anchors", names=("sizes",))
        if isinstance(self.ranges, (list, tuple)) and len(self.ranges) not in (1, len(self.sizes)):
            raise invalid("anchors.ranges", f"a list of 1 or {len(self.sizes)} (one per size) "
                          "ranges [x0, y0, z0, x1, y1, z1]", self.ranges)
        check_fields(self, "anchors")
        if len(self.scales) != len(self.feature_map_sizes):
            raise SpecError(f"anchors.scales {list(self.scales)} must have one scale per "
                            f"feature map ({len(self.feature_map_sizes)} in "
                            "anchors.feature_map_size)")

    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map cell: len(sizes) * len(rotations)."""
        return len(self.sizes) * len(self.rotations)

    @property
    def feature_map_sizes(self) -> Tuple[Tuple[int, int], ...]:
        """[H, W] of every head-output level (one entry for a single-level head)."""
        return _feature_map_list(self.feature_map_size)

    @property
    def num_custom_values(self) -> int:
        return len(self.custom_values or ())

    @property
    def ranges_per_size(self) -> Tuple[Tuple[float, ...], ...]:
        """One range per size (a single range is shared by every size, as in mmdet3d)."""
        if len(self.ranges) == 1:
            return tuple(self.ranges[0] for _ in self.sizes)
        return self.ranges


@dataclass(frozen=True)
class BoxCoderSpec:
    """Box coder of the head."""

    type: str = spec_field(Choice(BOX_CODERS), "mmdet3d box coder: DeltaXYZWLHRBBoxCoder "
                           "(pointpillars), CenterPointBBoxCoder (centerpoint)",
                           default=BOX_CODERS[0])
    code_size: int = spec_field(Integer(lo=7), "values per box: 7 (x, y, z, dx, dy, dz, yaw), "
                                "9 adds velocity (vx, vy); Delta coders decode the extra values "
                                "additively", default=7)

    def __post_init__(self) -> None:
        check_fields(self, "box_coder")


@dataclass(frozen=True)
class HeadSpec:
    """Anchor3DHead options outside the box coder (mmdet3d 1.x defaults)."""

    use_direction_classifier: bool = spec_field(
        Boolean(), "apply the direction classifier to the decoded yaw", default=True)
    dir_offset: float = spec_field(Number(), "direction offset, radians", default=-math.pi / 2)
    dir_limit_offset: float = spec_field(Number(), "limit_period offset of the direction step",
                                         default=0.0)

    def __post_init__(self) -> None:
        check_fields(self, "head")


@dataclass(frozen=True)
class PostprocessSpec:
    """The spec's ``test_cfg`` section (mmdet3d model.test_cfg)."""

    use_rotate_nms: bool = spec_field(Boolean(), "rotated BEV NMS (false: axis-aligned)",
                                      default=True)
    nms_thr: float = spec_field(Number(lo=0.0, hi=1.0), "BEV IoU above which NMS suppresses")
    score_thr: float = spec_field(Number(lo=0.0, hi=1.0),
                                  "class score a detection must exceed (sigmoid)")
    nms_pre: int = spec_field(
        Integer(lo=1, also=(-1,), expected="a positive integer or -1 (keep all)"),
        "anchors kept per level before NMS by best class score; -1 keeps all", default=-1)
    max_num: int = spec_field(Integer(lo=1), "detections kept per frame after NMS")
    nms_across_levels: bool = spec_field(
        Boolean(), "mmdet3d test_cfg key; no effect with one feature-map level", default=False)
    min_bbox_size: float = spec_field(
        Number(lo=0.0), "mmdet3d test_cfg key; no effect for Anchor3DHead", default=0.0)

    def __post_init__(self) -> None:
        check_fields(self, "test_cfg")

    @property
    def score_threshold(self) -> float:
        """The score a detection must exceed (the family-independent name)."""
        return self.score_thr


@dataclass(frozen=True)
class CenterHeadSpec:
    """mmdet3d CenterHead with CenterPointBBoxCoder (CenterPoint); the coder's pc_range and
    voxel_size are the voxelization's."""

    tasks: Tuple[Tuple[str, ...], ...] = spec_field(
        ListOf(Names("a non-empty list of distinct class names"),
               "a non-empty list of task class lists, e.g. [[car], [truck, bus]]"),
        "class names of each task head, in head order; together they are class_names")
    out_size_factor: int = spec_field(
        Integer(lo=1), "voxels per head-map cell along x and y (the map is the scatter "
        "canvas / out_size_factor)")
    norm_bbox: bool = spec_field(Boolean(), "the dim output is log(size): exp() it",
                                 default=True)
    max_num: int = spec_field(Integer(lo=1), "centres kept per task by score before NMS "
                              "(bbox_coder.max_num)", default=500)
    score_threshold: float = spec_field(
        Number(lo=0.0, hi=1.0), "a centre's heatmap sigmoid must exceed it "
        "(bbox_coder.score_threshold)", default=0.1)
    post_center_range: Optional[Tuple[float, ...]] = spec_field(
        Nullable(Numbers(6)), "[x0, y0, z0, x1, y1, z1] metres, LiDAR frame: decoded box "
        "centres outside are dropped (bbox_coder.post_center_range)", default=None)

    def __post_init__(self) -> None:
        check_fields(self, "center_head")
        names = [n for task in self.tasks for n in task]
        if len(set(names)) != len(names):
            raise invalid("center_head.tasks", "tasks whose class names are all distinct",
                          [list(t) for t in self.tasks])

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def classes_per_task(self) -> Tuple[int, ...]:
        return tuple(len(t) for t in self.tasks)


@dataclass(frozen=True)
class CenterPointTestSpec:
    """The spec's ``test_cfg`` of a centerpoint model (mmdet3d model.test_cfg.pts)."""

    nms_type: str = spec_field(Choice(NMS_TYPES), "circle: centre-distance NMS per task; "
                               "rotate: rotated BEV-IoU NMS per task (class-agnostic in a task)")
    min_radius: Optional[Tuple[float, ...]] = spec_field(
        Nullable(Numbers(positive=True)), "circle NMS, one per task: a centre whose squared "
        "BEV distance (m^2) to a kept one is <= it is suppressed (mmdet3d compares the squared "
        "distance with min_radius)", default=None)
    nms_thr: Tuple[float, ...] = spec_field(
        _NumberPerTask(0.0, 1.0), "rotate NMS: BEV IoU above which a box is suppressed",
        default=(0.2,))
    score_threshold: float = spec_field(
        Number(lo=0.0, hi=1.0), "rotate NMS: scores below are dropped before it (>=, as "
        "mmdet3d's get_task_detections)", default=0.1)
    pre_max_size: int = spec_field(Integer(lo=1), "rotate NMS: best boxes per task it sees",
                                   default=1000)
    post_max_size: int = spec_field(Integer(lo=1), "boxes per task kept after NMS",
                                    default=83)
    post_center_limit_range: Optional[Tuple[float, ...]] = spec_field(
        Nullable(Numbers(6)), "rotate NMS: [x0, y0, z0, x1, y1, z1] metres, kept boxes with "
        "centres outside are dropped", default=None)

    def __post_init__(self) -> None:
        check_fields(self, "test_cfg")
        if self.nms_type == "circle" and self.min_radius is None:
            raise SpecError("test_cfg.min_radius is required with nms_type circle (one "
                            "squared radius per task, e.g. [4, 12, 10, 1, 0.85, 0.175])")


class _TestCfg(Kind):
    """``test_cfg``: PostprocessSpec (pointpillars) or CenterPointTestSpec (keyed nms_type)."""

    expected = "a mapping"

    def parse(self, value: Any, key: str) -> Any:
        if isinstance(value, (PostprocessSpec, CenterPointTestSpec)):
            return value
        cls = CenterPointTestSpec if isinstance(value, Mapping) and "nms_type" in value \
            else PostprocessSpec
        return parse_section(cls, value, key)

    def dump(self, value: Any) -> Dict[str, Any]:
        return dump_section(value)

    def json_schema(self) -> Dict[str, Any]:
        return {"oneOf": [section_json_schema(PostprocessSpec),
                          section_json_schema(CenterPointTestSpec)]}


@dataclass(frozen=True)
class TensorRTProfile:
    """Voxel-count optimization profile of a TensorRT engine."""

    min: int = spec_field(Integer(lo=1), "fewest voxels (frames with fewer are padded)")
    opt: int = spec_field(Integer(lo=1), "voxel count the engine is tuned for")
    max: int = spec_field(Integer(lo=1), "most voxels the engine accepts")

    def __post_init__(self) -> None:
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                   for v in (self.min, self.opt, self.max)) or \
                not self.min <= self.opt <= self.max:
            raise invalid("engine.tensorrt_profile",
                          "{min, opt, max} integers with 1 <= min <= opt <= max",
                          {"min": self.min, "opt": self.opt, "max": self.max})


class _Profile(Section):
    """engine.tensorrt_profile: its messages name the whole profile, as its rule is on all three."""

    def parse(self, value: Any, key: str) -> Any:
        if isinstance(value, Mapping) and set(value) != {"min", "opt", "max"}:
            raise invalid(key, "{min, opt, max} integers with 1 <= min <= opt <= max", value)
        return super().parse(value, key)


@dataclass(frozen=True)
class QuantizationSpec:
    """How an int8 engine was calibrated (``admlops optimize`` writes it)."""

    method: str = spec_field(Text(), "tools and scheme, e.g. 'nncf-ptq (OpenVINO IR), ort-qdq "
                             "(ONNX)'")
    calibration_bag: str = spec_field(Text(), "file name of the bag the calibration clouds came "
                                      "from")
    calibration_frames: int = spec_field(Integer(lo=1), "clouds calibrated on (voxelized by "
                                         "the runtime)")
    seed: int = spec_field(Integer(lo=0), "seed that picked the calibration clouds")
    float_layers: Tuple[str, ...] = spec_field(
        Names("a list of distinct layer-name substrings", min_items=0),
        "layers whose names contain one of these stay in fp32 (e.g. voxel_encoder, bbox_head)",
        default=())

    def __post_init__(self) -> None:
        check_fields(self, "engine.quantization")


@dataclass(frozen=True)
class EngineSpec:
    """How the engine was exported."""

    output_layout: Optional[str] = spec_field(
        Nullable(Choice(tuple(OUTPUT_LAYOUTS), none_aliases=("auto", ""))),
        "engine output layout by mmdeploy version; absent or auto: detected from the output "
        "names at load", default=None)
    tensorrt_profile: Optional[TensorRTProfile] = spec_field(
        Nullable(_Profile(TensorRTProfile)), "voxel-count profile a TensorRT plan is built with",
        default=None)
    precision: Optional[str] = spec_field(
        Nullable(Choice(PRECISIONS, none_aliases=("fp32",))),
        "numeric precision of the engine files; absent or fp32: float, int8: quantized "
        "(FakeQuantize / QDQ) with engine.quantization.float_layers left in fp32", default=None)
    quantization: Optional[QuantizationSpec] = spec_field(
        Nullable(Section(QuantizationSpec)), "calibration of an int8 engine", default=None)

    def __post_init__(self) -> None:
        check_fields(self, "engine")


class _FileHashes(Kind):
    """``files``: bundle-relative path -> sha256 hex digest."""

    expected = "a mapping of relative path -> sha256"

    def parse(self, value: Any, key: str) -> Dict[str, str]:
        if not isinstance(value, Mapping):
            raise invalid(key, self.expected, value)
        out: Dict[str, str] = {}
        for rel, digest in value.items():
            if not isinstance(rel, str) or not rel or Path(rel).is_absolute() or \
                    ".." in Path(rel).parts:
                raise invalid(f"{key} key", "a path relative to the bundle directory", rel)
            if not isinstance(digest, str) or len(digest) != 64 or \
                    any(c not in "0123456789abcdef" for c in digest.lower()):
                raise SpecError(f"{key}.{rel} must be a sha256 hex digest (64 hex characters), "
                                f"got {short_repr(digest)}; {REHASH_HINT}")
            out[rel] = digest.lower()
        return out

    def dump(self, value: Any) -> Dict[str, str]:
        return dict(value)

    def json_schema(self) -> Dict[str, Any]:
        return {"type": "object",
                "propertyNames": {"pattern": r"^(?!/)(?!.*(^|/)\.\.(/|$)).+$"},
                "additionalProperties": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}}


# ----------------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class ModelSpec:
    """Every number of a model bundle (spec.yaml), checked when built.

    Build it from a parsed spec.yaml with :meth:`from_dict`, or directly from Python values
    (lists are accepted and stored as tuples); either way a bad value raises SpecError naming
    the field, the value and what is expected.
    """

    name: str = spec_field(Text(), "bundle name, e.g. pointpillars_kitti_3class")
    family: str = spec_field(Choice(FAMILIES), "model family; selects the head decoder: "
                             "pointpillars (Anchor3DHead: anchors, head) or centerpoint "
                             "(CenterHead: center_head)")
    class_names: Tuple[str, ...] = spec_field(
        Names("a non-empty list of distinct names"), "class name per label index, in the "
        "head's class order")
    input: InputSpec = spec_field(Section(InputSpec), "what the engine takes per point",
                                  default=InputSpec())
    voxelization: VoxelSpec = spec_field(Section(VoxelSpec), "hard voxelization (mmcv)")
    anchors: Optional[AnchorSpec] = spec_field(
        Nullable(Section(AnchorSpec)), "anchor generator (mmdet3d); family pointpillars",
        default=None)
    center_head: Optional[CenterHeadSpec] = spec_field(
        Nullable(Section(CenterHeadSpec)), "CenterHead and its box coder; family centerpoint",
        default=None)
    box_coder: BoxCoderSpec = spec_field(Section(BoxCoderSpec), "box coder",
                                         default=BoxCoderSpec())
    head: HeadSpec = spec_field(Section(HeadSpec), "Anchor3DHead options (family "
                                "pointpillars)", default=HeadSpec())
    test_cfg: Any = spec_field(_TestCfg(), "decode and NMS (mmdet3d model.test_cfg, .pts "
                               "for MVX models): the pointpillars keys, or with nms_type the "
                               "centerpoint keys")
    engine: EngineSpec = spec_field(Section(EngineSpec), "how the engine was exported",
                                    default=EngineSpec())
    files: Dict[str, str] = spec_field(
        _FileHashes(), "bundle-relative path -> sha256 of every file, checked at load",
        factory=dict)
    notes: Optional[str] = spec_field(Nullable(Text(allow_empty=True)), "free text",
                                      default=None)
    source: Optional[str] = spec_field(Nullable(Text(allow_empty=True)),
                                       "where the spec came from (free text)", default=None)

    def __post_init__(self) -> None:
        check_fields(self, "")
        vox = self.voxelization
        problem = voxel_limit_problem(vox.grid_size, vox.max_points, vox.max_voxels,
                                      self.input.num_features)
        if problem:
            raise SpecError(f"voxelization: {problem}")
        self._check_family()
        canvas = self.voxelization.canvas_shape
        if self.anchors is not None:
            for fm in self.anchors.feature_map_sizes:
                if feature_map_stride(canvas, fm) is None:
                    raise SpecError(
                        f"anchors.feature_map_size {list(fm)} is not the scatter grid "
                        f"{list(canvas)} (y, x; from voxel_size and point_cloud_range) divided "
                        f"by an integer stride; e.g. stride 2 gives "
                        f"{[-(-c // 2) for c in canvas]}")
        profile = self.engine.tensorrt_profile
        if profile is not None and self.voxelization.max_voxels > profile.max:
            _warn_once("voxelization.max_voxels %d exceeds engine.tensorrt_profile.max %d: "
                       "frames with more voxels fail on TensorRT; lower max_voxels or rebuild "
                       "the engine with max >= %d", self.voxelization.max_voxels, profile.max,
                       self.voxelization.max_voxels)

    def _check_family(self) -> None:
        """The sections of the family are there, the other family's are not, and agree."""
        family, coder = self.family, self.box_coder
        section, other = ("anchors", "center_head") if family == "pointpillars" else \
            ("center_head", "anchors")
        if getattr(self, section) is None:
            raise SpecError(f"missing section `{section}` (family {family}){DOCS_HINT}")
        if getattr(self, other) is not None:
            raise SpecError(f"{other} is a section of the other family; family {family} takes "
                            f"{section}")
        if coder.type != FAMILY_BOX_CODER[family]:
            raise invalid("box_coder.type", f"{FAMILY_BOX_CODER[family]!r} for family {family}",
                          coder.type)
        if family == "pointpillars":
            if not isinstance(self.test_cfg, PostprocessSpec):
                raise SpecError("test_cfg of family pointpillars takes nms_thr, score_thr, "
                                "max_num, ...; nms_type is a centerpoint key")
            extra = self.anchors.num_custom_values
            if extra and coder.code_size != 7 + extra:
                raise invalid("box_coder.code_size", f"7 + {extra} (anchors.custom_values "
                              f"{list(self.anchors.custom_values)})", coder.code_size)
            return
        head = self.center_head
        if not isinstance(self.test_cfg, CenterPointTestSpec):
            raise SpecError("test_cfg of family centerpoint needs nms_type (circle or rotate) "
                            "and its keys (min_radius, nms_thr, pre_max_size, post_max_size)")
        if coder.code_size not in (7, 9):
            raise invalid("box_coder.code_size", "7, or 9 with velocity (CenterPointBBoxCoder)",
                          coder.code_size)
        names = tuple(n for task in head.tasks for n in task)
        if names != tuple(self.class_names):
            raise SpecError(f"center_head.tasks {[list(t) for t in head.tasks]} together must "
                            f"be class_names {list(self.class_names)} in order")
        cfg, tasks = self.test_cfg, head.num_tasks
        for key in ("min_radius", "nms_thr"):
            values = getattr(cfg, key)
            if values is not None and len(values) not in ((1, tasks) if key == "nms_thr"
                                                          else (tasks,)):
                raise invalid(f"test_cfg.{key}", f"one value per task ({tasks})", list(values))
        if feature_map_stride(self.voxelization.canvas_shape,
                              self.head_feature_map_sizes[0]) is None:
            raise SpecError(f"center_head.out_size_factor {head.out_size_factor} does not "
                            f"divide the scatter grid {list(self.voxelization.canvas_shape)}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def score_threshold(self) -> float:
        """The score a detection must exceed, whatever the family."""
        if self.center_head is not None:
            return self.center_head.score_threshold
        return self.test_cfg.score_thr

    @property
    def head_feature_map_sizes(self) -> Tuple[Tuple[int, int], ...]:
        """[H, W] of each head-output level the engine must give."""
        if self.center_head is not None:
            f = self.center_head.out_size_factor
            return (tuple(-(-c // f) for c in self.voxelization.canvas_shape),)
        return self.anchors.feature_map_sizes

    @property
    def head_channels(self) -> Tuple[int, int, int]:
        """Expected (cls, bbox, dir) channels of each raw head output level.

        pointpillars: anchors per cell * (classes, code size, 2); centerpoint (mmdeploy's
        concatenation over tasks): classes, tasks * (reg 2 + height 1 + dim 3 [+ vel 2]),
        tasks * (sin, cos).
        """
        if self.center_head is not None:
            tasks = self.center_head.num_tasks
            return self.num_classes, tasks * (self.box_coder.code_size - 1), tasks * 2
        a = self.anchors.num_anchors
        return a * self.num_classes, a * self.box_coder.code_size, a * 2

    @classmethod
    def from_dict(cls, data: Any, source: str = SPEC_FILE) -> "ModelSpec":
        """Check a parsed spec.yaml mapping and build the spec.

        Args:
            data: the mapping (as from ``yaml.safe_load``).
            source: file name put in front of error messages.

        Raises:
            SpecError: "<source>: <field> must be <expected>, got <value>", an unknown or a
                missing key, or a spec written by a newer admlops_ros.
        """
        if not isinstance(data, Mapping):
            raise SpecError(f"{source}: must be a YAML mapping, got {type(data).__name__}")
        body = dict(data)
        try:
            _pop_version(body)
            return parse_section(cls, body, "", missing_hint=DOCS_HINT)
        except SpecError as exc:
            raise SpecError(f"{source}: {exc}") from None

    @property
    def format_version(self) -> int:
        """The lowest spec.yaml version that holds this spec (2 unless it needs 3)."""
        anchors = self.anchors
        if self.family != "pointpillars" or anchors.custom_values is not None or \
                len(anchors.feature_map_sizes) > 1 or self.input.sweeps > 1 or \
                self.input.sweeps_remove_close or self.input.sweeps_pad_empty:
            return 3
        return 2

    def to_dict(self) -> Dict[str, Any]:
        """The spec as YAML-ready data (``version`` first: :attr:`format_version`)."""
        out: Dict[str, Any] = {"version": self.format_version}
        out.update(dump_section(self))
        if out["version"] < 3:  # v3 keys at their defaults: a v2 reader knows none of them
            for key in ("sweeps", "sweeps_remove_close", "sweeps_pad_empty"):
                out["input"].pop(key)
        if self.family == "centerpoint":
            out.pop("head", None)  # Anchor3DHead options
        return out


def _pop_version(body: Dict[str, Any]) -> int:
    """Remove and check the format version of a spec mapping (``version``, or v1's
    ``format_version``); returns it."""
    has_new, has_old = "version" in body, "format_version" in body
    if has_new and has_old:
        raise SpecError("give either version or format_version (the key of version-1 specs), "
                        "not both")
    if has_old:
        old = body.pop("format_version")
        if isinstance(old, bool) or not isinstance(old, int) or old != 1:
            raise invalid("format_version", "1 (format_version is the key of version-1 specs; "
                          f"later ones write `version: {SPEC_VERSION}`)", old)
        return 1
    if not has_new:
        raise SpecError(f"missing version (write `version: {SPEC_VERSION}` at the top)")
    version = body.pop("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise invalid("version", f"an integer from 1 to {SPEC_VERSION}", version)
    if version > SPEC_VERSION:
        raise SpecError(
            f"version {short_repr(version)} is newer than this admlops_ros {__version__} reads "
            f"(spec versions 1 to {SPEC_VERSION}): the spec was written by a newer admlops_ros; "
            "upgrade admlops_ros, or write the spec again with this one (`admlops "
            "spec-from-config`)")
    return version
