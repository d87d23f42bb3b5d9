"""Anchor3DHead losses as mmdet3d: sigmoid focal, smooth-L1 with sin-difference yaw, direction CE."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import torch
from torch.nn import functional as F

__all__ = ["LossConfig", "sigmoid_focal_loss", "smooth_l1_loss", "add_sin_difference",
           "head_losses"]


@dataclass(frozen=True)
class LossConfig:
    """mmdet3d pointpillars_hv_secfpn_kitti.py loss settings."""

    focal_gamma: float = 2.0
    focal_alpha: float = 0.25
    cls_weight: float = 1.0
    smooth_l1_beta: float = 1.0 / 9.0
    bbox_weight: float = 2.0
    dir_weight: float = 0.2


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float,
                       alpha: float) -> torch.Tensor:
    """Element-wise mmdet sigmoid focal loss (no reduction); targets are one-hot floats."""
    p = torch.sigmoid(logits)
    pt = (1 - p) * targets + p * (1 - targets)  # 1 - probability of the true label
    weight = (alpha * targets + (1 - alpha) * (1 - targets)) * pt.pow(gamma)
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * weight


def smooth_l1_loss(pred: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    """Element-wise mmdet smooth-L1 (no reduction)."""
    diff = torch.abs(pred - target)
    return torch.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)


def add_sin_difference(pred: torch.Tensor, target: torch.Tensor):
    """mmdet3d Anchor3DHead.add_sin_difference: yaw columns -> sin(a)cos(b), cos(a)sin(b)."""
    rad_pred = torch.sin(pred[..., 6:7]) * torch.cos(target[..., 6:7])
    rad_tg = torch.cos(pred[..., 6:7]) * torch.sin(target[..., 6:7])
    pred = torch.cat([pred[..., :6], rad_pred, pred[..., 7:]], dim=-1)
    target = torch.cat([target[..., :6], rad_tg, target[..., 7:]], dim=-1)
    return pred, target


def head_losses(cls_score: torch.Tensor, bbox_pred: torch.Tensor, dir_cls_pred: torch.Tensor,
                labels: torch.Tensor, label_weights: torch.Tensor, bbox_targets: torch.Tensor,
                pos_mask: torch.Tensor, dir_targets: torch.Tensor, avg_factor: float,
                cfg: LossConfig = LossConfig()) -> Dict[str, torch.Tensor]:
    """mmdet3d Anchor3DHead.loss_by_feat_single for one level, whole batch.

    Args:
        cls_score: [B, A*K, H, W] logits.
        bbox_pred: [B, A*7, H, W].
        dir_cls_pred: [B, A*2, H, W].
        labels: [B*H*W*A] int64 (K = background), anchors ordered (B, H, W, a).
        label_weights: [B*H*W*A] float.
        bbox_targets: [B*H*W*A, 7].
        pos_mask: [B*H*W*A] bool.
        dir_targets: [B*H*W*A] int64.
        avg_factor: mmdet3d num_total_samples: sum over samples of max(num_pos, 1).

    Returns:
        ``{"loss_cls", "loss_bbox", "loss_dir"}`` scalars.
    """
    k = cls_score.shape[1] * 7 // bbox_pred.shape[1]  # classes = (A*K) / A
    logits = cls_score.permute(0, 2, 3, 1).reshape(-1, k)
    onehot = F.one_hot(labels, k + 1)[:, :k].to(logits.dtype)
    loss_cls = (sigmoid_focal_loss(logits, onehot, cfg.focal_gamma, cfg.focal_alpha)
                * label_weights[:, None]).sum() / avg_factor * cfg.cls_weight
    box = bbox_pred.permute(0, 2, 3, 1).reshape(-1, 7)[pos_mask]
    tgt = bbox_targets[pos_mask]
    dirs = dir_cls_pred.permute(0, 2, 3, 1).reshape(-1, 2)[pos_mask]
    if box.shape[0] > 0:
        box, tgt = add_sin_difference(box, tgt)
        loss_bbox = smooth_l1_loss(box, tgt, cfg.smooth_l1_beta).sum() / avg_factor \
            * cfg.bbox_weight
        loss_dir = F.cross_entropy(dirs, dir_targets[pos_mask], reduction="sum") / avg_factor \
            * cfg.dir_weight
    else:
        loss_bbox = box.sum()
        loss_dir = dirs.sum()
    return {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "loss_dir": loss_dir}
