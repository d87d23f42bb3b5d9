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
            yaw: float, length: float, width: float, height: float, owner: int,
            kitti: bool = False) -> None:
    """Car: bumpers and sills with wheel arches, four wheels, glass cabin and roof.

    ``kitti`` (the kitti_streets scenes): a raked windscreen and rear window (four receding
    glass steps), glass that lets 10-35 % of the rays through onto dark seats inside (kept
    low: real cars carry as many or more points than simulated ones), and a roof shorter
    than the cabin.
    """
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
    if kitti:
        _kitti_greenhouse(f, rng, front, rear, belt, roof, top, hw, paint)
        return
    f.box(rear, front, -hw + 0.1, hw - 0.1, belt, roof, 0.06)
    f.box(rear + 0.25, front - 0.3, -hw + 0.17, hw - 0.17, roof, top, paint)


def _kitti_greenhouse(f: ObjectFrame, rng: np.random.Generator, front: float, rear: float,
                      belt: float, roof: float, top: float, hw: float, paint: float) -> None:
    """Raked glass in four steps from the belt line to the roof, see-through, seats inside."""
    screen = rng.uniform(0.5, 0.85)       # windscreen run (horizontal), metres
    back = rng.uniform(0.3, 0.7)          # rear window run
    glass_pass = float(rng.uniform(0.1, 0.35))
    steps = 4
    dz = (roof - belt) / steps
    for k in range(steps):
        t = (k + 0.5) / steps
        inset = 0.1 + 0.03 * k
        f.box(rear + t * back, front - t * screen, -hw + inset, hw - inset, belt + k * dz,
              belt + (k + 1) * dz, 0.06, see_through=glass_pass)
    f.box(rear + back, front - screen, -hw + 0.2, hw - 0.2, roof, top, paint)
    f.box(rear + 0.2, front - 0.2, -hw + 0.3, hw - 0.3, belt - 0.2, belt + 0.45,
          float(rng.uniform(0.05, 0.15)))   # seats and dashboard


def add_van(prims: PrimitiveList, rng: np.random.Generator, x: float, y: float, z: float,
            yaw: float, length: float, width: float, height: float, owner: int,
            kitti: bool = False) -> None:
    """Van: tall boxy body with a short bonnet, wheels and a windscreen band (``kitti``: the
    windscreen raked in three steps and 10-35 % see-through onto a dark dashboard)."""
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
    if kitti:
        glass_pass = float(rng.uniform(0.1, 0.35))
        u0 = axle_f - rw - 0.05
        dz = (top - 0.1 - belt) / 3.0
        for k in range(3):
            f.box(u0, bonnet - 0.12 * (k + 0.5), -hw + 0.05, hw - 0.05, belt + k * dz,
                  belt + (k + 1) * dz, 0.06, see_through=glass_pass)
        f.box(u0 + 0.1, max(u0 + 0.2, bonnet - 0.45), -hw + 0.2, hw - 0.2, belt - 0.1,
              belt + 0.4, 0.1)                                      # dashboard and seats
        f.box(u0, bonnet - 0.3, -hw + 0.05, hw - 0.05, top - 0.1, top, paint)
        return
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


def _kitti_car(*args) -> None:
    add_car(*args, kitti=True)


def _kitti_van(*args) -> None:
    add_van(*args, kitti=True)


# SceneConfig.object_style -> builders ("kitti": raked, see-through glass on cars and vans)
OBJECT_STYLES = {"default": OBJECT_BUILDERS,
                 "kitti": {"Car": _kitti_car, "Van": _kitti_van, "Pedestrian": add_pedestrian,
                           "Cyclist": add_cyclist}}


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


# ---- hard negatives: unlabelled street clutter (SceneConfig.hard_negatives) -----------------
# Each builder gives a footprint (length along the road, width across it, metres) drawn from
# the scene's second random stream, and builds the primitives inside it. Vegetation and mesh
# are ``see_through``: a share of the rays passes (ragged returns, random gaps), so what the
# lidar sees of them is scattered, as on real bushes, hedges and crowns.

class _HardNegative:
    """A clutter class: `footprint(rng)` then `build(prims, rng, x, y, z, yaw, fp, height)`."""

    def footprint(self, rng: np.random.Generator):
        raise NotImplementedError

    def build(self, prims: PrimitiveList, rng: np.random.Generator, x: float, y: float,
              z: float, yaw: float, fp, height) -> None:
        raise NotImplementedError


def _leaf(rng: np.random.Generator) -> float:
    """Foliage reflectivity (dark to mid)."""
    return float(rng.uniform(0.15, 0.45))


class _Bush(_HardNegative):
    """2-5 overlapping ellipsoids 0.4-1.8 m tall, 40-70 % of the rays pass."""

    def footprint(self, rng):
        return (float(rng.uniform(1.2, 4.0)), float(rng.uniform(1.0, 2.5)))

    def build(self, prims, rng, x, y, z, yaw, fp, height):
        f = ObjectFrame(prims, x, y, z, yaw)
        for _ in range(int(rng.integers(2, 6))):
            au = rng.uniform(0.3, 0.5) * fp[0]
            av = rng.uniform(0.3, 0.5) * fp[1]
            az = rng.uniform(0.25, 0.9)
            u = rng.uniform(-0.5, 0.5) * (fp[0] - 2 * au) if fp[0] > 2 * au else 0.0
            v = rng.uniform(-0.5, 0.5) * (fp[1] - 2 * av) if fp[1] > 2 * av else 0.0
            cx, cy = f.to_world(u, v)
            prims.add_ellipsoid(cx, cy, z + rng.uniform(0.3, 0.9) * az, yaw, au, av, az,
                                _leaf(rng), see_through=float(rng.uniform(0.4, 0.7)))


class _Hedge(_HardNegative):
    """A hedge along the road, 5-25 m, 0.8-2.5 m tall with a ragged top (1-3 m pieces)."""

    def footprint(self, rng):
        return (float(rng.uniform(5.0, 25.0)), float(rng.uniform(0.6, 1.4)))

    def build(self, prims, rng, x, y, z, yaw, fp, height):
        f = ObjectFrame(prims, x, y, z, yaw)
        base = rng.uniform(0.8, 2.2)
        u = -0.5 * fp[0]
        while u < 0.5 * fp[0] - 0.3:
            piece = min(rng.uniform(1.0, 3.0), 0.5 * fp[0] - u)
            cx, cy = f.to_world(u + 0.5 * piece, rng.normal(0.0, 0.08))
            top = base + rng.normal(0.0, 0.2)
            zz = height(cx, cy)
            prims.add_box(cx, cy, zz - 0.1, zz + max(top, 0.5), yaw, piece,
                          fp[1] * rng.uniform(0.8, 1.0), _leaf(rng),
                          see_through=float(rng.uniform(0.25, 0.5)))
            u += piece


class _Tree(_HardNegative):
    """Trunk 1.5-4.5 m and one to three crowns up to 6-14 m: the top lasers' tall world."""

    def footprint(self, rng):
        return (0.8, 0.8)

    def build(self, prims, rng, x, y, z, yaw, fp, height):
        trunk_r = rng.uniform(0.1, 0.35)
        trunk_h = rng.uniform(1.5, 4.5)
        crown = rng.uniform(1.5, 4.0)
        crown_z = crown * rng.uniform(0.9, 1.6)
        prims.add_cylinder(x, y, z - 0.1, z + trunk_h + crown_z, trunk_r, rng.uniform(0.2, 0.4))
        for k in range(int(rng.integers(1, 4))):
            ox, oy = rng.normal(0.0, 0.3 * crown, 2) if k else (0.0, 0.0)
            c = crown * (rng.uniform(0.6, 0.9) if k else 1.0)
            prims.add_ellipsoid(x + ox, y + oy, z + trunk_h + crown_z * rng.uniform(0.8, 1.2),
                                rng.uniform(0, np.pi), c, c * rng.uniform(0.7, 1.0),
                                crown_z * (c / crown), _leaf(rng),
                                see_through=float(rng.uniform(0.45, 0.75)))


class _Pole(_HardNegative):
    """Street lamp, sign post or traffic light (`add_pole`)."""

    def footprint(self, rng):
        return (0.5, 0.5)

    def build(self, prims, rng, x, y, z, yaw, fp, height):
        add_pole(prims, rng, x, y, z, yaw)


class _Sign(_HardNegative):
    """Road signs: a plate on one post, a direction board on two posts, or an advert pillar."""

    def footprint(self, rng):
        return (float(rng.uniform(0.6, 2.6)), 0.4)

    def build(self, prims, rng, x, y, z, yaw, fp, height):
        f = ObjectFrame(prims, x, y, z, yaw)
        kind = rng.choice(3, p=[0.5, 0.35, 0.15])
        refl = float(rng.uniform(0.6, 0.95))   # retro-reflective faces
        if kind == 0:
            h = rng.uniform(1.8, 3.2)
            f.cylinder(0.0, 0.0, -0.1, h, 0.035, 0.45)
            w = min(fp[0], 0.9)
            f.box(-0.5 * w, 0.5 * w, -0.02, 0.02, h - rng.uniform(0.5, 0.9), h, refl)
        elif kind == 1:
            w = fp[0]
            h = rng.uniform(2.0, 3.5)
            for u in (-0.4 * w, 0.4 * w):
                f.cylinder(u, 0.0, -0.1, h, 0.05, 0.45)
            f.box(-0.5 * w, 0.5 * w, -0.03, 0.03, h - rng.uniform(0.8, 1.5), h, refl)
        else:
            f.cylinder(0.0, 0.0, -0.1, rng.uniform(2.5, 3.2), 0.6, float(rng.uniform(0.2, 0.6)))


class _Wall(_HardNegative):
    """Garden / retaining wall along the road, 5-30 m, 0.4-3 m tall."""

    def footprint(self, rng):
        return (float(rng.uniform(5.0, 30.0)), float(rng.uniform(0.2, 0.5)))

    def build(self, prims, rng, x, y, z, yaw, fp, height):
        top = rng.uniform(0.4, 3.0)
        zz = min(height(cx, cy) for cx, cy in _ends(x, y, yaw, fp[0]))
        prims.add_box(x, y, zz - 0.3, zz + top, yaw, fp[0], fp[1], float(rng.uniform(0.15, 0.5)))


class _Fence(_HardNegative):
    """Mesh / picket fence 1-2.2 m: posts every 2-3 m, a panel 50-80 % see-through."""

    def footprint(self, rng):
        return (float(rng.uniform(6.0, 30.0)), 0.12)

    def build(self, prims, rng, x, y, z, yaw, fp, height):
        f = ObjectFrame(prims, x, y, z, yaw)
        top = rng.uniform(1.0, 2.2)
        f.box(-0.5 * fp[0], 0.5 * fp[0], -0.02, 0.02, 0.0, top, float(rng.uniform(0.2, 0.5)),
              see_through=float(rng.uniform(0.5, 0.8)))
        u = -0.5 * fp[0]
        step = rng.uniform(2.0, 3.0)
        while u <= 0.5 * fp[0]:
            f.cylinder(u, 0.0, -0.1, top + 0.05, 0.04, 0.4)
            u += step


class _GuardRail(_HardNegative):
    """Steel guard rail along the road edge 0.5-0.8 m up, posts every 2 m, 20-60 m long."""

    def footprint(self, rng):
        return (float(rng.uniform(20.0, 60.0)), 0.3)

    def build(self, prims, rng, x, y, z, yaw, fp, height):
        f = ObjectFrame(prims, x, y, z, yaw)
        f.box(-0.5 * fp[0], 0.5 * fp[0], -0.06, 0.06, 0.45, 0.8, 0.6)
        u = -0.5 * fp[0]
        while u <= 0.5 * fp[0]:
            f.box(u - 0.05, u + 0.05, -0.05, 0.05, -0.1, 0.7, 0.45)
            u += 2.0


class _Trailer(_HardNegative):
    """Parked trailer (unlabelled: not a Car / Van): flat bed or box body, one axle, drawbar."""

    def footprint(self, rng):
        return (float(rng.uniform(2.5, 6.0)) + 1.2, float(rng.uniform(1.5, 2.4)))

    def build(self, prims, rng, x, y, z, yaw, fp, height):
        f = ObjectFrame(prims, x, y, z, yaw)
        length, width = fp[0] - 1.2, fp[1]
        hl, hw = 0.5 * length, 0.5 * width
        bed = rng.uniform(0.5, 0.8)
        paint = float(rng.uniform(0.15, 0.6))
        f.box(-hl, hl, -hw, hw, bed, bed + 0.3, paint)
        if rng.random() < 0.6:   # box body or tarp
            f.box(-hl, hl, -hw, hw, bed + 0.3, bed + rng.uniform(1.0, 2.4), paint)
        for v in (-1.0, 1.0):
            f.ellipsoid(0.0, v * (hw - 0.15), 0.3, 0.3, 0.1, 0.3, 0.05)
        f.box(hl, hl + 1.2, -0.05, 0.05, bed - 0.1, bed, 0.4)


class _Truck(_HardNegative):
    """Parked box truck (KITTI's Truck class, not a Car / Van: unlabelled here): a cab and a
    taller cargo box, 6-10 m long, 2.3-2.55 m wide, 2.8-3.8 m tall, two or three axles."""

    def footprint(self, rng):
        return (float(rng.uniform(6.0, 10.0)), float(rng.uniform(2.3, 2.55)))

    def build(self, prims, rng, x, y, z, yaw, fp, height):
        f = ObjectFrame(prims, x, y, z, yaw)
        length, width = fp
        hl, hw = 0.5 * length, 0.5 * width
        paint = float(rng.uniform(0.2, 0.7))
        cab = rng.uniform(1.8, 2.3)
        top = rng.uniform(2.8, 3.8)
        cab_top = top - rng.uniform(0.4, 0.8)
        f.box(hl - cab, hl, -hw + 0.05, hw - 0.05, 0.5, 1.5, paint)              # cab body
        f.box(hl - cab, hl - 0.05, -hw + 0.1, hw - 0.1, 1.5, cab_top - 0.15, 0.06)  # glass
        f.box(hl - cab, hl - 0.1, -hw + 0.05, hw - 0.05, cab_top - 0.15, cab_top, paint)
        f.box(-hl, hl - cab - 0.15, -hw, hw, rng.uniform(0.9, 1.2), top,
              float(rng.uniform(0.3, 0.8)))
        f.box(-hl + 0.3, hl - 0.3, -0.5, 0.5, 0.4, 1.0, 0.2)       # chassis rails
        axles = [hl - 1.2, -hl + 1.5] + ([-hl + 2.8] if length > 8.0 else [])
        for u in axles:
            for v in (-1.0, 1.0):
                f.ellipsoid(u, v * (hw - 0.25), 0.5, 0.5, 0.15, 0.5, 0.05)


class _Grass(_HardNegative):
    """Rough verge: flat ragged mounds 0.1-0.45 m high, 1.5-6 m across (the sparse ground
    patches at 30-45 m the shipped model calls cars)."""

    def footprint(self, rng):
        return (float(rng.uniform(2.0, 8.0)), float(rng.uniform(1.5, 6.0)))

    def build(self, prims, rng, x, y, z, yaw, fp, height):
        f = ObjectFrame(prims, x, y, z, yaw)
        for _ in range(int(rng.integers(2, 7))):
            u = rng.uniform(-0.4, 0.4) * fp[0]
            v = rng.uniform(-0.4, 0.4) * fp[1]
            cx, cy = f.to_world(u, v)
            az = rng.uniform(0.08, 0.3)
            prims.add_ellipsoid(cx, cy, height(cx, cy), yaw, rng.uniform(0.4, 1.5),
                                rng.uniform(0.4, 1.5), az, _leaf(rng),
                                see_through=float(rng.uniform(0.2, 0.5)))


class _Facade(_HardNegative):
    """Set-back building facade 8-30 m wide, 5-20 m tall (what the top lasers see)."""

    def footprint(self, rng):
        return (float(rng.uniform(8.0, 30.0)), float(rng.uniform(6.0, 14.0)))

    def build(self, prims, rng, x, y, z, yaw, fp, height):
        zz = min(height(cx, cy) for cx, cy in _ends(x, y, yaw, fp[0]))
        prims.add_box(x, y, zz - 0.3, zz + rng.uniform(5.0, 20.0), yaw, fp[0], fp[1],
                      float(rng.uniform(0.2, 0.6)))


def _ends(x: float, y: float, yaw: float, length: float):
    c, s = np.cos(yaw), np.sin(yaw)
    return ((x - 0.5 * length * c, y - 0.5 * length * s), (x, y),
            (x + 0.5 * length * c, y + 0.5 * length * s))


HARD_NEGATIVE_BUILDERS = {"bush": _Bush(), "hedge": _Hedge(), "tree": _Tree(), "pole": _Pole(),
                          "sign": _Sign(), "wall": _Wall(), "fence": _Fence(),
                          "guard_rail": _GuardRail(), "trailer": _Trailer(), "truck": _Truck(),
                          "grass": _Grass(),
                          "facade": _Facade()}
HARD_NEGATIVE_CLASSES = tuple(HARD_NEGATIVE_BUILDERS)
