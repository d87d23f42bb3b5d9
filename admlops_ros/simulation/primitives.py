"""Ray-castable primitives (oriented boxes, vertical cylinders, ellipsoids) as one packed table."""
from __future__ import annotations

import math
from typing import List, Tuple

import numpy as np

# Primitive kinds.
BOX = 0
CYLINDER = 1
ELLIPSOID = 2

# Columns of the packed float64 table (one row per primitive, LiDAR frame, metres).
K_KIND = 0       # BOX / CYLINDER / ELLIPSOID
K_CX = 1         # centre x
K_CY = 2         # centre y
K_ZLO = 3        # lowest z
K_ZHI = 4        # highest z
K_COS = 5        # cos(yaw)
K_SIN = 6        # sin(yaw)
K_A = 7          # half length along heading (box) / radius (cylinder) / semi-axis x (ellipsoid)
K_B = 8          # half width (box) / semi-axis y (ellipsoid)
K_C = 9          # semi-axis z (ellipsoid; its centre z is (zlo + zhi) / 2)
K_REFL = 10      # material reflectivity 0..1
K_RADIUS = 11    # bounding radius in the xy plane (for azimuth culling)
K_PASS = 12      # probability that a ray passes through (foliage, fence mesh); 0 solid
NUM_COLUMNS = 13


class PrimitiveList:
    """Collects primitives; `pack()` gives the (table, owner) arrays the ray caster reads.

    ``owner`` is the labelled object index a primitive belongs to, or -1 for clutter.
    """

    def __init__(self) -> None:
        self._rows: List[Tuple[float, ...]] = []
        self._owner: List[int] = []

    def __len__(self) -> int:
        return len(self._rows)

    def add_box(self, cx: float, cy: float, z_lo: float, z_hi: float, yaw: float,
                length: float, width: float, refl: float, owner: int = -1,
                see_through: float = 0.0) -> None:
        """Box with yaw about +z; ``length`` along the heading, ``width`` across it.

        ``see_through`` (every primitive): probability that a ray passes it unseen (ragged
        foliage, fence mesh); labelled objects keep 0.
        """
        a, b = 0.5 * length, 0.5 * width
        self._rows.append((BOX, cx, cy, z_lo, z_hi, math.cos(yaw), math.sin(yaw), a, b, 0.0,
                           refl, math.hypot(a, b), see_through))
        self._owner.append(owner)

    def add_cylinder(self, cx: float, cy: float, z_lo: float, z_hi: float, radius: float,
                     refl: float, owner: int = -1, see_through: float = 0.0) -> None:
        """Vertical cylinder from ``z_lo`` to ``z_hi``."""
        self._rows.append((CYLINDER, cx, cy, z_lo, z_hi, 1.0, 0.0, radius, radius, 0.0, refl,
                           radius, see_through))
        self._owner.append(owner)

    def add_ellipsoid(self, cx: float, cy: float, cz: float, yaw: float, ax: float, ay: float,
                      az: float, refl: float, owner: int = -1,
                      see_through: float = 0.0) -> None:
        """Ellipsoid centred at (cx, cy, cz) with semi-axes (ax along heading, ay, az)."""
        self._rows.append((ELLIPSOID, cx, cy, cz - az, cz + az, math.cos(yaw), math.sin(yaw),
                           ax, ay, az, refl, max(ax, ay), see_through))
        self._owner.append(owner)

    def pack(self) -> Tuple[np.ndarray, np.ndarray]:
        """Returns (table [P, NUM_COLUMNS] float64, owner [P] int32)."""
        if not self._rows:
            return np.zeros((0, NUM_COLUMNS), np.float64), np.zeros(0, np.int32)
        return (np.asarray(self._rows, dtype=np.float64),
                np.asarray(self._owner, dtype=np.int32))


class ObjectFrame:
    """Places parts given in an object's frame (x along heading, y left, z above its bottom)."""

    def __init__(self, prims: PrimitiveList, x: float, y: float, z: float, yaw: float,
                 owner: int = -1) -> None:
        self.prims, self.x, self.y, self.z, self.yaw, self.owner = prims, x, y, z, yaw, owner
        self._c, self._s = math.cos(yaw), math.sin(yaw)

    def to_world(self, u: float, v: float) -> Tuple[float, float]:
        """World (x, y) of the object-frame point (u, v)."""
        return self._to_world(u, v)

    def _to_world(self, u: float, v: float) -> Tuple[float, float]:
        return self.x + self._c * u - self._s * v, self.y + self._s * u + self._c * v

    def box(self, u0: float, u1: float, v0: float, v1: float, z0: float, z1: float,
            refl: float, see_through: float = 0.0) -> None:
        """Axis-aligned (in the object frame) box u0..u1 x v0..v1 x z0..z1."""
        cx, cy = self._to_world(0.5 * (u0 + u1), 0.5 * (v0 + v1))
        self.prims.add_box(cx, cy, self.z + z0, self.z + z1, self.yaw, u1 - u0, v1 - v0, refl,
                           self.owner, see_through)

    def cylinder(self, u: float, v: float, z0: float, z1: float, radius: float,
                 refl: float) -> None:
        """Vertical cylinder at (u, v) from z0 to z1."""
        cx, cy = self._to_world(u, v)
        self.prims.add_cylinder(cx, cy, self.z + z0, self.z + z1, radius, refl, self.owner)

    def ellipsoid(self, u: float, v: float, zc: float, au: float, av: float, az: float,
                  refl: float) -> None:
        """Ellipsoid centred at (u, v, zc) with semi-axes (au, av, az) in the object frame."""
        cx, cy = self._to_world(u, v)
        self.prims.add_ellipsoid(cx, cy, self.z + zc, self.yaw, au, av, az, refl, self.owner)
