"""Model bundle: spec.yaml (every number of a model) plus engine files checked by sha256."""
from __future__ import annotations

import hashlib
import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from admlops_ros.errors import AdmlopsError

LOG = logging.getLogger(__name__)

SPEC_FILE = "spec.yaml"
FORMAT_VERSION = 1
FAMILIES = ("pointpillars",)
BOX_CODERS = ("DeltaXYZWLHRBBoxCoder",)
DEFAULT_POINT_FEATURES = ("x", "y", "z", "intensity")
# Where write_bundle puts the engine files (relative to the bundle root).
ONNX_FILE = "end2end.onnx"
OPENVINO_XML = "openvino/end2end.xml"
TENSORRT_PLAN = "end2end.engine"
STANDARD_FILES = (ONNX_FILE, OPENVINO_XML, "openvino/end2end.bin", TENSORRT_PLAN)
REHASH_HINT = "re-run `admlops bundle --rehash <bundle dir>` if the change is intended"

PathLike = Union[str, Path]


class SpecError(AdmlopsError, ValueError):
    """A spec.yaml or bundle that is invalid; the message names the field, value and fix."""


# ----------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class InputSpec:
    """Point columns the engine expects (LiDAR frame, metres)."""

    point_features: Tuple[str, ...] = DEFAULT_POINT_FEATURES
    intensity_scale: float = 1.0  # raw sensor intensity * scale -> model intensity
    # shuffle points before voxelization (the model was trained on shuffled scans); False
    # keeps mmdet3d's test-time behaviour: the first points in scan order fill the slots
    shuffle_points: bool = False

    @property
    def num_features(self) -> int:
        """C: the last dimension of the engine's ``voxels`` input."""
        return len(self.point_features)


@dataclass(frozen=True)
class VoxelSpec:
    """mmcv hard-voxelization settings (test-time values)."""

    voxel_size: Tuple[float, float, float]  # (x, y, z) metres
    point_cloud_range: Tuple[float, float, float, float, float, float]  # (x0, y0, z0, x1, y1, z1)
    max_points: int  # points per voxel
    max_voxels: int  # voxels per frame

    @property
    def grid_size(self) -> Tuple[int, int, int]:
        """(nx, ny, nz) = round((max - min) / voxel_size), as mmcv/mmdet3d compute it."""
        return grid_size(self.voxel_size, self.point_cloud_range)

    @property
    def canvas_shape(self) -> Tuple[int, int]:
        """(ny, nx): the PointPillarsScatter canvas (H, W)."""
        nx, ny, _ = self.grid_size
        return ny, nx


@dataclass(frozen=True)
class AnchorSpec:
    """mmdet3d AlignedAnchor3DRangeGenerator settings (one feature-map level)."""

    ranges: Tuple[Tuple[float, ...], ...]  # one per size, or one shared by all sizes
    sizes: Tuple[Tuple[float, float, float], ...]  # (dx, dy, dz) metres
    rotations: Tuple[float, ...]  # radians
    align_corner: bool
    feature_map_size: Tuple[int, int]  # (H, W) of the head output
    scales: Tuple[float, ...] = (1.0,)  # mmdet3d anchor size scale (one level: one value)

    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map cell: len(sizes) * len(rotations)."""
        return len(self.sizes) * len(self.rotations)

    @property
    def ranges_per_size(self) -> Tuple[Tuple[float, ...], ...]:
        """One range per size (a single range is shared by every size, as in mmdet3d)."""
        if len(self.ranges) == 1:
            return tuple(self.ranges[0] for _ in self.sizes)
        return self.ranges


@dataclass(frozen=True)
class BoxCoderSpec:
    """Box coder of the head."""

    type: str = "DeltaXYZWLHRBBoxCoder"
    code_size: int = 7


@dataclass(frozen=True)
class HeadSpec:
    """Anchor3DHead options outside the box coder (mmdet3d 1.x defaults)."""

    use_direction_classifier: bool = True
    dir_offset: float = -math.pi / 2
    dir_limit_offset: float = 0.0


@dataclass(frozen=True)
class PostprocessSpec:
    """The spec's ``test_cfg`` section (mmdet3d model.test_cfg)."""

    use_rotate_nms: bool
    nms_thr: float
    score_thr: float
    nms_pre: int  # top-k before NMS; -1 keeps all
    max_num: int


@dataclass(frozen=True)
class TensorRTProfile:
    """Voxel-count optimization profile of a TensorRT engine."""

    min: int
    opt: int
    max: int


@dataclass(frozen=True)
class EngineSpec:
    """How the engine was exported."""

    output_layout: Optional[str] = None  # None: detect from the output names
    tensorrt_profile: Optional[TensorRTProfile] = None


@dataclass(frozen=True)
class ModelSpec:
    """Everything in spec.yaml, validated; ``raw`` keeps the parsed YAML mapping."""

    format_version: int
    name: str
    family: str
    class_names: Tuple[str, ...]
    input: InputSpec
    voxelization: VoxelSpec
    anchors: AnchorSpec
    box_coder: BoxCoderSpec
    head: HeadSpec
    test_cfg: PostprocessSpec
    engine: EngineSpec
    files: Dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    raw: Dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def head_channels(self) -> Tuple[int, int, int]:
        """Expected (cls, bbox, dir) channels of the raw head outputs."""
        a = self.anchors.num_anchors
        return a * self.num_classes, a * self.box_coder.code_size, a * 2

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = SPEC_FILE) -> "ModelSpec":
        """Validate a parsed spec.yaml mapping.

        Args:
            data: the mapping (as from ``yaml.safe_load``).
            source: file name used in error messages.

        Raises:
            SpecError: naming the field, the value found and what is expected.
        """
        return _SpecParser(source).parse(data)

    def to_dict(self) -> Dict[str, Any]:
        """The spec as plain YAML-ready data (the canonical form of ``raw``)."""
        out: Dict[str, Any] = {
            "format_version": self.format_version, "name": self.name, "family": self.family,
            "class_names": list(self.class_names),
            "input": {"point_features": list(self.input.point_features),
                      "intensity_scale": self.input.intensity_scale,
                      "shuffle_points": self.input.shuffle_points},
            "voxelization": {"voxel_size": list(self.voxelization.voxel_size),
                             "point_cloud_range": list(self.voxelization.point_cloud_range),
                             "max_points": self.voxelization.max_points,
                             "max_voxels": self.voxelization.max_voxels},
            "anchors": {"ranges": [list(r) for r in self.anchors.ranges],
                        "sizes": [list(s) for s in self.anchors.sizes],
                        "rotations": list(self.anchors.rotations),
                        "align_corner": self.anchors.align_corner,
                        "feature_map_size": list(self.anchors.feature_map_size)},
            "box_coder": {"type": self.box_coder.type, "code_size": self.box_coder.code_size},
            "head": {"use_direction_classifier": self.head.use_direction_classifier,
                     "dir_offset": self.head.dir_offset,
                     "dir_limit_offset": self.head.dir_limit_offset},
            "test_cfg": {"use_rotate_nms": self.test_cfg.use_rotate_nms,
                         "nms_thr": self.test_cfg.nms_thr, "score_thr": self.test_cfg.score_thr,
                         "nms_pre": self.test_cfg.nms_pre, "max_num": self.test_cfg.max_num},
        }
        engine: Dict[str, Any] = {}
        if self.engine.output_layout:
            engine["output_layout"] = self.engine.output_layout
        if self.engine.tensorrt_profile:
            p = self.engine.tensorrt_profile
            engine["tensorrt_profile"] = {"min": p.min, "opt": p.opt, "max": p.max}
        if self.anchors.scales != (1.0,):
            out["anchors"]["scales"] = list(self.anchors.scales)
        if engine:
            out["engine"] = engine
        out["files"] = dict(self.files)
        return out


def grid_size(voxel_size: Sequence[float],
              point_cloud_range: Sequence[float]) -> Tuple[int, int, int]:
    """(nx, ny, nz) voxel grid of a range: round((max - min) / voxel_size) per axis."""
    return tuple(int(round((point_cloud_range[i + 3] - point_cloud_range[i]) / voxel_size[i]))
                 for i in range(3))  # type: ignore[return-value]


def feature_map_stride(canvas_shape: Sequence[int],
                       feature_map_size: Sequence[int]) -> Optional[int]:
    """The integer stride s with ceil(canvas / s) == feature map on both axes, else None."""
    for s in range(1, max(canvas_shape) + 1):
        if all(-(-c // s) == f for c, f in zip(canvas_shape, feature_map_size)):
            return s
    return None


# ----------------------------------------------------------------------------- parsing
_ALLOWED_TOP = {"format_version", "name", "family", "class_names", "input", "voxelization",
                "anchors", "box_coder", "head", "test_cfg", "engine", "files", "source",
                "notes"}
_SECTION_KEYS = {
    "input": {"point_features", "intensity_scale", "shuffle_points"},
    "voxelization": {"voxel_size", "point_cloud_range", "max_points", "max_voxels"},
    "anchors": {"ranges", "sizes", "rotations", "align_corner", "feature_map_size", "scales"},
    "box_coder": {"type", "code_size"},
    "head": {"use_direction_classifier", "dir_offset", "dir_limit_offset"},
    # nms_across_levels / min_bbox_size are mmdet3d keys without effect for one level.
    "test_cfg": {"use_rotate_nms", "nms_thr", "score_thr", "nms_pre", "max_num",
                 "nms_across_levels", "min_bbox_size"},
    "engine": {"output_layout", "tensorrt_profile"},
}
_MISSING = object()
_WARNED: set = set()  # warnings already logged (a spec is often loaded several times)


def _warn_once(msg: str, *args: Any) -> None:
    key = (msg,) + args
    if key not in _WARNED:
        _WARNED.add(key)
        LOG.warning(msg, *args)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class _SpecParser:
    """Field-by-field validation with messages of the form 'spec.yaml: a.b must ..., got v'."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, expected: str, value: Any) -> SpecError:
        return SpecError(f"{self.source}: {key} must be {expected}, got {value!r}")

    def section(self, data: Mapping[str, Any], name: str, required: bool = True
                ) -> Mapping[str, Any]:
        value = data.get(name, _MISSING)
        if value is _MISSING or value is None:
            if required:
                raise SpecError(f"{self.source}: missing section `{name}` (see docs/design.md "
                                "for the spec.yaml format)")
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(name, "a mapping", value)
        unknown = sorted(set(value) - _SECTION_KEYS[name])
        if unknown:
            keys = ", ".join(f"{name}.{k}" for k in unknown)
            raise SpecError(f"{self.source}: unknown key(s) {keys}; known keys: "
                            f"{', '.join(sorted(_SECTION_KEYS[name]))}")
        return value

    def get(self, d: Mapping[str, Any], sec: str, key: str, default: Any = _MISSING) -> Any:
        value = d.get(key, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                raise SpecError(f"{self.source}: missing {sec}.{key}")
            return default
        return value

    def number(self, d: Mapping[str, Any], sec: str, key: str, default: Any = _MISSING,
               lo: Optional[float] = None, hi: Optional[float] = None,
               lo_open: bool = False) -> float:
        v = self.get(d, sec, key, default)
        ok = _is_number(v) and (lo is None or (v > lo if lo_open else v >= lo)) and \
            (hi is None or v <= hi)
        if not ok:
            rng = ""
            if lo is not None:
                rng += f" {'>' if lo_open else '>='} {lo}"
            if hi is not None:
                rng += f"{' and' if lo is not None else ''} <= {hi}"
            raise self.fail(f"{sec}.{key}", f"a number{rng}", v)
        return float(v)

    def integer(self, d: Mapping[str, Any], sec: str, key: str, default: Any = _MISSING,
                lo: Optional[int] = None) -> int:
        v = self.get(d, sec, key, default)
        if isinstance(v, bool) or not isinstance(v, int) or (lo is not None and v < lo):
            raise self.fail(f"{sec}.{key}", "an integer" + (f" >= {lo}" if lo is not None else ""),
                            v)
        return int(v)

    def boolean(self, d: Mapping[str, Any], sec: str, key: str, default: Any = _MISSING) -> bool:
        v = self.get(d, sec, key, default)
        if not isinstance(v, bool):
            raise self.fail(f"{sec}.{key}", "true or false", v)
        return v

    def numbers(self, v: Any, key: str, n: Optional[int], positive: bool = False
                ) -> Tuple[float, ...]:
        ok = isinstance(v, (list, tuple)) and all(_is_number(x) for x in v) and \
            (n is None or len(v) == n) and (not positive or all(x > 0 for x in v))
        if not ok or (n is None and not v):
            count = "one or more" if n is None else str(n)
            what = f"{count} {'positive ' if positive else ''}numbers"
            raise self.fail(key, what, v)
        return tuple(float(x) for x in v)

    def parse(self, data: Mapping[str, Any]) -> ModelSpec:
        if not isinstance(data, Mapping):
            raise SpecError(f"{self.source}: must be a YAML mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - _ALLOWED_TOP)
        if unknown:
            raise SpecError(f"{self.source}: unknown top-level key(s) {', '.join(unknown)}; "
                            f"known keys: {', '.join(sorted(_ALLOWED_TOP))}")
        version = data.get("format_version", _MISSING)
        if version != FORMAT_VERSION:
            raise self.fail("format_version", f"{FORMAT_VERSION} (the only format this runtime "
                            "reads)", None if version is _MISSING else version)
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise self.fail("name", "a non-empty string", name)
        family = data.get("family")
        if family not in FAMILIES:
            raise self.fail("family", f"one of {list(FAMILIES)}", family)
        classes = data.get("class_names")
        if not isinstance(classes, (list, tuple)) or not classes or \
                not all(isinstance(c, str) and c for c in classes) or \
                len(set(classes)) != len(classes):
            raise self.fail("class_names", "a non-empty list of distinct names", classes)

        inp = self._input(self.section(data, "input", required=False))
        vox = self._voxelization(self.section(data, "voxelization"))
        anchors = self._anchors(self.section(data, "anchors"), vox)
        coder = self._box_coder(self.section(data, "box_coder", required=False))
        head = self._head(self.section(data, "head", required=False))
        test_cfg = self._test_cfg(self.section(data, "test_cfg"))
        engine = self._engine(self.section(data, "engine", required=False), vox)
        files = self._files(data.get("files") or {})
        return ModelSpec(FORMAT_VERSION, name, family, tuple(classes), inp, vox, anchors, coder,
                         head, test_cfg, engine, files, dict(data))

    def _input(self, d: Mapping[str, Any]) -> InputSpec:
        feats = self.get(d, "input", "point_features", list(DEFAULT_POINT_FEATURES))
        if not isinstance(feats, (list, tuple)) or len(feats) < 3 or \
                tuple(feats[:3]) != ("x", "y", "z") or len(set(feats)) != len(feats) or \
                not all(isinstance(f, str) and f for f in feats):
            raise self.fail("input.point_features", "distinct names starting with x, y, z",
                            feats)
        scale = self.number(d, "input", "intensity_scale", 1.0, lo=0.0, lo_open=True)
        shuffle = self.boolean(d, "input", "shuffle_points", False)
        return InputSpec(tuple(feats), scale, shuffle)

    def _voxelization(self, d: Mapping[str, Any]) -> VoxelSpec:
        size = self.numbers(self.get(d, "voxelization", "voxel_size"),
                            "voxelization.voxel_size", 3, positive=True)
        pcr = self.numbers(self.get(d, "voxelization", "point_cloud_range"),
                           "voxelization.point_cloud_range", 6)
        if not all(pcr[i + 3] > pcr[i] for i in range(3)):
            raise self.fail("voxelization.point_cloud_range",
                            "[x_min, y_min, z_min, x_max, y_max, z_max] with max > min", list(pcr))
        grid = grid_size(size, pcr)
        if min(grid) < 1:
            raise SpecError(f"{self.source}: voxelization.voxel_size {list(size)} is larger than "
                            f"the point_cloud_range {list(pcr)}: grid {list(grid)} is empty")
        for i, axis in enumerate("xyz"):
            exact = (pcr[i + 3] - pcr[i]) / size[i]
            if abs(exact - grid[i]) > 1e-3:
                _warn_once("voxelization range along %s spans %.4f voxels, rounded to %d as "
                           "mmdet3d does", axis, exact, grid[i])
        max_points = self.integer(d, "voxelization", "max_points", lo=1)
        max_voxels = self.integer(d, "voxelization", "max_voxels", lo=1)
        return VoxelSpec(size, pcr, max_points, max_voxels)  # type: ignore[arg-type]

    def _anchors(self, d: Mapping[str, Any], vox: VoxelSpec) -> AnchorSpec:
        sizes_raw = self.get(d, "anchors", "sizes")
        if not isinstance(sizes_raw, (list, tuple)) or not sizes_raw:
            raise self.fail("anchors.sizes", "a non-empty list of [dx, dy, dz]", sizes_raw)
        sizes = tuple(self.numbers(s, f"anchors.sizes[{i}]", 3, positive=True)
                      for i, s in enumerate(sizes_raw))
        ranges_raw = self.get(d, "anchors", "ranges")
        if not isinstance(ranges_raw, (list, tuple)) or len(ranges_raw) not in (1, len(sizes)):
            raise self.fail("anchors.ranges", f"a list of 1 or {len(sizes)} (one per size) "
                            "ranges [x0, y0, z0, x1, y1, z1]", ranges_raw)
        ranges = tuple(self.numbers(r, f"anchors.ranges[{i}]", 6)
                       for i, r in enumerate(ranges_raw))
        rotations = self.numbers(self.get(d, "anchors", "rotations"), "anchors.rotations", None)
        align = self.boolean(d, "anchors", "align_corner", False)
        fm = self.get(d, "anchors", "feature_map_size")
        if not isinstance(fm, (list, tuple)) or len(fm) != 2 or \
                not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in fm):
            raise self.fail("anchors.feature_map_size", "[H, W] positive integers", fm)
        canvas = vox.canvas_shape
        if feature_map_stride(canvas, fm) is None:
            raise SpecError(
                f"{self.source}: anchors.feature_map_size {list(fm)} is not the scatter grid "
                f"{list(canvas)} (y, x; from voxel_size and point_cloud_range) divided by an "
                f"integer stride; e.g. stride 2 gives {[-(-c // 2) for c in canvas]}")
        scales = self.numbers(self.get(d, "anchors", "scales", [1.0]), "anchors.scales", 1,
                              positive=True)
        return AnchorSpec(ranges, sizes, rotations, align,  # type: ignore[arg-type]
                          (int(fm[0]), int(fm[1])), scales)

    def _box_coder(self, d: Mapping[str, Any]) -> BoxCoderSpec:
        kind = self.get(d, "box_coder", "type", BOX_CODERS[0])
        if kind not in BOX_CODERS:
            raise self.fail("box_coder.type", f"one of {list(BOX_CODERS)}", kind)
        return BoxCoderSpec(kind, self.integer(d, "box_coder", "code_size", 7, lo=7))

    def _head(self, d: Mapping[str, Any]) -> HeadSpec:
        return HeadSpec(self.boolean(d, "head", "use_direction_classifier", True),
                        self.number(d, "head", "dir_offset", -math.pi / 2),
                        self.number(d, "head", "dir_limit_offset", 0.0))

    def _test_cfg(self, d: Mapping[str, Any]) -> PostprocessSpec:
        nms_pre = self.integer(d, "test_cfg", "nms_pre", -1)
        if nms_pre == 0 or nms_pre < -1:
            raise self.fail("test_cfg.nms_pre", "a positive integer or -1 (keep all)", nms_pre)
        return PostprocessSpec(
            self.boolean(d, "test_cfg", "use_rotate_nms", True),
            self.number(d, "test_cfg", "nms_thr", lo=0.0, hi=1.0),
            self.number(d, "test_cfg", "score_thr", lo=0.0, hi=1.0),
            nms_pre,
            self.integer(d, "test_cfg", "max_num", lo=1))

    def _engine(self, d: Mapping[str, Any], vox: VoxelSpec) -> EngineSpec:
        layout = d.get("output_layout")
        if layout in ("auto", ""):
            layout = None
        if layout is not None:
            from admlops_ros.lidar.layout import LAYOUT_NAMES  # local: avoids an import cycle
            if layout not in LAYOUT_NAMES:
                raise self.fail("engine.output_layout", f"'auto' or one of {list(LAYOUT_NAMES)}",
                                layout)
        profile = None
        p = d.get("tensorrt_profile")
        if p is not None:
            if not isinstance(p, Mapping) or set(p) != {"min", "opt", "max"} or \
                    not all(isinstance(p[k], int) and not isinstance(p[k], bool) for k in p) or \
                    not 1 <= p["min"] <= p["opt"] <= p["max"]:
                raise self.fail("engine.tensorrt_profile",
                                "{min, opt, max} integers with 1 <= min <= opt <= max", p)
            profile = TensorRTProfile(p["min"], p["opt"], p["max"])
            if vox.max_voxels > profile.max:
                _warn_once("voxelization.max_voxels %d exceeds engine.tensorrt_profile.max %d: "
                           "frames with more voxels fail on TensorRT; lower max_voxels or "
                           "rebuild the engine with max >= %d", vox.max_voxels, profile.max,
                           vox.max_voxels)
        return EngineSpec(layout, profile)

    def _files(self, files: Any) -> Dict[str, str]:
        if not isinstance(files, Mapping):
            raise self.fail("files", "a mapping of relative path -> sha256", files)
        out: Dict[str, str] = {}
        for rel, digest in files.items():
            parts = Path(str(rel)).parts
            if not isinstance(rel, str) or not rel or Path(rel).is_absolute() or ".." in parts:
                raise self.fail("files key", "a path relative to the bundle directory", rel)
            if not isinstance(digest, str) or len(digest) != 64 or \
                    any(c not in "0123456789abcdef" for c in digest.lower()):
                raise SpecError(f"{self.source}: files.{rel} must be a sha256 hex digest (64 "
                                f"hex characters), got {digest!r}; {REHASH_HINT}")
            out[rel] = digest.lower()
        return out


# ----------------------------------------------------------------------------- bundles
@dataclass(frozen=True)
class EngineBundle:
    """A bundle directory: its spec and the absolute paths of its (verified) files."""

    root: Path
    spec: ModelSpec
    files: Dict[str, Path]

    def _first(self, suffixes: Tuple[str, ...]) -> Optional[Path]:
        for rel, path in self.files.items():
            if rel.lower().endswith(suffixes):
                return path
        return None

    @property
    def onnx_path(self) -> Optional[Path]:
        return self._first((".onnx",))

    @property
    def openvino_xml(self) -> Optional[Path]:
        return self._first((".xml",))

    @property
    def tensorrt_plan(self) -> Optional[Path]:
        return self._first((".engine", ".plan"))


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _spec_path(path: PathLike) -> Path:
    p = Path(path)
    return p / SPEC_FILE if p.is_dir() else p


def read_spec(path: PathLike) -> ModelSpec:
    """Parse and validate a spec.yaml (a file, or a bundle directory holding one)."""
    spec_path = _spec_path(path)
    if not spec_path.is_file():
        raise SpecError(f"no {SPEC_FILE} at {spec_path}: a bundle directory holds spec.yaml "
                        "(write one with `admlops spec-from-config CONFIG -o spec.yaml`)")
    try:
        data = yaml.safe_load(spec_path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{spec_path}: not valid YAML: {exc}") from exc
    return ModelSpec.from_dict(data or {}, source=str(spec_path))


def load_bundle(path: PathLike, verify_hashes: bool = True) -> EngineBundle:
    """Load a bundle directory (or its spec.yaml), checking every listed file's sha256.

    Raises:
        SpecError: invalid spec, a listed file missing, or a hash mismatch.
    """
    spec_path = _spec_path(path)
    spec = read_spec(spec_path)
    root = spec_path.parent
    if not any(rel.lower().endswith((".onnx", ".xml", ".engine", ".plan")) for rel in spec.files):
        raise SpecError(f"{spec_path}: files lists no engine (.onnx, .xml, .engine or .plan); "
                        f"put end2end.onnx in {root} and run `admlops bundle --rehash {root}`")
    files: Dict[str, Path] = {}
    for rel, expected in spec.files.items():
        p = root / rel
        if not p.is_file():
            raise SpecError(f"{spec_path}: files.{rel} is listed but {p} does not exist; copy it "
                            f"there or remove it from spec.yaml and {REHASH_HINT}")
        if verify_hashes:
            actual = sha256_file(p)
            if actual != expected:
                raise SpecError(f"{spec_path}: sha256 mismatch for {rel}: spec.yaml expects "
                                f"{expected}, the file has {actual}; the file changed since the "
                                f"bundle was written ({REHASH_HINT})")
        files[rel] = p
    return EngineBundle(root, spec, files)


def _dump(spec_data: Mapping[str, Any], path: Path) -> None:
    text = yaml.safe_dump(dict(spec_data), sort_keys=False, default_flow_style=None, width=100)
    path.write_text(text)


def write_bundle(out_dir: PathLike, spec_dict: Mapping[str, Any], onnx_path: PathLike,
                 openvino_xml: Optional[PathLike] = None,
                 tensorrt_plan: Optional[PathLike] = None,
                 extra_files: Optional[Mapping[str, PathLike]] = None) -> EngineBundle:
    """Write a bundle: copy the engine files, hash them and write spec.yaml.

    Args:
        out_dir: bundle directory (created).
        spec_dict: spec.yaml content without ``files`` (any given ``files`` is replaced).
        onnx_path: the mmdeploy ``end2end.onnx`` (copied to ``end2end.onnx``).
        openvino_xml: optional OpenVINO IR; its ``.bin`` beside it is copied too.
        tensorrt_plan: optional serialized TensorRT engine (GPU/TensorRT-version specific).
        extra_files: more files, relative destination -> source.

    Returns:
        The loaded (verified) bundle.
    """
    root = Path(out_dir)
    data = {k: v for k, v in dict(spec_dict).items() if k != "files"}
    ModelSpec.from_dict(data, source="spec_dict")  # fail before copying anything
    copies: List[Tuple[str, Path]] = [(ONNX_FILE, Path(onnx_path))]
    if openvino_xml is not None:
        xml = Path(openvino_xml)
        copies += [(OPENVINO_XML, xml), (OPENVINO_XML[:-4] + ".bin", xml.with_suffix(".bin"))]
    if tensorrt_plan is not None:
        copies.append((TENSORRT_PLAN, Path(tensorrt_plan)))
    copies += [(rel, Path(src)) for rel, src in (extra_files or {}).items()]
    root.mkdir(parents=True, exist_ok=True)
    files: Dict[str, str] = {}
    for rel, src in copies:
        if not src.is_file():
            raise SpecError(f"write_bundle: {src} (for {rel}) does not exist")
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.resolve() != dst.resolve():
            shutil.copyfile(src, dst)
        files[rel] = sha256_file(dst)
    data["files"] = files
    _dump(data, root / SPEC_FILE)
    return load_bundle(root)


def update_file_hashes(bundle_dir: PathLike, rel_paths: Sequence[str]) -> Dict[str, str]:
    """Add or refresh the sha256 of the given bundle files in spec.yaml (others untouched).

    Returns the new ``files`` mapping.

    Raises:
        SpecError: invalid spec, or one of ``rel_paths`` does not exist.
    """
    spec_path = _spec_path(bundle_dir)
    spec = read_spec(spec_path)
    files = dict(spec.files)
    for rel in rel_paths:
        p = spec_path.parent / rel
        if not p.is_file():
            raise SpecError(f"{spec_path}: cannot record files.{rel}: {p} does not exist")
        files[str(rel)] = sha256_file(p)
    data = dict(spec.raw)
    data["files"] = files
    ModelSpec.from_dict(data, source=str(spec_path))
    _dump(data, spec_path)
    return files


def rehash_bundle(bundle_dir: PathLike) -> Dict[str, str]:
    """Recompute the sha256 of every listed file (and add standard files present).

    Rewrites spec.yaml in place (comments are not kept). Returns the new ``files``.

    Raises:
        SpecError: invalid spec, or a listed file is missing.
    """
    spec_path = _spec_path(bundle_dir)
    spec = read_spec(spec_path)
    root = spec_path.parent
    rels = list(spec.files) + [r for r in STANDARD_FILES
                               if r not in spec.files and (root / r).is_file()]
    files: Dict[str, str] = {}
    for rel in rels:
        p = root / rel
        if not p.is_file():
            raise SpecError(f"{spec_path}: files.{rel} is listed but {p} does not exist; "
                            "remove it from spec.yaml or put the file back")
        files[rel] = sha256_file(p)
        if spec.files.get(rel) not in (None, files[rel]):
            LOG.info("%s: %s changed, new sha256 %s", spec_path, rel, files[rel])
    data = dict(spec.raw)
    data["files"] = files
    ModelSpec.from_dict(data, source=str(spec_path))
    _dump(data, spec_path)
    return files
