"""PyTorch reference of mmdet3d's nuScenes / Lyft / Waymo PointPillars (MVXFasterRCNN); torch only.

Submodule names equal mmdet3d's ``MVXFasterRCNN`` point branch (``pts_voxel_encoder`` HardVFE,
``pts_middle_encoder`` PointPillarsScatter, ``pts_backbone`` SECOND, ``pts_neck`` mmdet FPN or
SECONDFPN, ``pts_bbox_head`` Anchor3DHead), so ``load_state_dict`` of an mmdet3d checkpoint's
``pts_*`` weights works with ``strict=True`` for the same config. The exporter writes mmdeploy's
contract: inputs ``voxels, num_points, coors`` (dynamic voxel axis), outputs ``cls_score{i},
bbox_pred{i}, dir_cls_pred{i}`` per head level, and a bundle (end2end.onnx, OpenVINO IR,
spec.yaml) the runtime decodes.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from admlops_ros.training.configs import PillarInputMixin
from admlops_ros.bundle.spec import (AnchorSpec, BoxCoderSpec, EngineSpec, HeadSpec, InputSpec,
                                     ModelSpec, PostprocessSpec, TensorRTProfile, VoxelSpec)
from admlops_ros.errors import AdmlopsError
from admlops_ros.training.network import SECOND, SECONDFPN, PointPillarsScatter, \
    get_paddings_indicator

__all__ = [
    "NusConfigError",
    "NusPointPillarsConfig",
    "NUS_CLASSES",
    "NUS_FPN",
    "NUS_SECFPN",
    "VFELayer",
    "HardVFE",
    "ConvModule",
    "FPN",
    "Anchor3DHead",
    "NusPointPillars",
    "build_nus_model",
    "output_names",
    "count_nus_flops",
    "to_nus_model_spec",
    "export_nus_onnx",
    "run_nus_torch",
    "export_nus_bundle",
]

LOG = logging.getLogger(__name__)
PathLike = Union[str, Path]
INPUT_NAMES = ("voxels", "num_points", "coors")


class NusConfigError(AdmlopsError, ValueError):
    """An inconsistent nuScenes-style PointPillars config; the message names the field."""


@dataclass(frozen=True)
class NusPointPillarsConfig(PillarInputMixin):
    """Every number of an mmdet3d MVXFasterRCNN PointPillars (model + test_cfg.pts).

    Lengths in metres, angles in radians, LiDAR frame. Field names follow mmdet3d's
    ``pointpillars_hv_fpn_nus.py`` where one exists. ``neck`` is ``"fpn"`` (mmdet FPN, one
    head level per output) or ``"secondfpn"`` (levels upsampled and concatenated: one level).
    """

    name: str
    class_names: Tuple[str, ...]
    point_features: Tuple[str, ...]
    voxel_size: Tuple[float, float, float]
    point_cloud_range: Tuple[float, float, float, float, float, float]
    max_points: int
    max_voxels: Tuple[int, int]                   # (train, test)
    # HardVFE
    feat_channels: Tuple[int, ...]
    with_distance: bool
    with_cluster_center: bool
    with_voxel_center: bool
    # SECOND
    layer_nums: Tuple[int, ...]
    layer_strides: Tuple[int, ...]
    out_channels: Tuple[int, ...]
    # neck
    neck: str
    fpn_out_channels: int = 256                  # mmdet FPN out_channels
    fpn_num_outs: int = 3
    upsample_strides: Tuple[float, ...] = (1, 2, 4)          # SECONDFPN
    secfpn_out_channels: Tuple[int, ...] = (128, 128, 128)  # SECONDFPN
    # Anchor3DHead / AlignedAnchor3DRangeGenerator
    anchor_ranges: Tuple[Tuple[float, ...], ...] = ()
    anchor_sizes: Tuple[Tuple[float, float, float], ...] = ()
    anchor_rotations: Tuple[float, ...] = (0.0, 1.57)
    anchor_scales: Tuple[float, ...] = (1.0,)
    custom_values: Tuple[float, ...] = (0.0, 0.0)
    dir_offset: float = -0.7854
    dir_limit_offset: float = 0.0
    test_cfg: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    norm_eps: float = 1e-3
    norm_momentum: float = 0.01
    tensorrt_profile: Optional[Tuple[int, int, int]] = None
    # LoadPointsFromMultiSweeps of the test pipeline: sweeps_num + 1, remove_close
    sweeps: int = 1
    sweeps_remove_close: bool = False

    @property
    def num_anchors(self) -> int:
        return len(self.anchor_sizes) * len(self.anchor_rotations)

    @property
    def code_size(self) -> int:
        """DeltaXYZWLHRBBoxCoder code size: 7 + one per custom value (velocity)."""
        return 7 + len(self.custom_values)

    def _backbone_sizes(self) -> List[Tuple[int, int]]:
        nx, ny = self.grid_size
        h, w, out = ny, nx, []
        for s in self.layer_strides:
            h, w = -(-h // s), -(-w // s)
            out.append((h, w))
        return out

    @property
    def feature_map_sizes(self) -> Tuple[Tuple[int, int], ...]:
        """[H, W] of each head level (FPN: one per output; SECONDFPN: one)."""
        sizes = self._backbone_sizes()
        if self.neck == "fpn":
            return tuple(sizes[:self.fpn_num_outs])
        h, w = sizes[0]
        up = self.upsample_strides[0]
        return ((int(h * up), int(w * up)),) if up >= 1 else \
            ((h // int(round(1 / up)), w // int(round(1 / up))),)

    @property
    def num_levels(self) -> int:
        return len(self.feature_map_sizes)

    @property
    def head_in_channels(self) -> int:
        return self.fpn_out_channels if self.neck == "fpn" else int(sum(self.secfpn_out_channels))

    def validate(self) -> "NusPointPillarsConfig":
        """Check the lengths that must agree; returns self.

        Raises:
            NusConfigError: naming the field and the values found.
        """
        if self.neck not in ("fpn", "secondfpn"):
            raise NusConfigError(f"{self.name}: neck must be 'fpn' or 'secondfpn', got "
                                 f"{self.neck!r}")
        n = len(self.layer_nums)
        for key in ("layer_strides", "out_channels"):
            if len(getattr(self, key)) != n:
                raise NusConfigError(f"{self.name}: {key} has {len(getattr(self, key))} "
                                     f"entries, layer_nums has {n}")
        if self.neck == "fpn":
            if self.fpn_num_outs != n:
                raise NusConfigError(f"{self.name}: fpn_num_outs {self.fpn_num_outs} must be "
                                     f"the number of SECOND stages ({n}); extra FPN levels are "
                                     "not modelled")
        else:
            for key in ("upsample_strides", "secfpn_out_channels"):
                if len(getattr(self, key)) != n:
                    raise NusConfigError(f"{self.name}: {key} needs one entry per SECOND "
                                         f"stage ({n})")
        if len(self.anchor_scales) != self.num_levels:
            raise NusConfigError(f"{self.name}: anchor_scales {list(self.anchor_scales)} needs "
                                 f"one scale per head level ({self.num_levels})")
        if not self.anchor_sizes or len(self.anchor_ranges) not in (1, len(self.anchor_sizes)):
            raise NusConfigError(f"{self.name}: anchor_ranges needs 1 or one per size "
                                 f"({len(self.anchor_sizes)}), got {len(self.anchor_ranges)}")
        return self

    def replace(self, **changes: Any) -> "NusPointPillarsConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes).validate()


NUS_CLASSES = ("car", "truck", "trailer", "bus", "construction_vehicle", "bicycle",
               "motorcycle", "pedestrian", "traffic_cone", "barrier")
_NUS_RANGE = (-50.0, -50.0, -5.0, 50.0, 50.0, 3.0)
_NUS_TEST_CFG = {"use_rotate_nms": True, "nms_across_levels": False, "nms_pre": 1000,
                 "nms_thr": 0.2, "score_thr": 0.05, "min_bbox_size": 0.0, "max_num": 500}

# configs/_base_/models/pointpillars_hv_fpn_nus.py (mmdet3d 1.x); the points are
# (x, y, z, time lag): LoadPointsFromMultiSweeps keeps use_dim [0, 1, 2, 4] of 10 sweeps.
NUS_FPN = NusPointPillarsConfig(
    name="pointpillars_nus_fpn", class_names=NUS_CLASSES,
    point_features=("x", "y", "z", "time"), voxel_size=(0.25, 0.25, 8.0),
    point_cloud_range=_NUS_RANGE, max_points=64, max_voxels=(30000, 40000), sweeps=11,
    feat_channels=(64, 64), with_distance=False, with_cluster_center=True,
    with_voxel_center=True, layer_nums=(3, 5, 5), layer_strides=(2, 2, 2),
    out_channels=(64, 128, 256), neck="fpn", fpn_out_channels=256, fpn_num_outs=3,
    anchor_ranges=((-50.0, -50.0, -1.8, 50.0, 50.0, -1.8),),
    anchor_sizes=((2.5981, 0.8660, 1.0), (1.7321, 0.5774, 1.0), (1.0, 1.0, 1.0),
                  (0.4, 0.4, 1.0)),
    anchor_rotations=(0.0, 1.57), anchor_scales=(1.0, 2.0, 4.0), custom_values=(0.0, 0.0),
    dir_offset=-0.7854, dir_limit_offset=0.0, test_cfg=_NUS_TEST_CFG,
    tensorrt_profile=(5000, 20000, 30000),
).validate()

# configs/pointpillars/pointpillars_hv_secfpn_sbn-all_8xb4-2x_nus-3d.py: SECONDFPN neck, one
# range per size (7 sizes, 10 classes: every anchor scores every class), dir_offset kept.
NUS_SECFPN = NUS_FPN.replace(
    name="pointpillars_nus_secfpn", neck="secondfpn", upsample_strides=(1, 2, 4),
    secfpn_out_channels=(128, 128, 128),
    anchor_ranges=tuple((-49.6, -49.6, z, 49.6, 49.6, z) for z in
                        (-1.80032795, -1.74440365, -1.68526504, -1.67339111, -1.61785072,
                         -1.80984986, -1.763965)),
    anchor_sizes=((4.60718145, 1.95017717, 1.72270761), (6.73778078, 2.4560939, 2.73004906),
                  (12.01320693, 2.87427237, 3.81509561), (1.68452161, 0.60058911, 1.27192197),
                  (0.7256437, 0.66344886, 1.75748069), (0.40359262, 0.39694519, 1.06232151),
                  (0.48578221, 2.49008838, 0.98297065)),
    anchor_scales=(1.0,),
)


# ----------------------------------------------------------------------------- modules
class VFELayer(nn.Module):
    """mmdet3d VFELayer: Linear (no bias) -> BN1d -> ReLU -> max over the voxel's points;
    ``cat_max`` concatenates the max to every point's features."""

    def __init__(self, in_channels: int, out_channels: int, eps: float, momentum: float,
                 cat_max: bool) -> None:
        super().__init__()
        self.cat_max = cat_max
        self.norm = nn.BatchNorm1d(out_channels, eps=eps, momentum=momentum)
        self.linear = nn.Linear(in_channels, out_channels, bias=False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """[V, M, Cin] -> [V, M, 2 * Cout] (cat_max) or [V, Cout]."""
        x = self.linear(inputs)
        x = F.relu(self.norm(x.permute(0, 2, 1)).permute(0, 2, 1))
        agg = torch.max(x, dim=1, keepdim=True)[0]
        if not self.cat_max:
            return agg.squeeze(1)
        return torch.cat([x, agg.expand(-1, inputs.shape[1], -1)], dim=2)


class HardVFE(nn.Module):
    """mmdet3d HardVFE (no fusion layer): point decorations, then a stack of VFELayers.

    Decorations per point: the raw features, the offset to the mean of the voxel's points
    (``with_cluster_center``), the offset to the voxel centre (``with_voxel_center``), the
    distance to the origin (``with_distance``); padded slots are zeroed once, before the
    first layer (later layers see their ReLU(BN(0)) values in the max, as mmdet3d).
    """

    def __init__(self, config: NusPointPillarsConfig) -> None:
        super().__init__()
        self._with_distance = config.with_distance
        self._with_cluster_center = config.with_cluster_center
        self._with_voxel_center = config.with_voxel_center
        self.vx, self.vy, self.vz = (float(v) for v in config.voxel_size)
        r = config.point_cloud_range
        self.x_offset = self.vx / 2 + r[0]
        self.y_offset = self.vy / 2 + r[1]
        self.z_offset = self.vz / 2 + r[2]
        chans = [config.pfn_in_channels] + list(config.feat_channels)
        last = len(chans) - 2
        self.vfe_layers = nn.ModuleList([
            VFELayer(chans[i] * (2 if i > 0 else 1), chans[i + 1], config.norm_eps,
                     config.norm_momentum, cat_max=(i != last)) for i in range(last + 1)])

    def forward(self, features: torch.Tensor, num_points: torch.Tensor,
                coors: torch.Tensor) -> torch.Tensor:
        """Voxel features [V, feat_channels[-1]] of voxels [V, M, C], num_points [V],
        coors [V, 4] (batch, z, y, x)."""
        xyz = features[:, :, :3]
        parts = [features]
        if self._with_cluster_center:
            mean = xyz.sum(dim=1, keepdim=True) / num_points.type_as(features).view(-1, 1, 1)
            parts.append(xyz - mean)
        if self._with_voxel_center:
            c = coors.type_as(features)
            centre = torch.stack([c[:, 3] * self.vx + self.x_offset,
                                  c[:, 2] * self.vy + self.y_offset,
                                  c[:, 1] * self.vz + self.z_offset], dim=1)
            parts.append(xyz - centre.unsqueeze(1))
        if self._with_distance:
            parts.append(torch.norm(xyz, 2, 2, keepdim=True))
        x = torch.cat(parts, dim=-1)
        mask = get_paddings_indicator(num_points, x.shape[1]).unsqueeze(-1).type_as(x)
        x = x * mask
        for vfe in self.vfe_layers:
            x = vfe(x)
        return x


class ConvModule(nn.Module):
    """mmcv ConvModule with a BN and ReLU: ``conv`` (no bias), ``bn``, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int,
                 eps: float, momentum: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding,
                              bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=eps, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class FPN(nn.Module):
    """mmdet FPN (start_level 0, no extra levels): 1x1 lateral ConvModules, top-down nearest
    upsampling added into the finer lateral, 3x3 output ConvModules."""

    def __init__(self, config: NusPointPillarsConfig) -> None:
        super().__init__()
        out, eps, mom = config.fpn_out_channels, config.norm_eps, config.norm_momentum
        self.lateral_convs = nn.ModuleList(
            [ConvModule(c, out, 1, 0, eps, mom) for c in config.out_channels])
        self.fpn_convs = nn.ModuleList(
            [ConvModule(out, out, 3, 1, eps, mom) for _ in config.out_channels])

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        laterals = [conv(inputs[i]) for i, conv in enumerate(self.lateral_convs)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[2:], mode="nearest")
        return tuple(conv(lat) for conv, lat in zip(self.fpn_convs, laterals))


class Anchor3DHead(nn.Module):
    """The convolutions of mmdet3d Anchor3DHead, shared by every level."""

    def __init__(self, config: NusPointPillarsConfig) -> None:
        super().__init__()
        a, c = config.num_anchors, config.head_in_channels
        self.conv_cls = nn.Conv2d(c, a * config.num_classes, 1)
        self.conv_reg = nn.Conv2d(c, a * config.code_size, 1)
        self.conv_dir_cls = nn.Conv2d(c, a * 2, 1)

    def forward(self, feats: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """Per level (cls_score, bbox_pred, dir_cls_pred), flattened level by level."""
        out: List[torch.Tensor] = []
        for x in feats:
            out += [self.conv_cls(x), self.conv_reg(x), self.conv_dir_cls(x)]
        return out


def _second_args(config: NusPointPillarsConfig) -> SimpleNamespace:
    """The numbers network.SECOND / SECONDFPN read, under their names."""
    return SimpleNamespace(feat_channels=config.feat_channels, out_channels=config.out_channels,
                           layer_nums=config.layer_nums, layer_strides=config.layer_strides,
                           upsample_strides=config.upsample_strides,
                           fpn_out_channels=config.secfpn_out_channels,
                           norm_eps=config.norm_eps, norm_momentum=config.norm_momentum)


class NusPointPillars(nn.Module):
    """mmdet3d MVXFasterRCNN point branch from voxels to raw head maps (state_dict names
    ``pts_voxel_encoder.*``, ``pts_backbone.*``, ``pts_neck.*``, ``pts_bbox_head.*``)."""

    def __init__(self, config: NusPointPillarsConfig) -> None:
        super().__init__()
        self.config = config.validate()
        self.pts_voxel_encoder = HardVFE(config)
        self.pts_middle_encoder = PointPillarsScatter(config.feat_channels[-1], config.grid_size)
        self.pts_backbone = SECOND(_second_args(config))
        self.pts_neck: nn.Module = FPN(config) if config.neck == "fpn" else \
            SECONDFPN(_second_args(config))
        self.pts_bbox_head = Anchor3DHead(config)

    def forward(self, voxels: torch.Tensor, num_points: torch.Tensor,
                coors: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Raw head outputs of one frame, in the order of :func:`output_names`.

        Args:
            voxels: [V, M, C] float32 zero-padded points, LiDAR frame.
            num_points: [V] int32 points per voxel.
            coors: [V, 4] int32 (0, z, y, x).

        Returns:
            cls_score{i} [1, A*K, H_i, W_i], bbox_pred{i} [1, A*code_size, H_i, W_i],
            dir_cls_pred{i} [1, A*2, H_i, W_i] for each level i.
        """
        feats = self.pts_voxel_encoder(voxels, num_points, coors)
        x = self.pts_backbone(self.pts_middle_encoder(feats, coors))
        x = self.pts_neck(x)
        levels = list(x) if isinstance(x, (list, tuple)) else [x]
        return tuple(self.pts_bbox_head(levels))


def build_nus_model(config: NusPointPillarsConfig, seed: Optional[int] = 0,
                    cls_bias: float = -math.log(99.0)) -> NusPointPillars:
    """A model with weights whose outputs are of order one (random, for tests and benches).

    Convolutions and linears get N(0, 1/fan_in), BN running statistics random, head
    biases small and the class bias ``cls_bias`` (mmdet3d's prior 0.01 by default).
    """
    gen = torch.Generator().manual_seed(seed if seed is not None else 0)
    model = NusPointPillars(config)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                fan_in = m.weight.shape[0] if isinstance(m, nn.ConvTranspose2d) \
                    else m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) / math.sqrt(fan_in))
                if m.bias is not None:
                    m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = m.num_features
                m.weight.copy_(1.0 + 0.1 * torch.randn(n, generator=gen))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
        model.pts_bbox_head.conv_cls.bias.fill_(float(cls_bias))
    return model.eval()


def output_names(config: NusPointPillarsConfig) -> Tuple[str, ...]:
    """Engine output names, mmdeploy >= 1.2: (cls_score{i}, bbox_pred{i}, dir_cls_pred{i})."""
    return tuple(f"{kind}{i}" for i in range(config.num_levels)
                 for kind in ("cls_score", "bbox_pred", "dir_cls_pred"))


def count_nus_flops(config: NusPointPillarsConfig, num_voxels: int = 0) -> float:
    """GFLOP per frame (2 per multiply-add) of convolutions and linears (BN, ReLU, bias,
    the FPN's upsample-add left out), with the HardVFE at ``num_voxels``."""
    cin, total = config.feat_channels[-1], 0.0
    sizes = config._backbone_sizes()
    for (h, w), cout, n in zip(sizes, config.out_channels, config.layer_nums):
        total += 2.0 * h * w * 9 * (cin * cout + n * cout * cout)
        cin = cout
    if config.neck == "fpn":
        o = config.fpn_out_channels
        for (h, w), c in zip(sizes, config.out_channels):
            total += 2.0 * h * w * (c * o + 9 * o * o)
    else:
        for (h, w), c, o, up in zip(sizes, config.out_channels, config.secfpn_out_channels,
                                    config.upsample_strides):
            # ConvTranspose2d(k = stride = up): up^2 MACs per input pixel; a strided conv for
            # up < 1 does one per input pixel
            total += 2.0 * h * w * c * o * (up * up if up >= 1 else 1.0)
    head_out = config.num_anchors * (config.num_classes + config.code_size + 2)
    for h, w in config.feature_map_sizes:
        total += 2.0 * h * w * config.head_in_channels * head_out
    c = config.pfn_in_channels
    for i, f in enumerate(config.feat_channels):
        total += 2.0 * num_voxels * config.max_points * c * f
        c = 2 * f
    return total / 1e9


# ----------------------------------------------------------------------------- export
def to_nus_model_spec(config: NusPointPillarsConfig, notes: Optional[str] = None) -> ModelSpec:
    """The bundle spec of a config (without ``files``).

    Raises:
        SpecError: the config's numbers do not make a valid spec.
    """
    fms = config.feature_map_sizes
    keys = ("use_rotate_nms", "nms_thr", "score_thr", "nms_pre", "max_num",
            "nms_across_levels", "min_bbox_size")
    profile = None if config.tensorrt_profile is None else \
        TensorRTProfile(*(int(v) for v in config.tensorrt_profile))
    return ModelSpec(
        name=config.name, family="pointpillars", class_names=config.class_names,
        input=InputSpec(config.point_features, 1.0, False, config.sweeps,
                        config.sweeps_remove_close),
        voxelization=VoxelSpec(config.voxel_size, config.point_cloud_range, config.max_points,
                               config.max_voxels[1]),
        anchors=AnchorSpec(ranges=config.anchor_ranges, sizes=config.anchor_sizes,
                           rotations=config.anchor_rotations, align_corner=False,
                           feature_map_size=fms[0] if len(fms) == 1 else fms,
                           scales=config.anchor_scales,
                           custom_values=config.custom_values or None),
        box_coder=BoxCoderSpec("DeltaXYZWLHRBBoxCoder", config.code_size),
        head=HeadSpec(True, float(config.dir_offset), float(config.dir_limit_offset)),
        test_cfg=PostprocessSpec(**{k: config.test_cfg[k] for k in keys
                                    if k in config.test_cfg}),
        engine=EngineSpec("mmdeploy-1.2", profile), notes=notes)


def _torch_inputs(inputs) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    v, n, c = inputs
    return (torch.from_numpy(np.ascontiguousarray(v, np.float32)),
            torch.from_numpy(np.ascontiguousarray(n, np.int32)),
            torch.from_numpy(np.ascontiguousarray(c, np.int32)))


def run_nus_torch(model: NusPointPillars, inputs) -> Dict[str, np.ndarray]:
    """Eval-mode PyTorch outputs keyed by the engine output names."""
    model.eval()
    with torch.no_grad():
        outs = model(*_torch_inputs(inputs))
    return {k: o.numpy() for k, o in zip(output_names(model.config), outs)}


def export_nus_onnx(model: NusPointPillars, path: PathLike, num_voxels: int = 2000,
                    opset: int = 11) -> Path:
    """Write ``end2end.onnx`` (mmdeploy 1.2+ names, dynamic voxel axis) of the module as is.

    Args:
        model: the network (exported in eval mode, on CPU).
        path: output file.
        num_voxels: V of the tracing example (any V works at run time).
        opset: ONNX opset (mmdeploy uses 11).
    """
    import onnx
    from admlops_ros.training.export import _zero_constants_as_nodes, random_voxels
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    names = output_names(model.config)
    nx, ny = model.config.grid_size
    example = _torch_inputs(random_voxels(model.config, min(num_voxels, nx * ny // 2), seed=0))
    with torch.no_grad():
        torch.onnx.export(model, example, str(path), opset_version=opset,
                          input_names=list(INPUT_NAMES), output_names=list(names),
                          dynamic_axes={n: {0: "num_voxels"} for n in INPUT_NAMES},
                          do_constant_folding=True, dynamo=False)
    proto = onnx.load(str(path))
    _zero_constants_as_nodes(proto)   # the scatter canvas: ConstantOfShape, not 41 MB of zeros
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    LOG.info("wrote %s (opset %d, outputs %s)", path, opset, names)
    return path


def export_nus_bundle(config: NusPointPillarsConfig, bundle_dir: PathLike,
                      model: Optional[NusPointPillars] = None,
                      check_voxels: Tuple[int, ...] = (500,), tolerance: float = 1e-3,
                      notes: Optional[str] = None) -> Path:
    """Export a model to a bundle (spec.yaml, end2end.onnx, openvino/end2end.*).

    The ONNX and IR outputs are checked against PyTorch for each V in ``check_voxels``.

    Args:
        config: the model config.
        bundle_dir: output directory.
        model: the network (None: :func:`build_nus_model` random weights).
        check_voxels: voxel counts of the check.
        tolerance: largest absolute difference allowed in the check.
        notes: free text stored in spec.yaml.

    Raises:
        ExportError: a backend's outputs differ from PyTorch by more than ``tolerance``.
    """
    from admlops_ros.training.export import write_checked_bundle
    model = build_nus_model(config) if model is None else model.eval()
    return write_checked_bundle(bundle_dir, to_nus_model_spec(config, notes),
                                lambda path: export_nus_onnx(model, path), config,
                                lambda inputs: run_nus_torch(model, inputs), check_voxels,
                                tolerance)
