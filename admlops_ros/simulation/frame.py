"""One simulated lidar frame: scene from a seed, ray-cast scan, labels (`simulate_frame`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

import numpy as np

from . import raycast as rc
from .labels import box_statistics
from .scene import Scene, SceneConfig, generate_scene
from .sensor import SensorConfig

GROUND_SAMPLES = 200          # ground-profile samples per azimuth (geometric spacing)
SECTOR_DEG = 0.25             # azimuth culling sector width
OWNER_GROUND = -2             # `LidarFrame.point_owner` of ground points
OWNER_CLUTTER = -1            # ... of buildings, trees, poles, sidewalks


@dataclass
class LidarFrame:
    """A simulated scan and its labels (LiDAR frame: x forward, y left, z up, sensor origin).

    Attributes:
        points: [N, 4] float32 (x, y, z, intensity 0..1), metres; like KITTI velodyne.
        boxes: [M, 7] float32 (x, y, z bottom-centre, dx length, dy width, dz height, yaw rad).
        names: class per box: Car, Van, Pedestrian or Cyclist.
        num_points: [M] int32 returned points inside each box (boundary inclusive). The
            shapes are inset 3 cm from their boxes; with range noise an object's own points
            lie within its box enlarged by 5 sigma (0.1 m for the default 2 cm), so a few
            noisy ones may fall just outside and are not counted.
        difficulty: [M] int32 0 easy, 1 moderate, 2 hard, -1 ignore (rule in `labels`).
        occlusion: [M] float32 fraction of the object's rays that something else blocked.
        seed: the seed the frame was made from.
        point_owner: [N] int32 box index of the object each point hit; -1 clutter, -2 ground.
        scene_kind: urban / residential / rural.
    """

    points: np.ndarray
    boxes: np.ndarray
    names: List[str]
    num_points: np.ndarray
    difficulty: np.ndarray
    occlusion: np.ndarray
    seed: int
    point_owner: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    scene_kind: str = ""


def _ground_samples(sensor: SensorConfig) -> np.ndarray:
    lo = 0.5
    return np.geomspace(lo, sensor.max_range, GROUND_SAMPLES)


def cast(scene: Scene, sensor: SensorConfig, seed: int):
    """Ray-casts ``scene``; noise is drawn from its own stream of ``seed``.

    Sensors with the extended fields (`SensorConfig.extended`: per-laser origins, ego mask,
    far-field and zero-intensity losses) draw those uniforms from a second stream, so the
    first stream, and every frame of the older presets, stay as they were.

    Returns:
        (points [N, 4] float32, point_owner [N] int32, alone [M] int64, hits [M] int64); see
        `raycast.cast_scan`.
    """
    elev, origin_z, extra_drop = sensor.sorted_beams()
    n_az = sensor.num_azimuths
    n_rays = n_az * len(elev)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5E9502]))
    noise_r = rng.standard_normal(n_rays, dtype=np.float32)
    noise_i = rng.standard_normal(n_rays, dtype=np.float32)
    drop_u = rng.random(n_rays, dtype=np.float32)
    n_sectors = int(round(360.0 / SECTOR_DEG))
    start, index = rc.build_sectors(scene.prims, n_sectors)
    beam_drop = float(sensor.dropout_prob) + extra_drop
    azimuths = (np.arange(n_az) + 0.5) * 2.0 * np.pi / n_az - np.pi
    min_tan = sensor.blind_min_tan(azimuths)
    if sensor.extended:
        rng2 = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5E9502, 2]))
        aux_u = rng2.random(n_rays, dtype=np.float32)
        aux_z = rng2.random(n_rays, dtype=np.float32)
    else:
        aux_u = aux_z = np.ones(1, np.float32)   # never read: the losses are off
    zi_near, zi_far = (float(v) for v in sensor.zero_intensity_prob)
    far_r0, far_r1 = (float(v) for v in sensor.far_dropout_range_m)
    return rc.cast_scan(np.tan(elev), np.cos(elev), np.sin(elev), n_az, _ground_samples(sensor),
                        scene.terrain, scene.road, scene.prims, scene.owner, start, index,
                        len(scene.boxes), float(sensor.max_range), float(sensor.min_range),
                        noise_r, noise_i, drop_u, float(sensor.range_noise_std),
                        float(sensor.dropout_prob), float(sensor.intensity_noise_std),
                        float(sensor.incidence_exponent), origin_z, beam_drop, min_tan,
                        aux_u, aux_z, float(sensor.far_dropout), far_r0, far_r1, zi_near,
                        zi_far, float(sensor.zero_intensity_dark),
                        int(seed) & 0x7FFFFFFFFFFFFFFF)


def simulate_frame(seed: int, scene: SceneConfig = SceneConfig(),
                   sensor: SensorConfig = SensorConfig()) -> LidarFrame:
    """Simulates one labelled lidar frame; the same arguments give identical arrays.

    Args:
        seed: non-negative integer; the scene depends only on (seed, scene, mount height), the
            sensor noise only on seed.
        scene: scene content (default `SceneConfig()`).
        sensor: lidar model (default HDL-64E-like `SensorConfig()`).

    Returns:
        The `LidarFrame`; labels cover objects anywhere around the sensor.
    """
    scene = scene if scene is not None else SceneConfig()
    sensor = sensor if sensor is not None else SensorConfig()
    if int(seed) < 0:
        raise ValueError(f"simulate_frame: seed must be >= 0, got {seed}")
    world = generate_scene(int(seed), scene, sensor.mount_height)
    points, owner, alone, hits = cast(world, sensor, int(seed))
    num_points, occlusion, difficulty = box_statistics(points, world.boxes, alone, hits)
    return LidarFrame(points=points, boxes=world.boxes.copy(), names=list(world.names),
                      num_points=num_points, difficulty=difficulty, occlusion=occlusion,
                      seed=int(seed), point_owner=owner, scene_kind=world.kind)
