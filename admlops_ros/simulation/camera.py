"""Pinhole camera renderer of simulated scenes with KITTI-like intrinsics and 2D box labels.

The camera sits beside the lidar (KITTI: ~0.27 m ahead, 0.08 m lower) looking along lidar +x;
its frame is KITTI's (x right, y down, z forward). Every pixel casts one ray through the same
primitive table the lidar ray caster uses (primitives are rasterised over their projected
bounding rectangles, so a frame costs ~0.1 s), the ground is the terrain height field with the
road and its markings. Shading is Lambertian from the surface normal under a random sun, with
random materials, sky, exposure and sensor noise, all drawn from the frame seed.

Labels: a 2D box (x1, y1, x2, y2 pixels, inclusive-exclusive of the outermost visible pixels)
per object with at least `CameraConfig.min_visible_pixels` visible pixels; occlusion is
1 - visible / unoccluded silhouette pixels (the silhouette rendered with the ground only),
mapped to KITTI levels 0..3 by `labels.occlusion_level`; truncation is the fraction of the
projected 3D box's 2D extent that lies outside the image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numba as nb
import numpy as np

from admlops_ros.errors import AdmlopsError

from . import raycast as rc
from .labels import occlusion_level
from .primitives import (BOX, CYLINDER, ELLIPSOID, K_A, K_B, K_C, K_COS, K_CX, K_CY, K_KIND,
                         K_RADIUS, K_REFL, K_SIN, K_ZHI, K_ZLO)
from .scene import Scene, SceneConfig, generate_scene
from .sensor import DEFAULT_MOUNT_HEIGHT

_JIT = dict(cache=True)
NEAR = 0.1            # metres: nearest rendered depth along the optical axis
FAR = 250.0           # metres: farther than this is sky
SKY = -1              # instance / primitive id of sky pixels
GROUND = -2           # primitive id of ground pixels


class CameraConfigError(AdmlopsError, ValueError):
    """A camera configuration value is invalid."""


@dataclass(frozen=True)
class CameraConfig:
    """Pinhole camera beside the lidar.

    Attributes:
        width, height: image size, pixels.
        fx, fy, cx, cy: intrinsics, pixels (KITTI P2-like defaults).
        position: camera centre in the lidar frame (x forward, y left, z up), metres.
        pitch_deg: downward tilt of the optical axis, degrees (KITTI ~0).
        noise_std: (min, max) of the per-frame gaussian pixel noise sigma, 0..255 scale.
        min_visible_pixels: objects with fewer visible pixels get no label.
    """

    width: int = 1242
    height: int = 375
    fx: float = 721.5377
    fy: float = 721.5377
    cx: float = 609.5593
    cy: float = 172.854
    position: Tuple[float, float, float] = (0.27, 0.0, -0.08)
    pitch_deg: float = 0.0
    noise_std: Tuple[float, float] = (1.0, 5.0)
    min_visible_pixels: int = 12

    def __post_init__(self) -> None:
        if not (16 <= self.width <= 8192 and 16 <= self.height <= 8192):
            raise CameraConfigError(
                f"CameraConfig width/height {self.width}x{self.height} outside 16..8192 px")
        if self.fx <= 0 or self.fy <= 0:
            raise CameraConfigError(f"CameraConfig fx/fy must be > 0, got {self.fx}, {self.fy}")

    @property
    def K(self) -> np.ndarray:
        """[3, 3] float64 intrinsic matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def cam_to_lidar_rotation(self) -> np.ndarray:
        """[3, 3] rotation taking camera-frame directions to the lidar frame."""
        p = math.radians(self.pitch_deg)
        # camera axes (x right, y down, z forward) expressed in the lidar frame
        z_axis = np.array([math.cos(p), 0.0, -math.sin(p)])
        x_axis = np.array([0.0, -1.0, 0.0])
        y_axis = np.cross(z_axis, x_axis)
        return np.stack([x_axis, y_axis, z_axis], axis=1)

    @property
    def lidar_to_cam(self) -> np.ndarray:
        """[4, 4] float64 transform of lidar-frame points to the camera frame."""
        r = self.cam_to_lidar_rotation.T
        t = -r @ np.asarray(self.position, np.float64)
        out = np.eye(4)
        out[:3, :3] = r
        out[:3, 3] = t
        return out

    @property
    def P(self) -> np.ndarray:
        """[3, 4] projection matrix of camera-frame points (KITTI P2 without baseline)."""
        return np.concatenate([self.K, np.zeros((3, 1))], axis=1)


@dataclass
class CameraFrame:
    """A rendered image and its labels.

    Attributes:
        image: [H, W, 3] uint8 BGR (OpenCV order).
        boxes2d: [K, 4] float32 (x1, y1, x2, y2) pixels of the visible objects.
        names: class per 2D box (Car, Van, Pedestrian, Cyclist).
        truncation: [K] float32 0..1 fraction of the projected 3D box outside the image.
        occlusion: [K] float32 0..1 fraction of the unoccluded silhouette that is hidden.
        occlusion_level: [K] int32 KITTI occluded flag 0..3.
        box_index: [K] int64 index of each label in `boxes3d`.
        boxes3d: [M, 7] float32 all scene objects (lidar frame, bottom centre, yaw).
        names3d: class per 3D box.
        visible_pixels: [K] int64 visible pixel count per label.
        instance: [H, W] int32 object index per pixel (-1 background) or None.
        seed: the frame seed.
        config: the camera it was rendered with.
    """

    image: np.ndarray
    boxes2d: np.ndarray
    names: List[str]
    truncation: np.ndarray
    occlusion: np.ndarray
    occlusion_level: np.ndarray
    box_index: np.ndarray
    boxes3d: np.ndarray
    names3d: List[str]
    visible_pixels: np.ndarray
    seed: int
    config: CameraConfig = field(default_factory=CameraConfig)
    instance: Optional[np.ndarray] = None


# ----------------------------------------------------------------------------- kernels
@nb.njit(**_JIT)
def _ground_depth(o, dirs, tp, t_max):
    """Depth t (along unnormalised dirs) where each ray meets the terrain; inf if none."""
    n = dirs.shape[0]
    out = np.full(n, np.inf)
    for i in range(n):
        dx, dy, dz = dirs[i, 0], dirs[i, 1], dirs[i, 2]
        if dz >= -1e-4:
            continue
        t = (tp[0] - o[2]) / dz
        if t <= 0.0:
            continue
        ok = True
        for _ in range(8):
            x = o[0] + t * dx
            y = o[1] + t * dy
            f = o[2] + t * dz - rc.terrain_height(x, y, tp)
            gx, gy = rc.terrain_gradient(x, y, tp)
            df = dz - gx * dx - gy * dy
            if df >= -1e-9:
                ok = False
                break
            t -= f / df
            if t <= 0.0:
                ok = False
                break
        if ok and t < t_max:
            out[i] = t
    return out


@nb.njit(**_JIT)
def _intersect(p, prims, ox, oy, oz, dx, dy, dz):
    """Entry depth and normal of a ray with primitive p; depth inf if missed."""
    kind = prims[p, K_KIND]
    qx = ox - prims[p, K_CX]
    qy = oy - prims[p, K_CY]
    cyw = prims[p, K_COS]
    syw = prims[p, K_SIN]
    inf = np.inf
    if kind == BOX or kind == CYLINDER:
        zlo = prims[p, K_ZLO]
        zhi = prims[p, K_ZHI]
        if abs(dz) < 1e-12:
            if oz < zlo or oz > zhi:
                return inf, 0.0, 0.0, 0.0
            tzi, tzo = -inf, inf
        else:
            t1 = (zlo - oz) / dz
            t2 = (zhi - oz) / dz
            if t1 < t2:
                tzi, tzo = t1, t2
            else:
                tzi, tzo = t2, t1
        if kind == BOX:
            lox = cyw * qx + syw * qy
            loy = -syw * qx + cyw * qy
            ldx = cyw * dx + syw * dy
            ldy = -syw * dx + cyw * dy
            ha = prims[p, K_A]
            hb = prims[p, K_B]
            tin, tout = tzi, tzo
            face = 2
            if abs(ldx) < 1e-12:
                if abs(lox) > ha:
                    return inf, 0.0, 0.0, 0.0
            else:
                t1 = (-ha - lox) / ldx
                t2 = (ha - lox) / ldx
                if t1 > t2:
                    t1, t2 = t2, t1
                if t1 > tin:
                    tin = t1
                    face = 0
                if t2 < tout:
                    tout = t2
            if abs(ldy) < 1e-12:
                if abs(loy) > hb:
                    return inf, 0.0, 0.0, 0.0
            else:
                t1 = (-hb - loy) / ldy
                t2 = (hb - loy) / ldy
                if t1 > t2:
                    t1, t2 = t2, t1
                if t1 > tin:
                    tin = t1
                    face = 1
                if t2 < tout:
                    tout = t2
            if tin > tout or tin <= 1e-6:
                return inf, 0.0, 0.0, 0.0
            if face == 0:
                s = -1.0 if ldx > 0 else 1.0
                return tin, s * cyw, s * syw, 0.0
            if face == 1:
                s = -1.0 if ldy > 0 else 1.0
                return tin, -s * syw, s * cyw, 0.0
            return tin, 0.0, 0.0, (-1.0 if dz > 0 else 1.0)
        rad = prims[p, K_A]
        a = dx * dx + dy * dy
        if a < 1e-18:
            return inf, 0.0, 0.0, 0.0
        b = qx * dx + qy * dy
        c = qx * qx + qy * qy - rad * rad
        disc = b * b - a * c
        if disc <= 0.0:
            return inf, 0.0, 0.0, 0.0
        sq = math.sqrt(disc)
        tin = (-b - sq) / a
        tout = (-b + sq) / a
        face = 2
        if tzi > tin:
            tin = tzi
            face = 4
        if tzo < tout:
            tout = tzo
        if tin > tout or tin <= 1e-6:
            return inf, 0.0, 0.0, 0.0
        if face == 4:
            return tin, 0.0, 0.0, (-1.0 if dz > 0 else 1.0)
        hx = qx + tin * dx
        hy = qy + tin * dy
        return tin, hx, hy, 0.0
    # ellipsoid
    sa = prims[p, K_A]
    sb = prims[p, K_B]
    sc = prims[p, K_C]
    qz = oz - 0.5 * (prims[p, K_ZLO] + prims[p, K_ZHI])
    lox = (cyw * qx + syw * qy) / sa
    loy = (-syw * qx + cyw * qy) / sb
    loz = qz / sc
    ldx = (cyw * dx + syw * dy) / sa
    ldy = (-syw * dx + cyw * dy) / sb
    ldz = dz / sc
    a = ldx * ldx + ldy * ldy + ldz * ldz
    b = lox * ldx + loy * ldy + loz * ldz
    c = lox * lox + loy * loy + loz * loz - 1.0
    disc = b * b - a * c
    if disc <= 0.0:
        return inf, 0.0, 0.0, 0.0
    tin = (-b - math.sqrt(disc)) / a
    if tin <= 1e-6:
        return inf, 0.0, 0.0, 0.0
    hx = (lox + tin * ldx) / sa     # unit-sphere point / semi-axis = local gradient
    hy = (loy + tin * ldy) / sb
    hz = (loz + tin * ldz) / sc
    return tin, cyw * hx - syw * hy, syw * hx + cyw * hy, hz


@nb.njit(**_JIT)
def _rasterise(prims, owner, n_obj, o, rot, fx, fy, cx, cy, width, height, t_ground):
    """Depth test of every primitive over its projected bounding rectangle.

    Returns:
        depth [H*W] (inf: no primitive), prim [H*W] int32 (-1 none), normal [H*W, 3],
        alone [n_obj, H*W] bool (the object's own silhouette in front of the ground).
    """
    npx = width * height
    depth = np.full(npx, np.inf)
    prim = np.full(npx, -1, np.int32)
    normal = np.zeros((npx, 3))
    alone = np.zeros((n_obj, npx), np.bool_)
    for p in range(prims.shape[0]):
        # bounding box corners (xy circle radius, z range) -> camera frame
        rad = prims[p, K_RADIUS] + 0.02
        u0, u1, v0, v1 = 1e9, -1e9, 1e9, -1e9
        behind = False
        visible = False
        for k in range(8):
            px = prims[p, K_CX] + (rad if k & 1 else -rad) - o[0]
            py = prims[p, K_CY] + (rad if k & 2 else -rad) - o[1]
            pz = (prims[p, K_ZHI] if k & 4 else prims[p, K_ZLO]) - o[2]
            xc = rot[0, 0] * px + rot[1, 0] * py + rot[2, 0] * pz
            yc = rot[0, 1] * px + rot[1, 1] * py + rot[2, 1] * pz
            zc = rot[0, 2] * px + rot[1, 2] * py + rot[2, 2] * pz
            if zc < NEAR:
                behind = True
                continue
            visible = True
            u = fx * xc / zc + cx
            v = fy * yc / zc + cy
            u0 = min(u0, u)
            u1 = max(u1, u)
            v0 = min(v0, v)
            v1 = max(v1, v)
        if not visible:
            continue
        if behind:
            c0, c1, r0, r1 = 0, width, 0, height
        else:
            c0 = max(int(math.floor(u0)), 0)
            c1 = min(int(math.ceil(u1)) + 1, width)
            r0 = max(int(math.floor(v0)), 0)
            r1 = min(int(math.ceil(v1)) + 1, height)
        ob = owner[p]
        for r in range(r0, r1):
            for c in range(c0, c1):
                i = r * width + c
                xn = (c + 0.5 - cx) / fx
                yn = (r + 0.5 - cy) / fy
                dx = rot[0, 0] * xn + rot[0, 1] * yn + rot[0, 2]
                dy = rot[1, 0] * xn + rot[1, 1] * yn + rot[1, 2]
                dz = rot[2, 0] * xn + rot[2, 1] * yn + rot[2, 2]
                t, nx, ny, nz = _intersect(p, prims, o[0], o[1], o[2], dx, dy, dz)
                if t == np.inf or t > FAR:
                    continue
                if ob >= 0 and t < t_ground[i]:
                    alone[ob, i] = True
                if t < depth[i]:
                    depth[i] = t
                    prim[i] = p
                    normal[i, 0] = nx
                    normal[i, 1] = ny
                    normal[i, 2] = nz
    return depth, prim, normal, alone


@nb.njit(**_JIT)
def _object_stats(instance, alone, n_obj, width):
    """Per object: visible pixel count, alone count, visible bbox (x1, y1, x2, y2)."""
    vis = np.zeros(n_obj, np.int64)
    cnt = np.zeros(n_obj, np.int64)
    box = np.empty((n_obj, 4), np.int64)
    box[:, 0] = 1 << 30
    box[:, 1] = 1 << 30
    box[:, 2] = -1
    box[:, 3] = -1
    for i in range(instance.shape[0]):
        ob = instance[i]
        if ob < 0:
            continue
        r = i // width
        c = i - r * width
        vis[ob] += 1
        box[ob, 0] = min(box[ob, 0], c)
        box[ob, 1] = min(box[ob, 1], r)
        box[ob, 2] = max(box[ob, 2], c + 1)
        box[ob, 3] = max(box[ob, 3], r + 1)
    for ob in range(n_obj):
        for i in range(alone.shape[1]):
            if alone[ob, i]:
                cnt[ob] += 1
    return vis, cnt, box


@nb.njit(**_JIT)
def _ground_albedo(gx, gy, rp, colours):
    """Ground colour index per point: 0 asphalt, 1 paint, 2 terrain."""
    n = gx.shape[0]
    out = np.empty((n, 3))
    for i in range(n):
        refl = rc.ground_reflectivity(gx[i], gy[i], rp)
        if refl == rp[rc.R_REFL_PAINT]:
            k = 1
        elif refl == rp[rc.R_REFL_ROAD]:
            k = 0
        else:
            k = 2
        out[i, 0] = colours[k, 0]
        out[i, 1] = colours[k, 1]
        out[i, 2] = colours[k, 2]
    return out


# ----------------------------------------------------------------------------- materials
def _hsv(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.asarray(rgb, np.float64)


def _car_paint(rng: np.random.Generator) -> np.ndarray:
    k = rng.random()
    if k < 0.25:
        return np.full(3, rng.uniform(0.75, 0.95))          # white / silver
    if k < 0.45:
        return np.full(3, rng.uniform(0.05, 0.2))           # black
    if k < 0.6:
        return np.full(3, rng.uniform(0.35, 0.6))           # grey
    return _hsv(rng.random(), rng.uniform(0.4, 0.9), rng.uniform(0.3, 0.85))


def _albedos(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """[P, 3] RGB albedo 0..1 per primitive from its owner, kind, size and reflectivity."""
    prims, owner = scene.prims, scene.owner
    out = np.empty((len(prims), 3))
    obj_col = {}
    for p in range(len(prims)):
        kind = int(prims[p, K_KIND])
        refl = float(prims[p, K_REFL])
        ob = int(owner[p])
        if ob >= 0:
            name = scene.names[ob]
            if ob not in obj_col:
                obj_col[ob] = (_car_paint(rng), _hsv(rng.random(), rng.uniform(0.1, 0.8),
                                                     rng.uniform(0.1, 0.8)),
                               _hsv(rng.random(), rng.uniform(0.1, 0.7), rng.uniform(0.1, 0.7)),
                               _hsv(rng.uniform(0.02, 0.1), rng.uniform(0.3, 0.6),
                                    rng.uniform(0.35, 0.9)))
            paint, shirt, pants, skin = obj_col[ob]
            if name in ("Car", "Van"):
                if refl < 0.055:
                    col = np.array([0.04, 0.04, 0.04])           # tyres
                elif refl < 0.08:
                    col = np.array([0.1, 0.12, 0.15]) * rng.uniform(0.6, 1.6)   # glass
                else:
                    col = paint
            else:
                if kind == CYLINDER:
                    col = pants
                elif kind == BOX:
                    col = np.full(3, rng.uniform(0.1, 0.6))      # bicycle frame
                elif refl <= 0.1:
                    col = np.array([0.05, 0.05, 0.05])           # bicycle wheels
                elif abs(refl - 0.35) < 1e-9 and prims[p, K_C] < 0.13:
                    col = skin                                   # head
                else:
                    col = shirt
        else:
            size = float(prims[p, K_RADIUS])
            height = float(prims[p, K_ZHI] - prims[p, K_ZLO])
            if kind == ELLIPSOID:
                col = _hsv(rng.uniform(0.18, 0.33), rng.uniform(0.35, 0.8),
                           rng.uniform(0.15, 0.5))              # foliage
                if size < 0.3:
                    col = _hsv(rng.uniform(0.0, 0.05), 0.8, 0.6)   # hydrant cap
            elif kind == CYLINDER:
                if abs(refl - 0.3) < 1e-9:
                    col = _hsv(rng.uniform(0.05, 0.1), 0.5, rng.uniform(0.2, 0.4))  # trunk
                else:
                    col = np.full(3, rng.uniform(0.25, 0.7))     # poles, bollards
            elif size > 3.0 and height > 3.0:                    # buildings
                k = rng.random()
                if k < 0.4:
                    col = _hsv(rng.uniform(0.05, 0.14), rng.uniform(0.1, 0.5),
                               rng.uniform(0.4, 0.9))
                elif k < 0.6:
                    col = _hsv(rng.uniform(0.0, 0.05), rng.uniform(0.4, 0.7),
                               rng.uniform(0.3, 0.6))            # brick
                else:
                    col = np.full(3, rng.uniform(0.3, 0.9))
            elif height <= 0.55 and size > 1.0:                  # sidewalk slabs, curbs
                col = np.full(3, rng.uniform(0.45, 0.7))
            else:
                col = _hsv(rng.random(), rng.uniform(0.0, 0.6), rng.uniform(0.2, 0.8))
        out[p] = np.clip(col * rng.uniform(0.9, 1.1, 3), 0.0, 1.0)
    return out



# ----------------------------------------------------------------------------- projection
def project_box_corners(boxes3d: np.ndarray, camera: CameraConfig
                        ) -> Tuple[np.ndarray, np.ndarray]:
    """Projected 2D extent of lidar-frame 3D boxes.

    Args:
        boxes3d: [M, 7] (x, y, z bottom centre, dx, dy, dz, yaw), lidar frame, metres.
        camera: the camera.

    Returns:
        (extent [M, 4] float64 x1, y1, x2, y2 pixels of the corners in front of the camera,
        unclipped; in_front [M] int number of corners with depth >= NEAR).
    """
    b = np.asarray(boxes3d, np.float64).reshape(-1, 7)
    sx = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * 0.5
    sy = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * 0.5
    sz = np.array([0, 0, 0, 0, 1, 1, 1, 1], np.float64)
    c, s = np.cos(b[:, 6])[:, None], np.sin(b[:, 6])[:, None]
    u = sx[None] * b[:, 3:4]
    v = sy[None] * b[:, 4:5]
    pts = np.stack([b[:, 0:1] + c * u - s * v, b[:, 1:2] + s * u + c * v,
                    b[:, 2:3] + sz[None] * b[:, 5:6]], axis=-1)          # [M, 8, 3]
    T = camera.lidar_to_cam
    cam = pts @ T[:3, :3].T + T[:3, 3]
    front = cam[..., 2] >= NEAR
    z = np.where(front, cam[..., 2], 1.0)
    uu = camera.fx * cam[..., 0] / z + camera.cx
    vv = camera.fy * cam[..., 1] / z + camera.cy
    big = 1e9
    ext = np.stack([np.where(front, uu, big).min(1), np.where(front, vv, big).min(1),
                    np.where(front, uu, -big).max(1), np.where(front, vv, -big).max(1)], 1)
    return ext, front.sum(1)


def truncation(boxes3d: np.ndarray, camera: CameraConfig) -> np.ndarray:
    """[M] float32 fraction of each projected 3D box's 2D extent outside the image.

    A box with corners behind the camera counts as at least 0.5 truncated (its extent is
    unbounded on that side); one entirely behind as 1.
    """
    ext, n_front = project_box_corners(boxes3d, camera)
    w = np.maximum(ext[:, 2] - ext[:, 0], 1e-6)
    h = np.maximum(ext[:, 3] - ext[:, 1], 1e-6)
    cw = np.clip(np.minimum(ext[:, 2], camera.width) - np.maximum(ext[:, 0], 0), 0, None)
    ch = np.clip(np.minimum(ext[:, 3], camera.height) - np.maximum(ext[:, 1], 0), 0, None)
    out = 1.0 - (cw * ch) / (w * h)
    out = np.where(n_front < 8, np.maximum(out, 0.5), out)
    out = np.where(n_front == 0, 1.0, out)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------- render
def render_scene(scene: Scene, seed: int, camera: CameraConfig = CameraConfig(),
                 keep_instance: bool = False) -> CameraFrame:
    """Renders ``scene`` through ``camera``; appearance noise is drawn from ``seed``.

    Args:
        scene: a generated scene (lidar frame).
        seed: appearance seed (materials, light, noise).
        camera: the camera.
        keep_instance: keep the [H, W] instance-id buffer in the result.

    Returns:
        The `CameraFrame`.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xCA3E7A]))
    W, H = camera.width, camera.height
    rot = camera.cam_to_lidar_rotation
    o = np.asarray(camera.position, np.float64)
    cols, rows = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    xn = ((cols + 0.5 - camera.cx) / camera.fx).ravel()
    yn = ((rows + 0.5 - camera.cy) / camera.fy).ravel()
    dirs = np.ascontiguousarray(np.stack([xn, yn, np.ones_like(xn)], 1) @ rot.T)
    t_ground = _ground_depth(o, dirs, scene.terrain, FAR)
    n_obj = len(scene.boxes)
    depth, prim, normal, alone = _rasterise(
        scene.prims, scene.owner, n_obj, o, rot, camera.fx, camera.fy, camera.cx, camera.cy,
        W, H, t_ground)
    ground = t_ground < depth
    depth = np.where(ground, t_ground, depth)
    prim = np.where(ground, GROUND, prim)
    sky = ~np.isfinite(depth)
    owner = np.where(prim >= 0, scene.owner[np.maximum(prim, 0)], -1).astype(np.int32)
    instance = np.where(prim >= 0, owner, -1).astype(np.int32)

    # ---- materials and light
    albedo_p = _albedos(scene, rng)
    road_tone = rng.uniform(0.18, 0.4)
    terrain = (_hsv(rng.uniform(0.15, 0.3), rng.uniform(0.3, 0.6), rng.uniform(0.25, 0.5))
               if rng.random() < 0.6 else _hsv(rng.uniform(0.06, 0.12), rng.uniform(0.2, 0.5),
                                               rng.uniform(0.3, 0.6)))
    ground_cols = np.stack([np.full(3, road_tone) * rng.uniform(0.95, 1.05, 3),
                            np.full(3, rng.uniform(0.75, 0.95)), terrain])
    sun_az = rng.uniform(0, 2 * np.pi)
    sun_el = rng.uniform(np.radians(10), np.radians(70))
    light = np.array([np.cos(sun_el) * np.cos(sun_az), np.cos(sun_el) * np.sin(sun_az),
                      np.sin(sun_el)])
    ambient = rng.uniform(0.25, 0.55)
    diffuse = rng.uniform(0.5, 0.95)
    exposure = rng.uniform(0.75, 1.25)
    tint = rng.uniform(0.9, 1.1, 3)

    albedo = np.zeros((H * W, 3))
    obj = prim >= 0
    albedo[obj] = albedo_p[prim[obj]]
    g = ground
    if g.any():
        pts = o[None] + depth[g, None] * dirs[g]
        albedo[g] = _ground_albedo(pts[:, 0].copy(), pts[:, 1].copy(), scene.road, ground_cols)
        normal[g] = np.array([0.0, 0.0, 1.0])
    nrm = normal / (np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12)
    lam = np.clip(nrm @ light, 0.0, None)
    shade = ambient + diffuse * lam
    colour = albedo * shade[:, None]
    # distance haze
    haze = 1.0 - np.exp(-np.where(sky, 0.0, depth) / rng.uniform(150.0, 600.0))
    sky_top = _hsv(rng.uniform(0.55, 0.62), rng.uniform(0.1, 0.6), rng.uniform(0.6, 1.0))
    sky_bot = np.clip(sky_top + rng.uniform(0.05, 0.25), 0, 1)
    vfrac = np.clip(rows.ravel() / max(camera.cy, 1.0), 0.0, 1.0)[:, None]
    sky_col = sky_top[None] * (1 - vfrac) + sky_bot[None] * vfrac
    colour = colour * (1 - haze[:, None]) + sky_bot[None] * haze[:, None]
    colour[sky] = sky_col[sky]
    img = colour.reshape(H, W, 3) * exposure * tint[None, None]
    noise = rng.uniform(*camera.noise_std) / 255.0
    img = img + rng.standard_normal(img.shape, dtype=np.float32) * noise
    rgb = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    bgr = np.ascontiguousarray(rgb[..., ::-1])

    # ---- labels
    vis, cnt, box = _object_stats(instance, alone, n_obj, W)
    keep = np.nonzero(vis >= camera.min_visible_pixels)[0]
    occ = (1.0 - vis[keep] / np.maximum(cnt[keep], 1)).clip(0.0, 1.0).astype(np.float32)
    trunc = truncation(scene.boxes, camera)[keep]
    return CameraFrame(
        image=bgr, boxes2d=box[keep].astype(np.float32), names=[scene.names[i] for i in keep],
        truncation=trunc, occlusion=occ, occlusion_level=occlusion_level(occ),
        box_index=keep.astype(np.int64), boxes3d=scene.boxes.copy(),
        names3d=list(scene.names), visible_pixels=vis[keep], seed=int(seed), config=camera,
        instance=instance.reshape(H, W) if keep_instance else None)


def render_frame(seed: int, scene: Optional[SceneConfig] = None,
                 camera: CameraConfig = CameraConfig(), keep_instance: bool = False,
                 mount_height: float = DEFAULT_MOUNT_HEIGHT) -> CameraFrame:
    """Renders the camera image of the scene `simulate_frame(seed)` scans.

    Args:
        seed: non-negative frame seed (scene and appearance).
        scene: scene content (default `SceneConfig()`).
        camera: the camera (default KITTI-like).
        keep_instance: keep the instance-id buffer.
        mount_height: lidar mount height the scene is generated for, metres.

    Returns:
        The `CameraFrame`; the same arguments give identical arrays.
    """
    if int(seed) < 0:
        raise CameraConfigError(f"render_frame: seed must be >= 0, got {seed}")
    world = generate_scene(int(seed), scene if scene is not None else SceneConfig(),
                           mount_height)
    return render_scene(world, int(seed), camera, keep_instance)
