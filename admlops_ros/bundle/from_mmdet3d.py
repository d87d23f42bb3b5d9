"""mmdet3d 1.x model config -> ModelSpec (mmdeploy records no model numbers for voxel models)."""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

from admlops_ros.bundle.grid import second_fpn_level_sizes
from admlops_ros.bundle.mmdet3d_config import Mmdet3dConfigError, load_config
from admlops_ros.bundle.spec import (AnchorSpec, BoxCoderSpec, EngineSpec, HeadSpec, InputSpec,
                                     ModelSpec, PostprocessSpec, SpecError, TensorRTProfile,
                                     VoxelSpec)

LOG = logging.getLogger(__name__)

__all__ = ["head_feature_map_size", "spec_from_config_dict", "spec_from_mmdet3d_config"]

PathLike = Union[str, Path]
# PillarFeatureNet input columns by count (mmdet3d datasets: KITTI 4, nuScenes/Waymo 5+).
_FEATURE_NAMES = ("x", "y", "z", "intensity", "time")
SUPPORTED = ("PointPillars with Anchor3DHead, AlignedAnchor3DRangeGenerator, one feature-map "
             "level (SECOND + SECONDFPN) and a 7-value box code (VoxelNet, or MVXFasterRCNN "
             "with pts_ keys)")


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


def _unsupported(parts: _ModelParts) -> List[str]:
    """Everything in the model this runtime cannot run, each with why (empty: supported)."""
    reasons: List[str] = []
    head = parts.get("bbox_head")
    head_type = head.get("type")
    middle = parts.get("middle_encoder")
    backbone = parts.get("backbone")
    neck = parts.get("neck")
    if not head:
        reasons.append(f"model.{parts.key('bbox_head')} is missing")
    elif head_type == "CenterHead":
        reasons.append("CenterHead (CenterPoint) has no decoder here yet")
    elif head_type != "Anchor3DHead":
        reasons.append(f"{parts.key('bbox_head')}.type {head_type!r} has no decoder here")
    if not parts.voxel_layer:
        reasons.append("no voxel_layer (hard voxelization): only voxel-based detectors run here")
    elif parts.voxel_layer.get("max_num_points", -1) == -1:
        reasons.append("voxel_layer.max_num_points -1 is dynamic voxelization; mmdeploy "
                       "engines take hard-voxelized input")
    if middle.get("type") and middle.get("type") != "PointPillarsScatter":
        why = " (sparse convolutions need spconv ops, which mmdeploy's ONNX export lacks)" \
            if "Sparse" in str(middle.get("type")) else ""
        reasons.append(f"{parts.key('middle_encoder')} {middle.get('type')}{why}")
    if backbone.get("type") not in (None, "SECOND"):
        reasons.append(f"{parts.key('backbone')} {backbone.get('type')} (SECOND is supported)")
    if any("dcn" in str(v).lower() for v in (backbone, neck, head)):
        reasons.append("deformable convolutions (dcn) need a TensorRT plugin")
    if neck.get("type") not in (None, "SECONDFPN"):
        reasons.append(f"{parts.key('neck')} {neck.get('type')} (a multi-level neck; SECONDFPN "
                       "is supported)")
    gen = head.get("anchor_generator") or {}
    if head_type == "Anchor3DHead":
        if gen.get("type") != "AlignedAnchor3DRangeGenerator":
            reasons.append(f"anchor_generator.type {gen.get('type')!r} unsupported (the runtime "
                           "implements AlignedAnchor3DRangeGenerator)")
        scales = list(gen.get("scales", [1]))
        if len(scales) != 1:
            reasons.append(f"anchor_generator.scales {scales} ({len(scales)} feature-map levels)")
        if gen.get("custom_values"):
            reasons.append(f"anchor_generator.custom_values {list(gen['custom_values'])} "
                           "(velocity in the box code)")
        if not gen.get("size_per_range", True):
            reasons.append("anchor_generator.size_per_range False")
        code = int((head.get("bbox_coder") or {}).get("code_size", 7))
        if code != 7:
            reasons.append(f"bbox_coder.code_size {code} (7 is supported)")
    return reasons


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
def spec_from_config_dict(cfg: Mapping[str, Any], name: str,
                          intensity_scale: float = 1.0,
                          feature_map_size: Optional[Sequence[int]] = None,
                          tensorrt_profile: Optional[Sequence[int]] = None,
                          output_layout: Optional[str] = None) -> ModelSpec:
    """The bundle spec (without ``files``) of a merged mmdet3d 1.x config dict.

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
    if head.get("num_classes", len(classes)) != len(classes):
        raise Mmdet3dConfigError(f"model.{parts.key('bbox_head')}.num_classes "
                                 f"{head.get('num_classes')} != {len(classes)} class_names "
                                 f"{classes}")
    in_channels = int(parts.get("voxel_encoder").get("in_channels", 4))
    gen = _need(head, "anchor_generator", f"model.{parts.key('bbox_head')}")
    coder = head.get("bbox_coder") or {}
    test_cfg = parts.test_cfg
    if not test_cfg:
        raise Mmdet3dConfigError("config has no model.test_cfg")
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
        if feature_map_size is None:
            feature_map_size = head_feature_map_size((ny, nx), parts.get("backbone"),
                                                     parts.get("neck"))
        profile = TensorRTProfile(*(int(v) for v in tensorrt_profile)) \
            if tensorrt_profile else None
        return ModelSpec(
            name=name, family="pointpillars", class_names=classes,
            input=InputSpec([(_FEATURE_NAMES[i] if i < len(_FEATURE_NAMES) else f"feature{i}")
                             for i in range(in_channels)], float(intensity_scale)),
            voxelization=voxelization,
            anchors=AnchorSpec(ranges=_need(gen, "ranges", "anchor_generator"),
                               sizes=gen.get("sizes", [[3.9, 1.6, 1.56]]),
                               rotations=gen.get("rotations", [0, 1.5707963]),
                               align_corner=bool(gen.get("align_corner", False)),
                               feature_map_size=feature_map_size,
                               scales=[float(s) for s in gen.get("scales", [1])]),
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
                min_bbox_size=test_cfg.get("min_bbox_size", 0)),
            engine=EngineSpec(output_layout, profile))
    except SpecError as exc:
        raise Mmdet3dConfigError(f"the config's numbers make no valid spec: {exc}") from None


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
