"""Random street scenes from a seed: terrain, road, sidewalks, buildings, clutter and objects.

The ego vehicle drives in a right-hand-traffic lane at the origin, heading about +x. A scene is
a pure function of (seed, SceneConfig, sensor mount height).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from . import raycast as rc
from .primitives import PrimitiveList
from .sensor import DEFAULT_MOUNT_HEIGHT
from .shapes import (HARD_NEGATIVE_BUILDERS, HARD_NEGATIVE_CLASSES, OBJECT_STYLES, add_bush,
                     add_pole, add_street_furniture, add_tree)

from admlops_ros.errors import AdmlopsError

CLASS_NAMES = ("Car", "Van", "Pedestrian", "Cyclist")
# (mean, std, min, max) of (length dx, width dy, height dz) per class, metres, around KITTI.
DIMENSIONS = {
    "Car": ((3.9, 0.35, 3.2, 4.9), (1.62, 0.09, 1.4, 1.95), (1.56, 0.12, 1.3, 1.9)),
    "Van": ((5.1, 0.4, 4.3, 6.0), (1.92, 0.1, 1.7, 2.2), (2.1, 0.18, 1.8, 2.6)),
    "Pedestrian": ((0.8, 0.12, 0.5, 1.1), (0.62, 0.08, 0.5, 0.9), (1.74, 0.1, 1.5, 1.95)),
    "Cyclist": ((1.76, 0.12, 1.45, 2.1), (0.6, 0.06, 0.45, 0.8), (1.73, 0.08, 1.5, 1.95)),
}
EGO_BOX = (-0.8, 0.0, 4.8, 2.0)   # ego vehicle footprint (cx, cy, length, width), LiDAR frame
ROAD_EXTENT = 130.0                # metres of road modelled on each side of the ego
SCENE_KINDS = ("urban", "residential", "rural")
DISTANCE_SKEW = 1.4                # u ** skew: more objects near (median ~28 m ahead, as KITTI)


class SceneConfigError(AdmlopsError, ValueError):
    """A scene configuration value is invalid."""


@dataclass(frozen=True)
class SceneConfig:
    """What a random scene contains.

    Attributes:
        num_cars: inclusive (min, max) of vehicles per frame (cars and vans).
        num_pedestrians: inclusive (min, max) of pedestrians.
        num_cyclists: inclusive (min, max) of cyclists.
        van_fraction: probability that a vehicle is a van.
        min_distance, max_distance: horizontal distance of object centres from the sensor, m.
        front_fraction: share of objects placed ahead of the ego (x > 0) rather than behind.
        curved_road_prob: probability of a gently curved road (radius 250..700 m).
        clutter: multiplier for trees, poles, bushes and street furniture.
        max_slope: bound of the terrain's plane gradient (rise / run).
        bump_slope: bound of each of the terrain's three sine waves' slope.
        scene_kinds: kinds to draw from (urban, residential, rural); a kind given twice is
            drawn twice as often.
        ground_pitch_deg: () or (mean, std, limit): the terrain plane's slope along +x (rising
            forward) drawn from N(mean, std) clipped to +-limit, replacing the uniform
            ``max_slope`` draw (domain randomisation of the sensor's pitch on the road).
        ground_roll_deg: () or (mean, std, limit): the same across the road (rising left).
        ground_drop_m: () or (mean, std, limit): the road under the sensor this much lower
            than ``mount_height`` (N(mean, std) clipped to +-limit): the real KITTI ground sits
            1.69-1.79 m below the sensor (median 1.75) for the nominal 1.73 m mount.
        hard_negatives: ((class, mean count per frame), ...) unlabelled street clutter placed
            by `shapes.HARD_NEGATIVE_BUILDERS` (classes `shapes.HARD_NEGATIVE_CLASSES`: bush,
            hedge, tree, pole, sign, wall, fence, guard_rail, trailer, truck, grass, facade); each
            count is Poisson with that mean. Empty: none (the default scene).
        object_style: ``default`` or ``kitti`` (`shapes.OBJECT_STYLES`: cars and vans with
            raked, partly see-through glass and seats inside).

    Everything the last three fields add is drawn from a second random stream of the seed,
    so a config without them gives exactly the scenes it always gave.
    """

    num_cars: Tuple[int, int] = (3, 15)
    num_pedestrians: Tuple[int, int] = (0, 8)
    num_cyclists: Tuple[int, int] = (0, 4)
    van_fraction: float = 0.15
    min_distance: float = 3.0
    max_distance: float = 70.0
    front_fraction: float = 0.8
    curved_road_prob: float = 0.4
    clutter: float = 1.0
    max_slope: float = 0.02
    bump_slope: float = 0.012
    scene_kinds: Tuple[str, ...] = SCENE_KINDS
    ground_pitch_deg: Tuple[float, ...] = ()
    ground_roll_deg: Tuple[float, ...] = ()
    ground_drop_m: Tuple[float, ...] = ()
    hard_negatives: Tuple[Tuple[str, float], ...] = ()
    object_style: str = "default"

    def __post_init__(self) -> None:
        for name in ("num_cars", "num_pedestrians", "num_cyclists"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise SceneConfigError(f"SceneConfig.{name}={(lo, hi)} needs 0 <= min <= max")
        if not 0.0 < self.min_distance < self.max_distance:
            raise SceneConfigError(
                f"SceneConfig needs 0 < min_distance < max_distance, got "
                f"{self.min_distance}, {self.max_distance}")
        unknown = [k for k in self.scene_kinds if k not in SCENE_KINDS]
        if unknown or not self.scene_kinds:
            raise SceneConfigError(
                f"SceneConfig.scene_kinds={self.scene_kinds}: choose from {SCENE_KINDS}")
        for name in ("ground_pitch_deg", "ground_roll_deg", "ground_drop_m"):
            v = getattr(self, name)
            if v and (len(v) != 3 or v[1] < 0.0 or v[2] <= 0.0 or v[2] > 10.0):
                raise SceneConfigError(
                    f"SceneConfig.{name}={v}: give (mean, std >= 0, limit in (0, 10]) or ()")
        if self.object_style not in OBJECT_STYLES:
            raise SceneConfigError(f"SceneConfig.object_style={self.object_style!r}: choose "
                                   f"from {sorted(OBJECT_STYLES)}")
        for item in self.hard_negatives:
            if (len(item) != 2 or item[0] not in HARD_NEGATIVE_CLASSES
                    or not 0.0 <= float(item[1]) <= 500.0):
                raise SceneConfigError(
                    f"SceneConfig.hard_negatives entry {item!r}: give (class, mean count "
                    f"0..500) with class one of {HARD_NEGATIVE_CLASSES}")

    def hard_negative_counts(self) -> Dict[str, float]:
        """Mean count per frame of each hard-negative class (0 for the ones not given)."""
        out = {name: 0.0 for name in HARD_NEGATIVE_CLASSES}
        for name, mean in self.hard_negatives:
            out[name] += float(mean)
        return out

    @classmethod
    def kitti_streets(cls, **overrides) -> "SceneConfig":
        """KITTI-like streets (preset ``kitti_streets``): the default object mix on mostly
        urban / residential streets with the clutter that made the shipped model fire on real
        scans (docs/real_vs_sim.md: vegetation, poles and signs, walls and fences, sparse
        ground patches at 30-45 m, tall facades and crowns for the top lasers, parked
        trailers) as unlabelled hard negatives, and the ground tilted as measured on the
        real scans: pitch +0.65 deg median (+0.2..+1.1), roll -3.2..+0.6, randomised as pitch
        ~N(0.5, 0.4) and roll ~N(0, 1.2) clipped to +-1.5 / +-3.5 deg, the road 1.75 m below
        the sensor (median; 1.69-1.79) as a drop below the 1.73 m mount ~N(0.02, 0.03) clipped
        to +-0.08 m (the real distributions beyond 12 frames are unknown). ``overrides`` replace fields, e.g.
        ``hard_negatives=(("bush", 20.0),)`` for one class only. Cars and vans have raked,
        partly see-through glass (``object_style="kitti"``).
        """
        kw = dict(scene_kinds=("urban", "urban", "residential", "residential", "rural"),
                  ground_pitch_deg=(0.5, 0.4, 1.5), ground_roll_deg=(0.0, 1.2, 3.5),
                  ground_drop_m=(0.02, 0.03, 0.08),
                  hard_negatives=KITTI_HARD_NEGATIVES, object_style="kitti")
        kw.update(overrides)
        return cls(**kw)

    @classmethod
    def preset(cls, name: str) -> "SceneConfig":
        """A named scene mix: ``default`` (``SceneConfig()``) or ``city`` (the data loop's
        domain B: a city-centre fleet route, up to twice the pedestrians and cyclists, so
        some frames are crowded and others are not).

        Raises:
            SceneConfigError: unknown name.
        """
        make = _SCENE_PRESETS.get(str(name).lower())
        if make is None:
            raise SceneConfigError(f"unknown scene preset {name!r}; choose one of "
                                   f"{sorted(_SCENE_PRESETS)}")
        return make()


# Mean count per frame of each clutter class in `SceneConfig.kitti_streets` (the real labelled
# frames' false positives: vegetation 79, objects 34, walls / fences 31, ground 25 over 6
# frames, on top of the default scene's own trees, poles and buildings).
KITTI_HARD_NEGATIVES = (("bush", 20.0), ("hedge", 10.0), ("tree", 16.0), ("pole", 8.0),
                        ("sign", 6.0), ("wall", 8.0), ("fence", 8.0), ("guard_rail", 1.0),
                        ("trailer", 1.5), ("truck", 0.7), ("grass", 8.0), ("facade", 14.0))

_SCENE_PRESETS = {
    "default": SceneConfig,
    "kitti_streets": SceneConfig.kitti_streets,
    "city": lambda: SceneConfig(num_cars=(2, 18), num_pedestrians=(0, 16),
                                num_cyclists=(0, 8)),
}


@dataclass
class Scene:
    """A generated scene in the LiDAR frame (sensor at the origin, ground at ~ -mount_height).

    Attributes:
        prims: [P, NUM_COLUMNS] float64 primitive table (see `primitives`).
        owner: [P] int32 labelled object index per primitive, -1 for clutter.
        terrain: terrain parameters (see `raycast.terrain_height`).
        road: road parameters (see `raycast.road_coordinates`).
        boxes: [M, 7] float32 (x, y, z bottom-centre, dx, dy, dz, yaw) per object.
        names: class name per object.
        kind: urban / residential / rural.
    """

    prims: np.ndarray
    owner: np.ndarray
    terrain: np.ndarray
    road: np.ndarray
    boxes: np.ndarray
    names: List[str]
    kind: str

    def ground_height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Terrain z (LiDAR frame, metres) at points (x, y); sidewalks stand on top of it."""
        x = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
        y = np.ascontiguousarray(y, dtype=np.float64).reshape(-1)
        return rc.terrain_height_many(x, y, self.terrain)


class _Road:
    """Centreline geometry (line or arc) mirrored from `raycast.road_coordinates`."""

    def __init__(self, rp: np.ndarray) -> None:
        self.rp = rp
        self.kappa = float(rp[rc.R_KAPPA]) if rp[rc.R_KIND] == 1.0 else 0.0
        self.psi0 = float(rp[rc.R_PSI0])
        self.p0 = np.array([rp[rc.R_P0X], rp[rc.R_P0Y]])

    def heading(self, s: float) -> float:
        return self.psi0 + self.kappa * s

    def point(self, s: float, d: float) -> Tuple[float, float]:
        """World (x, y) at arc length s and lateral offset d (+ left)."""
        if self.kappa == 0.0:
            c, sn = math.cos(self.psi0), math.sin(self.psi0)
            return (self.p0[0] + s * c - d * sn, self.p0[1] + s * sn + d * c)
        psi = self.heading(s)
        cx = self.p0[0] - math.sin(self.psi0) / self.kappa
        cy = self.p0[1] + math.cos(self.psi0) / self.kappa
        nx, ny = -math.sin(psi), math.cos(psi)
        k = d - 1.0 / self.kappa
        return cx + k * nx, cy + k * ny


def _rect_corners(cx: float, cy: float, length: float, width: float, yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    u = np.array([0.5, 0.5, -0.5, -0.5]) * length
    v = np.array([0.5, -0.5, -0.5, 0.5]) * width
    return np.stack([cx + c * u - s * v, cy + s * u + c * v], axis=1)


class _Footprints:
    """BEV rectangles already occupied; overlap test by separating axes, vectorised."""

    def __init__(self) -> None:
        self.corners: List[np.ndarray] = []
        self._stack: Optional[np.ndarray] = None

    def add(self, corners: np.ndarray) -> None:
        self.corners.append(corners)
        self._stack = None

    def overlaps(self, cand: np.ndarray) -> bool:
        if not self.corners:
            return False
        if self._stack is None:
            self._stack = np.stack(self.corners)
        rects = self._stack                                   # [K, 4, 2]
        centre = cand.mean(axis=0)
        reach = np.linalg.norm(cand - centre, axis=1).max()
        rc_ = rects.mean(axis=1)
        rr = np.linalg.norm(rects - rc_[:, None], axis=2).max(axis=1)
        near = np.linalg.norm(rc_ - centre, axis=1) < reach + rr
        if not near.any():
            return False
        rects = rects[near]
        axes_c = np.stack([cand[1] - cand[0], cand[3] - cand[0]])          # [2, 2]
        axes_r = np.stack([rects[:, 1] - rects[:, 0], rects[:, 3] - rects[:, 0]], 1)  # [K,2,2]
        # candidate axes
        pc = cand @ axes_c.T                                   # [4, 2]
        pr = np.einsum("kpd,ad->kpa", rects, axes_c)           # [K, 4, 2]
        sep = (pr.max(1) < pc.min(0)) | (pr.min(1) > pc.max(0))
        # rectangle axes
        pc2 = np.einsum("pd,kad->kpa", cand, axes_r)           # [K, 4, 2]
        pr2 = np.einsum("kpd,kad->kpa", rects, axes_r)
        sep2 = (pr2.max(1) < pc2.min(1)) | (pr2.min(1) > pc2.max(1))
        return bool((~(sep.any(1) | sep2.any(1))).any())


def _terrain(rng: np.random.Generator, cfg: SceneConfig, mount_height: float) -> np.ndarray:
    tp = np.zeros(rc.TERRAIN_PARAMS, np.float64)
    tp[0] = -mount_height
    tp[1:3] = rng.uniform(-cfg.max_slope, cfg.max_slope, 2) / math.sqrt(2.0)
    for i in range(rc.NUM_TERRAIN_WAVES):
        lam = rng.uniform(40.0, 150.0)
        k = 2.0 * math.pi / lam
        ang = rng.uniform(0.0, 2.0 * math.pi)
        o = 3 + 4 * i
        tp[o] = rng.uniform(0.3, 1.0) * cfg.bump_slope / k
        tp[o + 1] = k * math.cos(ang)
        tp[o + 2] = k * math.sin(ang)
        tp[o + 3] = rng.uniform(0.0, 2.0 * math.pi)
    return tp


class _Builder:
    """Accumulates one scene; methods add the layers in order."""

    def __init__(self, rng: np.random.Generator, cfg: SceneConfig, mount_height: float,
                 rng2: Optional[np.random.Generator] = None) -> None:
        self.rng, self.cfg = rng, cfg
        self.rng2 = rng2 if rng2 is not None else np.random.default_rng(0)
        self.kind = str(rng.choice(list(cfg.scene_kinds)))
        self.tp = _terrain(rng, cfg, mount_height)
        if cfg.ground_pitch_deg or cfg.ground_roll_deg or cfg.ground_drop_m:
            self._tilt()
        self.prims = PrimitiveList()
        self.free = _Footprints()
        self.boxes: List[Tuple[float, ...]] = []
        self.names: List[str] = []
        self.sidewalk: List[Tuple[float, float, int, float]] = []   # (s0, s1, side, top z)
        self._road()
        ego = _rect_corners(EGO_BOX[0], EGO_BOX[1], EGO_BOX[2] + 1.0, EGO_BOX[3] + 1.0, 0.0)
        self.free.add(ego)

    def h(self, x: float, y: float) -> float:
        return float(rc.terrain_height(x, y, self.tp))

    def _tilt(self) -> None:
        """Terrain plane slope from the pitch / roll distributions (second stream)."""
        for col, spec in ((1, self.cfg.ground_pitch_deg), (2, self.cfg.ground_roll_deg)):
            if spec:
                mean, std, limit = spec
                deg = float(np.clip(self.rng2.normal(mean, std), -limit, limit))
                self.tp[col] = math.tan(math.radians(deg))
        if self.cfg.ground_drop_m:
            mean, std, limit = self.cfg.ground_drop_m
            self.tp[0] -= float(np.clip(self.rng2.normal(mean, std), -limit, limit))

    # ---- hard negatives (unlabelled clutter; second stream) ----------------------------
    def hard_negatives(self) -> None:
        """Places `SceneConfig.hard_negatives` clutter where real streets have it: the road
        edge and verge (vegetation, poles, signs, walls, fences, guard rails), the parking
        lane or verge (trailers), bare verge patches 25-50 m away (grass), set-back facades."""
        rng = self.rng2
        for name, mean in self.cfg.hard_negatives:
            for _ in range(int(rng.poisson(float(mean)))):
                self._hard_negative(str(name))

    def _hard_negative(self, name: str) -> None:
        rng = self.rng2
        place = HARD_NEGATIVE_BUILDERS[name]
        footprint = place.footprint(rng)            # (length along the road, width across)
        half_w = 0.5 * footprint[1]
        side = 1 if rng.random() < 0.5 else -1
        edge = self.half[side] + self.sidewalk_w
        if name == "grass":
            dist = rng.uniform(25.0, 50.0)
            s = dist * (1.0 if rng.random() < 0.8 else -1.0)
            d = side * (edge + half_w + rng.uniform(0.3, 12.0))
        elif name == "facade":
            s = rng.uniform(-ROAD_EXTENT, ROAD_EXTENT)
            d = side * (edge + half_w + rng.uniform(0.3, 8.0))
        elif name in ("trailer", "truck"):
            s = rng.uniform(-40.0, 60.0)
            d = side * (self.traffic_half + 0.5 * self.park_w if self.park[side]
                        else edge + half_w + rng.uniform(1.0, 4.0))
        elif name in ("pole", "sign"):
            s = rng.uniform(-80.0, 110.0)
            d = side * (self.half[side] + half_w + rng.uniform(0.2, 0.6))
        elif name == "guard_rail":     # behind the kerb's poles
            s = rng.uniform(-80.0, 110.0)
            d = side * (self.half[side] + half_w + rng.uniform(1.0, 1.8))
        else:   # vegetation, walls, fences: the road edge or a little beyond, half of them
            # within the first 30 m (real scans: 28k returns per scan 0.3 m above the road
            # within 10 m, against 18k in simulated streets without them)
            if rng.random() < 0.5:
                s = rng.uniform(-80.0, 110.0)
                d = side * (edge + half_w + rng.uniform(0.1, 3.0 if name in ("wall", "fence")
                                                         else 8.0))
            else:   # right beside the sidewalk near the ego (real: 8-13k returns per side)
                s = rng.uniform(-20.0, 25.0)
                d = side * (edge + half_w + rng.uniform(0.0, 1.5))
        x, y = self.road.point(s, d)
        if x * x + y * y < 4.5 ** 2:
            return
        yaw = self.road.heading(s)
        corners = _rect_corners(x, y, footprint[0], footprint[1], yaw)
        if self.free.overlaps(corners):
            return
        z = self.h(x, y)
        on_walk = self.half[side] <= abs(d) <= self.half[side] + self.sidewalk_w
        if on_walk:
            z = self.sidewalk_top(s, side) or z
        place.build(self.prims, rng, x, y, z, yaw, footprint, self.h)
        self.free.add(corners)

    # ---- road -------------------------------------------------------------------------
    def _road(self) -> None:
        rng = self.rng
        rural = self.kind == "rural"
        n_lanes = 2 if (rural or rng.random() < 0.6) else 4
        lane_w = rng.uniform(3.2, 3.7)
        traffic_half = 0.5 * n_lanes * lane_w
        p_park = {"urban": 0.75, "residential": 0.6, "rural": 0.0}[self.kind]
        self.park_w = 2.2
        self.park = {1: rng.random() < p_park, -1: rng.random() < p_park}
        self.half = {side: traffic_half + (self.park_w if self.park[side] else 0.0)
                     for side in (1, -1)}
        self.sidewalk_w = 0.0 if rural else rng.uniform(2.0, 4.0)
        self.curb = rng.uniform(0.1, 0.16)
        ego_lane = int(rng.integers(0, n_lanes // 2))
        d_ego = -traffic_half + (ego_lane + 0.5) * lane_w + rng.normal(0.0, 0.2)
        psi0 = rng.normal(0.0, 0.03)
        curved = rng.random() < self.cfg.curved_road_prob
        kappa = (1.0 / rng.uniform(250.0, 700.0)) * (1 if rng.random() < 0.5 else -1)
        rp = np.zeros(rc.ROAD_PARAMS, np.float64)
        rp[rc.R_KIND] = 1.0 if curved else 0.0
        rp[rc.R_P0X] = d_ego * math.sin(psi0)
        rp[rc.R_P0Y] = -d_ego * math.cos(psi0)
        rp[rc.R_PSI0] = psi0
        rp[rc.R_KAPPA] = kappa if curved else 0.0
        rp[rc.R_LANE_W] = lane_w
        rp[rc.R_NUM_LANES] = n_lanes
        rp[rc.R_TRAFFIC_HALF] = traffic_half
        rp[rc.R_HALF_LEFT] = self.half[1]
        rp[rc.R_HALF_RIGHT] = self.half[-1]
        rp[rc.R_REFL_ROAD] = rng.uniform(0.3, 0.45)
        rp[rc.R_REFL_PAINT] = rng.uniform(0.6, 0.9)
        rp[rc.R_REFL_TERRAIN] = rng.uniform(0.35, 0.5)
        rp[rc.R_DASH_PERIOD] = 12.0
        rp[rc.R_DASH_LEN] = 4.0
        self.rp = rp
        self.road = _Road(rp)
        self.n_lanes, self.lane_w, self.traffic_half = n_lanes, lane_w, traffic_half

    def _block(self, s: float, d: float, length: float, width: float, yaw_off: float = 0.0
               ) -> Tuple[float, float, float]:
        x, y = self.road.point(s, d)
        return x, y, self.road.heading(s) + yaw_off

    # ---- static layers ----------------------------------------------------------------
    def sidewalks(self) -> None:
        if self.sidewalk_w <= 0.0:
            return
        for side in (1, -1):
            d = side * (self.half[side] + 0.5 * self.sidewalk_w)
            s = -ROAD_EXTENT
            while s < ROAD_EXTENT:
                seg = 3.0 if abs(s) < 40.0 else 6.0
                x, y, yaw = self._block(s + 0.5 * seg, d, seg, self.sidewalk_w)
                corners = _rect_corners(x, y, seg, self.sidewalk_w, yaw)
                top = max(self.h(x, y), *(self.h(cx, cy) for cx, cy in corners)) + self.curb
                self.prims.add_box(x, y, top - 0.5, top, yaw, seg + 0.02, self.sidewalk_w,
                                   rng_refl(self.rng, 0.3))
                self.sidewalk.append((s, s + seg, side, top))
                s += seg

    def sidewalk_top(self, s: float, side: int) -> Optional[float]:
        for s0, s1, sd, top in self.sidewalk:
            if sd == side and s0 <= s < s1:
                return top
        return None

    def buildings(self) -> None:
        rng = self.rng
        if self.kind == "rural":
            spec = dict(p=0.15, setback=(5.0, 25.0), facade=(8.0, 20.0), gap=(20.0, 80.0),
                        depth=(6.0, 15.0), height=(3.5, 8.0))
        elif self.kind == "residential":
            spec = dict(p=0.9, setback=(4.0, 12.0), facade=(8.0, 16.0), gap=(4.0, 15.0),
                        depth=(8.0, 12.0), height=(4.0, 9.0))
        else:
            spec = dict(p=0.95, setback=(0.8, 3.0), facade=(10.0, 35.0), gap=(0.0, 10.0),
                        depth=(8.0, 20.0), height=(6.0, 20.0))
        for side in (1, -1):
            if rng.random() > spec["p"]:
                continue
            edge = self.half[side] + self.sidewalk_w
            s = -ROAD_EXTENT + rng.uniform(0.0, 10.0)
            while s < ROAD_EXTENT:
                facade = rng.uniform(*spec["facade"])
                depth = rng.uniform(*spec["depth"])
                setback = rng.uniform(*spec["setback"])
                sc = s + 0.5 * facade
                d = side * (edge + setback + 0.5 * depth)
                x, y, yaw = self._block(sc, d, facade, depth)
                corners = _rect_corners(x, y, facade, depth, yaw)
                z0 = min(self.h(cx, cy) for cx, cy in corners) - 0.3
                self.prims.add_box(x, y, z0, z0 + 0.3 + rng.uniform(*spec["height"]), yaw,
                                   facade, depth, rng.uniform(0.25, 0.6))
                self.free.add(corners)
                if self.kind == "residential" and rng.random() < 0.5:
                    self._hedge_or_wall(sc, side, edge + rng.uniform(0.3, 1.0), facade)
                gap = rng.uniform(*spec["gap"])
                if self.kind == "urban" and rng.random() < 0.6:
                    gap = rng.uniform(0.0, 1.0)
                s += facade + gap

    def _hedge_or_wall(self, sc: float, side: int, dist: float, length: float) -> None:
        rng = self.rng
        hedge = rng.random() < 0.5
        thick = rng.uniform(0.6, 1.0) if hedge else rng.uniform(0.2, 0.35)
        height = rng.uniform(0.8, 1.8)
        x, y, yaw = self._block(sc, side * (dist + 0.5 * thick), length, thick)
        z = self.h(x, y)
        self.prims.add_box(x, y, z - 0.2, z + height, yaw, length, thick,
                           rng.uniform(0.35, 0.5) if hedge else rng.uniform(0.2, 0.5))
        self.free.add(_rect_corners(x, y, length, thick, yaw))

    def roadside(self) -> None:
        rng, amount = self.rng, self.cfg.clutter
        tree_p = {"urban": 0.5, "residential": 0.8, "rural": 0.8}[self.kind]
        for side in (1, -1):
            inner = self.half[side]
            outer = inner + self.sidewalk_w
            # poles near the curb
            s = -ROAD_EXTENT + rng.uniform(0.0, 20.0)
            while s < ROAD_EXTENT:
                self._static(s, side * (inner + 0.45), "pole")
                s += rng.uniform(18.0, 40.0) / max(amount, 1e-3)
            # tree rows on the outer sidewalk or the verge
            if rng.random() < tree_p:
                s = -ROAD_EXTENT + rng.uniform(0.0, 10.0)
                off = outer - 0.9 if self.sidewalk_w > 0 else inner + rng.uniform(2.0, 5.0)
                while s < ROAD_EXTENT:
                    self._static(s, side * (off + rng.normal(0.0, 0.1)), "tree")
                    s += rng.uniform(7.0, 16.0) / max(amount, 1e-3)
            # street furniture (pedestrian-sized negatives) on the sidewalk
            if self.sidewalk_w > 0:
                for _ in range(int(rng.poisson(6.0 * amount))):
                    s = rng.uniform(-60.0, 90.0)
                    self._static(s, side * rng.uniform(inner + 0.4, outer - 0.3), "furniture")
            # scattered bushes and trees beyond the road edge
            n_far = int(rng.poisson({"urban": 3, "residential": 8, "rural": 25}[self.kind]
                                    * amount))
            for _ in range(n_far):
                s = rng.uniform(-ROAD_EXTENT, ROAD_EXTENT)
                d = side * (outer + rng.uniform(0.5, 30.0))
                self._static(s, d, "tree" if rng.random() < 0.4 else "bush")
            if self.kind == "rural" and rng.random() < 0.4:   # guard rail
                s = -ROAD_EXTENT
                while s < ROAD_EXTENT:
                    x, y, yaw = self._block(s + 5.0, side * (inner + 0.6), 10.0, 0.1)
                    z = self.h(x, y)
                    self.prims.add_box(x, y, z + 0.35, z + 0.75, yaw, 10.0, 0.12, 0.6)
                    self.free.add(_rect_corners(x, y, 10.0, 0.3, yaw))
                    s += 10.0

    def _static(self, s: float, d: float, what: str) -> None:
        x, y = self.road.point(s, d)
        if x * x + y * y < 4.0 ** 2:
            return
        yaw = self.road.heading(s)
        probe = _rect_corners(x, y, 0.6, 0.6, yaw)
        if self.free.overlaps(probe):
            return
        z = self.h(x, y)
        side = 1 if d > 0 else -1
        on_walk = self.half[side] <= abs(d) <= self.half[side] + self.sidewalk_w
        if on_walk:
            z = self.sidewalk_top(s, side) or z
        if what == "pole":
            r = add_pole(self.prims, self.rng, x, y, z, yaw)
        elif what == "tree":
            r = add_tree(self.prims, self.rng, x, y, z)
        elif what == "bush":
            r = add_bush(self.prims, self.rng, x, y, z)
        else:
            r = add_street_furniture(self.prims, self.rng, x, y, z, yaw)
        self.free.add(_rect_corners(x, y, 2.0 * r, 2.0 * r, yaw))

    # ---- labelled objects -------------------------------------------------------------
    def _dims(self, name: str) -> Tuple[float, float, float]:
        out = []
        for mean, std, lo, hi in DIMENSIONS[name]:
            out.append(float(np.clip(self.rng.normal(mean, std), lo, hi)))
        return out[0], out[1], out[2]

    def _sample_s(self) -> float:
        cfg = self.cfg
        u = self.rng.random() ** DISTANCE_SKEW
        if self.rng.random() < cfg.front_fraction:
            return cfg.min_distance + u * (cfg.max_distance - cfg.min_distance)
        return -(cfg.min_distance + u * (0.65 * cfg.max_distance - cfg.min_distance))

    def _pose(self, name: str, length: float) -> Tuple[float, float, float, bool]:
        """(s, d, yaw, on_sidewalk) for an object of class ``name``."""
        rng = self.rng
        s = self._sample_s()
        psi = self.road.heading(s)
        th, lw = self.traffic_half, self.lane_w
        walk = self.sidewalk_w > 0
        if name in ("Car", "Van"):
            mode = rng.random()
            parked_sides = [sd for sd in (1, -1) if self.park[sd]]
            if parked_sides and mode < 0.5:
                side = parked_sides[int(rng.integers(len(parked_sides)))]
                d = side * (th + 0.5 * self.park_w + rng.normal(0.0, 0.12))
                forward = (side < 0) == (rng.random() < 0.85)
                return s, d, psi + (0.0 if forward else math.pi) + rng.normal(0, 0.05), False
            if mode < 0.92 or not walk:
                lane = int(rng.integers(self.n_lanes))
                d = -th + (lane + 0.5) * lw + rng.normal(0.0, 0.25)
                yaw = psi + (0.0 if d < 0 else math.pi) + rng.normal(0.0, 0.03)
                return s, d, yaw, False
            side = 1 if rng.random() < 0.5 else -1   # driveway / lot: any heading
            d = side * (self.half[side] + self.sidewalk_w + rng.uniform(1.5, 12.0))
            return s, d, rng.uniform(-math.pi, math.pi), False
        if name == "Pedestrian":
            mode = rng.random()
            side = 1 if rng.random() < 0.5 else -1
            if walk and mode < 0.65:
                d = side * (self.half[side] + rng.uniform(0.5, self.sidewalk_w - 0.4))
                yaw = psi + (0.0 if rng.random() < 0.5 else math.pi) + rng.normal(0.0, 0.3)
                if rng.random() < 0.2:
                    yaw = rng.uniform(-math.pi, math.pi)
                return s, d, yaw, True
            if mode < 0.8:
                d = rng.uniform(-self.half[-1], self.half[1])
                yaw = psi + (0.5 * math.pi if rng.random() < 0.5 else -0.5 * math.pi)
                return s, d, yaw + rng.normal(0.0, 0.2), False
            d = side * (self.half[side] + self.sidewalk_w + rng.uniform(0.5, 10.0))
            return s, d, rng.uniform(-math.pi, math.pi), False
        # Cyclist
        mode = rng.random()
        side = -1 if rng.random() < 0.6 else 1
        if walk and mode < 0.2:
            d = side * (self.half[side] + rng.uniform(0.6, self.sidewalk_w - 0.4))
            return s, d, psi + (0.0 if side < 0 else math.pi) + rng.normal(0, 0.2), True
        if mode < 0.95:
            d = side * (th - rng.uniform(0.6, 1.2))
            return s, d, psi + (0.0 if side < 0 else math.pi) + rng.normal(0, 0.05), False
        d = rng.uniform(-self.half[-1], self.half[1])
        return s, d, psi + rng.choice([-0.5, 0.5]) * math.pi, False

    def objects(self) -> None:
        rng, cfg = self.rng, self.cfg
        todo: List[str] = []
        for _ in range(int(rng.integers(cfg.num_cars[0], cfg.num_cars[1] + 1))):
            todo.append("Van" if rng.random() < cfg.van_fraction else "Car")
        todo += ["Pedestrian"] * int(rng.integers(cfg.num_pedestrians[0],
                                                  cfg.num_pedestrians[1] + 1))
        todo += ["Cyclist"] * int(rng.integers(cfg.num_cyclists[0], cfg.num_cyclists[1] + 1))
        for name in todo:
            length, width, height = self._dims(name)
            margin = 0.6 if name in ("Car", "Van") else 0.25
            for _ in range(40):
                s, d, yaw, on_walk = self._pose(name, length)
                x, y = self.road.point(s, d)
                dist = math.hypot(x, y)
                if not cfg.min_distance <= dist <= cfg.max_distance:
                    continue
                corners = _rect_corners(x, y, length + margin, width + margin, yaw)
                if self.free.overlaps(corners):
                    continue
                z = self.h(x, y)
                if on_walk:
                    z = self.sidewalk_top(s, 1 if d > 0 else -1) or z
                yaw = math.atan2(math.sin(yaw), math.cos(yaw))
                owner = len(self.boxes)
                OBJECT_STYLES[cfg.object_style][name](self.prims, rng, x, y, z, yaw, length,
                                                      width, height, owner)
                self.boxes.append((x, y, z, length, width, height, yaw))
                self.names.append(name)
                self.free.add(_rect_corners(x, y, length, width, yaw))
                break


def rng_refl(rng: np.random.Generator, mean: float) -> float:
    """A reflectivity around ``mean`` (+-20 %)."""
    return float(mean * rng.uniform(0.8, 1.2))


def generate_scene(seed: int, cfg: Optional[SceneConfig] = None,
                   mount_height: float = DEFAULT_MOUNT_HEIGHT) -> Scene:
    """Builds the scene of ``seed`` (deterministic; independent of the sensor except height).

    Args:
        seed: any non-negative integer.
        cfg: scene content; defaults to `SceneConfig()`.
        mount_height: sensor height above the ground at the origin, metres.

    Returns:
        The `Scene` (primitives, terrain, road, object boxes and names).
    """
    cfg = cfg if cfg is not None else SceneConfig()
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5CE9E]))
    rng2 = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5CE9E, 0x4B17]))
    b = _Builder(rng, cfg, mount_height, rng2)
    b.sidewalks()
    b.buildings()
    b.roadside()
    if cfg.hard_negatives:
        b.hard_negatives()
    b.objects()
    prims, owner = b.prims.pack()
    boxes = (np.asarray(b.boxes, np.float32).reshape(-1, 7))
    return Scene(prims=prims, owner=owner, terrain=b.tp, road=b.rp, boxes=boxes,
                 names=list(b.names), kind=b.kind)
