"""Evaluation test fixtures: the lidar geometry module (or a shapely stand-in)."""
from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest


def _shapely_geometry() -> types.ModuleType:
    """Stand-in for admlops_ros.lidar.geometry (used only until the real module exists)."""
    from shapely.geometry import Polygon

    def poly(b):
        c, s = math.cos(b[6]), math.sin(b[6])
        pts = [(b[0] + c * x - s * y, b[1] + s * x + c * y)
               for x, y in ((b[3] / 2, b[4] / 2), (-b[3] / 2, b[4] / 2),
                            (-b[3] / 2, -b[4] / 2), (b[3] / 2, -b[4] / 2))]
        return Polygon(pts)

    def inter_bev(a, b):
        return np.array([[poly(x).intersection(poly(y)).area for y in b] for x in a]).reshape(
            len(a), len(b))

    def rotated_iou_bev(a, b):
        a, b = np.asarray(a, float).reshape(-1, 7), np.asarray(b, float).reshape(-1, 7)
        i = inter_bev(a, b)
        u = (a[:, 3] * a[:, 4])[:, None] + (b[:, 3] * b[:, 4])[None] - i
        return i / u

    def iou_3d(a, b):
        a, b = np.asarray(a, float).reshape(-1, 7), np.asarray(b, float).reshape(-1, 7)
        h = np.clip(np.minimum(a[:, None, 2] + a[:, None, 5], b[None, :, 2] + b[None, :, 5])
                    - np.maximum(a[:, None, 2], b[None, :, 2]), 0, None)
        i = inter_bev(a, b) * h
        u = np.prod(a[:, 3:6], 1)[:, None] + np.prod(b[:, 3:6], 1)[None] - i
        return i / u

    mod = types.ModuleType("admlops_ros.lidar.geometry")
    mod.rotated_iou_bev, mod.iou_3d = rotated_iou_bev, iou_3d
    return mod


@pytest.fixture
def geometry(monkeypatch):
    """The project's geometry module, or the shapely stand-in while it is not written yet."""
    try:
        import admlops_ros.lidar.geometry as geo  # noqa: F401
        return geo
    except ImportError:
        mod = _shapely_geometry()
        monkeypatch.setitem(sys.modules, "admlops_ros.lidar.geometry", mod)
        import admlops_ros
        monkeypatch.setattr(admlops_ros, "geometry", mod, raising=False)
        return mod
