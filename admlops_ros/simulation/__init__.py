"""Ray-casting lidar simulator: seeded street scenes, HDL-64E-like scans, KITTI-style labels."""
from __future__ import annotations

from .frame import LidarFrame, simulate_frame
from .scene import CLASS_NAMES, Scene, SceneConfig, SceneConfigError, generate_scene
from .sensor import SensorConfig, SensorConfigError

__all__ = ["LidarFrame", "simulate_frame", "SceneConfig", "SensorConfig", "Scene",
           "generate_scene", "CLASS_NAMES", "SceneConfigError", "SensorConfigError"]
