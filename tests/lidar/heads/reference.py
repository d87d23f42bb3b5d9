"""Plain references the head tests compare with: shapely BEV IoU and a greedy NMS loop."""
from __future__ import annotations

import math

from shapely.geometry import Polygon


def poly(b5):
    x, y, dx, dy, yaw = [float(v) for v in b5]
    c, s = math.cos(yaw), math.sin(yaw)
    return Polygon([(x + lx * c - ly * s, y + lx * s + ly * c)
                    for lx, ly in ((-dx / 2, -dy / 2), (dx / 2, -dy / 2),
                                   (dx / 2, dy / 2), (-dx / 2, dy / 2))])


def shapely_iou(a5, b5):
    pa, pb = poly(a5), poly(b5)
    union = pa.union(pb).area
    return pa.intersection(pb).area / union if union > 0 else 0.0


def loop_nms(bev, scores, thr, iou_fn=shapely_iou):
    """Plain greedy NMS: visit by score (stable), keep unless IoU > thr with a kept box."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep = []
    for i in order:
        if all(iou_fn(bev[i], bev[j]) <= thr for j in keep):
            keep.append(i)
    return keep
