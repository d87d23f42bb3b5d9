"""Analytic FLOP count of a PointPillars config (dense part and pillar encoder); torch-free."""
from __future__ import annotations

from typing import Dict

from admlops_ros.training.configs import PointPillarsConfig

__all__ = ["count_flops", "flops_breakdown"]


def flops_breakdown(config: PointPillarsConfig, num_voxels: int = 0) -> Dict[str, float]:
    """FLOPs (2 per multiply-add) of each part of the network for one frame.

    Counts convolutions, transposed convolutions and linear layers (BN / ReLU / bias adds are
    left out: they are < 1% here and fold into the convolutions at inference).

    Args:
        config: the model config.
        num_voxels: V for the pillar encoder (its cost is per voxel); 0 leaves it out.

    Returns:
        ``{"pfn": ..., "backbone": ..., "neck": ..., "head": ..., "dense": ...}`` in FLOP.
    """
    nx, ny = config.grid_size
    h, w = ny, nx
    cin = config.feat_channels[-1]
    backbone = 0.0
    level_hw = []
    for cout, stride, n in zip(config.out_channels, config.layer_strides, config.layer_nums):
        h, w = -(-h // stride), -(-w // stride)
        backbone += 2.0 * h * w * 9 * (cin * cout + n * cout * cout)
        level_hw.append((h, w))
        cin = cout
    neck = 0.0
    for (lh, lw), cin, cout, up in zip(level_hw, config.out_channels, config.fpn_out_channels,
                                       config.upsample_strides):
        # ConvTranspose2d(k=s, stride=s): each input pixel does cin*cout*s*s MACs (s=1: 1x1 conv)
        neck += 2.0 * lh * lw * cin * cout * up * up
    fh, fw = config.feature_map_size
    head_out = config.num_anchors * (config.num_classes + 7 + 2)
    head = 2.0 * fh * fw * config.head_in_channels * head_out
    pfn = 0.0
    c = config.pfn_in_channels
    for i, f in enumerate(config.feat_channels):
        units = f if i == len(config.feat_channels) - 1 else f // 2
        pfn += 2.0 * num_voxels * config.max_points * c * units
        c = f
    dense = backbone + neck + head
    return {"pfn": pfn, "backbone": backbone, "neck": neck, "head": head, "dense": dense}


def count_flops(config: PointPillarsConfig, num_voxels: int = 0) -> float:
    """GFLOP per frame of the dense part (SECOND + SECONDFPN + head convs) [+ PFN at V voxels].

    Args:
        config: the model config.
        num_voxels: add the pillar encoder for this many voxels (0: dense part only).

    Returns:
        GFLOP (1e9 floating-point operations, 2 per multiply-add).
    """
    parts = flops_breakdown(config, num_voxels)
    return (parts["dense"] + parts["pfn"]) / 1e9
