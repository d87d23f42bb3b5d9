"""Knowledge distillation of a PointPillars student (e.g. a pruned model) from a frozen teacher.

Both models see the same batch. The student learns the ground-truth losses plus:

- **head**: classification towards the teacher's sigmoid scores (binary cross-entropy with soft
  targets, weighted by ``|p_s - p_t| ** gamma`` as in quality focal loss, so the many easy
  background anchors do not swamp it); box deltas (smooth-L1, yaw by sine difference) and
  direction (KL divergence from the teacher's softmax) on every anchor, weighted by the
  teacher's highest class score there;
- **feature**: mean squared error between a 1x1-convolution adapter of the student's neck
  output and the teacher's neck output, per BEV cell, weighted by the teacher's highest score in
  the cell plus ``feat_background`` (foreground-focused feature imitation).

Each term is normalised like the ground-truth losses (by ``avg_factor``) or by its weights, and
scaled by its ``*_weight``. The adapter is training-only: the exported student keeps the mmdeploy
I/O contract of its config. torch only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from admlops_ros.errors import AdmlopsError
from admlops_ros.training.losses import LossConfig, add_sin_difference, smooth_l1_loss
from admlops_ros.training.network import PointPillars

__all__ = ["DistillConfig", "DistillError", "Distiller"]


class DistillError(AdmlopsError, ValueError):
    """Teacher and student cannot be distilled (different heads); the message names the field."""


@dataclass
class DistillConfig:
    """Weights of the distillation terms (added to the ground-truth losses)."""

    cls_weight: float = 1.0
    box_weight: float = 1.0
    dir_weight: float = 0.2
    feat_weight: float = 1.0
    feat_background: float = 0.05  # weight of a cell the teacher sees as background
    gamma: float = 2.0              # soft focal exponent of the classification term


class Distiller(nn.Module):
    """The frozen teacher and the trainable feature adapter; :meth:`losses` gives the terms."""

    def __init__(self, teacher: PointPillars, student: PointPillars,
                 cfg: DistillConfig = DistillConfig(),
                 loss_cfg: LossConfig = LossConfig()) -> None:
        super().__init__()
        t, s = teacher.config, student.config
        for name in ("class_names", "point_cloud_range", "voxel_size", "upsample_strides"):
            if tuple(getattr(t, name)) != tuple(getattr(s, name)):
                raise DistillError(f"teacher {t.name!r} and student {s.name!r} differ in "
                                   f"{name} ({getattr(t, name)} vs {getattr(s, name)}); "
                                   f"distil between models of the same grid and classes")
        self.cfg = cfg
        self.smooth_l1_beta = loss_cfg.smooth_l1_beta  # the ground-truth box loss's
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.adapter = nn.Conv2d(sum(s.fpn_out_channels), sum(t.fpn_out_channels), 1)

    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        self.teacher.eval()  # the teacher always normalises with its running statistics
        return self

    @torch.no_grad()
    def teacher_outputs(self, t: Dict[str, torch.Tensor], batch_size: int,
                        canvas_hw: Tuple[int, int]):
        """(neck features, (cls, reg, dir)) of the teacher for a :func:`batch_to_torch` batch."""
        feats = self.teacher.features_batch(t["voxels"], t["num_points"], t["coors"],
                                            batch_size, canvas_hw, t["scatter_coors"])
        return feats, self.teacher.bbox_head(feats)

    def losses(self, student_feats: torch.Tensor, student_heads, teacher_feats: torch.Tensor,
               teacher_heads, avg_factor: float) -> Dict[str, torch.Tensor]:
        """``{"loss_kd_cls", "loss_kd_box", "loss_kd_dir", "loss_kd_feat"}`` scalars."""
        cfg = self.cfg
        s_cls, s_reg, s_dir = student_heads
        t_cls, t_reg, t_dir = teacher_heads
        k = s_cls.shape[1] * 7 // s_reg.shape[1]
        s_logit = s_cls.permute(0, 2, 3, 1).reshape(-1, k)
        t_prob = torch.sigmoid(t_cls.permute(0, 2, 3, 1).reshape(-1, k))
        focal = (torch.sigmoid(s_logit) - t_prob).abs().pow(cfg.gamma).detach()
        loss_cls = (F.binary_cross_entropy_with_logits(s_logit, t_prob, reduction="none")
                    * focal).sum() / avg_factor * cfg.cls_weight
        weight = t_prob.max(dim=1).values  # [N] teacher's confidence per anchor
        box_s, box_t = add_sin_difference(s_reg.permute(0, 2, 3, 1).reshape(-1, 7),
                                          t_reg.permute(0, 2, 3, 1).reshape(-1, 7))
        norm = weight.sum().clamp(min=1.0)
        loss_box = (smooth_l1_loss(box_s, box_t, self.smooth_l1_beta).sum(dim=1) * weight).sum() \
            / norm * cfg.box_weight
        dir_s = F.log_softmax(s_dir.permute(0, 2, 3, 1).reshape(-1, 2), dim=1)
        dir_t = F.log_softmax(t_dir.permute(0, 2, 3, 1).reshape(-1, 2), dim=1)
        kl = F.kl_div(dir_s, dir_t, reduction="none", log_target=True).sum(dim=1)
        loss_dir = (kl * weight).sum() / norm * cfg.dir_weight
        cell = torch.sigmoid(t_cls).max(dim=1).values + cfg.feat_background  # [B, H, W]
        err = (self.adapter(student_feats) - teacher_feats).pow(2).mean(dim=1)
        loss_feat = (err * cell).sum() / cell.sum() * cfg.feat_weight
        return {"loss_kd_cls": loss_cls, "loss_kd_box": loss_box, "loss_kd_dir": loss_dir,
                "loss_kd_feat": loss_feat}
