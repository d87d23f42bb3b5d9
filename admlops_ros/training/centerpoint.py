"""PyTorch reference of mmdet3d CenterPoint (pillar, SECOND, CenterHead) with mmdet3d's
state_dict names, its bundle spec and an exporter in mmdeploy's contract; torch only."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from admlops_ros.training.configs import PillarInputMixin
from admlops_ros.bundle.spec import (BoxCoderSpec, CenterHeadSpec, CenterPointTestSpec,
                                     EngineSpec, InputSpec, ModelSpec, TensorRTProfile,
                                     VoxelSpec)
from admlops_ros.training.export import (export_onnx, load_checkpoint, run_torch,
                                         write_checked_bundle)
from admlops_ros.training.network import (SECOND, SECONDFPN, PillarFeatureNet,
                                          PointPillarsScatter)

__all__ = [
    "CenterPointConfig",
    "NUS_TASKS",
    "PILLAR02_NUS",
    "ConvModule",
    "SeparateHead",
    "CenterHead",
    "CenterPoint",
    "build_centerpoint",
    "centerpoint_model_spec",
    "export_centerpoint_bundle",
]

LOG = logging.getLogger(__name__)
PathLike = Union[str, Path]

# configs/_base_/models/centerpoint_pillar02_second_secfpn_nus.py (mmdet3d 1.x): class names
# of each task head, in head order.
NUS_TASKS = (("car",), ("truck", "construction_vehicle"), ("bus", "trailer"), ("barrier",),
             ("motorcycle", "bicycle"), ("pedestrian", "traffic_cone"))


@dataclass(frozen=True)
class CenterPointConfig(PillarInputMixin):
    """Every number of an mmdet3d pillar CenterPoint (model config + test_cfg.pts).

    Lengths in metres, LiDAR frame. It carries the fields the shared PointPillars modules of
    ``training.network`` read (PillarFeatureNet, SECOND, SECONDFPN), under the same names.
    """

    name: str
    tasks: Tuple[Tuple[str, ...], ...]
    point_features: Tuple[str, ...]
    voxel_size: Tuple[float, float, float]
    point_cloud_range: Tuple[float, float, float, float, float, float]
    max_points: int
    max_voxels: Tuple[int, int]  # (train, test)
    # LoadPointsFromMultiSweeps of the test pipeline: clouds per detection (sweeps_num + 1),
    # remove_close, pad_empty_sweeps
    sweeps: int = 1
    sweeps_remove_close: bool = False
    sweeps_pad_empty: bool = False
    # PillarFeatureNet
    feat_channels: Tuple[int, ...] = (64,)
    with_distance: bool = False
    with_cluster_center: bool = True
    with_voxel_center: bool = True
    legacy: bool = False
    # SECOND / SECONDFPN (norm_cfg BN eps 1e-3, momentum 0.01; use_conv_for_no_stride)
    layer_nums: Tuple[int, ...] = (3, 5, 5)
    layer_strides: Tuple[int, ...] = (2, 2, 2)
    out_channels: Tuple[int, ...] = (64, 128, 256)
    upsample_strides: Tuple[float, ...] = (0.5, 1, 2)
    fpn_out_channels: Tuple[int, ...] = (128, 128, 128)
    norm_eps: float = 1e-3
    norm_momentum: float = 0.01
    # CenterHead / SeparateHead (default BN2d: eps 1e-5, momentum 0.1)
    share_conv_channel: int = 64
    head_conv: int = 64
    final_kernel: int = 3
    num_heatmap_convs: int = 2
    with_velocity: bool = True           # common head vel(2, 2); code_size 9
    common_head_convs: int = 2           # num_conv of reg, height, dim, rot (and vel)
    init_bias: float = -2.19
    # CenterPointBBoxCoder
    out_size_factor: int = 4
    norm_bbox: bool = True
    max_num: int = 500
    score_threshold: float = 0.1
    post_center_range: Optional[Tuple[float, ...]] = (-61.2, -61.2, -10.0, 61.2, 61.2, 10.0)
    # test_cfg.pts
    test_cfg: Mapping[str, Any] = dataclasses.field(default_factory=lambda: {
        "nms_type": "rotate", "min_radius": (4, 12, 10, 1, 0.85, 0.175), "nms_thr": 0.2,
        "score_threshold": 0.1, "pre_max_size": 1000, "post_max_size": 83,
        "post_center_limit_range": (-61.2, -61.2, -10.0, 61.2, 61.2, 10.0)})
    tensorrt_profile: Optional[Tuple[int, int, int]] = (5000, 20000, 30000)

    @property
    def class_names(self) -> Tuple[str, ...]:
        return tuple(n for task in self.tasks for n in task)

    @property
    def code_size(self) -> int:
        return 9 if self.with_velocity else 7

    @property
    def common_heads(self) -> Tuple[Tuple[str, int, int], ...]:
        """(name, channels, num_conv) of the regression heads, in mmdet3d's dict order."""
        heads = [("reg", 2), ("height", 1), ("dim", 3), ("rot", 2)]
        if self.with_velocity:
            heads.append(("vel", 2))
        return tuple((n, c, self.common_head_convs) for n, c in heads)

    def replace(self, **changes: Any) -> "CenterPointConfig":
        return dataclasses.replace(self, **changes)


# configs/centerpoint/centerpoint_pillar02_second_secfpn_8xb4-cyclic-20e_nus-3d.py: 10 sweeps,
# x, y, z, intensity, time lag; 512 x 512 canvas, 128 x 128 head map, rotate NMS.
PILLAR02_NUS = CenterPointConfig(
    name="centerpoint_pillar02_nus",
    tasks=NUS_TASKS,
    point_features=("x", "y", "z", "intensity", "time"),
    voxel_size=(0.2, 0.2, 8.0),
    point_cloud_range=(-51.2, -51.2, -5.0, 51.2, 51.2, 3.0),
    max_points=20,
    max_voxels=(30000, 40000),
    sweeps=10,
    sweeps_remove_close=True,
    sweeps_pad_empty=True,
)


# ----------------------------------------------------------------------------- modules
class ConvModule(nn.Module):
    """mmcv ConvModule as CenterHead uses it: conv (no bias) -> bn -> ReLU ('activate')."""

    def __init__(self, cin: int, cout: int, kernel: int, eps: float = 1e-5,
                 momentum: float = 0.1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=1, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=eps, momentum=momentum)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


class SeparateHead(nn.Module):
    """mmdet3d SeparateHead: per output an nn.Sequential of (num_conv - 1) ConvModules and a
    final biased conv, as attributes ``reg``, ``height``, ``dim``, ``rot``[, ``vel``],
    ``heatmap`` (state_dict ``reg.0.conv.weight``, ``reg.1.bias``, ...)."""

    def __init__(self, config: CenterPointConfig, num_classes: int) -> None:
        super().__init__()
        k = config.final_kernel
        self.heads = [(n, c, m) for n, c, m in config.common_heads] + \
            [("heatmap", num_classes, config.num_heatmap_convs)]
        for name, channels, num_conv in self.heads:
            layers: List[nn.Module] = []
            cin = config.share_conv_channel
            for _ in range(num_conv - 1):
                layers.append(ConvModule(cin, config.head_conv, k))
                cin = config.head_conv
            layers.append(nn.Conv2d(cin, channels, k, stride=1, padding=k // 2, bias=True))
            setattr(self, name, nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {name: getattr(self, name)(x) for name, _, _ in self.heads}


class CenterHead(nn.Module):
    """mmdet3d CenterHead's convolutions: ``shared_conv`` then one SeparateHead per task
    (``task_heads.<t>``)."""

    def __init__(self, config: CenterPointConfig) -> None:
        super().__init__()
        self.shared_conv = ConvModule(int(sum(config.fpn_out_channels)),
                                      config.share_conv_channel, 3)
        self.task_heads = nn.ModuleList([SeparateHead(config, len(t)) for t in config.tasks])

    def forward(self, x: torch.Tensor) -> List[Dict[str, torch.Tensor]]:
        x = self.shared_conv(x)
        return [head(x) for head in self.task_heads]


class CenterPoint(nn.Module):
    """mmdet3d CenterPoint (MVX pillar model) from voxels to mmdeploy's three outputs.

    Submodule names equal mmdet3d's (``pts_voxel_encoder``, ``pts_middle_encoder``,
    ``pts_backbone``, ``pts_neck``, ``pts_bbox_head``), so an mmdet3d checkpoint of the same
    config loads with ``strict=True``.
    """

    def __init__(self, config: CenterPointConfig) -> None:
        super().__init__()
        self.config = config
        self.pts_voxel_encoder = PillarFeatureNet(config)  # type: ignore[arg-type]
        self.pts_middle_encoder = PointPillarsScatter(config.feat_channels[-1], config.grid_size)
        self.pts_backbone = SECOND(config)  # type: ignore[arg-type]
        self.pts_neck = SECONDFPN(config)  # type: ignore[arg-type]
        for i, stride in enumerate(config.upsample_strides):
            if stride == 1:  # use_conv_for_no_stride: a 1x1 Conv2d, not a ConvTranspose2d
                self.pts_neck.deblocks[i][0] = nn.Conv2d(
                    config.out_channels[i], config.fpn_out_channels[i], 1, stride=1, bias=False)
        self.pts_bbox_head = CenterHead(config)

    def forward(self, voxels: torch.Tensor, num_points: torch.Tensor,
                coors: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw head outputs of one frame, concatenated over tasks as mmdeploy 1.x exports.

        Args:
            voxels: [V, M, C] float32 zero-padded points, LiDAR frame.
            num_points: [V] int32 points per voxel.
            coors: [V, 4] int32 (0, z, y, x).

        Returns:
            cls_score0 [1, sum K_t, H, W] heatmap logits; bbox_pred0 [1, T * (2 + 1 + 3
            [+ 2]), H, W] per task reg, height, dim [, vel]; dir_cls_pred0 [1, T * 2, H, W]
            per task rot (sin, cos).
        """
        feats = self.pts_voxel_encoder(voxels, num_points, coors)
        x = self.pts_middle_encoder(feats, coors, 1)
        x = self.pts_neck(self.pts_backbone(x))
        tasks = self.pts_bbox_head(x)
        box_keys = ("reg", "height", "dim") + (("vel",) if self.config.with_velocity else ())
        cls = torch.cat([t["heatmap"] for t in tasks], dim=1)
        bbox = torch.cat([t[k] for t in tasks for k in box_keys], dim=1)
        rot = torch.cat([t["rot"] for t in tasks], dim=1)
        return cls, bbox, rot

    def init_weights(self) -> None:
        """mmdet3d's initialisation: Kaiming convs (fan_out), heatmap bias ``init_bias``."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for head in self.pts_bbox_head.task_heads:
            nn.init.constant_(head.heatmap[-1].bias, self.config.init_bias)


def build_centerpoint(config: CenterPointConfig, init: bool = True) -> CenterPoint:
    """A CenterPoint model for ``config`` (mmdet3d initialisation when ``init``)."""
    model = CenterPoint(config)
    if init:
        model.init_weights()
    return model


# ----------------------------------------------------------------------------- bundle
def centerpoint_model_spec(config: CenterPointConfig, intensity_scale: float = 1.0,
                           notes: Optional[str] = None) -> ModelSpec:
    """The engine bundle's spec of a config (without ``files``).

    Raises:
        SpecError: the config's numbers do not make a valid spec.
    """
    t = dict(config.test_cfg)
    profile = None if config.tensorrt_profile is None else \
        TensorRTProfile(*(int(v) for v in config.tensorrt_profile))
    return ModelSpec(
        name=config.name, family="centerpoint", class_names=config.class_names,
        input=InputSpec(config.point_features, float(intensity_scale), False, config.sweeps,
                        config.sweeps_remove_close, config.sweeps_pad_empty),
        voxelization=VoxelSpec(config.voxel_size, config.point_cloud_range, config.max_points,
                               config.max_voxels[1]),
        center_head=CenterHeadSpec(tasks=config.tasks, out_size_factor=config.out_size_factor,
                                   norm_bbox=config.norm_bbox, max_num=config.max_num,
                                   score_threshold=config.score_threshold,
                                   post_center_range=config.post_center_range),
        box_coder=BoxCoderSpec("CenterPointBBoxCoder", config.code_size),
        test_cfg=CenterPointTestSpec(
            nms_type=t["nms_type"], min_radius=tuple(t["min_radius"]),
            nms_thr=tuple(np.atleast_1d(t["nms_thr"]).tolist()),
            score_threshold=t["score_threshold"], pre_max_size=t["pre_max_size"],
            post_max_size=t["post_max_size"],
            post_center_limit_range=t.get("post_center_limit_range")),
        engine=EngineSpec("mmdeploy-1.2", profile), notes=notes or None)


def export_centerpoint_bundle(config: CenterPointConfig, bundle_dir: PathLike,
                              checkpoint: Optional[PathLike] = None,
                              model: Optional[CenterPoint] = None,
                              intensity_scale: float = 1.0,
                              check_voxels: Tuple[int, ...] = (500,),
                              notes: Optional[str] = None) -> Path:
    """Export a CenterPoint to a bundle (spec.yaml, end2end.onnx, openvino/end2end.*).

    The graph is traced as it is (as mmdeploy does): inputs voxels [V, M, C], num_points [V],
    coors [V, 4] with V dynamic; outputs ``cls_score0``, ``bbox_pred0``, ``dir_cls_pred0``.
    ONNX Runtime and OpenVINO are checked against PyTorch on random voxels for each V in
    ``check_voxels`` (> 1e-3 raises).

    Args:
        config: the model config.
        bundle_dir: output directory.
        checkpoint: state_dict file (mmdet3d names); None: ``model`` or random weights.
        model: a built model to export (tests); ignored when ``checkpoint`` is given.
        intensity_scale: spec input.intensity_scale.
        check_voxels: voxel counts of the check.
        notes: free text stored in spec.yaml.

    Returns:
        The bundle directory.

    Raises:
        ExportError: a backend's outputs differ from PyTorch's.
    """
    if model is None or checkpoint is not None:
        model = build_centerpoint(config)
        if checkpoint is not None:
            load_checkpoint(model, checkpoint)  # type: ignore[arg-type]
    model.eval()
    spec = centerpoint_model_spec(config, intensity_scale, notes)
    return write_checked_bundle(
        bundle_dir, spec,
        lambda path: export_onnx(model, path, num_voxels=min(check_voxels),  # type: ignore
                                 fold=False),
        config, lambda inputs: run_torch(model, inputs), check_voxels)  # type: ignore
