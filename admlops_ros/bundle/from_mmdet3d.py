"""mmdet3d 1.x model config -> ModelSpec (mmdeploy records no model numbers for voxel models)."""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

from admlops_ros.bundle.grid import conv_output_size, second_fpn_level_sizes
from admlops_ros.bundle.mmdet3d_config import Mmdet3dConfigError, load_config
from admlops_ros.bundle.spec import (AnchorSpec, BoxCoderSpec, CenterHeadSpec,
                                     CenterPointTestSpec, EngineSpec, HeadSpec, InputSpec,
                                     ModelSpec, PostprocessSpec, SpecError, TensorRTProfile,
                                     VoxelSpec)

LOG = logging.getLogger(__name__)

__all__ = ["head_feature_map_size", "fpn_level_sizes", "spec_from_config_dict",
           "spec_from_mmdet3d_config"]

PathLike = Union[str, Path]
SUPPORTED = ("PointPillars (VoxelNet or MVXFasterRCNN; PillarFeatureNet or HardVFE, SECOND, "
             "SECONDFPN or FPN, Anchor3DHead with AlignedAnchor3DRangeGenerator, 7- or 9-value "
             "boxes) and CenterPoint (CenterHead with SeparateHead, circle or rotate NMS; "
             "pillars, or sparse voxels for a backend with spconv ops)")


# ----------------------------------------------------------------------------- model parts
def _need(d: Mapping[str, Any], key: str, where: str) -> Any:
    if not isinstance(d, Mapping) or key not in d:
        raise Mmdet3dConfigError(f"config has no {where}.{key}")
    return d[key]


def _test_value(value: Any) -> Any:
    """mmdet3d (train, test) pairs such as max_voxels=(16000, 40000) -> the test value."""
    return value[1] if isinstance(value, (list, tuple)) else value


class _ModelParts:
    """The parts of an mmdet3d detector config, with or without MVXFasterRCNN's ``pts_`` keys."""

    def __init__(self, model: Mapping[str, Any]) -> None:
        if not isinstance(model, Mapping):
            raise Mmdet3dConfigError("config has no model dict")
        self.model = model
        self.type = str(model.get("type", "?"))
        self.prefix = "pts_" if any(str(k).startswith("pts_") for k in model) else ""
        preproc = model.get("data_preprocessor") or {}
        # 1.x: data_preprocessor.voxel_layer (pts_voxel_layer in some MVX configs); 0.x: model
        self.voxel_layer = (preproc.get("voxel_layer") or preproc.get("pts_voxel_layer")
                            or model.get(self.prefix + "voxel_layer"))
        test_cfg = model.get("test_cfg") or {}
        self.test_cfg = test_cfg.get("pts", test_cfg) if isinstance(test_cfg, Mapping) else {}

    def key(self, name: str) -> str:
        """The config key of a part ('bbox_head' -> 'pts_bbox_head' in MVX models)."""
        return self.prefix + name

    def get(self, name: str) -> Mapping[str, Any]:
        part = self.model.get(self.key(name))
        return part if isinstance(part, Mapping) else {}


_VOXEL_ENCODERS = ("PillarFeatureNet", "HardVFE", "HardSimpleVFE")  # all inside the engine
_NECKS = ("SECONDFPN", "FPN", "mmdet.FPN")
_CENTER_HEADS = ("reg", "height", "dim", "rot", "vel")


def _unsupported(parts: _ModelParts) -> List[str]:
    """Everything in the model this runtime cannot run, each with why (empty: supported)."""
    reasons: List[str] = []
    head = parts.get("bbox_head")
    head_type = head.get("type")
    middle = parts.get("middle_encoder")
    backbone = parts.get("backbone")
    neck = parts.get("neck")
    encoder = parts.get("voxel_encoder")
    if not head:
        reasons.append(f"model.{parts.key('bbox_head')} is missing")
    elif head_type == "ShapeAwareHead":
        reasons.append("ShapeAwareHead (SSN, AlignedAnchor3DRangeGeneratorPerCls) gives "
                       "per-class flattened maps that this runtime does not decode")
    elif head_type not in ("Anchor3DHead", "CenterHead"):
        reasons.append(f"{parts.key('bbox_head')}.type {head_type!r} has no decoder here "
                       "(Anchor3DHead and CenterHead have)")
    if not parts.voxel_layer:
        reasons.append("no voxel_layer (hard voxelization): only voxel-based detectors run here")
    elif parts.voxel_layer.get("max_num_points", -1) == -1:
        reasons.append("voxel_layer.max_num_points -1 is dynamic voxelization; mmdeploy "
                       "engines take hard-voxelized input")
    if encoder.get("type") not in (None,) + _VOXEL_ENCODERS:
        reasons.append(f"{parts.key('voxel_encoder')} {encoder.get('type')} (supported: "
                       f"{', '.join(_VOXEL_ENCODERS)})")
    sparse = "Sparse" in str(middle.get("type"))
    if sparse and head_type != "CenterHead":
        reasons.append(f"{parts.key('middle_encoder')} {middle.get('type')} (sparse "
                       "convolutions need spconv ops, which mmdeploy's ONNX export lacks)")
    elif middle.get("type") not in (None, "PointPillarsScatter") and not sparse:
        reasons.append(f"{parts.key('middle_encoder')} {middle.get('type')}")
    if backbone.get("type") not in (None, "SECOND"):
        reasons.append(f"{parts.key('backbone')} {backbone.get('type')} (SECOND is supported)")
    if any("dcn" in str(v).lower() for v in (backbone, neck, head)):
        reasons.append("deformable convolutions (dcn) need a TensorRT plugin")
    if neck.get("type") not in (None,) + _NECKS:
        reasons.append(f"{parts.key('neck')} {neck.get('type')} (SECONDFPN and FPN are "
                       "supported)")
    if head_type == "Anchor3DHead":
        reasons += _anchor_head_problems(head, neck)
    elif head_type == "CenterHead":
        reasons += _center_head_problems(head, parts.test_cfg)
    return reasons


def _anchor_head_problems(head: Mapping[str, Any], neck: Mapping[str, Any]) -> List[str]:
    reasons: List[str] = []
    gen = head.get("anchor_generator") or {}
    if gen.get("type") != "AlignedAnchor3DRangeGenerator":
        reasons.append(f"anchor_generator.type {gen.get('type')!r} unsupported (the runtime "
                       "implements AlignedAnchor3DRangeGenerator)")
    scales = list(gen.get("scales", [1]))
    levels = _neck_levels(neck)
    if len(scales) != levels:
        reasons.append(f"anchor_generator.scales {scales} ({len(scales)} levels) but the neck "
                       f"gives {levels} feature-map level(s)")
    if not gen.get("size_per_range", True):
        reasons.append("anchor_generator.size_per_range False")
    code = int((head.get("bbox_coder") or {}).get("code_size", 7))
    custom = len(gen.get("custom_values") or ())
    if code != 7 + custom:
        reasons.append(f"bbox_coder.code_size {code} != 7 + {custom} "
                       "anchor_generator.custom_values")
    if (head.get("bbox_coder") or {}).get("type", "DeltaXYZWLHRBBoxCoder") != \
            "DeltaXYZWLHRBBoxCoder":
        reasons.append(f"bbox_coder.type {head['bbox_coder']['type']!r} (DeltaXYZWLHRBBoxCoder "
                       "is supported)")
    return reasons


def _center_head_problems(head: Mapping[str, Any], test_cfg: Mapping[str, Any]) -> List[str]:
    reasons: List[str] = []
    separate = (head.get("separate_head") or {}).get("type", "SeparateHead")
    if separate != "SeparateHead":
        reasons.append(f"separate_head {separate} (SeparateHead is supported)")
    coder = head.get("bbox_coder") or {}
    if coder.get("type") != "CenterPointBBoxCoder":
        reasons.append(f"bbox_coder.type {coder.get('type')!r} (CenterPointBBoxCoder is "
                       "supported)")
    common = dict(head.get("common_heads") or {})
    missing = [k for k in _CENTER_HEADS[:4] if k not in common]
    extra = [k for k in common if k not in _CENTER_HEADS]
    if missing or extra:
        reasons.append(f"common_heads {sorted(common)}: mmdeploy's CenterPoint outputs carry "
                       "reg, height, dim, rot and optionally vel")
    if test_cfg.get("max_pool_nms"):
        reasons.append("test_cfg max_pool_nms True (circle or rotate NMS are supported)")
    if test_cfg.get("nms_rescale_factor") is not None:
        reasons.append("test_cfg nms_rescale_factor (per-class NMS box scaling)")
    if test_cfg.get("nms_type", "rotate") not in ("circle", "rotate"):
        reasons.append(f"test_cfg nms_type {test_cfg.get('nms_type')!r}")
    return reasons


def _neck_levels(neck: Mapping[str, Any]) -> int:
    """Feature-map levels a neck gives the head (SECONDFPN concatenates into one)."""
    if neck.get("type") in ("FPN", "mmdet.FPN"):
        return int(neck.get("num_outs", 1))
    return 1


def fpn_level_sizes(canvas: Sequence[int], backbone: Mapping[str, Any],
                    neck: Mapping[str, Any]) -> List[Tuple[int, int]]:
    """(H, W) of each mmdet FPN output on a SECOND backbone for a (ny, nx) scatter canvas.

    FPN keeps the size of backbone levels ``start_level``.. (each SECOND stage: 3x3 conv,
    padding 1, stride s -> ceil(size / s)); outputs past the backbone's levels
    (``num_outs`` > used levels, no extra convs) are max-pool(1, stride 2) of the last:
    ceil(size / 2).

    Raises:
        Mmdet3dConfigError: bad strides or FPN options this runtime does not size.
    """
    strides = list(backbone.get("layer_strides", [2, 2, 2]))
    if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in strides):
        raise Mmdet3dConfigError(f"backbone.layer_strides {strides} must be positive integers")
    if neck.get("add_extra_convs"):
        raise Mmdet3dConfigError("neck FPN add_extra_convs is not supported (extra levels by "
                                 "max-pooling are)")
    start = int(neck.get("start_level", 0))
    end = int(neck.get("end_level", -1))
    cur = [int(c) for c in canvas]
    levels = []
    for stride in strides:
        cur = [conv_output_size(c, stride) for c in cur]
        levels.append(tuple(cur))
    used = levels[start:] if end == -1 else levels[start:end + 1]
    sizes = list(used)
    while len(sizes) < int(neck.get("num_outs", len(used))):
        sizes.append(tuple(conv_output_size(c, 2) for c in sizes[-1]))
    return sizes[:int(neck.get("num_outs", len(used)))]


def head_feature_map_size(canvas: Sequence[int], backbone: Mapping[str, Any],
                          neck: Mapping[str, Any]) -> Tuple[int, int]:
    """(H, W) of the SECOND + SECONDFPN output for a (ny, nx) scatter canvas.

    The sizes follow ``bundle.grid.second_fpn_level_sizes``; every level must agree.

    Raises:
        Mmdet3dConfigError: another backbone/neck, bad strides, or levels of different sizes.
    """
    if backbone.get("type") != "SECOND" or neck.get("type") != "SECONDFPN":
        raise Mmdet3dConfigError(
            f"feature map size is derived for SECOND + SECONDFPN only, got backbone "
            f"{backbone.get('type')!r} and neck {neck.get('type')!r}; pass feature_map_size")
    strides = list(backbone.get("layer_strides", [2, 2, 2]))
    ups = list(neck.get("upsample_strides", [1, 2, 4]))
    if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in strides):
        raise Mmdet3dConfigError(f"backbone.layer_strides {strides} must be positive integers")
    if not all(isinstance(u, (int, float)) and not isinstance(u, bool) and u > 0
               and math.isfinite(u) for u in ups):
        raise Mmdet3dConfigError(f"neck.upsample_strides {ups} must be positive numbers")
    if len(ups) != len(strides):
        raise Mmdet3dConfigError(f"neck.upsample_strides {ups} must have one entry per "
                                 f"backbone.layer_strides {strides}")
    sizes = second_fpn_level_sizes(canvas, strides, ups)
    if len(set(sizes)) != 1:
        raise Mmdet3dConfigError(f"SECONDFPN levels have different sizes {sizes} for canvas "
                                 f"{list(canvas)}; check voxel_size / point_cloud_range")
    return sizes[0]


def _class_names(cfg: Mapping[str, Any]) -> List[str]:
    names = cfg.get("class_names")
    if names is None:
        names = (cfg.get("metainfo") or {}).get("classes")
    if not names:
        raise Mmdet3dConfigError("config defines neither class_names nor metainfo.classes")
    return [str(n) for n in names]


# ----------------------------------------------------------------------------- conversion
_COLUMNS = ("x", "y", "z", "intensity")  # columns 0-3 of every mmdet3d lidar file


def _test_pipeline(cfg: Mapping[str, Any]) -> List[Mapping[str, Any]]:
    pipeline = cfg.get("test_pipeline") or \
        ((cfg.get("test_dataloader") or {}).get("dataset") or {}).get("pipeline") or []
    return [step for step in pipeline if isinstance(step, Mapping)] \
        if isinstance(pipeline, (list, tuple)) else []


def _step(cfg: Mapping[str, Any], kind: str) -> Optional[Mapping[str, Any]]:
    return next((s for s in _test_pipeline(cfg) if s.get("type") == kind), None)


def _point_features(cfg: Mapping[str, Any], in_channels: int) -> List[str]:
    """Names of the engine's point columns, from the test pipeline's ``use_dim``.

    LoadPointsFromMultiSweeps writes the time lag into column 4 and keeps its ``use_dim``
    (default [0, 1, 2, 4]: nuScenes PointPillars take x, y, z, time); otherwise
    LoadPointsFromFile's ``use_dim`` picks the file's columns (Waymo's fifth is elongation).
    Without a pipeline: x, y, z, intensity, time, feature<i> by count.
    """
    fifth = "elongation" if "waymo" in str(cfg.get("dataset_type", "")).lower() else "feature4"
    sweeps = _step(cfg, "LoadPointsFromMultiSweeps")
    loader = _step(cfg, "LoadPointsFromFile")
    if sweeps is not None:
        dims, fifth = list(sweeps.get("use_dim", [0, 1, 2, 4])), "time"
    elif loader is not None:
        use = loader.get("use_dim", loader.get("load_dim", 6))
        dims = list(range(use)) if isinstance(use, int) else list(use)
    else:
        dims, fifth = list(range(in_channels)), "time"
    names = [(_COLUMNS[d] if d < 4 else fifth if d == 4 else f"feature{d}") for d in dims]
    if len(names) != in_channels:
        raise Mmdet3dConfigError(
            f"the test pipeline gives {len(names)} point columns {names} (use_dim {dims}) "
            f"but the voxel encoder takes in_channels {in_channels}")
    return names


def _sweeps(cfg: Mapping[str, Any]) -> Tuple[int, bool, bool]:
    """(clouds per detection, remove_close, pad_empty_sweeps) from the test pipeline's
    LoadPointsFromMultiSweeps (sweeps_num older sweeps + the key frame); (1, False, False)
    without one."""
    step = _step(cfg, "LoadPointsFromMultiSweeps")
    if step is None:
        return 1, False, False
    return (int(step.get("sweeps_num", 10)) + 1, bool(step.get("remove_close", False)),
            bool(step.get("pad_empty_sweeps", False)))


def _in_channels(parts: _ModelParts) -> int:
    encoder = parts.get("voxel_encoder")
    if encoder.get("type") == "HardSimpleVFE":
        return int(encoder.get("num_features", 4))
    return int(encoder.get("in_channels", 4))


def spec_from_config_dict(cfg: Mapping[str, Any], name: str,
                          intensity_scale: float = 1.0,
                          feature_map_size: Optional[Sequence[int]] = None,
                          tensorrt_profile: Optional[Sequence[int]] = None,
                          output_layout: Optional[str] = None) -> ModelSpec:
    """The bundle spec (without ``files``) of a merged mmdet3d 1.x config dict.

    PointPillars (VoxelNet, MVXFasterRCNN: SECONDFPN or FPN necks, several anchor ranges and
    levels, velocity) gives family pointpillars; CenterPoint (pillars or sparse voxels,
    circle or rotate NMS) family centerpoint.

    Raises:
        Mmdet3dConfigError: the model is not one this runtime runs (one line listing every
            unsupported part), a key is missing, or its numbers do not make a valid spec.
    """
    parts = _ModelParts(_need(cfg, "model", "config"))
    reasons = _unsupported(parts)
    if reasons:
        raise Mmdet3dConfigError(f"{parts.type} model not supported: {'; '.join(reasons)}. "
                                 f"Supported: {SUPPORTED}")
    head, vl = parts.get("bbox_head"), parts.voxel_layer
    classes = _class_names(cfg)
    test_cfg = parts.test_cfg
    if not test_cfg:
        raise Mmdet3dConfigError("config has no model.test_cfg")
    sweeps, remove_close, pad_empty = _sweeps(cfg)
    features = _point_features(cfg, _in_channels(parts))
    if "time" not in features:
        sweeps, remove_close, pad_empty = 1, False, False  # the model does not take the sweeps' time lag
    try:
        voxelization = VoxelSpec(_need(vl, "voxel_size", "voxel_layer"),
                                 _need(vl, "point_cloud_range", "voxel_layer"),
                                 vl["max_num_points"],
                                 _test_value(_need(vl, "max_voxels", "voxel_layer")))
        ny, nx = voxelization.canvas_shape
        middle = parts.get("middle_encoder")
        if middle.get("output_shape") and list(middle["output_shape"]) != [ny, nx]:
            raise Mmdet3dConfigError(
                f"model.{parts.key('middle_encoder')}.output_shape {middle['output_shape']} != "
                f"grid [{ny}, {nx}] from voxel_size {list(voxelization.voxel_size)} and "
                f"point_cloud_range {list(voxelization.point_cloud_range)}")
        sparse = middle.get("sparse_shape")
        if sparse and list(sparse)[1:] != [ny, nx]:
            raise Mmdet3dConfigError(
                f"model.{parts.key('middle_encoder')}.sparse_shape {list(sparse)} (z, y, x) does "
                f"not end in the grid [{ny}, {nx}] from voxel_size "
                f"{list(voxelization.voxel_size)} and point_cloud_range "
                f"{list(voxelization.point_cloud_range)}")
        profile = TensorRTProfile(*(int(v) for v in tensorrt_profile)) \
            if tensorrt_profile else None
        common = dict(
            name=name, class_names=classes,
            input=InputSpec(features, float(intensity_scale), sweeps=sweeps,
                            sweeps_remove_close=remove_close,
                            sweeps_pad_empty=pad_empty),
            voxelization=voxelization, engine=EngineSpec(output_layout, profile))
        if head.get("type") == "CenterHead":
            return _centerpoint_spec(parts, classes, voxelization, common)
        return _pointpillars_spec(parts, (ny, nx), feature_map_size, common)
    except SpecError as exc:
        raise Mmdet3dConfigError(f"the config's numbers make no valid spec: {exc}") from None


def _pointpillars_spec(parts: _ModelParts, canvas: Tuple[int, int],
                       feature_map_size: Optional[Sequence[int]],
                       common: Mapping[str, Any]) -> ModelSpec:
    head, test_cfg = parts.get("bbox_head"), parts.test_cfg
    classes = common["class_names"]
    if head.get("num_classes", len(classes)) != len(classes):
        raise Mmdet3dConfigError(f"model.{parts.key('bbox_head')}.num_classes "
                                 f"{head.get('num_classes')} != {len(classes)} class_names "
                                 f"{classes}")
    gen = _need(head, "anchor_generator", f"model.{parts.key('bbox_head')}")
    coder = head.get("bbox_coder") or {}
    neck = parts.get("neck")
    if feature_map_size is None:
        if neck.get("type") in ("FPN", "mmdet.FPN"):
            maps = fpn_level_sizes(canvas, parts.get("backbone"), neck)
            feature_map_size = maps[0] if len(maps) == 1 else maps
        else:
            feature_map_size = head_feature_map_size(canvas, parts.get("backbone"), neck)
    custom = gen.get("custom_values") or None
    return ModelSpec(
        family="pointpillars", **common,
        anchors=AnchorSpec(ranges=_need(gen, "ranges", "anchor_generator"),
                           sizes=gen.get("sizes", [[3.9, 1.6, 1.56]]),
                           rotations=gen.get("rotations", [0, 1.5707963]),
                           align_corner=bool(gen.get("align_corner", False)),
                           feature_map_size=feature_map_size,
                           scales=[float(s) for s in gen.get("scales", [1])],
                           custom_values=[float(v) for v in custom] if custom else None),
        box_coder=BoxCoderSpec(coder.get("type", "DeltaXYZWLHRBBoxCoder"),
                               int(coder.get("code_size", 7))),
        head=_head_spec(head),
        test_cfg=PostprocessSpec(
            use_rotate_nms=bool(test_cfg.get("use_rotate_nms", True)),
            nms_thr=_need(test_cfg, "nms_thr", "model.test_cfg"),
            score_thr=_need(test_cfg, "score_thr", "model.test_cfg"),
            nms_pre=test_cfg.get("nms_pre", -1),
            max_num=_need(test_cfg, "max_num", "model.test_cfg"),
            nms_across_levels=bool(test_cfg.get("nms_across_levels", False)),
            min_bbox_size=test_cfg.get("min_bbox_size", 0)))


def _same(values: Sequence[Any], expected: Sequence[float], where: str, what: str) -> None:
    if values is not None and [float(v) for v in values] != [float(v) for v in expected]:
        raise Mmdet3dConfigError(f"{where} {list(values)} != the voxel layer's {what} "
                                 f"{list(expected)}: the decoder would misplace every box")


def _centerpoint_spec(parts: _ModelParts, classes: Sequence[str], voxelization: VoxelSpec,
                      common: Mapping[str, Any]) -> ModelSpec:
    head, test_cfg = parts.get("bbox_head"), parts.test_cfg
    coder = _need(head, "bbox_coder", f"model.{parts.key('bbox_head')}")
    tasks = [list(_need(t, "class_names", "tasks[i]")) for t in _need(
        head, "tasks", f"model.{parts.key('bbox_head')}")]
    factor = int(_need(coder, "out_size_factor", "bbox_coder"))
    for key, cfg_value in (("test_cfg.out_size_factor", test_cfg.get("out_size_factor")),):
        if cfg_value is not None and int(cfg_value) != factor:
            raise Mmdet3dConfigError(f"model.{key} {cfg_value} != bbox_coder.out_size_factor "
                                     f"{factor}")
    where = f"model.{parts.key('bbox_head')}.bbox_coder"
    _same(coder.get("voxel_size"), voxelization.voxel_size[:2], f"{where}.voxel_size",
          "voxel_size[:2]")
    _same(coder.get("pc_range"), voxelization.point_cloud_range[:2], f"{where}.pc_range",
          "point_cloud_range[:2]")
    velocity = "vel" in (head.get("common_heads") or {})
    code = int(coder.get("code_size", 9 if velocity else 7))
    if code != (9 if velocity else 7):
        raise Mmdet3dConfigError(f"{where}.code_size {code} but common_heads "
                                 f"{'has' if velocity else 'lacks'} vel "
                                 f"(code size {9 if velocity else 7})")
    if "Sparse" in str(parts.get("middle_encoder").get("type")):
        LOG.warning("%s: the sparse-convolution middle encoder needs spconv ops: the spec is "
                    "written, but ONNX Runtime and OpenVINO cannot run such an engine (a "
                    "TensorRT plugin can)", common["name"])
    nms_thr = test_cfg.get("nms_thr", 0.2)
    spec = ModelSpec(
        family="centerpoint", **common,
        center_head=CenterHeadSpec(
            tasks=tasks, out_size_factor=factor, norm_bbox=bool(head.get("norm_bbox", True)),
            max_num=int(coder.get("max_num", 500)),
            score_threshold=float(coder.get("score_threshold") or 0.0),
            post_center_range=coder.get("post_center_range")),
        box_coder=BoxCoderSpec("CenterPointBBoxCoder", code),
        test_cfg=CenterPointTestSpec(
            nms_type=str(test_cfg.get("nms_type", "rotate")),
            min_radius=test_cfg.get("min_radius"),
            nms_thr=list(nms_thr) if isinstance(nms_thr, (list, tuple)) else nms_thr,
            score_threshold=float(test_cfg.get("score_threshold", 0.0)),
            pre_max_size=int(test_cfg.get("pre_max_size", 1000)),
            post_max_size=int(test_cfg.get("post_max_size", 83)),
            post_center_limit_range=test_cfg.get("post_center_limit_range") or None))
    if "Sparse" not in str(parts.get("middle_encoder").get("type")):
        neck_map = head_feature_map_size(voxelization.canvas_shape, parts.get("backbone"),
                                         parts.get("neck"))
        if tuple(neck_map) != tuple(spec.head_feature_map_sizes[0]):
            raise Mmdet3dConfigError(
                f"the neck gives a {list(neck_map)} map but the grid "
                f"{list(voxelization.canvas_shape)} / bbox_coder.out_size_factor {factor} is "
                f"{list(spec.head_feature_map_sizes[0])}")
    return spec


def _head_spec(head: Mapping[str, Any]) -> HeadSpec:
    """The head options the config sets; the others keep the spec's (mmdet3d 1.x) defaults."""
    keys = ("use_direction_classifier", "dir_offset", "dir_limit_offset")
    return HeadSpec(**{k: head[k] for k in keys if k in head})


def spec_from_mmdet3d_config(path: PathLike, name: Optional[str] = None,
                             **kwargs: Any) -> ModelSpec:
    """The bundle spec (without ``files``) of an mmdet3d 1.x model config file.

    Args:
        path: e.g. configs/pointpillars/pointpillars_hv_secfpn_8xb6-160e_kitti-3d-3class.py.
        name: bundle name; default the config file stem.
        **kwargs: intensity_scale, feature_map_size, tensorrt_profile (min, opt, max),
            output_layout (see ``spec_from_config_dict``).

    Raises:
        Mmdet3dConfigError: the file cannot be read, or its model is not supported.
    """
    cfg = load_config(path)
    return spec_from_config_dict(cfg, name or Path(path).stem, **kwargs)
