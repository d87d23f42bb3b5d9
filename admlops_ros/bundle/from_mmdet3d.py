"""mmdet3d 1.x model config (.py with _base_) -> spec.yaml content; mmengine optional."""
from __future__ import annotations

import copy
import logging
import math
import re
import types
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from admlops_ros.errors import AdmlopsError
from admlops_ros.bundle.spec import FORMAT_VERSION, ModelSpec, grid_size

LOG = logging.getLogger(__name__)

PathLike = Union[str, Path]
# PillarFeatureNet input columns by count (mmdet3d datasets: KITTI 4, nuScenes/Waymo 5+).
_FEATURE_NAMES = ("x", "y", "z", "intensity", "time")
_BASE_VAR = re.compile(r"\{\{\s*_base_\.([\w\.]+)\s*\}\}")


class Mmdet3dConfigError(AdmlopsError, ValueError):
    """A model config this tool cannot read or turn into a spec; names the key and the fix."""


# ----------------------------------------------------------------------------- loading
def load_config(path: PathLike) -> Dict[str, Any]:
    """Read an mmdet3d/mmengine config file into a plain dict, ``_base_`` chain merged.

    Uses ``mmengine.Config`` when importable; otherwise a loader following mmengine's rules
    for plain-assignment configs: bases load first (a key defined in two bases is an error),
    the child merges into them recursively, ``_delete_=True`` replaces instead of merging,
    lists are replaced whole, ``{{_base_.name}}`` substitutes a base value.
    """
    path = Path(path)
    if not path.is_file():
        raise Mmdet3dConfigError(f"no config file at {path}")
    try:
        from mmengine import Config  # optional
    except ImportError:
        return _load(path.resolve(), ())
    cfg = Config.fromfile(str(path))
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg._cfg_dict.to_dict())


def _plain(value: Any) -> bool:
    return not isinstance(value, (types.ModuleType, types.FunctionType, type,
                                  types.BuiltinFunctionType))


def _lookup(data: Mapping[str, Any], dotted: str, where: Path) -> Any:
    cur: Any = data
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            raise Mmdet3dConfigError(f"{where}: {{{{_base_.{dotted}}}}} is not defined in its "
                                     "_base_ files")
        cur = cur[part]
    return cur


def _load(path: Path, chain: Tuple[Path, ...]) -> Dict[str, Any]:
    if path in chain:
        raise Mmdet3dConfigError(f"circular _base_ chain: {' -> '.join(map(str, chain + (path,)))}")
    if path.suffix != ".py":
        raise Mmdet3dConfigError(f"{path}: only Python configs are read without mmengine; "
                                 "`pip install mmengine` for .yaml/.json configs")
    source = path.read_text()
    if "read_base" in source:
        raise Mmdet3dConfigError(f"{path}: new-style (read_base) configs need mmengine: "
                                 "`pip install mmengine`")
    # _base_ is a plain assignment; evaluate the file once (placeholders as None) to find it.
    namespace = _exec(_BASE_VAR.sub("None", source), path, {})
    bases = namespace.get("_base_", [])
    bases = [bases] if isinstance(bases, str) else list(bases)
    merged: Dict[str, Any] = {}
    for rel in bases:
        base = _load((path.parent / rel).resolve(), chain + (path,))
        dup = sorted(set(base) & set(merged))
        if dup:
            raise Mmdet3dConfigError(f"{path}: key(s) {dup} defined in more than one _base_ "
                                     "file (mmengine forbids this)")
        merged.update(base)
    if _BASE_VAR.search(source):
        source = _BASE_VAR.sub(lambda m: repr(_lookup(merged, m.group(1), path)), source)
        namespace = _exec(source, path, {})
    own = {k: v for k, v in namespace.items()
           if not k.startswith("__") and k != "_base_" and _plain(v)}
    return _merge(own, merged)


def _exec(source: str, path: Path, namespace: Dict[str, Any]) -> Dict[str, Any]:
    namespace["__file__"] = str(path)
    try:
        exec(compile(source, str(path), "exec"), namespace)  # a config is trusted Python
    except Exception as exc:
        raise Mmdet3dConfigError(f"{path}: could not evaluate the config: {exc!r}") from exc
    return namespace


def _strip_delete(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_delete(v) for k, v in value.items() if k != "_delete_"}
    if isinstance(value, (list, tuple)):
        return type(value)(_strip_delete(v) for v in value)
    return value


def _merge(child: Mapping[str, Any], base: Mapping[str, Any]) -> Dict[str, Any]:
    """mmengine's merge of a child config into its base (a new dict)."""
    out = copy.deepcopy(dict(base))
    for key, value in child.items():
        if isinstance(value, dict) and key in out and not value.get("_delete_", False):
            if not isinstance(out[key], dict):
                raise Mmdet3dConfigError(f"config key {key!r} is a dict in the child but a "
                                         f"{type(out[key]).__name__} in _base_; add "
                                         "_delete_=True to replace it")
            out[key] = _merge({k: v for k, v in value.items() if k != "_delete_"}, out[key])
        else:
            out[key] = _strip_delete(copy.deepcopy(value))
    return out


# ----------------------------------------------------------------------------- extraction
def _need(d: Mapping[str, Any], key: str, where: str) -> Any:
    if not isinstance(d, Mapping) or key not in d:
        raise Mmdet3dConfigError(f"config has no {where}.{key}")
    return d[key]


def _test_value(value: Any) -> Any:
    """mmdet3d (train, test) pairs such as max_voxels=(16000, 40000) -> the test value."""
    return value[1] if isinstance(value, (list, tuple)) else value


def head_feature_map_size(canvas: Sequence[int], backbone: Mapping[str, Any],
                          neck: Mapping[str, Any]) -> Tuple[int, int]:
    """(H, W) of the SECOND + SECONDFPN output for a (ny, nx) scatter canvas.

    SECOND blocks open with a 3x3 conv, padding 1, stride s: size -> ceil(size / s).
    SECONDFPN upsamples level i by a transposed conv (kernel = stride = u): size * u, or, for
    u < 1, a conv with kernel = stride = round(1 / u): floor(size * u). All levels must agree.
    """
    if backbone.get("type") != "SECOND" or neck.get("type") != "SECONDFPN":
        raise Mmdet3dConfigError(
            f"feature map size is derived for SECOND + SECONDFPN only, got backbone "
            f"{backbone.get('type')!r} and neck {neck.get('type')!r}; pass feature_map_size")
    strides = list(backbone.get("layer_strides", [2, 2, 2]))
    ups = list(neck.get("upsample_strides", [1, 2, 4]))
    if len(ups) != len(strides):
        raise Mmdet3dConfigError(f"neck.upsample_strides {ups} must have one entry per "
                                 f"backbone.layer_strides {strides}")
    sizes = []
    cur = list(canvas)
    for s, u in zip(strides, ups):
        cur = [-(-c // int(s)) for c in cur]
        if u >= 1:
            sizes.append(tuple(c * int(u) for c in cur))
        else:
            k = int(round(1 / u))
            sizes.append(tuple(c // k for c in cur))
    if len(set(sizes)) != 1:
        raise Mmdet3dConfigError(f"SECONDFPN levels have different sizes {sizes} for canvas "
                                 f"{list(canvas)}; check voxel_size / point_cloud_range")
    return sizes[0]  # type: ignore[return-value]


def _class_names(cfg: Mapping[str, Any]) -> List[str]:
    names = cfg.get("class_names")
    if names is None:
        names = (cfg.get("metainfo") or {}).get("classes")
    if not names:
        raise Mmdet3dConfigError("config defines neither class_names nor metainfo.classes")
    return [str(n) for n in names]


def spec_from_config_dict(cfg: Mapping[str, Any], name: str,
                          intensity_scale: float = 1.0,
                          feature_map_size: Optional[Sequence[int]] = None,
                          tensorrt_profile: Optional[Sequence[int]] = None,
                          output_layout: Optional[str] = None) -> Dict[str, Any]:
    """spec.yaml content (without ``files``) from a merged mmdet3d 1.x config dict."""
    model = _need(cfg, "model", "")
    preproc = model.get("data_preprocessor") or {}
    voxel_layer = preproc.get("voxel_layer") or model.get("voxel_layer")  # 1.x, else 0.x
    if not voxel_layer:
        raise Mmdet3dConfigError("config has no model.data_preprocessor.voxel_layer (hard "
                                 "voxelization); only voxel-based detectors are supported")
    if voxel_layer.get("max_num_points", -1) == -1:
        raise Mmdet3dConfigError("model voxel_layer.max_num_points is -1 (dynamic voxelization)"
                                 "; mmdeploy engines take hard-voxelized input")
    head = _need(model, "bbox_head", "model")
    if head.get("type") != "Anchor3DHead":
        raise Mmdet3dConfigError(f"model.bbox_head.type is {head.get('type')!r}; this tool "
                                 "writes specs for Anchor3DHead (PointPillars) models")
    classes = _class_names(cfg)
    if head.get("num_classes", len(classes)) != len(classes):
        raise Mmdet3dConfigError(f"model.bbox_head.num_classes {head.get('num_classes')} != "
                                 f"{len(classes)} class_names {classes}")
    voxel_size = [float(v) for v in _need(voxel_layer, "voxel_size", "voxel_layer")]
    pcr = [float(v) for v in _need(voxel_layer, "point_cloud_range", "voxel_layer")]
    nx, ny, _ = grid_size(voxel_size, pcr)
    middle = model.get("middle_encoder") or {}
    if middle.get("output_shape") and list(middle["output_shape"]) != [ny, nx]:
        raise Mmdet3dConfigError(f"model.middle_encoder.output_shape {middle['output_shape']} "
                                 f"!= grid [{ny}, {nx}] from voxel_size {voxel_size} and "
                                 f"point_cloud_range {pcr}")
    in_channels = int((model.get("voxel_encoder") or {}).get("in_channels", 4))
    features = [(_FEATURE_NAMES[i] if i < len(_FEATURE_NAMES) else f"feature{i}")
                for i in range(in_channels)]

    gen = _need(head, "anchor_generator", "model.bbox_head")
    if gen.get("type") != "AlignedAnchor3DRangeGenerator":
        raise Mmdet3dConfigError(f"anchor_generator.type {gen.get('type')!r} unsupported: the "
                                 "runtime implements AlignedAnchor3DRangeGenerator")
    scales = [float(s) for s in gen.get("scales", [1])]
    if len(scales) != 1:
        raise Mmdet3dConfigError(f"anchor_generator.scales {scales}: one feature-map level "
                                 "(one scale) is supported")
    for key, ok in (("custom_values", []), ("size_per_range", True)):
        if key in gen and gen[key] != ok:
            raise Mmdet3dConfigError(f"anchor_generator.{key}={gen[key]!r} unsupported "
                                     f"(only {ok!r})")
    ranges = [[float(x) for x in r] for r in _need(gen, "ranges", "anchor_generator")]
    sizes = [[float(x) for x in s] for s in gen.get("sizes", [[3.9, 1.6, 1.56]])]
    rotations = [float(r) for r in gen.get("rotations", [0, 1.5707963])]
    if feature_map_size is None:
        feature_map_size = head_feature_map_size((ny, nx), model.get("backbone") or {},
                                                 model.get("neck") or {})
    coder = head.get("bbox_coder") or {"type": "DeltaXYZWLHRBBoxCoder"}
    test_cfg = _need(model, "test_cfg", "model")
    spec: Dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "family": "pointpillars",
        "class_names": classes,
        "input": {"point_features": features, "intensity_scale": float(intensity_scale)},
        "voxelization": {"voxel_size": voxel_size, "point_cloud_range": pcr,
                         "max_points": int(voxel_layer["max_num_points"]),
                         "max_voxels": int(_test_value(_need(voxel_layer, "max_voxels",
                                                             "voxel_layer")))},
        "anchors": {"ranges": ranges, "sizes": sizes, "rotations": rotations,
                    "align_corner": bool(gen.get("align_corner", False)),
                    "feature_map_size": [int(v) for v in feature_map_size]},
        "box_coder": {"type": coder.get("type"), "code_size": int(coder.get("code_size", 7))},
        "head": {"use_direction_classifier": bool(head.get("use_direction_classifier", True)),
                 # mmdet3d 1.x Anchor3DHead defaults
                 "dir_offset": float(head.get("dir_offset", -math.pi / 2)),
                 "dir_limit_offset": float(head.get("dir_limit_offset", 0.0))},
        "test_cfg": {"use_rotate_nms": bool(test_cfg.get("use_rotate_nms", True)),
                     "nms_thr": float(_need(test_cfg, "nms_thr", "model.test_cfg")),
                     "score_thr": float(_need(test_cfg, "score_thr", "model.test_cfg")),
                     "nms_pre": int(test_cfg.get("nms_pre", -1)),
                     "max_num": int(_need(test_cfg, "max_num", "model.test_cfg"))},
    }
    if scales != [1.0]:
        spec["anchors"]["scales"] = scales
    engine: Dict[str, Any] = {}
    if output_layout:
        engine["output_layout"] = output_layout
    if tensorrt_profile:
        lo, opt, hi = (int(v) for v in tensorrt_profile)
        engine["tensorrt_profile"] = {"min": lo, "opt": opt, "max": hi}
    if engine:
        spec["engine"] = engine
    ModelSpec.from_dict(spec, source=f"spec from {name}")  # validate what we produce
    return spec


def spec_from_mmdet3d_config(path: PathLike, name: Optional[str] = None,
                             **kwargs: Any) -> Dict[str, Any]:
    """spec.yaml content (without ``files``) from an mmdet3d 1.x model config file.

    Args:
        path: e.g. configs/pointpillars/pointpillars_hv_secfpn_8xb6-160e_kitti-3d-3class.py.
        name: bundle name; default the config file stem.
        **kwargs: intensity_scale, feature_map_size, tensorrt_profile (min, opt, max),
            output_layout (see ``spec_from_config_dict``).
    """
    cfg = load_config(path)
    return spec_from_config_dict(cfg, name or Path(path).stem, **kwargs)
