"""Spinning-lidar sensor model: beam elevations, azimuth step, range, noise and presets."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Dict, Tuple

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


@dataclass(frozen=True)
class SensorConfig:
    """A spinning multi-beam lidar; all beams share one origin and fire at the same azimuths.

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
        (the HDL-32E mounted 2.4 m up: the data loop's shifted domain).

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
}
_ALIASES = {"hdl64": "hdl64", "hdl64e": "hdl64", "64": "hdl64",
            "hdl32": "hdl32", "hdl32e": "hdl32", "32": "hdl32",
            "pandar40": "pandar40", "pandar40p": "pandar40", "40": "pandar40",
            "vls128": "vls128", "128": "vls128",
            "hdl32roof": "hdl32_roof"}
