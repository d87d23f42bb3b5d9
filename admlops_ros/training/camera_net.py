"""Tiny anchor-free single-stage 2D detector (TTFNet/CenterNet-style head at stride 4).

Forward: image [B, 3, H, W] (normalised RGB) -> (boxes [B, M, 4] x1y1x2y2 network-input pixels,
scores [B, M, C] sigmoid), one box per stride-4 cell (M = H/4 * W/4). Scores are kept only at
3x3 local maxima of each class heatmap (CenterNet's max-pool NMS; other cells score 0), so the
exporter's in-graph NMS only has to drop the few overlapping peaks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

STRIDE = 4


@dataclass(frozen=True)
class CameraNetConfig:
    """Widths of the tiny detector.

    Attributes:
        num_classes: heatmap channels.
        widths: channels at strides 2, 4, 8, 16, 32.
        neck: channels of the stride-4 head input.
        box_scale: predicted ltrb distance = exp(raw) * box_scale pixels.
    """

    num_classes: int = 3
    widths: Tuple[int, int, int, int, int] = (12, 16, 32, 48, 64)
    neck: int = 24
    box_scale: float = 16.0


def _cbr(cin: int, cout: int, stride: int = 1, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Block(nn.Module):
    """Strided conv then a residual 3x3 pair."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.down = _cbr(cin, cout, 2)
        self.a = _cbr(cout, cout)
        self.b = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        return F.relu(x + self.b(self.a(x)))


class CameraNet(nn.Module):
    """Backbone (5 strided stages), top-down neck to stride 4, shared head conv, heatmap + ltrb."""

    def __init__(self, cfg: CameraNetConfig = CameraNetConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.widths
        self.stem = _cbr(3, w[0], 2)
        self.s4 = _Block(w[0], w[1])
        self.s8 = _Block(w[1], w[2])
        self.s16 = _Block(w[2], w[3])
        self.s32 = _Block(w[3], w[4])
        n = cfg.neck
        self.lat32 = _cbr(w[4], n, k=1)
        self.lat16 = _cbr(w[3], n, k=1)
        self.lat8 = _cbr(w[2], n, k=1)
        self.lat4 = _cbr(w[1], n, k=1)
        self.fuse16 = _cbr(n, n)
        self.fuse8 = _cbr(n, n)
        self.fuse4 = _cbr(n, n)
        self.head = _cbr(n, n)
        self.heat = nn.Conv2d(n, cfg.num_classes, 1)
        self.reg = nn.Conv2d(n, 4, 1)
        nn.init.constant_(self.heat.bias, -4.6)   # prior 0.01
        nn.init.zeros_(self.reg.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Stride-4 neck features [B, neck, H/4, W/4]."""
        c2 = self.stem(x)
        c4 = self.s4(c2)
        c8 = self.s8(c4)
        c16 = self.s16(c8)
        c32 = self.s32(c16)
        p = self.lat32(c32)
        p = self.fuse16(self.lat16(c16) + F.interpolate(p, scale_factor=2.0, mode="nearest"))
        p = self.fuse8(self.lat8(c8) + F.interpolate(p, scale_factor=2.0, mode="nearest"))
        p = self.fuse4(self.lat4(c4) + F.interpolate(p, scale_factor=2.0, mode="nearest"))
        return p

    def raw(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(heat logits [B, C, h, w], ltrb distances [B, 4, h, w] pixels) for training."""
        p = self.head(self.features(x))
        ltrb = torch.exp(self.reg(p).clamp(-6.0, 6.0)) * self.cfg.box_scale
        return self.heat(p), ltrb

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        heat, ltrb = self.raw(x)
        b, c, h, w = heat.shape
        score = torch.sigmoid(heat)
        peak = F.max_pool2d(score, 3, 1, 1)
        score = score * (peak == score).to(score.dtype)
        ys = (torch.arange(h, dtype=x.dtype) + 0.5) * STRIDE
        xs = (torch.arange(w, dtype=x.dtype) + 0.5) * STRIDE
        cy = ys.view(1, h, 1).expand(1, h, w)
        cx = xs.view(1, 1, w).expand(1, h, w)
        boxes = torch.stack([cx - ltrb[:, 0], cy - ltrb[:, 1], cx + ltrb[:, 2],
                             cy + ltrb[:, 3]], dim=-1)                # [B, h, w, 4]
        return boxes.reshape(b, h * w, 4), score.permute(0, 2, 3, 1).reshape(b, h * w, c)


def cell_centres(h: int, w: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(cx [h, w], cy [h, w]) of the stride-4 cells, network-input pixels."""
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) * STRIDE
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) * STRIDE
    return xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w)
