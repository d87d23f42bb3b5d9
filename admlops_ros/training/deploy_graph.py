"""Inference-only rewrite of the pillar front for export; torch only.

mmdet3d's PillarFeatureNet and scatter, traced as they are, cost about a quarter of the full KITTI
network's CPU time while holding a tiny share of its FLOPs: ten decorated channels concatenated
per point slot, BatchNorm1d between two transposes of a [V, M, 64] tensor, and a channels-first
canvas that the first convolution must reorder. In eval mode the PFN is affine in the raw point
up to its ReLU, so it folds exactly:

    BN(W . [p, p_xyz - mean_v, p_xyz - centre_v])  =  s * (W' . (p - centre_v) + b_v) + t

with ``W'`` (units x C) the decoration columns summed onto the x, y, z columns (``p - centre_v``
shifts x, y, z only), ``b_v`` a per-pillar bias from ``centre_v - mean_v`` (and ``centre_v``
unless legacy), and ``s, t`` the BN scale and shift; the scatter writes rows of a channels-last
canvas. The exported graph keeps the mmdeploy I/O contract (same inputs, same outputs, same
values up to float rounding); only the arithmetic inside changes. Configurations the fold does
not cover (``with_distance``, several PFN layers) export the original encoder.
"""
from __future__ import annotations

import copy
from typing import Tuple

import torch
from torch import nn

from admlops_ros.training.network import PillarFeatureNet, PointPillars, pillar_centres

__all__ = ["FoldedPillarFeatureNet", "RowScatter", "can_fold", "deploy_model"]


def can_fold(encoder: PillarFeatureNet) -> bool:
    """True when ``encoder`` is affine before its ReLU (no distance channel, one PFN layer)."""
    return not encoder._with_distance and len(encoder.pfn_layers) == 1


def _bn_scale_shift(norm: nn.BatchNorm1d) -> Tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``y = s * x + t`` (per channel)."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    return scale, norm.bias - scale * norm.running_mean


class FoldedPillarFeatureNet(nn.Module):
    """PillarFeatureNet (one PFN layer, mode 'max', eval mode) as one C -> units projection.

    Same inputs and output as :class:`PillarFeatureNet`: voxels [V, M, C] zero-padded points
    in the LiDAR frame (metres), num_points [V], coors [V, 4] (batch, z, y, x) ->
    [V, units] pillar features.
    """

    def __init__(self, encoder: PillarFeatureNet) -> None:
        super().__init__()
        if not can_fold(encoder):
            raise ValueError("FoldedPillarFeatureNet needs with_distance=False and one PFN layer")
        pfn = encoder.pfn_layers[0]
        weight = pfn.linear.weight.detach().double()  # [units, C + 3 * decorations]
        in_channels = weight.shape[1] - 3 * (encoder._with_cluster_center
                                             + encoder._with_voxel_center)
        scale, shift = (v.detach().double() for v in _bn_scale_shift(pfn.norm))
        # With p_xyz = centre + q: the decorations are q + centre - mean and q, and in legacy
        # mode (voxel centre on) the raw x, y, z are q too. Collect every weight of q in W',
        # the rest is a per-pillar bias from centre - mean (and centre when not legacy).
        w_offsets = weight[:, :in_channels].clone()
        w_cluster = torch.zeros_like(weight[:, :3])
        col = in_channels
        if encoder._with_cluster_center:
            w_cluster = weight[:, col:col + 3]
            col += 3
            w_offsets[:, :3] += w_cluster
        if encoder._with_voxel_center:
            w_offsets[:, :3] += weight[:, col:col + 3]
        raw_xyz_is_offset = encoder.legacy and encoder._with_voxel_center
        w_centre = torch.zeros_like(w_cluster) if raw_xyz_is_offset else weight[:, :3]
        self.register_buffer("w_offsets", (scale[:, None] * w_offsets).t().float().contiguous())
        self.register_buffer("w_cluster", (scale[:, None] * w_cluster).t().float().contiguous())
        self.register_buffer("w_centre", (scale[:, None] * w_centre).t().float().contiguous())
        self.register_buffer("shift", shift.float())
        self.with_cluster_center = encoder._with_cluster_center
        self.raw_xyz_is_offset = raw_xyz_is_offset
        self.voxel_size = (encoder.vx, encoder.vy, encoder.vz)
        self.offsets = (encoder.x_offset, encoder.y_offset, encoder.z_offset)

    def forward(self, features: torch.Tensor, num_points: torch.Tensor,
                coors: torch.Tensor) -> torch.Tensor:
        """[V, M, C] points, [V] counts, [V, 4] (b, z, y, x) -> [V, units] pillar features."""
        centre = pillar_centres(coors.type_as(features), self.voxel_size, self.offsets)  # [V, 3]
        bias = torch.zeros_like(self.shift).unsqueeze(0)  # [1, units], broadcast over V
        if self.with_cluster_center:
            mean = features[:, :, :3].sum(dim=1) / num_points.type_as(features).view(-1, 1)
            bias = bias + torch.matmul(centre - mean, self.w_cluster)
        if not self.raw_xyz_is_offset:
            bias = bias + torch.matmul(centre, self.w_centre)
        # Padded slots hold zeros, i.e. ``shift`` after BN. Filled with the pillar's first
        # point they cannot change the max over its real points, so one matmul and one max
        # over all slots give it (exact, no sentinel that fp16 would overflow); then the bias,
        # then ``shift`` wherever the pillar has padded slots. The matmul sees offsets from the
        # pillar centre (centimetres, not tens of metres), so bf16/fp16 engines keep precision.
        slots = torch.arange(features.shape[1], dtype=torch.int32, device=features.device)
        padded = (num_points.int().unsqueeze(1) <= slots.unsqueeze(0)).unsqueeze(-1)
        filled = torch.where(padded, features[:, :1, :], features)  # [V, M, C]
        centre_c = torch.nn.functional.pad(centre, (0, features.shape[2] - 3)).unsqueeze(1)
        projected = torch.matmul(filled - centre_c, self.w_offsets)  # [V, M, units]
        pooled = projected.max(dim=1)[0] + bias + self.shift
        partial = num_points.int().unsqueeze(1) < features.shape[1]  # [V, 1]
        pooled = torch.where(partial, torch.max(pooled, self.shift.expand_as(pooled)), pooled)
        return torch.relu(pooled)


class RowScatter(nn.Module):
    """PointPillarsScatter for one frame, written as rows of a channels-last canvas.

    ``canvas[y * nx + x, :] = feature`` (ScatterND) then a transpose to [1, C, ny, nx]: the
    same tensor as mmdeploy's ``canvas.scatter_`` along channels-first columns, in a layout a
    CPU convolution reads without a separate reorder.
    """

    def __init__(self, in_channels: int, grid_size: Tuple[int, int]) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.nx, self.ny = int(grid_size[0]), int(grid_size[1])

    def forward(self, voxel_features: torch.Tensor, coors: torch.Tensor, batch_size: int = 1,
                canvas_hw=None) -> torch.Tensor:
        """[V, C] features at coors (0, z, y, x) -> [1, C, ny, nx] canvas (zeros elsewhere)."""
        if batch_size != 1 or canvas_hw is not None:
            raise ValueError("RowScatter exports one full-grid frame; train with "
                             "PointPillarsScatter for batches and crops")
        canvas = torch.zeros(self.ny * self.nx, self.in_channels, dtype=voxel_features.dtype)
        rows = (coors[:, 2] * self.nx + coors[:, 3]).long()
        canvas[rows] = voxel_features
        return canvas.view(1, self.ny, self.nx, self.in_channels).permute(0, 3, 1, 2)


def deploy_model(model: PointPillars) -> PointPillars:
    """An eval-mode copy of ``model`` with the pillar feature net folded where possible."""
    deployed = copy.deepcopy(model).cpu().eval()
    if can_fold(deployed.voxel_encoder):
        deployed.voxel_encoder = FoldedPillarFeatureNet(deployed.voxel_encoder)
    scatter = deployed.middle_encoder
    deployed.middle_encoder = RowScatter(scatter.in_channels, (scatter.nx, scatter.ny))
    return deployed
