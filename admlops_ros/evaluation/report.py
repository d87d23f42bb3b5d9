"""Self-contained HTML evaluation report: AP tables, PR curves, latency, distance bands, BEV views."""
from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from admlops_ros.errors import AdmlopsError
from admlops_ros.evaluation.frames import FrameGT, FramePred
from admlops_ros.evaluation.protocol import N_SAMPLE_PTS
from admlops_ros.evaluation.results import EvalResult

LOG = logging.getLogger(__name__)

CLASS_COLOURS = {"Car": "tab:blue", "Pedestrian": "tab:orange", "Cyclist": "tab:green"}


class ReportError(AdmlopsError):
    """The report could not be written (output path)."""


def write_html(path: Path, parts: Sequence[str]) -> Path:
    """The report's HTML: ``parts`` (opened with CSS by the caller) and the closing tags.

    Raises:
        ReportError: the file cannot be written.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(list(parts) + ["</body></html>"]))
    except OSError as exc:
        raise ReportError(f"cannot write report {path}: {exc}") from exc
    return path


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (reports need no display)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def figure_png(fig, tight: bool = True, dpi: int = 90) -> str:
    """Base64 PNG of a figure, closed after. ``tight=False`` keeps the figure's own layout
    (a tight bounding box draws the figure twice: slow for many figures)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    pyplot().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def pr_curve_points(res: EvalResult, metric: str, iou_set: str,
                    cls: str) -> Tuple[np.ndarray, np.ndarray]:
    """(recall, interpolated precision) of the headline difficulty, as AP|R40 averages them.

    Threshold i is where recall reaches the sample point i / 40 (devkit get_thresholds);
    ``res.recall`` is the devkit's running max from the right, so it is not the x axis.
    """
    idx = (res.metrics.index(metric), res.iou_sets.index(iou_set), res.classes.index(cls),
           res.difficulties.index(res.headline_difficulty))
    n = int(np.count_nonzero(~np.isnan(res.thresholds[idx])))
    return np.arange(n) / (N_SAMPLE_PTS - 1), res.precision[idx][:n]


def pr_curves_png(res: EvalResult, metric: str = "3d") -> str:
    """Precision-recall curves (headline difficulty), one panel per class, strict and loose."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(res.classes), figsize=(4.2 * len(res.classes), 3.6),
                             squeeze=False)
    for cls, ax in zip(res.classes, axes[0]):
        for iou_set, style in zip(res.iou_sets, ("-", "--")):
            r, p = pr_curve_points(res, metric, iou_set, cls)
            ap = res.ap(metric, cls, None, iou_set)
            label = (f"{iou_set} IoU {res.min_overlaps[metric][iou_set][cls]:.2f}: "
                     f"AP|R40 {'-' if math.isnan(ap) else format(ap, '.1f')}")
            ax.plot(r if len(r) else [0], p if len(p) else [0], style,
                    color=CLASS_COLOURS.get(cls, "k"), label=label, drawstyle="steps-post")
        ax.set(title=f"{cls} ({metric}, {res.headline_difficulty})", xlabel="recall",
               ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    return figure_png(fig)


def distance_png(res: EvalResult, metric: str = "3d") -> str:
    """AP|R40 per distance band and class, strict and loose IoU."""
    plt = pyplot()
    bands = [d for d in res.difficulties if d != "all"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), sharey=True)
    width = 0.8 / max(1, len(res.classes))
    for ax, iou_set in zip(axes, res.iou_sets):
        for ci, cls in enumerate(res.classes):
            vals = [res.ap(metric, cls, b, iou_set) for b in bands]
            x = np.arange(len(bands)) + ci * width
            ax.bar(x, np.nan_to_num(vals), width, color=CLASS_COLOURS.get(cls), label=cls)
            for xi, v in zip(x, vals):
                ax.text(xi, (0 if math.isnan(v) else v) + 1, "no gt" if math.isnan(v)
                        else f"{v:.0f}", ha="center", fontsize=7)
        ax.set_xticks(np.arange(len(bands)) + width * (len(res.classes) - 1) / 2)
        ax.set_xticklabels(bands)
        ax.set(title=f"{metric} AP|R40 by distance ({iou_set} IoU)", ylim=(0, 105),
               xlabel="BEV range of the box centre")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("AP (%)")
    return figure_png(fig)


def latency_png(records: Sequence[Any], definition: str) -> str:
    """Histogram and timeline of per-frame latency; dropped frames marked on the timeline."""
    plt = pyplot()
    lat = np.array([r.latency_ms for r in records], np.float64)
    idx = np.arange(len(lat))
    ok = np.isfinite(lat)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.4))
    if ok.any():
        ax1.hist(lat[ok], bins=min(50, max(5, ok.sum() // 4)), color="tab:blue")
        for q, c in ((50, "k"), (99, "tab:red")):
            v = np.percentile(lat[ok], q)
            ax1.axvline(v, color=c, ls="--", lw=1, label=f"p{q} {v:.1f} ms")
        ax1.legend(fontsize=8)
    ax1.set(title="latency histogram", xlabel=f"ms ({definition})", ylabel="frames")
    ax2.plot(idx[ok], lat[ok], ".-", ms=3, lw=0.6, color="tab:blue", label="latency")
    if (~ok).any():
        top = np.nanmax(lat) if ok.any() else 1.0
        ax2.plot(idx[~ok], np.full((~ok).sum(), top), "x", color="tab:red",
                 label=f"dropped / failed ({(~ok).sum()})")
    ax2.set(title="latency per frame", xlabel="cloud index", ylabel="ms")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    return figure_png(fig)


def _draw_boxes(ax, boxes: np.ndarray, colour: str, style: str = "-", lw: float = 1.2) -> None:
    from admlops_ros.lidar.geometry import box_corners_bev
    if not len(boxes):
        return
    corners = box_corners_bev(np.asarray(boxes, np.float64))
    for c, b in zip(corners, boxes):
        ring = np.vstack([c, c[:1]])
        ax.plot(ring[:, 0], ring[:, 1], style, color=colour, lw=lw)
        head = np.array([b[0], b[1]]) + 0.5 * b[3] * np.array([math.cos(b[6]), math.sin(b[6])])
        ax.plot([b[0], head[0]], [b[1], head[1]], style, color=colour, lw=lw)


def bev_png(sample: Dict[str, Any], score_threshold: float,
            xlim=(-5.0, 70.0), ylim=(-40.0, 40.0)) -> str:
    """Top view: points, ground truth (green; ignored grey dashed), detections (red, score)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 6.4))
    pts = sample["points"]
    if len(pts):
        ax.scatter(pts[:, 0], pts[:, 1], s=0.2, c=pts[:, 2], cmap="viridis", vmin=-2.5, vmax=1.0,
                   linewidths=0)
    gt: Optional[FrameGT] = sample.get("gt")
    if gt is not None and len(gt):
        ign = np.zeros(len(gt), bool) if gt.ignore is None else np.asarray(gt.ignore, bool)
        _draw_boxes(ax, gt.boxes[~ign], "limegreen", "-", 1.6)
        _draw_boxes(ax, gt.boxes[ign], "grey", "--", 1.0)
    pred: FramePred = sample["pred"]
    keep = pred.scores >= score_threshold
    _draw_boxes(ax, pred.boxes[keep], "red", "-", 1.0)
    for b, s, n in zip(pred.boxes[keep], pred.scores[keep], np.asarray(pred.names)[keep]):
        if xlim[0] < b[0] < xlim[1] and ylim[0] < b[1] < ylim[1]:
            ax.text(b[0], b[1] + 1.2, f"{n[:3]} {s:.2f}", color="red", fontsize=6)
    ax.set(xlim=xlim, ylim=ylim, aspect="equal", xlabel="x (m, forward)", ylabel="y (m, left)",
           title=f"stamp {sample['stamp_ns'] / 1e9:.3f}: gt green (ignored grey), "
                 f"detections >= {score_threshold:.2f} red")
    ax.title.set_fontsize(8)
    return figure_png(fig)


# ---------------------------------------------------------------------------------------------
# Detections against labels on the camera image and in BEV (frames with a calibration)

BOX_EDGES = ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4),
             (0, 4), (1, 5), (2, 6), (3, 7))


def _draw_boxes_image(ax, boxes: np.ndarray, lidar2img: np.ndarray, colour: str,
                      lw: float = 1.2, style: str = "-") -> None:
    """3D boxes (LiDAR) as their 12 projected edges; boxes with a corner behind the camera
    (depth < 0.1 m) are left out."""
    from admlops_ros.evaluation.kitti_io import lidar_box_corners
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    if not len(boxes):
        return
    corners = lidar_box_corners(boxes)                                   # [N, 8, 3]
    homo = np.concatenate([corners, np.ones(corners.shape[:2] + (1,))], axis=2)
    img = homo @ np.asarray(lidar2img, np.float64)[:3].T                 # [N, 8, 3]
    for c in img:
        if (c[:, 2] < 0.1).any():
            continue
        uv = c[:, :2] / c[:, 2:3]
        for a, b in BOX_EDGES:
            ax.plot(uv[[a, b], 0], uv[[a, b], 1], style, color=colour, lw=lw)


def camera_view_png(sample: Dict[str, Any], score_threshold: float) -> str:
    """The frame's image (a blank canvas of its size when the bag has no image) with the
    projected 3D boxes: labels green (ignored grey dashed), detections >= threshold red."""
    plt = pyplot()
    calib = sample["calib"]
    h, w = calib.image_size
    fig, ax = plt.subplots(figsize=(9.6, 9.6 * h / max(w, 1) + 0.4))
    image = sample.get("image")
    if image is not None:
        ax.imshow(np.asarray(image)[:, :, ::-1])
    else:
        ax.imshow(np.full((h, w, 3), 235, np.uint8))
    gt: Optional[FrameGT] = sample.get("gt")
    if gt is not None and len(gt):
        ign = np.zeros(len(gt), bool) if gt.ignore is None else np.asarray(gt.ignore, bool)
        _draw_boxes_image(ax, gt.boxes[~ign], calib.lidar2img, "limegreen", 1.6)
        _draw_boxes_image(ax, gt.boxes[ign], calib.lidar2img, "grey", 1.0, "--")
    pred: FramePred = sample["pred"]
    keep = pred.scores >= score_threshold
    _draw_boxes_image(ax, pred.boxes[keep], calib.lidar2img, "red", 1.0)
    ax.set(xlim=(0, w), ylim=(h, 0))
    ax.set_axis_off()
    n_gt = 0 if gt is None else len(gt)
    ax.set_title(f"stamp {sample['stamp_ns'] / 1e9:.3f}: {n_gt} labels (green), "
                 f"{int(keep.sum())} detections >= {score_threshold:.2f} (red)"
                 + ("" if image is not None else " (no image in the bag)"), fontsize=8)
    return figure_png(fig)


def fov_bev_png(sample: Dict[str, Any], score_threshold: float,
                xlim=(-5.0, 70.0), ylim=(-40.0, 40.0)) -> str:
    """Top view of a calibrated frame: points in image 2 dark, others light, labels green,
    detections red (solid in the camera view, dotted outside it)."""
    from admlops_ros.evaluation import fov
    plt = pyplot()
    calib = sample["calib"]
    fig, ax = plt.subplots(figsize=(6.4, 6.4))
    pts = np.asarray(sample["points"])
    if len(pts):
        inside = fov.points_in_fov(pts, calib)
        ax.scatter(pts[~inside, 0], pts[~inside, 1], s=0.2, c="#cccccc", linewidths=0)
        ax.scatter(pts[inside, 0], pts[inside, 1], s=0.3, c="#333333", linewidths=0)
    gt: Optional[FrameGT] = sample.get("gt")
    if gt is not None and len(gt):
        _draw_boxes(ax, gt.boxes, "limegreen", "-", 1.8)
    pred: FramePred = sample["pred"]
    keep = pred.scores >= score_threshold
    boxes = pred.boxes[keep]
    seen, _ = fov.boxes_in_fov(boxes, calib)
    _draw_boxes(ax, boxes[seen], "red", "-", 1.0)
    _draw_boxes(ax, boxes[~seen], "red", ":", 0.8)
    ax.set(xlim=xlim, ylim=ylim, aspect="equal", xlabel="x (m, forward)", ylabel="y (m, left)",
           title=f"labels green; detections >= {score_threshold:.2f} red: {int(seen.sum())} in "
                 f"the camera view (solid), {int((~seen).sum())} outside (dotted)")
    ax.title.set_fontsize(8)
    return figure_png(fig)


def labels_vs_detections_html(samples: Sequence[Dict[str, Any]], score_threshold: float) -> str:
    """The report section comparing detections with labels for the samples that carry a
    calibration (KITTI bags, simulated bags with a camera); "" when none does."""
    calibrated = [s for s in samples if s.get("calib") is not None]
    if not calibrated:
        return ""
    parts = ["<h2>Detections against labels: camera view and bird's-eye view</h2>"
             "<p>Projected 3D boxes with the frame's calibration: labels green, detections at "
             f"or above {score_threshold:.2f} red.</p>"]
    for s in calibrated:
        parts.append(f"<div><img style='width:62%' src='data:image/png;base64,"
                     f"{camera_view_png(s, score_threshold)}'><img style='width:36%' "
                     f"src='data:image/png;base64,{fov_bev_png(s, score_threshold)}'></div>")
    return "".join(parts)


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def _ap_table_html(res: EvalResult) -> str:
    rows = []
    head = "".join(f"<th>{html.escape(d)}</th>" for d in res.difficulties)
    for kind in ("R40", "R11"):
        for iou_set in res.iou_sets:
            rows.append(f"<tr class='grp'><th colspan='{2 + len(res.difficulties)}'>AP|{kind}, "
                        f"{iou_set} IoU</th></tr><tr><th>class</th><th>metric @IoU</th>{head}</tr>")
            for cls in res.classes:
                for m in res.metrics:
                    cells = "".join(f"<td>{_fmt(res.ap(m, cls, d, iou_set, kind))}</td>"
                                    for d in res.difficulties)
                    rows.append(f"<tr><td>{cls}</td><td>{m} @{res.min_overlaps[m][iou_set][cls]:.2f}"
                                f"</td>{cells}</tr>")
            for m in res.metrics:
                cells = "".join(f"<td><b>{_fmt(res.mean_ap(m, d, iou_set, kind))}</b></td>"
                                for d in res.difficulties)
                rows.append(f"<tr><td><b>mean</b></td><td>{m}</td>{cells}</tr>")
    return "<table>" + "".join(rows) + "</table>"


def _operating_html(res: EvalResult) -> str:
    keys = ("tp", "fp", "fn", "precision", "recall", "mean_translation_error_m",
            "mean_scale_error", "mean_orientation_error_rad")
    rows = ["<tr><th>IoU set</th><th>class</th>" + "".join(f"<th>{k}</th>" for k in keys)
            + "</tr>"]
    for iou_set, per_cls in res.operating.items():
        for cls, vals in per_cls.items():
            rows.append(f"<tr><td>{iou_set}</td><td>{cls}</td>"
                        + "".join(f"<td>{_fmt(vals.get(k), 3)}</td>" for k in keys) + "</tr>")
    return "<table>" + "".join(rows) + "</table>"


CSS = """body{font-family:sans-serif;margin:24px;max-width:1200px}table{border-collapse:collapse;
margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px}
tr.grp th{background:#eef;text-align:left}img{max-width:100%}.warn{color:#a40}
pre{background:#f6f6f6;padding:8px;font-size:12px;overflow:auto}"""


def write_report(path: Path, results: Dict[str, Any], main: Optional[EvalResult],
                 bands: Optional[EvalResult], records: Sequence[Any],
                 samples: Sequence[Dict[str, Any]], score_threshold: float) -> Path:
    """Write the HTML report (PNG figures embedded as base64).

    Args:
        path: output .html file.
        results: the results.json dict (:func:`admlops_ros.evaluation.replay.summarize`).
        main, bands: headline and distance-band evaluations (None without ground truth).
        records: per-cloud FrameRecords (latency, dropped).
        samples: frames for BEV images ({"stamp_ns", "points", "gt", "pred"}).
        score_threshold: detections drawn in the BEV images.
    """
    parts: List[str] = [f"<html><head><meta charset='utf-8'><title>admlops eval</title>"
                        f"<style>{CSS}</style></head><body><h1>admlops eval: "
                        f"{html.escape(Path(str(results['bag']['path'])).name)}</h1>"]
    lat = results["latency_ms"]
    fr = results["frames"]
    parts.append(
        f"<p>mode <b>{results['mode']}</b>, engine <code>{html.escape(json.dumps(results['engine']))}"
        f"</code><br>clouds {fr['clouds']}, evaluated (with ground truth) {fr['evaluated']}, "
        f"dropped {fr['dropped']}, without gt {fr['without_gt']}; latency p50 {_fmt(lat['p50'])} / "
        f"p90 {_fmt(lat['p90'])} / p99 {_fmt(lat['p99'])} / max {_fmt(lat['max'])} ms "
        f"({html.escape(results['latency_definition'])}); real-time factor "
        f"{_fmt(results['real_time_factor'])} ({html.escape(results['real_time_factor_definition'])})</p>")
    if results.get("problems"):
        parts.append("<h2 class='warn'>Problems</h2><pre>" + html.escape(
            "\n".join(results["problems"][:50])) + "</pre>")
    if main is not None:
        parts.append(f"<h2>Average precision ({main.difficulty_mode} difficulty, "
                     f"{main.num_frames} frames)</h2>" + _ap_table_html(main))
        parts.append(f"<h2>At the operating score threshold "
                     f"{main.operating['strict'][main.classes[0]]['score_threshold']:.2f} "
                     f"(3D, {main.headline_difficulty})</h2>" + _operating_html(main))
        metric = "3d" if "3d" in main.metrics else main.metrics[0]
        parts.append(f"<h2>Precision-recall</h2><img src='data:image/png;base64,"
                     f"{pr_curves_png(main, metric)}'>")
        if bands is not None:
            parts.append(f"<h2>AP by distance band</h2><img src='data:image/png;base64,"
                         f"{distance_png(bands, metric)}'>")
    else:
        parts.append("<p class='warn'>No ground truth: accuracy metrics skipped.</p>")
    parts.append(f"<h2>Latency</h2><img src='data:image/png;base64,"
                 f"{latency_png(records, results['latency_definition'])}'>")
    stages = results.get("stages_ms") or {}
    if stages:
        parts.append("<table><tr><th>stage</th><th>p50</th><th>p90</th><th>p99</th><th>max</th>"
                     "</tr>" + "".join(f"<tr><td>{k}</td>" + "".join(
                         f"<td>{_fmt(v[q])}</td>" for q in ("p50", "p90", "p99", "max"))
                         + "</tr>" for k, v in stages.items()) + "</table>")
    parts.append(labels_vs_detections_html(samples, score_threshold))
    if samples:
        parts.append("<h2>Bird's-eye views</h2>")
        for s in samples:
            parts.append(f"<img style='width:48%' src='data:image/png;base64,"
                         f"{bev_png(s, score_threshold)}'>")
    return write_html(path, parts)


def save_pngs(out_dir: Path, main: Optional[EvalResult], bands: Optional[EvalResult],
              records: Sequence[Any], samples: Sequence[Dict[str, Any]],
              score_threshold: float, definition: str) -> List[Path]:
    """The report's figures as PNG files too (for READMEs and inspection)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figs = {"latency.png": latency_png(records, definition)}
    if main is not None:
        metric = "3d" if "3d" in main.metrics else main.metrics[0]
        figs["pr_curves.png"] = pr_curves_png(main, metric)
        if bands is not None:
            figs["ap_by_distance.png"] = distance_png(bands, metric)
    for i, s in enumerate(samples):
        figs[f"bev_{i}.png"] = bev_png(s, score_threshold)
        if s.get("calib") is not None:
            figs[f"camera_{i}.png"] = camera_view_png(s, score_threshold)
    paths = []
    for name, data in figs.items():
        p = out_dir / name
        p.write_bytes(base64.b64decode(data))
        paths.append(p)
    return paths


# ---------------------------------------------------------------------------------------------
# Camera (2D) report

def pr_curves_2d_png(ev: Any) -> str:
    """2D precision-recall per class: COCO 101-point at IoU 0.5 and 0.75, KITTI moderate R40."""
    plt = pyplot()
    classes = ev.classes
    fig, axes = plt.subplots(1, len(classes), figsize=(4.2 * len(classes), 3.6), squeeze=False)
    rec = ev.coco.recall_points
    for k, (cls, ax) in enumerate(zip(classes, axes[0])):
        colour = CLASS_COLOURS.get(cls, "k")
        for t, iou, style in ((0, 0.5, "-"), (5, 0.75, ":")):
            p = ev.coco.precision[t, :, k]
            ap = ev.coco.ap(cls, iou)
            if (p > -1).any():
                text = "-" if math.isnan(ap) else f"{100 * ap:.1f}"
                ax.plot(rec, np.clip(p, 0, None), style, color=colour, drawstyle="steps-post",
                        label=f"COCO IoU {iou:.2f}: AP {text}")
        r, p = ev.kitti_pr(cls)
        ap = ev.kitti_ap(cls)
        if len(r):
            ax.plot(r, p, "--", color="grey", drawstyle="steps-post",
                    label=f"KITTI moderate IoU {ev.kitti.min_overlaps['bbox']['strict'][cls]:.2f}"
                          f": AP|R40 {'-' if math.isnan(ap) else f'{ap:.1f}'}")
        ax.set(title=f"{cls} (2D bbox)", xlabel="recall", ylabel="precision", xlim=(0, 1),
               ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    return figure_png(fig)


def camera_image_png(sample: Dict[str, Any], score_threshold: float) -> str:
    """An image with ground truth (green; DontCare grey) and detections (red, score)."""
    import cv2
    img = sample["image"].copy()
    gt = sample.get("gt")
    if gt is not None:
        for b in gt.dontcare:
            cv2.rectangle(img, (int(b[0]), int(b[1])), (int(b[2]), int(b[3])), (128, 128, 128), 1)
        for b in gt.boxes:
            cv2.rectangle(img, (int(b[0]), int(b[1])), (int(b[2]), int(b[3])), (0, 200, 0), 2)
    pred = sample["pred"]
    for b, sc, n in zip(pred.boxes, pred.scores, pred.names):
        if sc < score_threshold:
            continue
        cv2.rectangle(img, (int(b[0]), int(b[1])), (int(b[2]), int(b[3])), (0, 0, 230), 1)
        cv2.putText(img, f"{n[:3]} {sc:.2f}", (int(b[0]), max(10, int(b[1]) - 3)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 230), 1)
    ok, buf = cv2.imencode(".png", img)
    return base64.b64encode(buf.tobytes()).decode("ascii") if ok else ""


def _coco_table_html(ev: Any) -> str:
    diffs = ("easy", "moderate", "hard")
    rows = ["<tr><th>class</th><th>gt</th><th>COCO AP [.5:.95]</th><th>AP50</th><th>AP75</th>"
            "<th>AR100</th>" + "".join(f"<th>KITTI 2D AP|R40 {d}</th>" for d in diffs)
            + "</tr>"]
    for k, c in enumerate(ev.classes):
        rows.append(f"<tr><td>{html.escape(c)}</td><td>{int(ev.coco.num_gt[k])}</td>"
                    f"<td>{_fmt(100 * ev.coco.ap(c), 1)}</td>"
                    f"<td>{_fmt(100 * ev.coco.ap(c, 0.5), 1)}</td>"
                    f"<td>{_fmt(100 * ev.coco.ap(c, 0.75), 1)}</td>"
                    f"<td>{_fmt(100 * ev.coco.mean_recall(c), 1)}</td>"
                    + "".join(f"<td>{_fmt(ev.kitti_ap(c, d), 1)}</td>" for d in diffs) + "</tr>")
    rows.append(f"<tr><td><b>mean</b></td><td></td><td><b>{_fmt(100 * ev.coco.ap(), 1)}</b></td>"
                f"<td><b>{_fmt(100 * ev.coco.ap(iou=0.5), 1)}</b></td>"
                f"<td><b>{_fmt(100 * ev.coco.ap(iou=0.75), 1)}</b></td>"
                f"<td><b>{_fmt(100 * ev.coco.mean_recall(), 1)}</b></td>"
                + "".join("<td></td>" for _ in diffs) + "</tr>")
    return "<table>" + "".join(rows) + "</table>"


def write_camera_report(path: Path, results: Dict[str, Any], ev: Any, records: Sequence[Any],
                        samples: Sequence[Dict[str, Any]], score_threshold: float) -> Path:
    """HTML report of a camera evaluation: COCO / KITTI 2D tables, PR curves, latency, images.

    Args:
        results: :func:`admlops_ros.evaluation.camera_eval.summarize_camera`'s dict.
        ev: its Eval2DResult (None without ground truth).
        records: per-image records (latency_ms). samples: images with gt / predictions.
    """
    lat = results["latency_ms"]
    fr = results["frames"]
    parts: List[str] = [f"<html><head><meta charset='utf-8'><title>admlops eval (camera)</title>"
                        f"<style>{CSS}</style></head><body><h1>admlops eval (camera): "
                        f"{html.escape(Path(str(results['bag']['path'])).name)}</h1>",
                        f"<p>engine <code>{html.escape(json.dumps(results['engine']))}</code><br>"
                        f"images {fr['images']}, evaluated {fr['evaluated']}, dropped "
                        f"{fr['dropped']}, without gt {fr['without_gt']}; latency p50 "
                        f"{_fmt(lat['p50'])} / p90 {_fmt(lat['p90'])} / max {_fmt(lat['max'])} ms "
                        f"({html.escape(results['latency_definition'])})</p>"]
    if results.get("problems"):
        parts.append("<h2 class='warn'>Problems</h2><pre>" + html.escape(
            "\n".join(results["problems"][:50])) + "</pre>")
    if ev is not None:
        parts.append(f"<h2>2D average precision ({ev.num_images} images)</h2>"
                     + _coco_table_html(ev)
                     + "<p>COCO: pycocotools semantics (area all, maxDets 100, 101 recall "
                       "points). KITTI: 2D bbox, IoU &gt; 0.7 Car / 0.5 Pedestrian, Cyclist, "
                       "Easy / Moderate / Hard by height, occlusion, truncation, 40 recall "
                       "points.</p>")
        for note in ev.notes:
            parts.append(f"<p class='warn'>{html.escape(note)}</p>")
        parts.append(f"<h2>Precision-recall</h2><img src='data:image/png;base64,"
                     f"{pr_curves_2d_png(ev)}'>")
    else:
        parts.append("<p class='warn'>No 2D ground truth: accuracy metrics skipped.</p>")
    parts.append(f"<h2>Latency</h2><img src='data:image/png;base64,"
                 f"{latency_png(records, results['latency_definition'])}'>")
    stages = results.get("stages_ms") or {}
    if stages:
        parts.append("<table><tr><th>stage</th><th>p50</th><th>p90</th><th>p99</th><th>max</th>"
                     "</tr>" + "".join(f"<tr><td>{k}</td>" + "".join(
                         f"<td>{_fmt(v[q])}</td>" for q in ("p50", "p90", "p99", "max"))
                         + "</tr>" for k, v in stages.items()) + "</table>")
    if samples:
        parts.append(f"<h2>Images (ground truth green, detections &gt;= {score_threshold:.2f} "
                     f"red)</h2>")
        for smp in samples:
            parts.append(f"<img style='width:100%' src='data:image/png;base64,"
                         f"{camera_image_png(smp, score_threshold)}'>")
    return write_html(path, parts)


def save_camera_pngs(out_dir: Path, ev: Any, records: Sequence[Any],
                     samples: Sequence[Dict[str, Any]], score_threshold: float,
                     definition: str) -> List[Path]:
    """The camera report's figures as PNG files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figs = {"latency.png": latency_png(records, definition)}
    if ev is not None:
        figs["pr_curves_2d.png"] = pr_curves_2d_png(ev)
    for i, smp in enumerate(samples):
        figs[f"image_{i}.png"] = camera_image_png(smp, score_threshold)
    paths = []
    for name, data in figs.items():
        p = out_dir / name
        p.write_bytes(base64.b64decode(data))
        paths.append(p)
    return paths


__all__ = ("write_report", "save_pngs", "pr_curves_png", "distance_png", "latency_png",
           "bev_png", "ReportError", "pr_curves_2d_png", "camera_image_png",
           "write_camera_report", "save_camera_pngs")
