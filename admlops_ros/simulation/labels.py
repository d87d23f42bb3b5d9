"""Label fields from a cast scan: points per box, occlusion fraction and KITTI-like difficulty.

Difficulty rule (KITTI's thresholds, with the 2D box height replaced by the height an object of
height dz would have in a KITTI camera (focal 721.5 px) at its horizontal distance, so objects
behind the ego get a difficulty too):

- occlusion level: 0 if occlusion <= 0.15, 1 if <= 0.5, 2 if <= 0.8, else 3;
- pixel height: h_px = 721.5 * dz / distance_xy;
- 0 (easy):      h_px >= 40 and level 0;
- 1 (moderate):  h_px >= 25 and level <= 1;
- 2 (hard):      h_px >= 25 and level <= 2;
- -1 (ignore):   otherwise, or no point inside the box.

With KITTI mean sizes, h_px = 25 is reached at ~45 m for cars and ~50 m for pedestrians.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from .raycast import count_points_in_boxes

FOCAL_PX = 721.5                       # KITTI P2 focal length, pixels
HEIGHT_PX = (40.0, 25.0, 25.0)         # min pixel height for easy / moderate / hard
OCCLUSION_LEVELS = (0.15, 0.5, 0.8)    # upper occlusion fraction of levels 0, 1, 2


def occlusion_fraction(alone: np.ndarray, hits: np.ndarray) -> np.ndarray:
    """1 - (rays whose first return is the object) / (rays that would hit it alone).

    Dropouts do not count as occlusion. An object no ray reaches (out of range) gets 1.0.
    """
    alone = np.asarray(alone, np.float64)
    frac = np.ones(alone.shape, np.float64)
    seen = alone > 0
    frac[seen] = 1.0 - np.asarray(hits, np.float64)[seen] / alone[seen]
    return np.clip(frac, 0.0, 1.0).astype(np.float32)


def occlusion_level(occlusion: np.ndarray) -> np.ndarray:
    """KITTI-style integer occlusion 0 (visible), 1 (partly), 2 (largely), 3 (mostly hidden)."""
    return np.searchsorted(np.asarray(OCCLUSION_LEVELS), occlusion, side="left").astype(np.int32)


def difficulty(boxes: np.ndarray, occlusion: np.ndarray, num_points: np.ndarray) -> np.ndarray:
    """Difficulty per box (0 easy, 1 moderate, 2 hard, -1 ignore) by the module's rule."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    dist = np.maximum(np.hypot(boxes[:, 0], boxes[:, 1]), 0.1)
    h_px = FOCAL_PX * boxes[:, 5] / dist
    level = occlusion_level(np.asarray(occlusion))
    out = np.full(len(boxes), -1, np.int32)
    hard = (h_px >= HEIGHT_PX[2]) & (level <= 2)
    moderate = (h_px >= HEIGHT_PX[1]) & (level <= 1)
    easy = (h_px >= HEIGHT_PX[0]) & (level == 0)
    out[hard] = 2
    out[moderate] = 1
    out[easy] = 0
    out[np.asarray(num_points) <= 0] = -1
    return out


def box_statistics(points: np.ndarray, boxes: np.ndarray, alone: np.ndarray,
                   hits: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(num_points [M] int32, occlusion [M] float32, difficulty [M] int32) for a frame."""
    boxes = np.ascontiguousarray(boxes, np.float64).reshape(-1, 7)
    if len(boxes) == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros(0, np.int32)
    counts = count_points_in_boxes(np.ascontiguousarray(points[:, :3], np.float64), boxes)
    occ = occlusion_fraction(alone, hits)
    return counts.astype(np.int32), occ, difficulty(boxes, occ, counts)
