"""Bird's-eye-view PNG of a simulated frame: `python -m admlops_ros.simulation.preview SEED out.png`."""
from __future__ import annotations

import argparse
import logging
import math
import sys
from typing import List, Optional, Sequence

import numpy as np

from .frame import LidarFrame, simulate_frame
from .sensor import SensorConfig

LOG = logging.getLogger(__name__)
CLASS_COLOURS = {"Car": "#e41a1c", "Van": "#ff7f00", "Pedestrian": "#4daf4a",
                 "Cyclist": "#377eb8"}


def box_corners_bev(box: Sequence[float]) -> np.ndarray:
    """[4, 2] xy corners of a (x, y, z, dx, dy, dz, yaw) box, front-left first."""
    x, y, _, dx, dy, _, yaw = [float(v) for v in box[:7]]
    c, s = math.cos(yaw), math.sin(yaw)
    u = np.array([0.5, 0.5, -0.5, -0.5]) * dx
    v = np.array([0.5, -0.5, -0.5, 0.5]) * dy
    return np.stack([x + c * u - s * v, y + s * u + c * v], axis=1)


def render_bev(frame: LidarFrame, path: str, xlim=(-40.0, 80.0), ylim=(-45.0, 45.0),
               dpi: int = 110) -> None:
    """Writes a BEV image: points coloured by height, boxes coloured by class with heading."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = frame.points
    keep = ((pts[:, 0] > xlim[0]) & (pts[:, 0] < xlim[1]) & (pts[:, 1] > ylim[0])
            & (pts[:, 1] < ylim[1]))
    pts = pts[keep]
    fig, ax = plt.subplots(figsize=(12, 9))
    ax.set_facecolor("black")
    ax.scatter(pts[:, 0], pts[:, 1], s=0.6, c=np.clip(pts[:, 2], -2.2, 2.0), cmap="turbo",
               linewidths=0)
    for i, (box, name) in enumerate(zip(frame.boxes, frame.names)):
        corners = box_corners_bev(box)
        colour = CLASS_COLOURS.get(name, "white")
        closed = np.vstack([corners, corners[:1]])
        ax.plot(closed[:, 0], closed[:, 1], color=colour, lw=1.0)
        front = corners[:2].mean(axis=0)
        ax.plot([box[0], front[0]], [box[1], front[1]], color=colour, lw=1.0)
        ax.text(box[0], box[1] + 1.2, f"{name[0]}{int(frame.num_points[i])}"
                f"/d{int(frame.difficulty[i])}", color=colour, fontsize=6, clip_on=True)
    ax.plot([0], [0], marker="^", color="white")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.set_title(f"seed {frame.seed} ({frame.scene_kind}): {len(frame.points)} points, "
                 f"{len(frame.boxes)} objects  [label: class, points/difficulty]")
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(prog="python -m admlops_ros.simulation.preview",
                                     description=__doc__)
    parser.add_argument("seed", type=int)
    parser.add_argument("out", help="output PNG path")
    parser.add_argument("--sensor", default="hdl64", help="sensor preset (hdl64, hdl32, ...)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    frame = simulate_frame(args.seed, sensor=SensorConfig.preset(args.sensor))
    render_bev(frame, args.out)
    LOG.info("wrote %s (%d points, %d objects)", args.out, len(frame.points), len(frame.boxes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
