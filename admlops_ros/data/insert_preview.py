"""Bird's-eye-view PNG of a real scan before and after simulated objects were inserted."""
from __future__ import annotations

from pathlib import Path
from typing import Tuple, Union

import numpy as np

from admlops_ros.data.insertion import Background, InsertedFrame
from admlops_ros.simulation.preview import CLASS_COLOURS, box_corners_bev

PathLike = Union[str, Path]


def _boxes(ax, boxes: np.ndarray, names, colour=None, labels=None, lw: float = 1.0) -> None:
    for i, (box, name) in enumerate(zip(boxes, names)):
        c = colour or CLASS_COLOURS.get(name, "white")
        corners = box_corners_bev(box)
        closed = np.vstack([corners, corners[:1]])
        ax.plot(closed[:, 0], closed[:, 1], color=c, lw=lw)
        front = corners[:2].mean(axis=0)
        ax.plot([box[0], front[0]], [box[1], front[1]], color=c, lw=lw)
        if labels is not None:
            ax.text(box[0] + 1.0, box[1] + 1.0, labels[i], color=c, fontsize=6, clip_on=True)


def render_insert_preview(background: Background, frame: InsertedFrame, path: PathLike,
                          xlim: Tuple[float, float] = (0.0, 72.0),
                          ylim: Tuple[float, float] = (-40.0, 40.0), dpi: int = 110) -> Path:
    """Two panels: the real scan with its labels (and blocked boxes, grey); the scan with the
    objects inserted (white outlines: inserted boxes with class, points, shadow removed), the
    removed shadow points in red and the removed points inside boxes in orange.

    Returns:
        ``path``.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def view(p: np.ndarray) -> np.ndarray:
        return ((p[:, 0] > xlim[0]) & (p[:, 0] < xlim[1]) & (p[:, 1] > ylim[0])
                & (p[:, 1] < ylim[1]))

    fig, axes = plt.subplots(1, 2, figsize=(16, 8.5))
    bg = background.frame
    for ax in axes:
        ax.set_facecolor("black")
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_aspect("equal")
        ax.plot([0], [0], marker="^", color="white")
    p = bg.points[view(bg.points)]
    axes[0].scatter(p[:, 0], p[:, 1], s=0.5, c=np.clip(p[:, 2], -2.2, 1.0), cmap="turbo",
                    vmin=-2.2, vmax=1.0, linewidths=0)
    _boxes(axes[0], bg.boxes, bg.names)
    _boxes(axes[0], background.blocked, ["blocked"] * len(background.blocked), colour="grey")
    axes[0].set_title(f"{bg.source}/{bg.frame_id}: {len(bg.points)} real points, "
                      f"{len(bg.boxes)} labels, {len(background.blocked)} blocked")
    rem = frame.removed_points
    for mask, colour in ((~frame.removed_shadow, "orange"), (frame.removed_shadow, "red")):
        q = rem[mask]
        q = q[view(q)]
        axes[1].scatter(q[:, 0], q[:, 1], s=1.5, c=colour, linewidths=0)
    keep = view(frame.points)
    for sel, size in ((frame.point_source < 0, 0.5), (frame.point_source >= 0, 1.5)):
        p = frame.points[keep & sel]
        axes[1].scatter(p[:, 0], p[:, 1], s=size, c=np.clip(p[:, 2], -2.2, 1.0), cmap="turbo",
                        vmin=-2.2, vmax=1.0, linewidths=0)
    real = ~frame.inserted
    _boxes(axes[1], frame.boxes[real], [n for n, r in zip(frame.names, real) if r])
    ins = np.flatnonzero(frame.inserted)
    _boxes(axes[1], frame.boxes[ins], [frame.names[i] for i in ins], colour="white",
           labels=[f"{frame.names[i][:3]} {int(frame.num_points[i])} pts, "
                   f"-{int(frame.shadow_removed[i])}" for i in ins], lw=1.3)
    axes[1].set_title(f"seed {frame.seed}: {len(ins)} inserted (white: class, points, shadow "
                      f"removed), red = shadow removed ({int(frame.removed_shadow.sum())}), "
                      f"orange = inside ({int((~frame.removed_shadow).sum())})", fontsize=9)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(out), dpi=dpi)
    plt.close(fig)
    return out
