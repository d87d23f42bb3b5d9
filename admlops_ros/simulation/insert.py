"""Simulated objects inserted into a real scan, with the occlusion recomputed along the rays.

An inserted object is built from the simulator's own shapes (`shapes.OBJECT_STYLES`), sized and
posed like the scene sampler's objects (`scene.DIMENSIONS`, the distance skew), stood on the
real ground (a low percentile of the real points around it) where nothing real stands, and
ray-cast with the sensor model (`frame.cast`: the same beam table, range noise, dropouts and
intensity as a simulated frame). Compositing works on the scan's cells (beam, azimuth column;
a real KITTI point lies within 0.01 deg of its laser in the `hdl64e_s2_kitti` table):

- a real point in a cell whose ray hits an inserted object nearer than the point is removed
  (it lies in the object's shadow), and so is every real point inside an inserted box;
- an object return in a cell where a real point is nearer is dropped (the real scene occludes
  the object there).

Each cast runs twice with the same seed: once without noise or dropouts (which rays the objects
block: the shadow of a ray whose return was dropped is still a shadow), once as the sensor
fires (the returns kept). Objects left with fewer than ``min_points`` points are taken out and
the rest cast again.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from admlops_ros.errors import AdmlopsError
from admlops_ros.lidar.geometry import points_in_boxes, rotated_iou_bev

from . import raycast as rc
from .frame import cast
from .labels import difficulty as label_difficulty, occlusion_fraction
from .primitives import PrimitiveList
from .scene import DIMENSIONS, DISTANCE_SKEW, Scene
from .sensor import SensorConfig
from .shapes import OBJECT_STYLES

__all__ = ["InsertConfig", "InsertError", "Insertion", "Placement", "GroundModel",
           "insert_objects", "render_insertion", "sample_placements", "ray_cells",
           "INSERT_CLASSES"]

INSERT_CLASSES = ("Car", "Pedestrian", "Cyclist")
NO_GROUND_Z = -1.0e4        # the object-only scene's terrain: far below every ray
GRID_CELL_M = 2.0           # bucket size of the neighbour queries and of the coarse ground fit
PointsMask = Callable[[np.ndarray], np.ndarray]   # [N, >=3] points -> [N] bool


class InsertError(AdmlopsError, ValueError):
    """An insertion setting or input that cannot be used; names the field and the fix."""


@dataclass(frozen=True)
class InsertConfig:
    """What is inserted and where it may stand.

    Attributes:
        num_objects: (class, min, max) inclusive count per frame of each inserted class
            (Car, Pedestrian, Cyclist).
        min_distance, max_distance: horizontal distance of object centres from the sensor, m
            (drawn as the scene sampler draws them: more objects near).
        azimuth_deg: (lo, hi) azimuth range of the centres, degrees, 0 ahead, + left (the KITTI
            camera sees about +-41 deg).
        object_style: shapes of `shapes.OBJECT_STYLES` (``kitti``: raked see-through glass).
        road_aligned: probability that a vehicle is parallel to the road axis (the mean axis of
            the frame's labelled vehicles, else the ego's heading); else any heading.
        ground_radius: real points within this horizontal radius of a centre give its ground, m.
        ground_percentile: percentile of their z (at least the third lowest point) taken as
            the ground's lower edge; the ground is the median z of the points up to
            ``ground_band`` above it.
        ground_band: height of the ground band above that percentile, m.
        min_ground_points: fewer band points within the footprint's radius + ``ground_reach``:
            no ground seen there, no placement.
        ground_reach: how far beyond the footprint's radius the ground must be seen, m.
        ground_tolerance: a local ground further than this from the scan's coarse ground plane
            (fitted on the lowest point of each 2 m cell) is not ground (a wall base, a roof), m.
        clearance: real points higher than this above the local ground inside the footprint
            (enlarged by the class margin) are obstacles, m.
        max_obstacle_points: more obstacle points than this: something real stands there.
        margin_vehicle, margin_other: footprint enlargement (length and width) for the
            obstacle and overlap tests, m (the scene sampler's 0.6 and 0.25).
        min_points: an inserted object left with fewer points is taken out.
        attempts: placement draws per object before it is given up.
    """

    num_objects: Tuple[Tuple[str, int, int], ...] = (("Car", 2, 6), ("Pedestrian", 0, 3),
                                                     ("Cyclist", 0, 2))
    min_distance: float = 5.0
    max_distance: float = 70.0
    azimuth_deg: Tuple[float, float] = (-180.0, 180.0)
    object_style: str = "kitti"
    road_aligned: float = 0.8
    ground_radius: float = 3.0
    ground_percentile: float = 2.0
    ground_band: float = 0.15
    min_ground_points: int = 6
    ground_reach: float = 0.75
    ground_tolerance: float = 0.4
    clearance: float = 0.3
    max_obstacle_points: int = 3
    margin_vehicle: float = 0.6
    margin_other: float = 0.25
    min_points: int = 5
    attempts: int = 30

    def __post_init__(self) -> None:
        for item in self.num_objects:
            if (len(item) != 3 or item[0] not in INSERT_CLASSES
                    or not 0 <= int(item[1]) <= int(item[2]) <= 100):
                raise InsertError(f"InsertConfig.num_objects entry {item!r}: give (class, min, "
                                  f"max) with class one of {INSERT_CLASSES}, 0 <= min <= max <= 100")
        if not 0.0 < self.min_distance < self.max_distance:
            raise InsertError(f"InsertConfig needs 0 < min_distance < max_distance, got "
                              f"{self.min_distance}, {self.max_distance}")
        lo, hi = self.azimuth_deg
        if not -180.0 <= lo < hi <= 180.0:
            raise InsertError(f"InsertConfig.azimuth_deg={self.azimuth_deg}: give (lo, hi) "
                              f"with -180 <= lo < hi <= 180")
        if self.object_style not in OBJECT_STYLES:
            raise InsertError(f"InsertConfig.object_style={self.object_style!r}: choose from "
                              f"{sorted(OBJECT_STYLES)}")
        if not 0.0 <= self.ground_percentile <= 100.0 or self.ground_radius <= 0.0:
            raise InsertError("InsertConfig.ground_percentile must be in [0, 100] and "
                              "ground_radius > 0")
        if self.min_points < 1 or self.attempts < 1:
            raise InsertError("InsertConfig.min_points and attempts must be >= 1")


@dataclass(frozen=True)
class Placement:
    """One object to insert: class, box (x, y, z bottom, dx, dy, dz, yaw; LiDAR frame, m, rad)
    and the seed of its shape's random draws (paint, wheel size, glass)."""

    name: str
    box: Tuple[float, float, float, float, float, float, float]
    shape_seed: int


@dataclass
class Insertion:
    """A real scan with objects inserted.

    Attributes:
        points: [N', 4] float32 the kept real points, then the inserted objects' returns.
        point_source: [N'] int32 -1 for a real point, k for a return of inserted object k.
        removed: [N] bool over the input points: removed (shadowed or inside an inserted box).
        shadowed: [N] bool over the input points: removed as lying behind an inserted object.
        placements: the inserted objects (those with at least ``min_points`` points).
        boxes: [K, 7] float32 their boxes; names: their classes.
        num_points: [K] int64 points of the output inside each box (`points_in_boxes`).
        occlusion: [K] float32 fraction of an object's rays that something nearer took
            (1 - first returns / rays that would hit it alone), as the simulator labels it.
        difficulty: [K] int64 the simulator's difficulty rule (`labels.difficulty`).
        shadow_removed: [K] int64 real points removed behind each object along its rays.
        inside_removed: [K] int64 real points removed inside each box.
        dropped: placements taken out for having fewer than ``min_points`` points.
    """

    points: np.ndarray
    point_source: np.ndarray
    removed: np.ndarray
    shadowed: np.ndarray
    placements: List[Placement]
    boxes: np.ndarray
    names: List[str]
    num_points: np.ndarray
    occlusion: np.ndarray
    difficulty: np.ndarray
    shadow_removed: np.ndarray
    inside_removed: np.ndarray
    dropped: List[Placement] = field(default_factory=list)


# ------------------------------------------------------------------------------------------
# scan cells
def ray_cells(points: np.ndarray, sensor: SensorConfig) -> Tuple[np.ndarray, np.ndarray]:
    """(ray index [N] int64, horizontal distance [N] float64) of points on ``sensor``'s rays.

    The ray index is the caster's ``column * num_beams + beam`` (beams by increasing
    elevation, column j at azimuth (j + 0.5) * 2 pi / num_azimuths - pi); the beam is the one
    whose cone from its firing height passes nearest the point.
    """
    pts = np.asarray(points, np.float64)
    pts = pts.reshape(-1, pts.shape[-1] if pts.ndim == 2 else 4)
    elev, origin_z, _ = sensor.sorted_beams()
    n_az = sensor.num_azimuths
    h = np.hypot(pts[:, 0], pts[:, 1])
    az = np.arctan2(pts[:, 1], pts[:, 0])
    col = np.floor((az + math.pi) * n_az / (2.0 * math.pi)).astype(np.int64)
    col = np.clip(col, 0, n_az - 1)
    if len(pts) == 0:
        return col, h
    hh = np.maximum(h, 1e-6)
    beam = np.empty(len(pts), np.int64)
    tan_e = np.tan(elev)
    step = 65536   # bounded [chunk, beams] temporaries
    for s in range(0, len(pts), step):
        z = pts[s:s + step, 2:3]
        res = np.abs((z - origin_z[None, :]) / hh[s:s + step, None] - tan_e[None, :])
        beam[s:s + step] = res.argmin(axis=1)
    return col * len(elev) + beam, h


class _Grid:
    """Points bucketed on a GRID_CELL_M grid (x, y) for radius queries."""

    def __init__(self, xy: np.ndarray) -> None:
        self.xy = xy
        key = np.floor(xy / GRID_CELL_M).astype(np.int64)
        self.lo = key.min(axis=0) if len(key) else np.zeros(2, np.int64)
        key = key - self.lo
        self.width = int(key[:, 1].max()) + 1 if len(key) else 1
        flat = key[:, 0] * self.width + key[:, 1]
        self.order = np.argsort(flat, kind="stable")
        self.sorted = flat[self.order]
        self.height = int(key[:, 0].max()) + 1 if len(key) else 1

    def near(self, x: float, y: float, radius: float) -> np.ndarray:
        """Indices of the points within ``radius`` (horizontal) of (x, y)."""
        k0 = np.floor((np.array([x, y]) - radius) / GRID_CELL_M).astype(np.int64) - self.lo
        k1 = np.floor((np.array([x, y]) + radius) / GRID_CELL_M).astype(np.int64) - self.lo
        k0 = np.maximum(k0, 0)
        k1 = np.minimum(k1, [self.height - 1, self.width - 1])
        if (k1 < k0).any():
            return np.zeros(0, np.int64)
        parts = []
        for i in range(int(k0[0]), int(k1[0]) + 1):
            a = np.searchsorted(self.sorted, i * self.width + int(k0[1]), "left")
            b = np.searchsorted(self.sorted, i * self.width + int(k1[1]), "right")
            parts.append(self.order[a:b])
        idx = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        d2 = (self.xy[idx, 0] - x) ** 2 + (self.xy[idx, 1] - y) ** 2
        return idx[d2 <= radius * radius]


class GroundModel:
    """The real ground under a scan: a local estimate per spot, checked against a coarse plane.

    Args:
        points: [N, >=3] real points, LiDAR frame.
        config: the ground settings of `InsertConfig`.
    """

    def __init__(self, points: np.ndarray, config: InsertConfig) -> None:
        self.cfg = config
        self.xyz = np.asarray(points, np.float64)[:, :3]
        self.grid = _Grid(self.xyz[:, :2])
        self.plane = self._coarse_plane()

    def _coarse_plane(self) -> np.ndarray:
        """(a, b, c) of z = a + b x + c y fitted on the lowest point of each grid cell (cells
        with >= 3 points), robust to the cells whose lowest point is not ground."""
        g = self.grid
        if len(self.xyz) < 10:
            return np.array([-1.73, 0.0, 0.0])
        starts = np.flatnonzero(np.r_[True, np.diff(g.sorted) != 0])
        counts = np.diff(np.r_[starts, len(g.sorted)])
        z_sorted = self.xyz[g.order, 2]
        zmin = np.minimum.reduceat(z_sorted, starts)
        seg = np.repeat(np.arange(len(starts)), counts)
        lowest = np.flatnonzero(z_sorted == zmin[seg])
        first = np.full(len(starts), -1, np.int64)
        first[seg[lowest][::-1]] = g.order[lowest][::-1]
        q = self.xyz[first[(counts >= 3) & (first >= 0)]]
        if len(q) < 3:
            return np.array([float(np.median(self.xyz[:, 2])), 0.0, 0.0])
        # start flat at the lower cells (cells of walls or crowns over hidden ground are
        # higher, never lower), then refit on the cells near the plane, trimming tighter
        low = np.sort(q[:, 2])[:max(3, len(q) // 3)]
        coef = np.array([float(np.median(low)), 0.0, 0.0])
        for trim in (0.5, 0.3, 0.2, 0.2):
            res = q[:, 2] - (coef[0] + coef[1] * q[:, 0] + coef[2] * q[:, 1])
            keep = np.abs(res) < trim
            if keep.sum() < 3:
                break
            a = np.c_[np.ones(keep.sum()), q[keep, 0], q[keep, 1]]
            coef = np.linalg.lstsq(a, q[keep, 2], rcond=None)[0]
        return coef

    def height(self, x: float, y: float, reach: float = 0.0) -> Optional[float]:
        """Ground z at (x, y) from the real points around it; None where no ground is seen.

        The ground is the median z of the points in the ground band (up to ``ground_band``
        above the ``ground_percentile`` rank of the points within ``ground_radius``) that lie within
        ``reach`` + ``ground_reach`` of (x, y) (``reach``: the footprint's radius): the
        ground under the object must have been seen, not guessed from a wall beside a
        hidden spot.
        """
        cfg = self.cfg
        idx = self.grid.near(x, y, max(cfg.ground_radius, reach + cfg.ground_reach))
        if len(idx) < cfg.min_ground_points:
            return None
        z = self.xyz[idx, 2]
        order = np.sort(z)   # the band's lower edge: a low rank, never the lowest two points
        low = float(order[min(len(z) - 1, max(2, int(len(z) * cfg.ground_percentile / 100)))])
        d2 = (self.xyz[idx, 0] - x) ** 2 + (self.xyz[idx, 1] - y) ** 2
        near = z[d2 <= (reach + cfg.ground_reach) ** 2]
        band = near[near <= low + cfg.ground_band]
        if len(band) < cfg.min_ground_points:
            return None
        g = float(np.median(band))
        g = float(np.median(near[np.abs(near - g) <= cfg.ground_band]))  # re-centred on it
        a, b, c = self.plane
        if abs(g - (a + b * x + c * y)) > cfg.ground_tolerance:
            return None
        return g

    def obstacle_points(self, box: np.ndarray, margin: float) -> int:
        """Real points standing in ``box``'s footprint (enlarged by ``margin``) between
        ``clearance`` above its bottom and 0.5 m above its top."""
        big = np.asarray(box, np.float64).copy()
        big[3:5] += margin
        big[2] += self.cfg.clearance
        big[5] = big[5] + 0.5 - self.cfg.clearance
        idx = self.grid.near(big[0], big[1], 0.5 * math.hypot(big[3], big[4]))
        if len(idx) == 0:
            return 0
        return int(points_in_boxes(self.xyz[idx], big[None]).sum())


# ------------------------------------------------------------------------------------------
# placement
def _road_axis(boxes: np.ndarray, names: Sequence[str]) -> float:
    """Mean axis (mod pi) of the labelled vehicles' headings; 0 (the ego's) without any."""
    yaw = [float(b[6]) for b, n in zip(boxes, names) if n in ("Car", "Van", "Truck")]
    if not yaw:
        return 0.0
    two = 2.0 * np.asarray(yaw)
    return 0.5 * math.atan2(float(np.sin(two).mean()), float(np.cos(two).mean()))


def _dims(rng: np.random.Generator, name: str) -> Tuple[float, float, float]:
    out = [float(np.clip(rng.normal(m, s), lo, hi)) for m, s, lo, hi in DIMENSIONS[name]]
    return out[0], out[1], out[2]


def _yaw(rng: np.random.Generator, name: str, axis: float, cfg: InsertConfig) -> float:
    if name == "Pedestrian":
        yaw = rng.uniform(-math.pi, math.pi)
    elif rng.random() < cfg.road_aligned:
        yaw = axis + (0.0 if rng.random() < 0.5 else math.pi) + rng.normal(0.0, 0.05)
    else:
        yaw = rng.uniform(-math.pi, math.pi)
    return math.atan2(math.sin(yaw), math.cos(yaw))


def _enlarged(box: np.ndarray, margin: float) -> np.ndarray:
    big = np.asarray(box, np.float64).reshape(-1, 7).copy()
    big[:, 3:5] += margin
    return big


def sample_placements(points: np.ndarray, boxes: np.ndarray, names: Sequence[str],
                      rng: np.random.Generator, config: InsertConfig = InsertConfig(),
                      blocked: Optional[np.ndarray] = None, fov: Optional[PointsMask] = None,
                      ground: Optional[GroundModel] = None) -> List[Placement]:
    """Draws objects to insert where the real scan has free, visible ground.

    A draw is kept when the ground under its centre is seen (`GroundModel.height`), no real
    point stands in its footprint, its footprint (enlarged by the class margin) overlaps no
    labelled box, no ``blocked`` box (e.g. pseudo-labels below their threshold) and no object
    placed before, and ``fov`` (if given) holds its centre.

    Args:
        points: [N, >=3] real points, LiDAR frame.
        boxes: [M, 7] labelled boxes of the scan; names: their classes (the road axis).
        rng: the draws' generator.
        config: what to insert.
        blocked: [B, 7] further boxes where real objects are (no insertion there).
        fov: ``points -> mask`` of the region the scan keeps (e.g. the camera's view).
        ground: a `GroundModel` of ``points`` (built here when None).

    Returns:
        The placements, class by class in ``config.num_objects`` order.
    """
    cfg = config
    ground = ground if ground is not None else GroundModel(points, cfg)
    taken = [np.asarray(boxes, np.float64).reshape(-1, 7)]
    if blocked is not None and len(blocked):
        taken.append(np.asarray(blocked, np.float64).reshape(-1, 7))
    occupied = np.concatenate(taken)
    axis = _road_axis(np.asarray(boxes).reshape(-1, 7), names)
    lo, hi = (math.radians(v) for v in cfg.azimuth_deg)
    out: List[Placement] = []
    for name, n_lo, n_hi in cfg.num_objects:
        margin = cfg.margin_vehicle if name == "Car" else cfg.margin_other
        for _ in range(int(rng.integers(int(n_lo), int(n_hi) + 1))):
            length, width, height = _dims(rng, name)
            shape_seed = int(rng.integers(1 << 62))
            for _ in range(cfg.attempts):
                dist = cfg.min_distance + rng.random() ** DISTANCE_SKEW * (
                    cfg.max_distance - cfg.min_distance)
                az = rng.uniform(lo, hi)
                x, y = dist * math.cos(az), dist * math.sin(az)
                yaw = _yaw(rng, name, axis, cfg)
                g = ground.height(x, y, 0.5 * math.hypot(length, width))
                if g is None:
                    continue
                box = np.array([x, y, g, length, width, height, yaw])
                if fov is not None and not bool(fov(np.array([[x, y, g + 0.5 * height]]))[0]):
                    continue
                if len(occupied) and rotated_iou_bev(_enlarged(box, margin),
                                                     occupied).max() > 0.0:
                    continue
                if ground.obstacle_points(box, margin) > cfg.max_obstacle_points:
                    continue
                out.append(Placement(name, tuple(float(v) for v in box), shape_seed))
                occupied = np.concatenate([occupied, box[None]])
                break
    return out


# ------------------------------------------------------------------------------------------
# cast and composite
def _object_scene(placements: Sequence[Placement], style: str) -> Scene:
    prims = PrimitiveList()
    for k, p in enumerate(placements):
        x, y, z, dx, dy, dz, yaw = p.box
        OBJECT_STYLES[style][p.name](prims, np.random.default_rng(p.shape_seed), x, y, z, yaw,
                                     dx, dy, dz, k)
    table, owner = prims.pack()
    terrain = np.zeros(rc.TERRAIN_PARAMS, np.float64)
    terrain[0] = NO_GROUND_Z
    road = np.zeros(rc.ROAD_PARAMS, np.float64)
    road[rc.R_DASH_PERIOD] = 12.0
    boxes = np.asarray([p.box for p in placements], np.float32).reshape(-1, 7)
    return Scene(prims=table, owner=owner, terrain=terrain, road=road, boxes=boxes,
                 names=[p.name for p in placements], kind="insert")


def _geometry_sensor(sensor: SensorConfig) -> SensorConfig:
    """The sensor without noise or losses: which rays the objects block."""
    return sensor.with_overrides(range_noise_std=0.0, dropout_prob=0.0,
                                 beam_dropout=(0.0,) * sensor.num_beams if sensor.beam_dropout
                                 else (), far_dropout=0.0, zero_intensity_prob=(0.0, 0.0),
                                 zero_intensity_dark=0.0)


def _inside_any(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """[N] int64 index of the (first) box containing each point, -1 for none; the exact test
    (`points_in_boxes`) runs only on the points within a box's circumradius square."""
    out = np.full(len(points), -1, np.int64)
    for k in range(len(boxes) - 1, -1, -1):   # reversed: the first box wins, as return_index
        reach = 0.5 * math.hypot(float(boxes[k, 3]), float(boxes[k, 4]))
        near = np.flatnonzero((np.abs(points[:, 0] - boxes[k, 0]) <= reach)
                              & (np.abs(points[:, 1] - boxes[k, 1]) <= reach))
        if len(near):
            out[near[points_in_boxes(points[near], boxes[k:k + 1])[:, 0]]] = k
    return out


def render_insertion(points: np.ndarray, placements: Sequence[Placement], sensor: SensorConfig,
                     seed: int, style: str = "kitti", fov: Optional[PointsMask] = None
                     ) -> Insertion:
    """Casts ``placements`` with ``sensor`` and composites them into the real ``points``.

    Args:
        points: [N, 4] real points (x, y, z, intensity), LiDAR frame of ``sensor``.
        placements: the objects (boxes on the ground, see `sample_placements`).
        sensor: the scan's lidar model (for KITTI, ``SensorConfig.preset("hdl64e_s2_kitti")``).
        seed: the cast's noise seed (>= 0).
        style: `shapes.OBJECT_STYLES` key of the shapes.
        fov: ``points -> mask`` of the region the scan keeps; returns outside it are dropped.

    Returns:
        The `Insertion` (every placement kept, whatever its point count).
    """
    real = np.asarray(points, np.float32).reshape(-1, 4)
    placements = list(placements)
    k_obj = len(placements)
    n_real = len(real)
    if k_obj == 0:
        z = np.zeros(0, np.int64)
        return Insertion(real.copy(), np.full(n_real, -1, np.int32), np.zeros(n_real, bool),
                         np.zeros(n_real, bool), [], np.zeros((0, 7), np.float32), [], z,
                         np.zeros(0, np.float32), z, z, z)
    scene = _object_scene(placements, style)
    boxes = scene.boxes.astype(np.float64)
    p1, own1, alone, _ = cast(scene, _geometry_sensor(sensor), int(seed))
    p2, own2, _, _ = cast(scene, sensor, int(seed))
    n_cells = sensor.num_azimuths * sensor.num_beams
    ray1, h1 = ray_cells(p1, sensor)
    ray2, _ = ray_cells(p2, sensor)
    obj_h = np.full(n_cells, np.inf)
    obj_own = np.full(n_cells, -1, np.int64)
    obj_h[ray1] = h1
    obj_own[ray1] = own1
    # real points on the object's columns: shadowed (behind) or occluding (in front)
    inside = _inside_any(real, boxes)
    n_b = sensor.num_beams
    col_hit = np.zeros(sensor.num_azimuths, bool)
    col_hit[ray1 // n_b] = True
    az = np.arctan2(real[:, 1], real[:, 0])
    col = np.clip(np.floor((az + math.pi) * sensor.num_azimuths / (2.0 * math.pi)), 0,
                  sensor.num_azimuths - 1).astype(np.int64)
    cand = np.flatnonzero(col_hit[col] & (inside < 0))
    ray_r, h_r = ray_cells(real[cand], sensor)
    o_h = obj_h[ray_r]
    hit = np.isfinite(o_h)
    behind = hit & (h_r >= o_h)
    shadow = cand[behind]
    front = ray_r[hit & (h_r < o_h)]
    blocked = np.zeros(n_cells, bool)
    blocked[front] = True
    shadowed = np.zeros(n_real, bool)
    shadowed[shadow] = True
    removed = shadowed | (inside >= 0)
    keep2 = ~blocked[ray2]
    if fov is not None and len(p2):
        keep2 &= np.asarray(fov(p2), bool)
    obj_pts = p2[keep2]
    out = np.concatenate([real[~removed], obj_pts]).astype(np.float32)
    source = np.concatenate([np.full(int((~removed).sum()), -1, np.int32),
                             own2[keep2].astype(np.int32)])
    visible = np.bincount(own1[~blocked[ray1]], minlength=k_obj)[:k_obj]
    occ = occlusion_fraction(alone, visible)
    npts = np.bincount(_inside_any(out, boxes) + 1, minlength=k_obj + 1)[1:].astype(np.int64)
    diff = label_difficulty(boxes, occ, npts).astype(np.int64)
    shadow_n = np.bincount(obj_own[ray_r[behind]], minlength=k_obj)[:k_obj]
    inside_n = np.bincount(inside[inside >= 0], minlength=k_obj)[:k_obj]
    return Insertion(points=out, point_source=source, removed=removed, shadowed=shadowed,
                     placements=placements,
                     boxes=boxes.astype(np.float32), names=[p.name for p in placements],
                     num_points=npts, occlusion=occ, difficulty=diff,
                     shadow_removed=shadow_n.astype(np.int64),
                     inside_removed=inside_n.astype(np.int64))


def insert_objects(points: np.ndarray, boxes: np.ndarray, names: Sequence[str], seed: int,
                   sensor: SensorConfig, config: InsertConfig = InsertConfig(),
                   blocked: Optional[np.ndarray] = None, fov: Optional[PointsMask] = None,
                   place_in: Optional[PointsMask] = None) -> Insertion:
    """Inserts simulated objects into a real scan (deterministic for a seed).

    Args:
        points: [N, 4] real points (x, y, z, intensity), LiDAR frame.
        boxes: [M, 7] the scan's labelled boxes (bottom centre); names: their classes.
        seed: >= 0; the placements, shapes and sensor noise follow from it.
        sensor: the scan's lidar model.
        config: what to insert and where it may stand.
        blocked: [B, 7] boxes of real objects that are not labels (no insertion there).
        fov: ``points -> mask`` of the region the scan keeps (returns outside it are cut).
        place_in: ``points -> mask`` of where object centres may stand (default ``fov``; e.g.
            the labelled camera view of a scan kept whole).

    Returns:
        The `Insertion`; placements left with fewer than ``config.min_points`` points are in
        ``dropped`` and were cast out of the scan.
    """
    if int(seed) < 0:
        raise InsertError(f"insert_objects: seed must be >= 0, got {seed}")
    real = np.asarray(points, np.float32)
    if real.ndim != 2 or real.shape[1] != 4:
        raise InsertError(f"insert_objects: points must be [N, 4] (x, y, z, intensity), got "
                          f"{real.shape}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x1A5E27]))
    placements = sample_placements(real, boxes, names, rng, config, blocked,
                                   place_in if place_in is not None else fov)
    result = render_insertion(real, placements, sensor, int(seed), config.object_style, fov)
    few = result.num_points < config.min_points
    if few.any():
        kept = [p for p, f in zip(placements, few) if not f]
        dropped = [p for p, f in zip(placements, few) if f]
        result = render_insertion(real, kept, sensor, int(seed), config.object_style, fov)
        result.dropped = dropped
    return result
