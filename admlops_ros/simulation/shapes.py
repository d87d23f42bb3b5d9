"""Object and clutter shapes built from primitives (cars, vans, pedestrians, cyclists, trees...).

Every labelled shape stays inside its label box (x along heading, y left, z above the bottom):
parts are inset by `INSET` from the box faces except the bottom, where wheels and feet touch.
"""
from __future__ import annotations

import numpy as np

from .primitives import ObjectFrame, PrimitiveList

INSET = 0.03  # metres between a labelled shape and its box faces (range noise margin)


def _paint(rng: np.random.Generator) -> float:
    """Car paint reflectivity: dark to bright (white/metallic) finishes."""
    return float(rng.choice([0.15, 0.25, 0.35, 0.5, 0.7], p=[0.25, 0.2, 0.2, 0.2, 0.15]))


def add_car(prims: PrimitiveList, rng: np.random.Generator, x: float, y: float, z: float,
            yaw: float, length: float, width: float, height: float, owner: int) -> None:
    """Car: bumpers and sills with wheel arches, four wheels, glass cabin and roof."""
    f = ObjectFrame(prims, x, y, z, yaw, owner)
    hl, hw = 0.5 * length - INSET, 0.5 * width - INSET
    top = height - INSET
    paint = _paint(rng)
    rw = float(np.clip(0.29 + 0.1 * (height - 1.5), 0.28, 0.34))
    axle_f = 0.5 * length - rng.uniform(0.75, 0.95)
    axle_r = -0.5 * length + rng.uniform(0.65, 0.85)
    clearance = rng.uniform(0.18, 0.28)
    belt = height * rng.uniform(0.55, 0.62)
    arch = 2.0 * rw + 0.04
    # lower body: overhangs, arches over the wheels, sill between them
    f.box(axle_f + rw + 0.05, hl, -hw, hw, 0.3, belt, paint)
    f.box(axle_f - rw - 0.05, axle_f + rw + 0.05, -hw, hw, arch, belt, paint)
    f.box(axle_r + rw + 0.05, axle_f - rw - 0.05, -hw, hw, clearance, belt, paint)
    f.box(axle_r - rw - 0.05, axle_r + rw + 0.05, -hw, hw, arch, belt, paint)
    f.box(-hl, axle_r - rw - 0.05, -hw, hw, 0.32, belt, paint)
    for u in (axle_f, axle_r):
        for v in (-1.0, 1.0):
            f.ellipsoid(u, v * (hw - 0.12), rw, rw, 0.11, rw, 0.05)
    # greenhouse: glass band narrower and shorter than the body, painted roof on top
    front = hl - rng.uniform(1.0, 1.4)
    rear = -hl + rng.uniform(0.3, 0.6)
    roof = top - 0.08
    f.box(rear, front, -hw + 0.1, hw - 0.1, belt, roof, 0.06)
    f.box(rear + 0.25, front - 0.3, -hw + 0.17, hw - 0.17, roof, top, paint)


def add_van(prims: PrimitiveList, rng: np.random.Generator, x: float, y: float, z: float,
            yaw: float, length: float, width: float, height: float, owner: int) -> None:
    """Van: tall boxy body with a short bonnet, wheels and a windscreen band."""
    f = ObjectFrame(prims, x, y, z, yaw, owner)
    hl, hw = 0.5 * length - INSET, 0.5 * width - INSET
    top = height - INSET
    paint = _paint(rng)
    rw = 0.34
    axle_f = 0.5 * length - rng.uniform(0.7, 0.9)
    axle_r = -0.5 * length + rng.uniform(0.8, 1.2)
    clearance = rng.uniform(0.22, 0.3)
    belt = height * rng.uniform(0.42, 0.5)
    arch = 2.0 * rw + 0.05
    bonnet = hl - rng.uniform(0.4, 0.7)
    f.box(axle_f + rw + 0.05, hl, -hw, hw, 0.32, belt, paint)
    f.box(axle_f - rw - 0.05, axle_f + rw + 0.05, -hw, hw, arch, belt, paint)
    f.box(axle_r + rw + 0.05, axle_f - rw - 0.05, -hw, hw, clearance, top, paint)
    f.box(axle_r - rw - 0.05, axle_r + rw + 0.05, -hw, hw, arch, top, paint)
    f.box(-hl, axle_r - rw - 0.05, -hw, hw, 0.35, top, paint)
    for u in (axle_f, axle_r):
        for v in (-1.0, 1.0):
            f.ellipsoid(u, v * (hw - 0.13), rw, rw, 0.12, rw, 0.05)
    # windscreen band and cab roof over the front axle
    f.box(axle_f - rw - 0.05, bonnet, -hw + 0.05, hw - 0.05, belt, top - 0.1, 0.06)
    f.box(axle_f - rw - 0.05, bonnet - 0.3, -hw + 0.05, hw - 0.05, top - 0.1, top, paint)


def add_pedestrian(prims: PrimitiveList, rng: np.random.Generator, x: float, y: float,
                   z: float, yaw: float, length: float, width: float, height: float,
                   owner: int) -> None:
    """Pedestrian: two legs (mid-stride), ellipsoid torso, arms and a head."""
    f = ObjectFrame(prims, x, y, z, yaw, owner)
    hl, hw = 0.5 * length - INSET, 0.5 * width - INSET
    top = height - INSET
    cloth = float(rng.uniform(0.15, 0.5))
    skin = 0.35
    leg_r = 0.075
    hip = 0.5 * height
    stride = rng.uniform(0.0, max(hl - leg_r, 0.0))
    f.cylinder(stride, 0.09, 0.0, hip, leg_r, cloth)
    f.cylinder(-stride, -0.09, 0.0, hip, leg_r, cloth)
    head_r = min(0.11, hw)
    shoulder = top - 2.0 * head_r - 0.04
    torso_h = 0.5 * (shoulder - hip + 0.08)
    f.ellipsoid(0.0, 0.0, hip - 0.04 + torso_h, min(0.14, hl), min(0.2, hw - 0.1), torso_h, cloth)
    swing = rng.uniform(-1.0, 1.0) * max(hl - 0.05, 0.0)
    arm_v = hw - 0.05
    f.cylinder(swing, arm_v, hip - 0.05, shoulder, 0.045, cloth)
    f.cylinder(-swing, -arm_v, hip - 0.05, shoulder, 0.045, cloth)
    f.ellipsoid(0.0, 0.0, top - head_r, head_r, head_r * 0.9, head_r, skin)


def add_cyclist(prims: PrimitiveList, rng: np.random.Generator, x: float, y: float, z: float,
                yaw: float, length: float, width: float, height: float, owner: int) -> None:
    """Cyclist: bicycle (two wheels, frame, handlebar) and rider (legs, leaning torso, head)."""
    f = ObjectFrame(prims, x, y, z, yaw, owner)
    hl, hw = 0.5 * length - INSET, 0.5 * width - INSET
    top = height - INSET
    cloth = float(rng.uniform(0.15, 0.5))
    metal = 0.5
    rw = min(0.34, 0.5 * (hl - 0.15))
    for u in (hl - rw, -hl + rw):
        f.ellipsoid(u, 0.0, rw, rw, 0.035, rw, 0.1)
    f.box(-hl + rw, hl - rw - 0.1, -0.03, 0.03, rw + 0.05, 2.0 * rw + 0.15, metal)
    f.box(hl - rw - 0.2, hl - rw - 0.05, -hw, hw, 2.0 * rw + 0.3, 2.0 * rw + 0.36, metal)
    saddle = 2.0 * rw + 0.25
    f.cylinder(-0.15, 0.12, rw, saddle, 0.07, cloth)
    f.cylinder(0.05, -0.12, rw, saddle, 0.07, cloth)
    head_r = 0.11
    torso_top = top - 2.0 * head_r
    torso_h = 0.5 * (torso_top - saddle)
    f.ellipsoid(0.0, 0.0, saddle + torso_h, 0.3, min(0.2, hw - 0.02), torso_h, cloth)
    f.ellipsoid(0.2, 0.0, top - head_r, head_r, head_r * 0.9, head_r, 0.35)


OBJECT_BUILDERS = {"Car": add_car, "Van": add_van, "Pedestrian": add_pedestrian,
                   "Cyclist": add_cyclist}


def add_tree(prims: PrimitiveList, rng: np.random.Generator, x: float, y: float,
             z: float) -> float:
    """Trunk and leafy crown; returns the footprint radius (trunk) for placement checks."""
    trunk_r = rng.uniform(0.12, 0.3)
    trunk_h = rng.uniform(2.7, 3.8)   # crown above the tallest object (van 2.6 m)
    crown = rng.uniform(1.2, 3.0)
    crown_z = crown * rng.uniform(0.8, 1.4)
    prims.add_cylinder(x, y, z - 0.1, z + trunk_h + 0.5 * crown_z, trunk_r, 0.3)
    prims.add_ellipsoid(x, y, z + trunk_h + crown_z, rng.uniform(0, np.pi), crown,
                        crown * rng.uniform(0.8, 1.0), crown_z, rng.uniform(0.35, 0.55))
    return trunk_r


def add_pole(prims: PrimitiveList, rng: np.random.Generator, x: float, y: float, z: float,
             road_yaw: float) -> float:
    """Street lamp, sign post or traffic light; returns the footprint radius."""
    kind = rng.choice(3, p=[0.45, 0.4, 0.15])
    r = rng.uniform(0.05, 0.12)
    if kind == 0:    # street lamp with an arm over the road
        h = rng.uniform(6.0, 9.0)
        prims.add_cylinder(x, y, z - 0.1, z + h, r, 0.55)
        prims.add_box(x, y, z + h - 0.15, z + h, road_yaw + 0.5 * np.pi, 2.5, 0.2, 0.5)
    elif kind == 1:  # sign: thin post and a plate
        h = rng.uniform(2.2, 3.0)
        prims.add_cylinder(x, y, z - 0.1, z + h, 0.04, 0.5)
        plate = rng.uniform(0.5, 0.8)
        prims.add_box(x, y, z + h - 0.7, z + h, road_yaw, 0.04, plate, 0.9)
        r = 0.5 * plate
    else:            # traffic-light post
        h = rng.uniform(3.5, 5.0)
        prims.add_cylinder(x, y, z - 0.1, z + h, r, 0.5)
        prims.add_box(x, y, z + h - 1.0, z + h, road_yaw, 0.3, 0.35, 0.2)
    return r


def add_street_furniture(prims: PrimitiveList, rng: np.random.Generator, x: float, y: float,
                         z: float, yaw: float) -> float:
    """Pedestrian-sized negatives: bin, bollard, hydrant, post box, bench; returns radius."""
    kind = rng.choice(5)
    if kind == 0:
        prims.add_box(x, y, z, z + rng.uniform(0.9, 1.25), yaw, 0.6, 0.6, rng.uniform(0.15, 0.4))
        return 0.45
    if kind == 1:
        prims.add_cylinder(x, y, z, z + rng.uniform(0.7, 1.1), 0.1, 0.5)
        return 0.1
    if kind == 2:
        prims.add_cylinder(x, y, z, z + 0.7, 0.16, 0.4)
        prims.add_ellipsoid(x, y, z + 0.7, 0.0, 0.16, 0.16, 0.1, 0.4)
        return 0.16
    if kind == 3:
        prims.add_box(x, y, z, z + rng.uniform(1.3, 1.7), yaw, 0.5, 0.45, 0.5)
        return 0.35
    prims.add_box(x, y, z + 0.4, z + 0.5, yaw, 1.8, 0.5, 0.3)
    prims.add_box(x, y, z, z + 0.4, yaw, 1.6, 0.1, 0.3)
    return 0.95


def add_bush(prims: PrimitiveList, rng: np.random.Generator, x: float, y: float,
             z: float) -> float:
    """Low bush; returns its footprint radius."""
    ax, ay = rng.uniform(0.5, 1.6), rng.uniform(0.5, 1.6)
    az = rng.uniform(0.4, 1.0)
    prims.add_ellipsoid(x, y, z + 0.6 * az, rng.uniform(0, np.pi), ax, ay, az,
                        rng.uniform(0.35, 0.55))
    return max(ax, ay)
