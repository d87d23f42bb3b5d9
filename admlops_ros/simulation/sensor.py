"""Spinning-lidar sensor model: beam elevations, azimuth step, range, noise and presets."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Dict, Sequence, Tuple

import numpy as np

from admlops_ros.errors import AdmlopsError


DEFAULT_MOUNT_HEIGHT = 1.73   # metres, KITTI's Velodyne above the road


class SensorConfigError(AdmlopsError, ValueError):
    """A sensor configuration or preset name is invalid."""


def _hdl64_elevations() -> Tuple[float, ...]:
    """HDL-64E: upper block of 32 lasers +2.0..-8.33 deg (~0.33 deg apart), lower block of 32
    lasers -8.83..-24.9 deg (~0.52 deg apart)."""
    upper = np.linspace(2.0, -8.33, 32)
    lower = np.linspace(-8.83, -24.9, 32)
    return tuple(float(v) for v in np.concatenate([upper, lower]))


def _hdl32_elevations() -> Tuple[float, ...]:
    """HDL-32E: 32 lasers evenly from +10.67 to -30.67 deg (1.33 deg apart)."""
    return tuple(float(v) for v in np.linspace(10.67, -30.67, 32))


def _pandar40_elevations() -> Tuple[float, ...]:
    """Pandar40-like: +15..-25 deg, 0.33 deg spacing between +2 and -6 deg, coarse outside."""
    top = np.array([15.0, 11.0, 8.0, 5.0, 3.0])
    mid = np.linspace(2.0, -6.0, 25)
    low = np.linspace(-7.0, -25.0, 10)
    return tuple(float(v) for v in np.concatenate([top, mid, low]))


def _vls128_elevations() -> Tuple[float, ...]:
    """VLS-128-like: +15..-25 deg, 0.11 deg spacing between +2.9 and -7.6 deg, coarse outside."""
    top = np.linspace(15.0, 3.7, 16)
    mid = np.linspace(2.9, -7.6, 96)
    low = np.linspace(-8.5, -25.0, 16)
    return tuple(float(v) for v in np.concatenate([top, mid, low]))


# KITTI's HDL-64E S2, measured on the real scans (scripts/compare_real_sim.py, median over the
# 6 + 6 real KITTI frames of ../shared/data/kitti, each laser's points beyond 2 m fitted with a
# cone z = r tan(e) + h0; lasers identified by the scan order of the .bin). Elevation (deg) and
# vertical origin offset h0 (m) per laser, upper block first, top to bottom.
_S2_KITTI_ELEVATIONS = (
    1.94, 1.57, 1.30, 0.87, 0.58, 0.18, -0.09, -0.45, -0.80, -1.20, -1.49, -1.83, -2.21, -2.55,
    -2.87, -3.24, -3.54, -3.94, -4.22, -4.59, -4.91, -5.25, -5.61, -5.96, -6.33, -6.68, -7.00,
    -7.29, -7.68, -8.06, -8.31, -8.71,
    -9.03, -9.57, -10.06, -10.47, -10.96, -11.60, -12.12, -12.56, -13.04, -13.48, -14.05,
    -14.60, -15.19, -15.66, -16.18, -16.55, -17.19, -17.73, -18.32, -18.80, -19.32, -19.74,
    -20.22, -20.79, -21.32, -21.93, -22.44, -22.86, -23.32, -23.97, -24.51, -25.00)
_S2_KITTI_ORIGIN_Z = (
    0.209, 0.209, 0.208, 0.208, 0.207, 0.207, 0.206, 0.206, 0.206, 0.205, 0.205, 0.204, 0.204,
    0.204, 0.203, 0.203, 0.203, 0.202, 0.202, 0.201, 0.201, 0.201, 0.200, 0.200, 0.200, 0.200,
    0.199, 0.199, 0.199, 0.198, 0.198, 0.198,
    0.126, 0.125, 0.125, 0.125, 0.124, 0.124, 0.124, 0.123, 0.123, 0.123, 0.122, 0.122, 0.122,
    0.121, 0.121, 0.121, 0.120, 0.120, 0.120, 0.119, 0.119, 0.119, 0.119, 0.118, 0.118, 0.118,
    0.117, 0.117, 0.117, 0.117, 0.116, 0.116)


def _s2_bottom_dropout(n_lower: int = 32, n_lossy: int = 12, worst: float = 0.3
                       ) -> Tuple[float, ...]:
    """Extra per-laser dropout of the S2 preset: 0 for the upper block and the first lower
    lasers, rising linearly to ``worst`` over the bottom ``n_lossy`` (the real bottom 12 lose
    returns beyond what the ego-vehicle mask removes)."""
    out = [0.0] * (64 - n_lossy)
    out += [worst * (k + 1) / n_lossy for k in range(n_lossy)]
    return tuple(out)


def hdl64e_s2_kitti() -> "SensorConfig":
    """KITTI's Velodyne HDL-64E S2 as the real scans show it (preset ``hdl64e_s2_kitti``).

    Facts used (real KITTI scans measured by scripts/compare_real_sim.py, docs/real_vs_sim.md;
    the S2.1 calibration format of Velodyne's db.xml as published with the ROS velodyne driver,
    params/64e_s2.1-sztaki.yaml, a different unit of the same model):

    - 64 lasers in two blocks: upper 32 from +1.94 to -8.71 deg (0.25 / 0.43 deg alternating,
      0.343 mean), lower 32 from -9.03 to -25.0 deg (0.515 mean): KITTI's own unit's angles,
      fitted on the real scans (KITTI publishes no db.xml; the sztaki unit's vert_correction
      spans +4.99..-24.8 deg, so another unit's table would be wrong by up to 3 deg).
    - Each laser fires from a point above the sensor origin (db.xml vertOffsetCorrection):
      0.209..0.198 m in the upper block and 0.126..0.116 m in the lower one, falling with the
      elevation (fitted on KITTI; the sztaki unit has 0.193..0.213 and 0.105..0.122, the same
      trend). The horizontal offset (horizOffsetCorrection, +-2.6 cm alternating) and the
      per-laser rotational correction are not modelled.
    - Azimuth step 0.17 deg (~2,080 firings per laser and revolution), range 120 m, mounted
      1.73 m above the road (KITTI setup).
    - Ego vehicle mask: no returns nearer than ~4.6 m ahead and ~6 m behind (hood, trunk);
      the sides are bounded by the lowest laser's own ground distance (~4 m).
    - Dark returns: ~12.8 % of real points have intensity exactly 0; here a ray's intensity
      is zeroed with a probability that grows with range and with darkness (domain
      randomisation: the real cause per surface is not measured).
    - Far-field loss: real scans have 0.8x the simulated points at 20-40 m and 0.57x at
      40-80 m, while far real cars carry 2-3x the points of simulated ones: an extra dropout
      ramps in with range on the road and on foliage (grazing and dark first), not on solid
      surfaces.
    """
    return SensorConfig(
        name="hdl64e_s2_kitti", elevations_deg=_S2_KITTI_ELEVATIONS, azimuth_step_deg=0.17,
        max_range=120.0, beam_origin_z=_S2_KITTI_ORIGIN_Z, beam_dropout=_s2_bottom_dropout(),
        blind_zone_m=(4.6, 0.0, 6.0), far_dropout=0.95, far_dropout_range_m=(8.0, 50.0),
        zero_intensity_prob=(0.06, 0.3), zero_intensity_dark=0.25)


@dataclass(frozen=True)
class SensorConfig:
    """A spinning multi-beam lidar; all beams fire at the same azimuths (from one origin unless
    ``beam_origin_z`` is given).

    Attributes:
        name: preset name (informational).
        elevations_deg: beam elevation angles in degrees, positive up (any order).
        azimuth_step_deg: horizontal angle between two firings of a beam, degrees.
        max_range: no return beyond this 3D range, metres.
        min_range: no return closer than this 3D range, metres.
        mount_height: sensor origin above the ground directly below it, metres (the ground is
            at z = -mount_height at the origin of the LiDAR frame).
        range_noise_std: gaussian range noise sigma along the ray, metres.
        dropout_prob: probability that a valid return is lost.
        intensity_noise_std: gaussian noise added to the intensity (0..1 scale).
        incidence_exponent: intensity = reflectivity * |cos incidence| ** exponent + noise,
            clipped to 0..1. 1 is Lambertian; the default 0.2 falls off less, giving the
            intensity spread of KITTI's HDL-64E (mean ~0.25, road ~0.3 at grazing angles).
        beam_origin_z: per beam (same order as ``elevations_deg``), height of the laser's
            firing point above the sensor origin, metres (db.xml vertOffsetCorrection); empty:
            every beam fires from the origin. Must not fall as the elevation rises.
        beam_dropout: per beam extra probability that a return is lost (added to
            ``dropout_prob``); empty: none.
        blind_zone_m: (ahead, side, behind) horizontal distances, metres, within which the ego
            vehicle's body blocks the rays (a ray is lost when its flat-ground crossing is
            nearer than the mask at its azimuth, interpolated as cos^2 / sin^2 between the
            three); empty: no mask. A value below the lowest beam's reach has no effect.
        far_dropout: extra dropout of ground and see-through (foliage, mesh) returns reached
            at ``far_dropout_range_m[1]`` (linear ramp from ``far_dropout_range_m[0]``),
            scaled by (1 - |cos incidence|) and by (1.3 - min(intensity / 0.5, 1)): the
            grazing, dark far road and ragged far vegetation are lost, solid surfaces (cars,
            walls, trucks) keep their returns; 0: off.
        far_dropout_range_m: (start, full) 3D range of the far-field dropout ramp, metres.
        zero_intensity_prob: (near, far) probability that a return's intensity is exactly 0
            at range 0 and at ``far_dropout_range_m[1]`` and beyond (linear between); (0, 0):
            off.
        zero_intensity_dark: added to that probability on dark returns (intensity < 0.15).
    """

    name: str = "hdl64"
    elevations_deg: Tuple[float, ...] = field(default_factory=_hdl64_elevations)
    azimuth_step_deg: float = 0.17
    max_range: float = 120.0
    min_range: float = 1.0
    mount_height: float = DEFAULT_MOUNT_HEIGHT
    range_noise_std: float = 0.02
    dropout_prob: float = 0.02
    intensity_noise_std: float = 0.02
    incidence_exponent: float = 0.2
    beam_origin_z: Tuple[float, ...] = ()
    beam_dropout: Tuple[float, ...] = ()
    blind_zone_m: Tuple[float, ...] = ()
    far_dropout: float = 0.0
    far_dropout_range_m: Tuple[float, float] = (20.0, 80.0)
    zero_intensity_prob: Tuple[float, float] = (0.0, 0.0)
    zero_intensity_dark: float = 0.0

    def __post_init__(self) -> None:
        if len(self.elevations_deg) < 1:
            raise SensorConfigError("SensorConfig.elevations_deg is empty: give at least one beam")
        if any(abs(e) >= 89.0 for e in self.elevations_deg):
            raise SensorConfigError(
                f"SensorConfig.elevations_deg must lie within (-89, 89) deg, got "
                f"{min(self.elevations_deg)}..{max(self.elevations_deg)}")
        if not 0.01 <= self.azimuth_step_deg <= 10.0:
            raise SensorConfigError(
                f"SensorConfig.azimuth_step_deg={self.azimuth_step_deg} outside 0.01..10 deg")
        if not 0.0 <= self.min_range < self.max_range:
            raise SensorConfigError(
                f"SensorConfig needs 0 <= min_range < max_range, got {self.min_range}, "
                f"{self.max_range}")
        if self.mount_height <= 0.0:
            raise SensorConfigError(
                f"SensorConfig.mount_height={self.mount_height} must be > 0 metres")
        if not 0.0 <= self.dropout_prob < 1.0:
            raise SensorConfigError(
                f"SensorConfig.dropout_prob={self.dropout_prob} must be in [0, 1)")
        for name in ("beam_origin_z", "beam_dropout"):
            vals = getattr(self, name)
            if vals and len(vals) != len(self.elevations_deg):
                raise SensorConfigError(
                    f"SensorConfig.{name} has {len(vals)} values for {len(self.elevations_deg)}"
                    f" beams: give one per beam or none")
        if self.beam_origin_z:
            order = np.argsort(np.asarray(self.elevations_deg), kind="stable")
            oz = np.asarray(self.beam_origin_z, np.float64)[order]
            if np.any(np.diff(oz) < 0.0) or np.any(np.abs(oz) > 1.0):
                raise SensorConfigError(
                    "SensorConfig.beam_origin_z must lie within +-1 m and not fall as the "
                    "elevation rises (the ground search walks the beams upwards)")
        if self.beam_dropout and not all(0.0 <= p < 1.0 for p in self.beam_dropout):
            raise SensorConfigError("SensorConfig.beam_dropout values must be in [0, 1)")
        if self.blind_zone_m and (len(self.blind_zone_m) != 3
                                  or min(self.blind_zone_m) < 0.0):
            raise SensorConfigError(
                f"SensorConfig.blind_zone_m={self.blind_zone_m}: give (ahead, side, behind) "
                f">= 0 metres or ()")
        r0, r1 = self.far_dropout_range_m
        if not 0.0 <= self.far_dropout < 1.0 or not 0.0 <= r0 < r1:
            raise SensorConfigError(
                f"SensorConfig.far_dropout={self.far_dropout} must be in [0, 1) and "
                f"far_dropout_range_m={self.far_dropout_range_m} increasing")
        if not all(0.0 <= p <= 1.0 for p in
                   tuple(self.zero_intensity_prob) + (self.zero_intensity_dark,)):
            raise SensorConfigError("SensorConfig.zero_intensity_* must be in [0, 1]")

    @property
    def extended(self) -> bool:
        """True when any of the S2 fields (origins, per-beam dropout, mask, far dropout, zero
        intensity) is in use; the ray caster then draws a second noise stream."""
        return bool(self.beam_origin_z or self.beam_dropout or self.blind_zone_m
                    or self.far_dropout > 0.0 or max(self.zero_intensity_prob) > 0.0
                    or self.zero_intensity_dark > 0.0)

    def sorted_beams(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(elevation rad, origin z m, extra dropout) per beam, by increasing elevation: the
        order the ray caster uses (row b of a column)."""
        elev = np.asarray(self.elevations_deg, np.float64)
        order = np.argsort(elev, kind="stable")
        oz = (np.asarray(self.beam_origin_z, np.float64)[order] if self.beam_origin_z
              else np.zeros(len(elev)))
        bd = (np.asarray(self.beam_dropout, np.float64)[order] if self.beam_dropout
              else np.zeros(len(elev)))
        return np.radians(elev[order]), oz, bd

    def blind_min_tan(self, azimuths: Sequence[float]) -> np.ndarray:
        """Per azimuth (rad, 0 ahead), the lowest tan(elevation) the ego vehicle lets through
        (-inf without a mask)."""
        az = np.asarray(azimuths, np.float64)
        if not self.blind_zone_m:
            return np.full(az.shape, -np.inf)
        ahead, side, behind = self.blind_zone_m
        c2, s2 = np.cos(az) ** 2, np.sin(az) ** 2
        r = np.where(np.cos(az) >= 0.0, ahead * c2 + side * s2, behind * c2 + side * s2)
        h = self.mount_height + (float(np.mean(self.beam_origin_z)) if self.beam_origin_z
                                 else 0.0)
        with np.errstate(divide="ignore"):
            return np.where(r > 0.0, -h / np.maximum(r, 1e-9), -np.inf)

    @property
    def num_beams(self) -> int:
        """Number of beams (lasers)."""
        return len(self.elevations_deg)

    @property
    def num_azimuths(self) -> int:
        """Firings per beam in one full 360 deg revolution."""
        return int(round(360.0 / self.azimuth_step_deg))

    @property
    def num_rays(self) -> int:
        """Rays cast per scan (beams x azimuths)."""
        return self.num_beams * self.num_azimuths

    @classmethod
    def preset(cls, name: str) -> "SensorConfig":
        """A named sensor: ``hdl64`` (default), ``hdl32``, ``pandar40``, ``vls128``, ``hdl32_roof``
        (the HDL-32E mounted 2.4 m up: the data loop's shifted domain), ``hdl64e_s2_kitti``
        (KITTI's real HDL-64E S2: measured beam table, per-laser origins, ego mask, dark and
        far-field losses; see `hdl64e_s2_kitti`).

        Aliases: ``hdl64e``/``64``, ``hdl32e``/``32``, ``pandar40p``/``40``, ``vls128``/``128``.

        Raises:
            SensorConfigError: unknown name.
        """
        key = str(name).lower().replace("-", "").replace("_", "")
        canonical = _ALIASES.get(key)
        if canonical is None:
            raise SensorConfigError(
                f"unknown sensor preset {name!r}; choose one of {sorted(_PRESETS)}")
        return _PRESETS[canonical]()

    def with_overrides(self, **kwargs) -> "SensorConfig":
        """A copy with some fields replaced (e.g. ``dropout_prob=0``)."""
        return replace(self, **kwargs)


_PRESETS: Dict[str, Callable[[], "SensorConfig"]] = {
    "hdl64": lambda: SensorConfig(),
    "hdl32": lambda: SensorConfig(name="hdl32", elevations_deg=_hdl32_elevations(),
                                  azimuth_step_deg=0.16, max_range=100.0),
    "pandar40": lambda: SensorConfig(name="pandar40", elevations_deg=_pandar40_elevations(),
                                     azimuth_step_deg=0.2, max_range=200.0),
    "vls128": lambda: SensorConfig(name="vls128", elevations_deg=_vls128_elevations(),
                                   azimuth_step_deg=0.2, max_range=200.0),
    # The data loop's domain B (scripts/loop.py): a second vehicle's rig, an HDL-32E on a
    # roof rack 2.4 m up instead of the HDL-64E at KITTI's 1.73 m. Half the beams, spread over
    # 41 deg instead of 27, and the ground (and every object) 0.67 m lower in the LiDAR frame.
    "hdl32_roof": lambda: SensorConfig(name="hdl32_roof", elevations_deg=_hdl32_elevations(),
                                       azimuth_step_deg=0.16, max_range=100.0,
                                       mount_height=2.4),
    "hdl64e_s2_kitti": lambda: hdl64e_s2_kitti(),
}
_ALIASES = {"hdl64": "hdl64", "hdl64e": "hdl64", "64": "hdl64",
            "hdl32": "hdl32", "hdl32e": "hdl32", "32": "hdl32",
            "pandar40": "pandar40", "pandar40p": "pandar40", "40": "pandar40",
            "vls128": "vls128", "128": "vls128",
            "hdl32roof": "hdl32_roof",
            "hdl64es2kitti": "hdl64e_s2_kitti", "s2kitti": "hdl64e_s2_kitti",
            "kitti": "hdl64e_s2_kitti"}
