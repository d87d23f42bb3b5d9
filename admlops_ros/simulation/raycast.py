"""Numba ray-casting kernels: height-field ground, road surface, primitives, azimuth culling.

All beams of one firing share one azimuth, so a scan is a range image of ``num_azimuths``
columns x ``num_beams`` rows. Beam b fires from (0, 0, oz_b) (``oz`` 0 for every beam unless the
sensor gives per-laser vertical offsets, as the HDL-64E's db.xml does). Rays are parametrised by
their horizontal distance ``r``: a ray of azimuth ``a`` and elevation ``e`` is at
(r cos a, r sin a, oz + r tan e) and its 3D range from its firing point is r / cos e. Per column the horizontal part of
every ray-primitive test is solved once and only the vertical part per beam.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

from .primitives import (BOX, CYLINDER, K_A, K_B, K_C, K_COS, K_CX, K_CY, K_KIND, K_PASS,
                         K_RADIUS, K_REFL, K_SIN, K_ZHI, K_ZLO)

NUM_TERRAIN_WAVES = 3
TERRAIN_PARAMS = 3 + 4 * NUM_TERRAIN_WAVES   # h0, gx, gy, then (amp, kx, ky, phase) per wave
# Road parameter vector layout.
R_KIND, R_P0X, R_P0Y, R_PSI0, R_KAPPA = 0, 1, 2, 3, 4
R_LANE_W, R_NUM_LANES, R_TRAFFIC_HALF, R_HALF_LEFT, R_HALF_RIGHT = 5, 6, 7, 8, 9
R_REFL_ROAD, R_REFL_PAINT, R_REFL_TERRAIN, R_DASH_PERIOD, R_DASH_LEN = 10, 11, 12, 13, 14
ROAD_PARAMS = 15
MARKING_HALF_WIDTH = 0.075   # metres

_JIT = dict(cache=True)


@nb.njit(**_JIT)
def terrain_height(x, y, tp):
    """Ground height z (LiDAR frame) at (x, y): plane + sine waves, equal to tp[0] at the origin."""
    h = tp[0] + tp[1] * x + tp[2] * y
    for i in range(NUM_TERRAIN_WAVES):
        o = 3 + 4 * i
        h += tp[o] * (math.sin(tp[o + 1] * x + tp[o + 2] * y + tp[o + 3]) - math.sin(tp[o + 3]))
    return h


@nb.njit(**_JIT)
def terrain_gradient(x, y, tp):
    """(dh/dx, dh/dy) of `terrain_height`."""
    gx = tp[1]
    gy = tp[2]
    for i in range(NUM_TERRAIN_WAVES):
        o = 3 + 4 * i
        c = tp[o] * math.cos(tp[o + 1] * x + tp[o + 2] * y + tp[o + 3])
        gx += c * tp[o + 1]
        gy += c * tp[o + 2]
    return gx, gy


@nb.njit(**_JIT)
def terrain_height_many(x, y, tp):
    """`terrain_height` for arrays of points."""
    out = np.empty(x.shape[0], np.float64)
    for i in range(x.shape[0]):
        out[i] = terrain_height(x[i], y[i], tp)
    return out


@nb.njit(**_JIT)
def road_coordinates(x, y, rp):
    """(s along the road centreline, d lateral offset, + to the left) of a point (x, y)."""
    psi0 = rp[R_PSI0]
    if rp[R_KIND] == 0.0:
        dx = x - rp[R_P0X]
        dy = y - rp[R_P0Y]
        c = math.cos(psi0)
        s = math.sin(psi0)
        return dx * c + dy * s, -dx * s + dy * c
    kappa = rp[R_KAPPA]
    cx = rp[R_P0X] - math.sin(psi0) / kappa
    cy = rp[R_P0Y] + math.cos(psi0) / kappa
    vx = x - cx
    vy = y - cy
    dist = math.sqrt(vx * vx + vy * vy) + 1e-12
    sign = 1.0 if kappa > 0.0 else -1.0
    d = 1.0 / kappa - sign * dist
    nx = -sign * vx / dist
    ny = -sign * vy / dist
    psi = math.atan2(-nx, ny)
    dpsi = psi - psi0
    dpsi = dpsi - 2.0 * math.pi * math.floor(dpsi / (2.0 * math.pi) + 0.5)
    return dpsi / kappa, d


@nb.njit(**_JIT)
def ground_reflectivity(x, y, rp):
    """Reflectivity of the ground at (x, y): asphalt with lane markings, or terrain."""
    s, d = road_coordinates(x, y, rp)
    if d > rp[R_HALF_LEFT] or d < -rp[R_HALF_RIGHT]:
        return rp[R_REFL_TERRAIN]
    n = int(rp[R_NUM_LANES])
    half = rp[R_TRAFFIC_HALF]
    for i in range(n + 1):
        m = -half + i * rp[R_LANE_W]
        if abs(d - m) < MARKING_HALF_WIDTH:
            solid = i == 0 or i == n or (2 * i == n and n >= 4)
            phase = s - rp[R_DASH_PERIOD] * math.floor(s / rp[R_DASH_PERIOD])
            if solid or phase < rp[R_DASH_LEN]:
                return rp[R_REFL_PAINT]
    return rp[R_REFL_ROAD]


@nb.njit(**_JIT)
def build_sectors(prims, n_sectors):
    """Azimuth culling lists: primitives whose xy bounding circle overlaps each sector.

    Returns:
        (start [n_sectors + 1] int64, index [total] int32): CSR lists, sector k holds
        index[start[k]:start[k + 1]].
    """
    n = prims.shape[0]
    width = 2.0 * math.pi / n_sectors
    first = np.empty(n, np.int64)
    count = np.empty(n, np.int64)
    for p in range(n):
        cx = prims[p, K_CX]
        cy = prims[p, K_CY]
        rad = prims[p, K_RADIUS] + 0.05
        dist = math.sqrt(cx * cx + cy * cy)
        if dist <= rad:
            first[p] = 0
            count[p] = n_sectors
            continue
        centre = math.atan2(cy, cx)
        half = math.asin(rad / dist)
        lo = int(math.floor((centre - half) / width))
        hi = int(math.floor((centre + half) / width))
        first[p] = lo
        count[p] = min(hi - lo + 1, n_sectors)
    sizes = np.zeros(n_sectors + 1, np.int64)
    for p in range(n):
        for k in range(count[p]):
            sizes[(first[p] + k) % n_sectors + 1] += 1
    start = np.cumsum(sizes)
    fill = start[:-1].copy()
    index = np.empty(start[-1], np.int32)
    for p in range(n):
        for k in range(count[p]):
            sec = (first[p] + k) % n_sectors
            index[fill[sec]] = p
            fill[sec] += 1
    return start, index


@nb.njit(**_JIT)
def pass_through_u(ray, p, seed):
    """A uniform in [0, 1) from (ray, primitive, seed): whether a see-through primitive lets
    this ray pass (splitmix64-style integer hash; no random stream needed)."""
    z = (np.uint64(ray) * np.uint64(0x9E3779B97F4A7C15)
         + np.uint64(p) * np.uint64(0xBF58476D1CE4E5B9) + np.uint64(seed))
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return float(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@nb.njit(**_JIT)
def cast_scan(tan_e, cos_e, sin_e, n_az, r_samples, tp, rp, prims, owner, sec_start, sec_index,
              n_objects, max_range, min_range, noise_r, noise_i, drop_u, range_std, drop_p,
              int_std, inc_exp, origin_z, beam_drop, min_tan, aux_u, aux_z, far_drop, far_r0,
              far_r1, zi_near, zi_far, zi_dark, pass_seed):
    """Casts a full scan.

    Args:
        tan_e, cos_e, sin_e: [B] beam elevation tangent / cosine / sine, sorted by increasing
            elevation.
        n_az: columns per revolution; column j has azimuth (j + 0.5) * 2 pi / n_az - pi.
        r_samples: [K] increasing horizontal distances where the ground profile is sampled.
        tp: terrain parameters; rp: road parameters.
        prims, owner: primitive table and owning object index (-1 clutter).
        sec_start, sec_index: azimuth culling lists from `build_sectors`.
        n_objects: number of labelled objects.
        max_range, min_range: valid 3D range, metres.
        noise_r, noise_i, drop_u: [n_az * B] standard normals for range / intensity noise and
            uniforms for dropouts, one per ray (ray = j * B + b).
        range_std, drop_p, int_std: noise sigma (m), dropout probability, intensity sigma.
        inc_exp: intensity = reflectivity * |cos incidence| ** inc_exp + noise (1: Lambertian).
        origin_z: [B] firing height of each beam above the origin (non-decreasing in b).
        beam_drop: [B] dropout probability per beam (``drop_p`` is unused by the kernel when
            this is given; the caller passes drop_p + extra).
        min_tan: [n_az] lowest tan(elevation) not blocked by the ego vehicle (-inf: none).
        aux_u, aux_z: [n_az * B] uniforms for the far-field dropout and zero intensity (only
            read when ``far_drop`` / the zero-intensity probabilities are > 0).
        far_drop, far_r0, far_r1: extra dropout of ground and see-through (foliage) returns
            reaching ``far_drop`` at 3D range far_r1, ramping from far_r0, times
            (1 - |cos incidence|) (grazing goes first) and (1.3 - min(intensity / 0.5, 1))
            (dark goes first); solid surfaces (cars, walls) keep their returns.
        zi_near, zi_far, zi_dark: probability of intensity exactly 0 at range 0 / beyond
            far_r1 (linear between), plus zi_dark when intensity < 0.15.
        pass_seed: seed of the see-through test (`pass_through_u`).

    Returns:
        points [n, 4] float32, point_owner [n] int32 (object index, -1 clutter, -2 ground),
        alone [n_objects] int64 (rays that would hit the object with only the ground present),
        hits [n_objects] int64 (rays whose first return is the object, before dropouts).
    """
    nb_ = tan_e.shape[0]
    n_k = r_samples.shape[0]
    n_sec = sec_start.shape[0] - 1
    out = np.empty((n_az * nb_, 4), np.float32)
    out_owner = np.empty(n_az * nb_, np.int32)
    alone = np.zeros(n_objects, np.int64)
    hits = np.zeros(n_objects, np.int64)
    last_ray = np.full(n_objects, -1, np.int64)
    hg = np.empty(n_k, np.float64)
    r_ground = np.empty(nb_, np.float64)
    max_cand = 0
    for k in range(n_sec):
        max_cand = max(max_cand, sec_start[k + 1] - sec_start[k])
    c_idx = np.empty(max_cand, np.int64)
    c_tin = np.empty(max_cand, np.float64)
    c_tout = np.empty(max_cand, np.float64)
    c_axis = np.empty(max_cand, np.int64)
    c_a = np.empty(max_cand, np.float64)
    c_b = np.empty(max_cand, np.float64)
    c_c = np.empty(max_cand, np.float64)
    two_pi = 2.0 * math.pi
    r_max_h = max_range  # horizontal distance never exceeds the 3D range
    n_out = 0
    for j in range(n_az):
        az = (j + 0.5) * two_pi / n_az - math.pi
        ca = math.cos(az)
        sa = math.sin(az)
        # ---- ground: profile along this azimuth, first crossing per beam (monotonic in beam)
        for k in range(n_k):
            hg[k] = terrain_height(r_samples[k] * ca, r_samples[k] * sa, tp)
        k = 1
        for b in range(nb_):
            te = tan_e[b]
            oz = origin_z[b]
            if oz + r_samples[0] * te <= hg[0]:
                r_ground[b] = r_samples[0]
                continue
            while k < n_k and oz + r_samples[k] * te > hg[k]:
                k += 1
            if k >= n_k:
                for bb in range(b, nb_):
                    r_ground[bb] = np.inf
                break
            f0 = (oz + r_samples[k - 1] * te) - hg[k - 1]
            f1 = (oz + r_samples[k] * te) - hg[k]
            r_ground[b] = r_samples[k - 1] + f0 / (f0 - f1) * (r_samples[k] - r_samples[k - 1])
        # ---- candidates of this column's sector: horizontal part of each test
        sec = int(math.floor(az / two_pi * n_sec)) % n_sec
        n_c = 0
        for q in range(sec_start[sec], sec_start[sec + 1]):
            p = sec_index[q]
            kind = prims[p, K_KIND]
            ox = -prims[p, K_CX]
            oy = -prims[p, K_CY]
            if kind == BOX:
                cyw = prims[p, K_COS]
                syw = prims[p, K_SIN]
                lox = cyw * ox + syw * oy
                loy = -syw * ox + cyw * oy
                ldx = cyw * ca + syw * sa
                ldy = -syw * ca + cyw * sa
                ha = prims[p, K_A]
                hb = prims[p, K_B]
                tin = -np.inf
                tout = np.inf
                axis = 0
                if abs(ldx) < 1e-12:
                    if abs(lox) > ha:
                        continue
                else:
                    t1 = (-ha - lox) / ldx
                    t2 = (ha - lox) / ldx
                    if t1 > t2:
                        t1, t2 = t2, t1
                    tin = t1
                    tout = t2
                if abs(ldy) < 1e-12:
                    if abs(loy) > hb:
                        continue
                else:
                    t1 = (-hb - loy) / ldy
                    t2 = (hb - loy) / ldy
                    if t1 > t2:
                        t1, t2 = t2, t1
                    if t1 > tin:
                        tin = t1
                        axis = 1
                    if t2 < tout:
                        tout = t2
                if tout < tin or tout <= 0.0 or tin > r_max_h:
                    continue
                c_idx[n_c] = p
                c_tin[n_c] = tin
                c_tout[n_c] = tout
                c_axis[n_c] = axis
                n_c += 1
            elif kind == CYLINDER:
                rad = prims[p, K_A]
                bq = ox * ca + oy * sa
                cq = ox * ox + oy * oy - rad * rad
                disc = bq * bq - cq
                if disc <= 0.0:
                    continue
                sq = math.sqrt(disc)
                tin = -bq - sq
                tout = -bq + sq
                if tout <= 0.0 or tin > r_max_h:
                    continue
                c_idx[n_c] = p
                c_tin[n_c] = tin
                c_tout[n_c] = tout
                c_axis[n_c] = 2
                n_c += 1
            else:
                cyw = prims[p, K_COS]
                syw = prims[p, K_SIN]
                lox = (cyw * ox + syw * oy) / prims[p, K_A]
                loy = (-syw * ox + cyw * oy) / prims[p, K_B]
                ldx = (cyw * ca + syw * sa) / prims[p, K_A]
                ldy = (-syw * ca + cyw * sa) / prims[p, K_B]
                ahz = ldx * ldx + ldy * ldy
                bhz = 2.0 * (lox * ldx + loy * ldy)
                chz = lox * lox + loy * loy
                if bhz * bhz - 4.0 * ahz * (chz - 1.0) <= 0.0:
                    continue   # the footprint ellipse is missed
                c_idx[n_c] = p
                c_a[n_c] = ahz
                c_b[n_c] = bhz
                c_c[n_c] = chz
                c_axis[n_c] = 3
                n_c += 1
        # ---- per beam: vertical part, first hit
        for b in range(nb_):
            ray = j * nb_ + b
            te = tan_e[b]
            if te < min_tan[j]:
                continue      # the ego vehicle's body blocks this ray
            oz = origin_z[b]
            best_r = r_ground[b]
            best_c = -1
            best_face = -1
            for c in range(n_c):
                p = c_idx[c]
                if c_axis[c] == 3:
                    semi_z = prims[p, K_C]
                    zc = (0.5 * (prims[p, K_ZLO] + prims[p, K_ZHI]) - oz) / semi_z
                    tz = te / semi_z
                    aq = c_a[c] + tz * tz
                    bq = c_b[c] - 2.0 * zc * tz
                    cq = c_c[c] + zc * zc - 1.0
                    disc = bq * bq - 4.0 * aq * cq
                    if disc <= 0.0:
                        continue
                    entry = (-bq - math.sqrt(disc)) / (2.0 * aq)
                    if entry <= 1e-6:
                        continue
                    face = 3
                else:
                    zlo = prims[p, K_ZLO] - oz
                    zhi = prims[p, K_ZHI] - oz
                    if te > 1e-12:
                        rlo = zlo / te
                        rhi = zhi / te
                    elif te < -1e-12:
                        rlo = zhi / te
                        rhi = zlo / te
                    else:
                        if zlo > 0.0 or zhi < 0.0:
                            continue
                        rlo = -np.inf
                        rhi = np.inf
                    entry = c_tin[c]
                    face = c_axis[c]
                    if rlo > entry:
                        entry = rlo
                        face = 4
                    exit_ = c_tout[c] if c_tout[c] < rhi else rhi
                    if entry > exit_ or entry <= 1e-6:
                        continue
                if prims[p, K_PASS] > 0.0 and pass_through_u(ray, p, pass_seed) < prims[p, K_PASS]:
                    continue      # through a gap in the foliage / mesh
                ob = owner[p]
                if ob >= 0 and entry < r_ground[b] and last_ray[ob] != ray:
                    rng3 = entry / cos_e[b]
                    if min_range <= rng3 <= max_range:
                        last_ray[ob] = ray
                        alone[ob] += 1
                if entry < best_r:
                    best_r = entry
                    best_c = c
                    best_face = face
            if best_r == np.inf:
                continue
            rng3 = best_r / cos_e[b]
            if rng3 > max_range or rng3 < min_range:
                continue
            ob = -2
            if best_c >= 0:
                ob = owner[c_idx[best_c]]
                if ob >= 0:
                    hits[ob] += 1
            if drop_u[ray] < beam_drop[b]:
                continue
            dx = ca * cos_e[b]
            dy = sa * cos_e[b]
            dz = sin_e[b]
            px = best_r * ca
            py = best_r * sa
            pz = oz + best_r * te
            # surface normal (sign irrelevant: only |cos incidence| is used)
            if best_c < 0:
                gx, gy = terrain_gradient(px, py, tp)
                nx, ny, nz = -gx, -gy, 1.0
                refl = ground_reflectivity(px, py, rp)
            else:
                p = c_idx[best_c]
                refl = prims[p, K_REFL]
                if best_face == 0:
                    nx, ny, nz = prims[p, K_COS], prims[p, K_SIN], 0.0
                elif best_face == 1:
                    nx, ny, nz = -prims[p, K_SIN], prims[p, K_COS], 0.0
                elif best_face == 2:
                    nx, ny, nz = px - prims[p, K_CX], py - prims[p, K_CY], 0.0
                elif best_face == 4:
                    nx, ny, nz = 0.0, 0.0, 1.0
                else:
                    cyw = prims[p, K_COS]
                    syw = prims[p, K_SIN]
                    qx = px - prims[p, K_CX]
                    qy = py - prims[p, K_CY]
                    qz = pz - 0.5 * (prims[p, K_ZLO] + prims[p, K_ZHI])
                    lx = (cyw * qx + syw * qy) / (prims[p, K_A] ** 2)
                    ly = (-syw * qx + cyw * qy) / (prims[p, K_B] ** 2)
                    nz = qz / (prims[p, K_C] ** 2)
                    nx = cyw * lx - syw * ly
                    ny = syw * lx + cyw * ly
            norm = math.sqrt(nx * nx + ny * ny + nz * nz) + 1e-12
            cos_inc = abs(nx * dx + ny * dy + nz * dz) / norm
            inten = refl * math.pow(cos_inc, inc_exp) + int_std * noise_i[ray]
            if inten < 0.0:
                inten = 0.0
            elif inten > 1.0:
                inten = 1.0
            soft = best_c < 0 or prims[c_idx[best_c], K_PASS] > 0.0   # road / foliage
            if far_drop > 0.0 and rng3 > far_r0 and soft:
                ramp = min((rng3 - far_r0) / (far_r1 - far_r0), 1.0)
                dark = 1.3 - min(inten / 0.5, 1.0)
                if aux_u[ray] < far_drop * ramp * (1.0 - cos_inc) * dark:
                    continue
            if zi_near > 0.0 or zi_far > 0.0 or zi_dark > 0.0:
                ramp = min(rng3 / far_r1, 1.0)
                p0 = zi_near + (zi_far - zi_near) * ramp
                if inten < 0.15:
                    p0 += zi_dark
                if aux_z[ray] < p0:
                    inten = 0.0
            rng3 += range_std * noise_r[ray]
            out[n_out, 0] = rng3 * dx
            out[n_out, 1] = rng3 * dy
            out[n_out, 2] = oz + rng3 * dz
            out[n_out, 3] = inten
            out_owner[n_out] = ob
            n_out += 1
    return out[:n_out].copy(), out_owner[:n_out].copy(), alone, hits


@nb.njit(**_JIT)
def count_points_in_boxes(points, boxes):
    """Points inside each box (x, y, z bottom-centre, dx, dy, dz, yaw), boundary inclusive.

    Returns:
        [M] int32 counts.
    """
    m = boxes.shape[0]
    counts = np.zeros(m, np.int32)
    for i in range(m):
        cx = boxes[i, 0]
        cy = boxes[i, 1]
        z0 = boxes[i, 2]
        ha = 0.5 * boxes[i, 3]
        hb = 0.5 * boxes[i, 4]
        z1 = z0 + boxes[i, 5]
        c = math.cos(boxes[i, 6])
        s = math.sin(boxes[i, 6])
        rad2 = ha * ha + hb * hb
        for n in range(points.shape[0]):
            qx = points[n, 0] - cx
            qy = points[n, 1] - cy
            if qx * qx + qy * qy > rad2:
                continue
            qz = points[n, 2]
            if qz < z0 or qz > z1:
                continue
            if abs(c * qx + s * qy) <= ha and abs(-s * qx + c * qy) <= hb:
                counts[i] += 1
    return counts
