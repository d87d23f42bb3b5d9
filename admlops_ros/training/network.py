"""PyTorch reference of mmdet3d PointPillars (state_dict names equal mmdet3d's); torch only."""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from admlops_ros.training.configs import PointPillarsConfig

__all__ = [
    "get_paddings_indicator",
    "PFNLayer",
    "pillar_centres",
    "PillarFeatureNet",
    "PointPillarsScatter",
    "SECOND",
    "SECONDFPN",
    "Anchor3DHeadConvs",
    "PointPillars",
    "build_model",
]

HeadOutputs = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def get_paddings_indicator(actual_num: torch.Tensor, max_num: int) -> torch.Tensor:
    """[V, max_num] bool mask, True for the first ``actual_num[v]`` point slots (mmdet3d)."""
    slots = torch.arange(max_num, dtype=torch.int, device=actual_num.device).view(1, -1)
    return actual_num.int().unsqueeze(1) > slots


class PFNLayer(nn.Module):
    """mmdet3d PFNLayer (mode 'max'): Linear (no bias) -> BN1d -> ReLU -> max over points."""

    def __init__(self, in_channels: int, out_channels: int, eps: float, momentum: float,
                 last_layer: bool = False) -> None:
        super().__init__()
        self.last_vfe = last_layer
        self.units = out_channels if last_layer else out_channels // 2
        self.norm = nn.BatchNorm1d(self.units, eps=eps, momentum=momentum)
        self.linear = nn.Linear(in_channels, self.units, bias=False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """[V, M, Cin] point features -> [V, 1, units] (last layer) or [V, M, 2 * units]."""
        x = self.linear(inputs)
        x = self.norm(x.permute(0, 2, 1).contiguous()).permute(0, 2, 1).contiguous()
        x = F.relu(x)
        x_max = torch.max(x, dim=1, keepdim=True)[0]
        if self.last_vfe:
            return x_max
        return torch.cat([x, x_max.repeat(1, inputs.shape[1], 1)], dim=2)


def pillar_centres(coors: torch.Tensor, voxel_size: Tuple[float, float, float],
                   offsets: Tuple[float, float, float]) -> torch.Tensor:
    """[V, 4] (batch, z, y, x) float voxel indices -> [V, 3] voxel centres (x, y, z), LiDAR
    frame, metres; ``offsets`` = half a voxel + the range minimum, per axis."""
    return torch.stack([coors[:, 3] * voxel_size[0] + offsets[0],
                        coors[:, 2] * voxel_size[1] + offsets[1],
                        coors[:, 1] * voxel_size[2] + offsets[2]], dim=1)


class PillarFeatureNet(nn.Module):
    """mmdet3d PillarFeatureNet with cluster-centre and voxel-centre decorations.

    With ``legacy=True`` (the mmdet3d default) mmdet3d computes the voxel-centre offset in place
    on a view of the input, so the first three raw channels are replaced by that offset too;
    this module computes the same values without modifying its input (as mmdeploy's rewrite).
    """

    def __init__(self, config: PointPillarsConfig) -> None:
        super().__init__()
        self.legacy = config.legacy
        self._with_distance = config.with_distance
        self._with_cluster_center = config.with_cluster_center
        self._with_voxel_center = config.with_voxel_center
        chans = [config.pfn_in_channels] + list(config.feat_channels)
        self.pfn_layers = nn.ModuleList([
            PFNLayer(chans[i], chans[i + 1], config.norm_eps, config.norm_momentum,
                     last_layer=(i == len(chans) - 2)) for i in range(len(chans) - 1)])
        self.vx, self.vy, self.vz = (float(v) for v in config.voxel_size)
        r = config.point_cloud_range
        self.x_offset = self.vx / 2 + r[0]
        self.y_offset = self.vy / 2 + r[1]
        self.z_offset = self.vz / 2 + r[2]

    def forward(self, features: torch.Tensor, num_points: torch.Tensor,
                coors: torch.Tensor) -> torch.Tensor:
        """Pillar features.

        Args:
            features: [V, M, C] float32 zero-padded points (x, y, z, ...), LiDAR frame.
            num_points: [V] int points per voxel.
            coors: [V, 4] int (batch, z, y, x) voxel indices.

        Returns:
            [V, feat_channels[-1]] float32.
        """
        xyz = features[:, :, :3]
        features_ls: List[torch.Tensor] = [features]
        if self._with_cluster_center:
            points_mean = xyz.sum(dim=1, keepdim=True) / num_points.type_as(features).view(-1, 1, 1)
            features_ls.append(xyz - points_mean)
        if self._with_voxel_center:
            centres = pillar_centres(coors.type_as(features), (self.vx, self.vy, self.vz),
                                     (self.x_offset, self.y_offset, self.z_offset))
            f_center = features[:, :, :3] - centres.unsqueeze(1)
            if self.legacy:  # mmdet3d wrote f_center into features[:, :, :3] in place
                features_ls[0] = torch.cat([f_center, features[:, :, 3:]], dim=2)
                xyz = f_center
            features_ls.append(f_center)
        if self._with_distance:
            features_ls.append(torch.norm(xyz, 2, 2, keepdim=True))
        x = torch.cat(features_ls, dim=-1)
        mask = get_paddings_indicator(num_points, x.shape[1]).unsqueeze(-1).type_as(x)
        x = x * mask
        for pfn in self.pfn_layers:
            x = pfn(x)
        return x.squeeze(1)


class PointPillarsScatter(nn.Module):
    """mmdet3d PointPillarsScatter as mmdeploy rewrites it (``canvas.scatter_``)."""

    def __init__(self, in_channels: int, grid_size: Tuple[int, int]) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.nx, self.ny = int(grid_size[0]), int(grid_size[1])

    def forward(self, voxel_features: torch.Tensor, coors: torch.Tensor, batch_size: int = 1,
                canvas_hw: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """Scatter [V, C] pillar features to a [B, C, ny, nx] canvas at coors (b, z, y, x).

        ``canvas_hw`` overrides (ny, nx) for training on BEV crops (coors already shifted).
        """
        ny, nx = canvas_hw if canvas_hw is not None else (self.ny, self.nx)
        canvas = torch.zeros(self.in_channels, batch_size * ny * nx,
                             dtype=voxel_features.dtype, device=voxel_features.device)
        indices = coors[:, 2] * nx + coors[:, 3]
        if batch_size > 1:
            indices = indices + coors[:, 0] * (ny * nx)
        indices = indices.long()
        canvas.scatter_(dim=1, index=indices.expand(canvas.shape[0], -1),
                        src=voxel_features.t())
        if batch_size == 1:
            return canvas.view(1, self.in_channels, ny, nx)
        return canvas.view(self.in_channels, batch_size, ny, nx).permute(1, 0, 2, 3).contiguous()


class SECOND(nn.Module):
    """mmdet3d SECOND backbone: per stage a strided 3x3 conv then ``layer_num`` 3x3 convs."""

    def __init__(self, config: PointPillarsConfig) -> None:
        super().__init__()
        in_filters = [config.feat_channels[-1]] + list(config.out_channels[:-1])
        blocks = []
        for i, layer_num in enumerate(config.layer_nums):
            cout = config.out_channels[i]
            layers: List[nn.Module] = [
                nn.Conv2d(in_filters[i], cout, 3, stride=config.layer_strides[i], padding=1,
                          bias=False),
                nn.BatchNorm2d(cout, eps=config.norm_eps, momentum=config.norm_momentum),
                nn.ReLU(inplace=True)]
            for _ in range(layer_num):
                layers += [nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                           nn.BatchNorm2d(cout, eps=config.norm_eps, momentum=config.norm_momentum),
                           nn.ReLU(inplace=True)]
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return outs


class SECONDFPN(nn.Module):
    """mmdet3d SECONDFPN: per level ConvTranspose2d(k=s, stride=s) (Conv2d for s < 1), BN, ReLU."""

    def __init__(self, config: PointPillarsConfig) -> None:
        super().__init__()
        deblocks = []
        for cin, cout, stride in zip(config.out_channels, config.fpn_out_channels,
                                     config.upsample_strides):
            if stride >= 1:
                up: nn.Module = nn.ConvTranspose2d(cin, cout, int(stride), stride=int(stride),
                                                   bias=False)
            else:
                k = int(round(1 / stride))
                up = nn.Conv2d(cin, cout, k, stride=k, bias=False)
            deblocks.append(nn.Sequential(
                up, nn.BatchNorm2d(cout, eps=config.norm_eps, momentum=config.norm_momentum),
                nn.ReLU(inplace=True)))
        self.deblocks = nn.ModuleList(deblocks)

    def forward(self, x: Sequence[torch.Tensor]) -> torch.Tensor:
        ups = [deblock(x[i]) for i, deblock in enumerate(self.deblocks)]
        return torch.cat(ups, dim=1) if len(ups) > 1 else ups[0]


class Anchor3DHeadConvs(nn.Module):
    """The three 1x1 convolutions of mmdet3d Anchor3DHead (conv_cls, conv_reg, conv_dir_cls)."""

    def __init__(self, config: PointPillarsConfig) -> None:
        super().__init__()
        a, c = config.num_anchors, config.head_in_channels
        self.conv_cls = nn.Conv2d(c, a * config.num_classes, 1)
        self.conv_reg = nn.Conv2d(c, a * 7, 1)
        self.conv_dir_cls = nn.Conv2d(c, a * 2, 1)

    def forward(self, x: torch.Tensor) -> HeadOutputs:
        return self.conv_cls(x), self.conv_reg(x), self.conv_dir_cls(x)


class PointPillars(nn.Module):
    """mmdet3d PointPillars (VoxelNet) from voxels to raw head maps.

    Submodule names equal mmdet3d's, so ``model.load_state_dict(ckpt["state_dict"])`` works
    with ``strict=True`` for an mmdet3d checkpoint of the same config.
    """

    def __init__(self, config: PointPillarsConfig) -> None:
        super().__init__()
        self.config = config
        self.voxel_encoder = PillarFeatureNet(config)
        self.middle_encoder = PointPillarsScatter(config.feat_channels[-1], config.grid_size)
        self.backbone = SECOND(config)
        self.neck = SECONDFPN(config)
        self.bbox_head = Anchor3DHeadConvs(config)

    def forward(self, voxels: torch.Tensor, num_points: torch.Tensor,
                coors: torch.Tensor) -> HeadOutputs:
        """Raw head outputs of one frame (the exported graph).

        Args:
            voxels: [V, M, C] float32 zero-padded points, LiDAR frame.
            num_points: [V] int32 points per voxel.
            coors: [V, 4] int32 (0, z, y, x).

        Returns:
            cls_score [1, A*K, H, W], bbox_pred [1, A*7, H, W], dir_cls_pred [1, A*2, H, W].
        """
        return self.forward_batch(voxels, num_points, coors)

    def forward_batch(self, voxels: torch.Tensor, num_points: torch.Tensor, coors: torch.Tensor,
                      batch_size: int = 1,
                      canvas_hw: Optional[Tuple[int, int]] = None,
                      scatter_coors: Optional[torch.Tensor] = None) -> HeadOutputs:
        """Raw head outputs of a batch (training); coors column 0 is the sample index.

        Args:
            voxels, num_points, coors: as :meth:`forward`, voxels of all samples stacked.
            batch_size: B.
            canvas_hw: (ny, nx) of a training crop; None: the full grid.
            scatter_coors: [V, 4] (b, z, y, x) inside the crop canvas; None: ``coors``
                (the pillar features always use the full-grid ``coors``).

        Returns:
            cls_score [B, A*K, H, W], bbox_pred [B, A*7, H, W], dir_cls_pred [B, A*2, H, W].
        """
        return self.bbox_head(self.features_batch(voxels, num_points, coors, batch_size,
                                                  canvas_hw, scatter_coors))

    def features_batch(self, voxels: torch.Tensor, num_points: torch.Tensor,
                       coors: torch.Tensor, batch_size: int = 1,
                       canvas_hw: Optional[Tuple[int, int]] = None,
                       scatter_coors: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Neck output [B, sum(fpn_out_channels), H, W] (the head's input); arguments as
        :meth:`forward_batch`. Distillation matches a student's to a teacher's."""
        feats = self.voxel_encoder(voxels, num_points, coors)
        x = self.middle_encoder(feats, coors if scatter_coors is None else scatter_coors,
                                batch_size, canvas_hw)
        return self.neck(self.backbone(x))

    def init_weights(self) -> None:
        """mmdet3d's initialisation: Kaiming convs, head Normal(0.01), cls bias prior 0.01."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for conv in (self.bbox_head.conv_cls, self.bbox_head.conv_reg,
                     self.bbox_head.conv_dir_cls):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.constant_(self.bbox_head.conv_cls.bias, -math.log((1 - 0.01) / 0.01))


def build_model(config: PointPillarsConfig, init: bool = True) -> PointPillars:
    """A PointPillars model for ``config`` (mmdet3d initialisation when ``init``)."""
    model = PointPillars(config)
    if init:
        model.init_weights()
    return model
