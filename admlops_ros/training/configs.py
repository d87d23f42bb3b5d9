"""PointPillars model configs (mmdet3d numbers) and their engine bundle spec; torch-free."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from admlops_ros.bundle.grid import feature_map_stride, second_fpn_level_sizes, voxel_grid_size
from admlops_ros.bundle.spec import (AnchorSpec, BoxCoderSpec, EngineSpec, HeadSpec, InputSpec,
                                     ModelSpec, PostprocessSpec, TensorRTProfile, VoxelSpec)
from admlops_ros.errors import AdmlopsError

__all__ = [
    "ConfigError",
    "AssignerConfig",
    "PointPillarsConfig",
    "KITTI_3CLASS",
    "SIM_SMALL",
    "CONFIGS",
    "get_config",
    "to_model_spec",
]


class ConfigError(AdmlopsError, ValueError):
    """An unknown config name or an inconsistent config; the message names the field."""


@dataclass(frozen=True)
class AssignerConfig:
    """mmdet MaxIoUAssigner thresholds of one class (BboxOverlapsNearest3D IoU)."""

    pos_iou_thr: float
    neg_iou_thr: float
    min_pos_iou: float


class PillarInputMixin:
    """Numbers every pillar model config derives the same way from its fields
    ``point_features``, ``voxel_size``, ``point_cloud_range``, ``class_names`` and the
    PillarFeatureNet/HardVFE decorations ``with_cluster_center``, ``with_voxel_center``,
    ``with_distance`` (KITTI PointPillars, nuScenes PointPillars, CenterPoint)."""

    @property
    def in_channels(self) -> int:
        """C: point features per point slot."""
        return len(self.point_features)  # type: ignore[attr-defined]

    @property
    def pfn_in_channels(self) -> int:
        """Channels after the PillarFeatureNet / HardVFE decorations (C + 3 + 3 [+ 1])."""
        return (self.in_channels + 3 * self.with_cluster_center  # type: ignore[attr-defined]
                + 3 * self.with_voxel_center + int(self.with_distance))  # type: ignore

    @property
    def grid_size(self) -> Tuple[int, int]:
        """(nx, ny): the scatter canvas width and height (mmcv's rounding)."""
        nx, ny, _ = voxel_grid_size(self.voxel_size,  # type: ignore[attr-defined]
                                    self.point_cloud_range)  # type: ignore[attr-defined]
        return nx, ny

    @property
    def num_classes(self) -> int:
        return len(self.class_names)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class PointPillarsConfig(PillarInputMixin):
    """Every number of an mmdet3d PointPillars model (model config + train/test cfg).

    Lengths in metres, angles in radians, LiDAR frame. Field names follow the mmdet3d config
    (``pointpillars_hv_secfpn_kitti.py``) where one exists.
    """

    name: str
    class_names: Tuple[str, ...]
    point_features: Tuple[str, ...]
    voxel_size: Tuple[float, float, float]
    point_cloud_range: Tuple[float, float, float, float, float, float]
    max_points: int
    max_voxels: Tuple[int, int]  # (train, test) as mmdet3d voxel_layer.max_voxels
    # PillarFeatureNet
    feat_channels: Tuple[int, ...]
    with_distance: bool
    with_cluster_center: bool
    with_voxel_center: bool
    legacy: bool
    # SECOND
    layer_nums: Tuple[int, ...]
    layer_strides: Tuple[int, ...]
    out_channels: Tuple[int, ...]
    # SECONDFPN
    upsample_strides: Tuple[int, ...]
    fpn_out_channels: Tuple[int, ...]
    # Anchor3DHead / AlignedAnchor3DRangeGenerator
    anchor_ranges: Tuple[Tuple[float, ...], ...]
    anchor_sizes: Tuple[Tuple[float, float, float], ...]  # (dx, dy, dz) per class
    anchor_rotations: Tuple[float, ...]
    dir_offset: float
    dir_limit_offset: float
    assigners: Tuple[AssignerConfig, ...]  # one per class (assign_per_class=True)
    test_cfg: Mapping[str, Any]
    norm_eps: float = 1e-3
    norm_momentum: float = 0.01
    tensorrt_profile: Optional[Tuple[int, int, int]] = None  # (min, opt, max) voxels
    # Shuffle each scan's points before voxelization (mmdet3d's PointShuffle, kept at run
    # time too), so a pillar's max_points slots sample its whole height. Off: the first
    # points in scan order fill the slots, as mmdet3d's test pipeline does.
    shuffle_points: bool = False

    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map cell: sizes x rotations."""
        return len(self.anchor_sizes) * len(self.anchor_rotations)

    @property
    def head_in_channels(self) -> int:
        """Channels of the SECONDFPN output (concatenated levels)."""
        return int(sum(self.fpn_out_channels))

    @property
    def head_stride(self) -> int:
        """Stride of the head map relative to the canvas (``bundle.grid.feature_map_stride``)."""
        nx, ny = self.grid_size
        stride = feature_map_stride((ny, nx), self.feature_map_size)
        if stride is None:
            raise ConfigError(f"{self.name}: head map {self.feature_map_size} is not the canvas "
                              f"{(ny, nx)} divided by an integer stride")
        return stride

    @property
    def feature_map_size(self) -> Tuple[int, int]:
        """(H, W) of the head outputs (every SECONDFPN level has it, see ``validate``)."""
        return self._level_sizes()[0]

    def _level_sizes(self):
        nx, ny = self.grid_size
        return second_fpn_level_sizes((ny, nx), self.layer_strides, self.upsample_strides)

    def validate(self) -> "PointPillarsConfig":
        """Check the lengths that must agree; returns self.

        Raises:
            ConfigError: naming the field and the values found.
        """
        n = len(self.layer_nums)
        for key in ("layer_strides", "out_channels", "upsample_strides", "fpn_out_channels"):
            if len(getattr(self, key)) != n:
                raise ConfigError(f"{self.name}: {key} has {len(getattr(self, key))} entries, "
                                  f"layer_nums has {n}; give one per SECOND stage")
        for key in ("anchor_sizes", "assigners"):
            if len(getattr(self, key)) != self.num_classes:
                raise ConfigError(f"{self.name}: {key} has {len(getattr(self, key))} entries "
                                  f"for {self.num_classes} classes; give one per class")
        if len(self.anchor_ranges) not in (1, self.num_classes):
            raise ConfigError(f"{self.name}: anchor_ranges has {len(self.anchor_ranges)} "
                              f"entries; give 1 or one per class ({self.num_classes})")
        sizes = self._level_sizes()  # every level must reach the same head map size
        if len(set(sizes)) != 1:
            raise ConfigError(f"{self.name}: SECONDFPN levels give map sizes {sizes}; choose "
                              "upsample_strides so that every level has the same size")
        return self

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        out = dataclasses.asdict(self)
        out["test_cfg"] = dict(self.test_cfg)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PointPillarsConfig":
        """Inverse of :meth:`to_dict`."""
        d = dict(data)
        d["assigners"] = tuple(AssignerConfig(**a) if isinstance(a, Mapping) else
                               AssignerConfig(*a) for a in d["assigners"])
        for key, value in list(d.items()):
            if isinstance(value, list):
                d[key] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown config keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d).validate()

    def replace(self, **changes: Any) -> "PointPillarsConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes).validate()


_KITTI_RANGE = (0.0, -39.68, -3.0, 69.12, 39.68, 1.0)
_KITTI_CLASSES = ("Pedestrian", "Cyclist", "Car")
_KITTI_ANCHOR_RANGES = ((0.0, -39.68, -0.6, 69.12, 39.68, -0.6),
                        (0.0, -39.68, -0.6, 69.12, 39.68, -0.6),
                        (0.0, -39.68, -1.78, 69.12, 39.68, -1.78))
_KITTI_ANCHOR_SIZES = ((0.8, 0.6, 1.73), (1.76, 0.6, 1.73), (3.9, 1.6, 1.56))
_KITTI_ASSIGNERS = (AssignerConfig(0.5, 0.35, 0.35), AssignerConfig(0.5, 0.35, 0.35),
                    AssignerConfig(0.6, 0.45, 0.45))
_KITTI_TEST_CFG = {"use_rotate_nms": True, "nms_across_levels": False, "nms_thr": 0.01,
                   "score_thr": 0.1, "min_bbox_size": 0, "nms_pre": 100, "max_num": 50}

# configs/pointpillars/pointpillars_hv_secfpn_8xb6-160e_kitti-3d-3class.py (mmdet3d 1.x)
KITTI_3CLASS = PointPillarsConfig(
    name="pointpillars_kitti_3class",
    class_names=_KITTI_CLASSES,
    point_features=("x", "y", "z", "intensity"),
    voxel_size=(0.16, 0.16, 4.0),
    point_cloud_range=_KITTI_RANGE,
    max_points=32,
    max_voxels=(16000, 40000),
    feat_channels=(64,),
    with_distance=False,
    with_cluster_center=True,
    with_voxel_center=True,
    legacy=True,
    layer_nums=(3, 5, 5),
    layer_strides=(2, 2, 2),
    out_channels=(64, 128, 256),
    upsample_strides=(1, 2, 4),
    fpn_out_channels=(128, 128, 128),
    anchor_ranges=_KITTI_ANCHOR_RANGES,
    anchor_sizes=_KITTI_ANCHOR_SIZES,
    anchor_rotations=(0.0, 1.57),
    dir_offset=-math.pi / 2,
    dir_limit_offset=0.0,
    assigners=_KITTI_ASSIGNERS,
    test_cfg=_KITTI_TEST_CFG,
    tensorrt_profile=(2000, 5000, 9000),
).validate()

# The shipped default: KITTI range, classes and anchors; 0.32 m pillars, 32/64/128 SECOND,
# head map 124 x 108 (anchor pitch 0.64 m), point slots and voxel budget sized for a 64-beam
# 120k-point scan (see the training README section of the report for the measurement).
SIM_SMALL = KITTI_3CLASS.replace(
    name="pointpillars_sim_3class",
    voxel_size=(0.32, 0.32, 4.0),
    max_points=16,
    max_voxels=(7000, 7000),
    feat_channels=(32,),
    out_channels=(32, 64, 128),
    fpn_out_channels=(64, 64, 64),
    # With a 0.64 m anchor pitch a pedestrian / cyclist can sit between anchors with a
    # nearest-BEV IoU below 0.35 to all of them; min_pos_iou 0.1 still gives it its best anchor.
    assigners=(AssignerConfig(0.5, 0.35, 0.1), AssignerConfig(0.5, 0.35, 0.1),
               AssignerConfig(0.6, 0.45, 0.45)),
    tensorrt_profile=(1000, 4500, 7000),
    # A near pillar holds hundreds of points; in scan order (column by column, lowest beam
    # first) its 16 slots would all come from the lowest beams of one column.
    shuffle_points=True,
)

CONFIGS: Dict[str, PointPillarsConfig] = {
    "kitti_3class": KITTI_3CLASS,
    "sim_small": SIM_SMALL,
}


def get_config(name: str) -> PointPillarsConfig:
    """A named config (``kitti_3class``, ``sim_small``) or a JSON file written by to_dict.

    Raises:
        ConfigError: unknown name, listing the known ones.
    """
    key = name.lower().replace("-", "_")
    if key in CONFIGS:
        return CONFIGS[key]
    if name.endswith(".json"):
        import json
        with open(name) as f:
            return PointPillarsConfig.from_dict(json.load(f))
    raise ConfigError(f"unknown model config {name!r}; known: {sorted(CONFIGS)} or a .json file")


def to_model_spec(config: PointPillarsConfig, intensity_scale: float = 1.0,
                  output_layout: str = "mmdeploy-1.2",
                  notes: Optional[str] = None) -> ModelSpec:
    """The engine bundle's spec of a config (without ``files``).

    Args:
        config: the model config.
        intensity_scale: raw sensor intensity * scale -> model intensity.
        output_layout: engine output layout (the exporter writes mmdeploy 1.2+ names).
        notes: optional free text stored under ``notes``.

    Raises:
        SpecError: the config's numbers do not make a valid spec.
    """
    profile = None
    if config.tensorrt_profile is not None:
        profile = TensorRTProfile(*(int(v) for v in config.tensorrt_profile))
    test_cfg = {k: config.test_cfg[k] for k in
                ("use_rotate_nms", "nms_thr", "score_thr", "nms_pre", "max_num",
                 "nms_across_levels", "min_bbox_size") if k in config.test_cfg}
    return ModelSpec(
        name=config.name, family="pointpillars", class_names=config.class_names,
        input=InputSpec(config.point_features, float(intensity_scale),
                        bool(config.shuffle_points)),
        voxelization=VoxelSpec(config.voxel_size, config.point_cloud_range, config.max_points,
                               config.max_voxels[1]),
        anchors=AnchorSpec(ranges=config.anchor_ranges, sizes=config.anchor_sizes,
                           rotations=config.anchor_rotations, align_corner=False,
                           feature_map_size=config.feature_map_size),
        box_coder=BoxCoderSpec("DeltaXYZWLHRBBoxCoder", 7),
        head=HeadSpec(True, float(config.dir_offset), float(config.dir_limit_offset)),
        test_cfg=PostprocessSpec(**test_cfg),
        engine=EngineSpec(output_layout, profile),
        notes=notes or None)
