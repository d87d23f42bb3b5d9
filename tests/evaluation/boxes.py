"""Box helpers shared by the evaluation tests."""
from __future__ import annotations

import numpy as np


def car(x=10.0, y=0.0, z=-1.6, yaw=0.0, dx=4.0, dy=2.0, dz=1.5):
    return np.array([x, y, z, dx, dy, dz, yaw])
