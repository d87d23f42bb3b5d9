#!/usr/bin/env python3
"""Real KITTI scans against simulated HDL-64E scans: where the simulator differs, what fires.

Real: ``<kitti>/training`` (labelled) and ``<kitti>/testing`` (unlabelled) velodyne scans.
Simulated: ``simulate_frame(seed, SceneConfig(), SensorConfig.preset("hdl64"))`` for
``--count`` seeds from ``--seed`` (held out from training, >= 5,000,000), written once as a
KITTI directory under ``--out`` so ``admlops analyze`` (admlops_ros.data.analyze) computes
the histograms it has (intensity, points per scan, z, points on cars by distance) on both.
The rest is measured here, per scan:

- points per beam: elevation atan2(z, r), r = hypot(x, y). Simulated points sit exactly on
  ``simulation/sensor.py`` ``_hdl64_elevations`` (their beam = the nearest table entry).
  Real points do not: each HDL-64E laser fires from its own height, so atan2(z, r) of a near
  point is off by h0 / r (a 0.2 m offset is 3 deg at 4 m) and clustering the elevations
  (peaks of the pooled histogram, reported as a count) merges the lower beams. The real beam
  comes from the scan order instead (a KITTI .bin stores the lasers one after another, one
  revolution each), and each laser's elevation and origin height from a cone fit
  z = r tan(e) + h0 through its points; those are compared with the table.
- points per range bin (2 m), near-range blind zone (minimum range per 1 deg of azimuth),
- ground height and slope: RANSAC plane on points within 3-30 m below the sensor,
- with the shipped engine (``--engine``, default bundle) at the node's threshold: detections
  per frame on both, false positives on the labelled real frames (BEV IoU < 0.1 with every
  label) classified by what their points are (height above the fitted ground, shape),
  and the labelled cars missed.

Plots go to ``--out`` (build/real_vs_sim/), the table to stdout, ``--json`` for the numbers.
Run once, small: 24 scans and 24 detector calls (2 cores shared).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LOG = logging.getLogger("compare_real_sim")
RANGE_EDGES = np.arange(0.0, 82.0, 2.0)
AZIMUTH_BINS = 360
NEAR_R = 8.0            # beam clustering uses points beyond this range (laser offsets fade)
GROUND_BAND = (3.0, 30.0)


# ---------------------------------------------------------------------------------------------
# Inputs

def real_scans(kitti: Path) -> List[Dict[str, Any]]:
    """Every velodyne scan of training/ and testing/, with labels and calib where present."""
    from admlops_ros.evaluation import bags, kitti_io
    out = []
    for split in ("training", "testing"):
        root = kitti / split
        for vel in sorted((root / "velodyne").glob("*.bin")):
            frame = vel.stem
            item: Dict[str, Any] = {"source": f"real/{split}/{frame}", "split": split,
                                    "points": kitti_io.read_velodyne(vel), "gt": None,
                                    "calib": None}
            if (root / "label_2" / f"{frame}.txt").is_file():
                _, item["gt"] = bags.kitti_frame_gt(root, frame)
            if (root / "calib" / f"{frame}.txt").is_file():
                item["calib"] = kitti_io.read_calib(root / "calib" / f"{frame}.txt")
                item["image_size"] = bags._png_size(root / "image_2" / f"{frame}.png")
            out.append(item)
    return out


def sim_scans(seed: int, count: int, out_dir: Path) -> List[Dict[str, Any]]:
    """Simulated frames (hdl64 preset), also written as a KITTI dir for admlops analyze."""
    from admlops_ros.evaluation import kitti_io
    from admlops_ros.evaluation.frames import FrameGT
    from admlops_ros.simulation import SceneConfig, SensorConfig, simulate_frame
    import shutil
    shutil.rmtree(out_dir, ignore_errors=True)  # no frames of an earlier, longer run
    sensor = SensorConfig.preset("hdl64")
    items = []
    for k in range(count):
        fr = simulate_frame(seed + k, SceneConfig(), sensor)
        kitti_io.write_frame(out_dir / "training", k, fr)
        items.append({"source": f"sim/{seed + k}", "split": "sim", "points": fr.points,
                      "gt": FrameGT(fr.boxes, fr.names, frame_id=str(seed + k)),
                      "calib": kitti_io.nominal_calib(), "image_size": kitti_io.IMAGE_SHAPE,
                      "owner": fr.point_owner, "kind": fr.scene_kind})
    return items


# ---------------------------------------------------------------------------------------------
# Per-scan measures

def elevation_deg(points: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    r = np.hypot(points[:, 0], points[:, 1])
    return np.degrees(np.arctan2(points[:, 2], r)), r


def scan_order_rings(points: np.ndarray) -> np.ndarray:
    """Laser index per point from a KITTI .bin's order: the lasers are stored one after
    another, each over one revolution, so the unwrapped azimuth gains 360 deg per laser."""
    unwrapped = np.degrees(np.unwrap(np.arctan2(points[:, 1], points[:, 0])))
    return np.floor((unwrapped - unwrapped[0] + 1.0) / 360.0).astype(np.int64)


def ring_fit(points: np.ndarray, ring: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per laser: elevation (deg) and origin height (m) of the cone z = r tan(e) + h0 through
    its points beyond 2 m (least squares, one pass dropping > 3 sigma residuals)."""
    r = np.hypot(points[:, 0], points[:, 1])
    n = int(ring.max()) + 1
    elev, h0 = np.full(n, np.nan), np.full(n, np.nan)
    for k in range(n):
        m = (ring == k) & (r > 2.0)
        if m.sum() < 30:
            continue
        a = np.c_[r[m], np.ones(int(m.sum()))]
        z = points[m, 2].astype(np.float64)
        coef = np.linalg.lstsq(a, z, rcond=None)[0]
        res = z - a @ coef
        ok = np.abs(res) < 3 * res.std() + 1e-6
        coef = np.linalg.lstsq(a[ok], z[ok], rcond=None)[0]
        elev[k], h0[k] = np.degrees(np.arctan(coef[0])), coef[1]
    return elev, h0


def elevation_clusters(elev: np.ndarray, step: float = 0.02, min_sep: float = 0.2,
                       max_clusters: int = 64) -> np.ndarray:
    """Centres (deg, descending) of the peaks of the elevation histogram (beams)."""
    from scipy.signal import find_peaks
    edges = np.arange(-27.0, 5.0 + step, step)
    hist, _ = np.histogram(elev, edges)
    smooth = np.convolve(hist, np.ones(5) / 5.0, mode="same")
    peaks, props = find_peaks(smooth, distance=max(1, int(min_sep / step)),
                              height=smooth.max() * 0.02)
    if len(peaks) > max_clusters:
        peaks = np.sort(peaks[np.argsort(-props["peak_heights"])[:max_clusters]])
    centres = []
    for p in peaks:  # refine: mean of the samples within +-0.1 deg of the peak
        c = (edges[p] + edges[p + 1]) / 2
        near = elev[np.abs(elev - c) < 0.1]
        centres.append(float(near.mean()) if len(near) else float(c))
    return np.sort(np.array(centres))[::-1]


def beam_index(elev: np.ndarray, centres: np.ndarray) -> np.ndarray:
    order = np.argsort(centres)
    c = centres[order]
    pos = np.clip(np.searchsorted(c, elev), 1, len(c) - 1)
    left, right = c[pos - 1], c[pos]
    idx = np.where(np.abs(elev - left) <= np.abs(elev - right), pos - 1, pos)
    return order[idx]


def ransac_ground(points: np.ndarray, rng: np.random.Generator, iters: int = 200,
                  tol: float = 0.08) -> Dict[str, float]:
    """Plane z = a x + b y + c through the most points within 3-30 m below the sensor."""
    r = np.hypot(points[:, 0], points[:, 1])
    cand = points[(r > GROUND_BAND[0]) & (r < GROUND_BAND[1]) & (points[:, 2] < -0.8), :3]
    if len(cand) < 50:
        return {"height_m": math.nan, "slope_deg": math.nan, "pitch_deg": math.nan,
                "roll_deg": math.nan, "inliers": 0, "residual_m": math.nan}
    best, best_n = None, -1
    a_mat = np.c_[cand[:, 0], cand[:, 1], np.ones(len(cand))]
    for _ in range(iters):
        s = cand[rng.choice(len(cand), 3, replace=False)]
        try:
            coef = np.linalg.solve(np.c_[s[:, 0], s[:, 1], np.ones(3)], s[:, 2])
        except np.linalg.LinAlgError:
            continue
        if abs(coef[0]) > 0.2 or abs(coef[1]) > 0.2:  # steeper than ~11 deg: not the road
            continue
        n = int((np.abs(a_mat @ coef - cand[:, 2]) < tol).sum())
        if n > best_n:
            best, best_n = coef, n
    inl = np.abs(a_mat @ best - cand[:, 2]) < tol
    coef, *_ = np.linalg.lstsq(a_mat[inl], cand[inl, 2], rcond=None)
    resid = float(np.std(a_mat[inl] @ coef - cand[inl, 2]))
    return {"height_m": float(-coef[2]), "pitch_deg": float(np.degrees(np.arctan(coef[0]))),
            "roll_deg": float(np.degrees(np.arctan(coef[1]))),
            "slope_deg": float(np.degrees(np.arctan(np.hypot(coef[0], coef[1])))),
            "inliers": int(inl.sum()), "residual_m": resid, "coef": [float(v) for v in coef]}


def min_range_per_azimuth(points: np.ndarray) -> np.ndarray:
    r = np.hypot(points[:, 0], points[:, 1])
    az = (np.degrees(np.arctan2(points[:, 1], points[:, 0])) + 180.0) % 360.0
    b = np.minimum((az / (360.0 / AZIMUTH_BINS)).astype(int), AZIMUTH_BINS - 1)
    out = np.full(AZIMUTH_BINS, np.inf)
    np.minimum.at(out, b, r)
    return out


def classify_box_points(points: np.ndarray, box: np.ndarray, ground: Dict[str, Any]) -> str:
    """What a (false-positive) box sits on, from its points' height above the fitted ground
    and their shape: sparse / ground / wall / vegetation / object."""
    from admlops_ros.lidar.geometry import points_in_boxes
    grown = np.asarray(box, np.float64).copy()
    grown[3:5] += 0.4           # a 20 cm margin, and the column from below the road to 3 m up
    grown[2] -= 0.5
    grown[5] = max(grown[5] + 1.0, 3.5)
    inside = points_in_boxes(points, grown[None])[:, 0]
    p = points[inside]
    if len(p) < 8:
        return "sparse (< 8 points)"
    coef = ground.get("coef")
    base = (coef[0] * p[:, 0] + coef[1] * p[:, 1] + coef[2]) if coef else np.full(len(p), -1.73)
    h = p[:, 2] - base
    above = p[h > 0.25]
    if len(above) < 0.2 * len(p) or np.percentile(h, 95) < 0.35:
        return "ground (road, kerb, grass)"
    xy = above[:, :2] - above[:, :2].mean(axis=0)
    ev = np.sort(np.linalg.eigvalsh(np.cov(xy.T))) if len(above) > 3 else np.array([0.0, 1.0])
    line_like = math.sqrt(max(ev[0], 0.0) / max(ev[1], 1e-9)) < 0.25
    top = np.percentile(h, 98)
    if line_like and top > 1.8:
        return "wall / fence / building"
    if not line_like and np.std(above[:, 2]) > 0.35:
        return "vegetation (bush, tree)"
    if line_like:
        return "low wall / fence / kerb"
    return "object (parked, pole, sign)"


# ---------------------------------------------------------------------------------------------
# Detector

def detections(scans: Sequence[Dict[str, Any]], engine: Optional[str], threshold: float
               ) -> None:
    """scan["dets"] = (boxes [N, 7], scores, names) at ``threshold`` for every scan."""
    from admlops_ros.lidar.detector import LidarDetector
    with LidarDetector.from_bundle(engine, backend="auto") as det:
        det.warmup()
        for s in scans:
            d = det.detect(s["points"])
            keep = d.scores >= threshold
            s["dets"] = (d.boxes[keep].astype(np.float64), d.scores[keep],
                         np.asarray(list(d.label_names()))[keep])


def local_ground(points: np.ndarray, box: np.ndarray) -> float:
    """The road height around a box: 20th percentile z of the points 0.3-2 m outside its
    footprint (nan when there are fewer than 5)."""
    d = np.hypot(points[:, 0] - box[0], points[:, 1] - box[1])
    half = max(box[3], box[4]) / 2
    near = (d > half + 0.3) & (d < half + 2.0)
    return float(np.percentile(points[near, 2], 20)) if near.sum() >= 5 else math.nan


def matched_offsets(scans: Sequence[Dict[str, Any]]) -> Dict[str, List[float]]:
    """Detected cars matched (BEV IoU >= 0.5) to labelled cars: distance, dz of the bottoms
    (detection - label), 3D IoU."""
    from admlops_ros.lidar.geometry import iou_3d, rotated_iou_bev
    out: Dict[str, List[float]] = {"distance_m": [], "dz_m": [], "iou_3d": []}
    for s in scans:
        gt, (boxes, _, names) = s["gt"], s["dets"]
        cars = gt.boxes[np.asarray(gt.names) == "Car"] if gt is not None else np.zeros((0, 7))
        dcars = boxes[names == "Car"]
        if not len(cars) or not len(dcars):
            continue
        iou = rotated_iou_bev(dcars, cars)
        for j in range(len(cars)):
            i = int(iou[:, j].argmax())
            if iou[i, j] >= 0.5:
                out["distance_m"].append(float(np.hypot(cars[j, 0], cars[j, 1])))
                out["dz_m"].append(float(dcars[i, 2] - cars[j, 2]))
                out["iou_3d"].append(float(iou_3d(dcars[i:i + 1], cars[j:j + 1])[0, 0]))
    return out


def _outline(ax, boxes: np.ndarray, colour: str, lw: float) -> None:
    from admlops_ros.lidar.geometry import box_corners_bev
    if len(boxes):
        for c in box_corners_bev(np.asarray(boxes, np.float64)):
            ring = np.vstack([c, c[:1]])
            ax.plot(ring[:, 0], ring[:, 1], color=colour, lw=lw)


def in_camera_view(boxes: np.ndarray, scan: Dict[str, Any]) -> np.ndarray:
    from admlops_ros.evaluation import fov
    if scan.get("calib") is None:
        return np.ones(len(boxes), bool)
    c = fov.FrameCalib.from_kitti(scan["calib"], scan["image_size"])
    return fov.boxes_in_fov(boxes, c)[0]


# ---------------------------------------------------------------------------------------------
# Main

def summarise(real: List[Dict[str, Any]], sim: List[Dict[str, Any]], out: Path,
              analysis: Optional[Dict[str, Any]], have_dets: bool) -> Dict[str, Any]:
    from admlops_ros.evaluation.report import pyplot
    from admlops_ros.lidar.geometry import iou_3d, points_in_boxes, rotated_iou_bev
    from admlops_ros.simulation.sensor import _hdl64_elevations
    plt = pyplot()
    rng = np.random.default_rng(0)
    res: Dict[str, Any] = {"real_scans": len(real), "sim_scans": len(sim)}
    groups = {"real": real, "sim": sim}

    # beams
    table = np.array(_hdl64_elevations())
    elev = {g: [elevation_deg(s["points"]) for s in ss] for g, ss in groups.items()}
    centres = {g: elevation_clusters(np.concatenate([e[r > 3.0] for e, r in elev[g]]))
               for g in groups}
    fits = []
    per_beam = {"sim": np.mean([np.bincount(beam_index(e, table), minlength=len(table))
                                for e, _ in elev["sim"]], axis=0)}
    real_counts = []
    for s in real:
        ring = scan_order_rings(s["points"])
        if ring.max() + 1 == len(table):
            fits.append(ring_fit(s["points"], ring))
            real_counts.append(np.bincount(ring, minlength=len(table)))
    per_beam["real"] = np.mean(real_counts, axis=0)
    real_elev = np.nanmedian([f[0] for f in fits], axis=0)
    real_h0 = np.nanmedian([f[1] for f in fits], axis=0)
    diff = real_elev - table
    res["beams"] = {
        "real_scans_with_64_lasers_by_scan_order": len(fits),
        "elevation_clusters_beyond_3m": {g: int(len(c)) for g, c in centres.items()},
        "real_elevations_deg": np.round(real_elev, 2).tolist(),
        "real_origin_height_m": np.round(real_h0, 3).tolist(),
        "sim_table_deg": np.round(table, 2).tolist(),
        "real_minus_table_deg": {
            "upper_block_mean": float(diff[:32].mean()), "lower_block_mean": float(diff[32:].mean()),
            "max_abs": float(np.abs(diff).max()),
            "real_span_upper": [float(real_elev[0]), float(real_elev[31])],
            "real_span_lower": [float(real_elev[32]), float(real_elev[63])],
            "real_spacing_upper": float(-np.diff(real_elev[:32]).mean()),
            "real_spacing_lower": float(-np.diff(real_elev[32:]).mean()),
            "real_spacing_upper_min_max": [float(-np.diff(real_elev[:32]).max()),
                                           float(-np.diff(real_elev[:32]).min())],
            "table_spacing_upper": float(-np.diff(table[:32]).mean()),
            "table_spacing_lower": float(-np.diff(table[32:]).mean())},
        "real_origin_height_upper_lower_m": [float(np.median(real_h0[:32])),
                                             float(np.median(real_h0[32:]))]}
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    a1.plot(table, "o-", ms=3, label="sim table (_hdl64_elevations)")
    a1.plot(real_elev, "s", ms=3, label="real, cone fit per laser (scan order)")
    a1.set(xlabel="beam (top to bottom)", ylabel="elevation (deg)", title="beam elevations")
    a1.legend()
    a2.plot(per_beam["real"], label="real (beam from scan order)")
    a2.plot(per_beam["sim"], label="sim (beam = nearest table elevation)")
    a2.set(xlabel="beam (top to bottom)", ylabel="points per scan", title="points per beam")
    a2.legend()
    fig.savefig(out / "beams.png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    res["points_per_beam"] = {g: np.round(v, 0).tolist() for g, v in per_beam.items()}
    res["points_per_beam_blocks"] = {g: [float(v[:32].sum()), float(v[32:].sum())]
                                     for g, v in per_beam.items()}

    # range bins, points per scan, blind zone
    per_range = {g: np.mean([np.histogram(r, RANGE_EDGES)[0] for _, r in elev[g]], axis=0)
                 for g in groups}
    res["points_per_scan"] = {g: float(np.mean([len(s["points"]) for s in ss]))
                              for g, ss in groups.items()}
    res["points_per_range_bin"] = {g: np.round(v, 0).tolist() for g, v in per_range.items()}
    res["range_bin_edges_m"] = RANGE_EDGES.tolist()
    blind = {g: np.array([min_range_per_azimuth(s["points"]) for s in ss]) for g, ss in
             groups.items()}
    res["blind_zone"] = {g: {"median_min_range_m": float(np.median(b[np.isfinite(b)])),
                             "p10_min_range_m": float(np.percentile(b[np.isfinite(b)], 10)),
                             "min_range_m": float(b[np.isfinite(b)].min()),
                             "empty_azimuth_bins_pct": float(100 * (~np.isfinite(b)).mean())}
                         for g, b in blind.items()}
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    centre_r = (RANGE_EDGES[:-1] + RANGE_EDGES[1:]) / 2
    for g in groups:
        a1.semilogy(centre_r, np.maximum(per_range[g], 0.5), label=g)
        b = blind[g]
        a2.plot(np.arange(AZIMUTH_BINS) - 180, np.nanmedian(np.where(np.isfinite(b), b, np.nan),
                                                            axis=0), label=g)
    a1.set(xlabel="range hypot(x, y) (m)", ylabel="points per scan per 2 m", title="points by range")
    a2.set(xlabel="azimuth (deg, 0 = forward)", ylabel="median min range (m)",
           title="near-range blind zone", ylim=(0, 12))
    a1.legend()
    a2.legend()
    fig.savefig(out / "range_blind_zone.png", dpi=90, bbox_inches="tight")
    plt.close(fig)

    # intensity (own histogram for the plot; analyze's for the table)
    ibins = np.linspace(0, 1, 21)
    inten = {g: np.concatenate([s["points"][:, 3] for s in ss]) for g, ss in groups.items()}
    res["intensity"] = {g: {"mean": float(v.mean()), "p5": float(np.percentile(v, 5)),
                            "p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)),
                            "zero_pct": float(100 * (v <= 0.0).mean())} for g, v in inten.items()}

    # ground
    grounds = {g: [ransac_ground(s["points"], rng) for s in ss] for g, ss in groups.items()}
    for g, ss in groups.items():
        for s, gr in zip(ss, grounds[g]):
            s["ground"] = gr
    res["ground"] = {g: {k: [float(np.nanmin([x[k] for x in v])),
                             float(np.nanmedian([x[k] for x in v])),
                             float(np.nanmax([x[k] for x in v]))]
                         for k in ("height_m", "slope_deg", "pitch_deg", "roll_deg", "residual_m")}
                     for g, v in grounds.items()}

    # points on cars by distance (labelled real frames vs sim)
    cars = {}
    for g, ss in groups.items():
        rows = []
        for s in ss:
            gt = s.get("gt")
            if gt is None or not len(gt):
                continue
            is_car = np.asarray(gt.names) == "Car"
            if not is_car.any():
                continue
            n = points_in_boxes(s["points"], gt.boxes[is_car]).sum(axis=0)
            d = np.hypot(gt.boxes[is_car, 0], gt.boxes[is_car, 1])
            rows += list(zip(d.tolist(), n.tolist()))
        cars[g] = np.array(rows).reshape(-1, 2)
    res["car_points"] = {g: [[round(d, 1), int(n)] for d, n in v] if g == "real" else
                         {"cars": int(len(v)),
                          "fit_log10_points_vs_distance": (np.polyfit(v[:, 0], np.log10(
                              np.maximum(v[:, 1], 1)), 1).tolist() if len(v) > 2 else None)}
                         for g, v in cars.items()}
    if len(cars["sim"]) > 2:  # sim points expected at the real cars' distances
        fit = np.polyfit(cars["sim"][:, 0], np.log10(np.maximum(cars["sim"][:, 1], 1)), 1)
        res["car_points_real_over_sim_fit"] = [
            round(float(n / 10 ** np.polyval(fit, d)), 2) for d, n in cars["real"]]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for g, m in (("sim", "."), ("real", "o")):
        if len(cars[g]):
            ax.semilogy(cars[g][:, 0], np.maximum(cars[g][:, 1], 1), m, label=f"{g} cars")
    ax.set(xlabel="distance (m)", ylabel="points in the box", title="points on cars")
    ax.legend()
    fig.savefig(out / "car_points.png", dpi=90, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for g in groups:
        ax.hist(inten[g], ibins, density=True, histtype="step", lw=1.5, label=g)
    ax.set(xlabel="intensity", ylabel="density", title="point intensity")
    ax.legend()
    fig.savefig(out / "intensity.png", dpi=90, bbox_inches="tight")
    plt.close(fig)

    if analysis is not None:  # admlops analyze: labelled real frames vs the simulated ones
        res["analyze_shift"] = [
            {k: r[k] for k in ("group", "feature", "jsd_bits", "reference_total", "other_total")}
            for r in analysis.get("shift", {}).get("divergences", [])
            if r.get("group") in ("scan", "all", "Car") and r.get("reference_total", 0) >= 5][:8]
        per_frame = analysis["reference"], analysis["other"]
        res["analyze_objects_per_frame"] = [
            round(sum(st["class_counts"].values()) / max(1, st["frames_with_gt"]), 2)
            for st in per_frame]

    # detections
    if have_dets:
        det_rows: Dict[str, Any] = {}
        fp_classes: Dict[str, int] = {}
        fp_in_view: Dict[str, int] = {}
        fp_by_pred_class: Dict[str, int] = {}
        missed = []
        for g, ss in groups.items():
            n_all = [len(s["dets"][0]) for s in ss]
            n_cars = [int((s["dets"][2] == "Car").sum()) for s in ss]
            n_cars_view = [int(((s["dets"][2] == "Car") & in_camera_view(s["dets"][0], s)).sum())
                           for s in ss]
            det_rows[g] = {"per_frame": float(np.mean(n_all)), "cars_per_frame": float(np.mean(n_cars)),
                           "cars_in_camera_view_per_frame": float(np.mean(n_cars_view))}
        labelled = [s for s in real if s["gt"] is not None]
        n_fp = 0
        colours = {"vegetation (bush, tree)": "tab:green", "object (parked, pole, sign)":
                   "tab:purple", "ground (road, kerb, grass)": "tab:brown",
                   "wall / fence / building": "tab:red", "low wall / fence / kerb": "tab:orange",
                   "sparse (< 8 points)": "tab:gray"}
        for s in labelled:
            boxes, scores, names = s["dets"]
            gt = s["gt"]
            iou = rotated_iou_bev(boxes, gt.boxes) if len(gt) and len(boxes) else \
                np.zeros((len(boxes), len(gt)))
            fp = iou.max(axis=1) < 0.1 if iou.shape[1] else np.ones(len(boxes), bool)
            view = in_camera_view(boxes, s)
            fig, ax = plt.subplots(figsize=(7, 7))
            pts = s["points"][::3]
            ax.scatter(pts[:, 0], pts[:, 1], s=0.2, c=pts[:, 2], cmap="viridis", vmin=-2.5,
                       vmax=1.5, linewidths=0)
            _outline(ax, gt.boxes, "black", 2.0)
            for b, v in zip(boxes[fp], view[fp]):
                cls = classify_box_points(s["points"], b, s["ground"])
                fp_classes[cls] = fp_classes.get(cls, 0) + 1
                if v:
                    fp_in_view[cls] = fp_in_view.get(cls, 0) + 1
                _outline(ax, b[None], colours.get(cls, "k"), 1.2)
            for cls, col in colours.items():
                ax.plot([], [], color=col, label=cls)
            ax.plot([], [], color="black", lw=2, label="label")
            ax.set(xlim=(-20, 70), ylim=(-40, 40), aspect="equal",
                   title=f"{s['source']}: false positives by what they sit on")
            ax.legend(fontsize=7, loc="lower left")
            fig.savefig(out / f"fp_{s['source'].replace('/', '_')}.png", dpi=80,
                        bbox_inches="tight")
            plt.close(fig)
            n_fp += int(fp.sum())
            is_car = np.asarray(gt.names) == "Car"
            if is_car.any():
                npts = points_in_boxes(s["points"], gt.boxes[is_car]).sum(axis=0)
                hit = (iou[:, is_car] >= 0.5).any(axis=0) if len(boxes) else np.zeros(
                    int(is_car.sum()), bool)
                best = iou[:, is_car].max(axis=0) if len(boxes) else np.zeros(int(is_car.sum()))
                arg = iou[:, is_car].argmax(axis=0) if len(boxes) else None
                fp_car_scores = scores[fp & (names == "Car")]
                for j, (b, p, h, bi) in enumerate(zip(gt.boxes[is_car], npts, hit, best)):
                    row = {"frame": s["source"], "distance_m": round(float(np.hypot(
                        b[0], b[1])), 1), "points": int(p), "found_bev_iou>=0.5": bool(h),
                           "bottom_z_m": round(float(b[2]), 2),
                        "best_bev_iou": round(float(bi), 2)}
                    row["local_ground_z_m"] = round(local_ground(s["points"], b), 2)
                    if arg is not None and bi > 0:
                        d = boxes[arg[j]]
                        row.update({
                            "score": round(float(scores[arg[j]]), 3),
                            "fp_cars_scoring_higher": int((fp_car_scores > scores[arg[j]]).sum()),
                            "iou_3d": round(float(iou_3d(d[None], b[None])[0, 0]), 2),
                            "dz_bottom_m": round(float(d[2] - b[2]), 2),
                            "dheight_m": round(float(d[5] - b[5]), 2),
                            "dlength_m": round(float(d[3] - b[3]), 2)})
                    missed.append(row)
            for nm in np.unique(names[fp]):
                fp_by_pred_class[str(nm)] = fp_by_pred_class.get(str(nm), 0) + int(
                    (names[fp] == nm).sum())
        sim_fp = []
        for s in sim:
            boxes = s["dets"][0]
            gt = s["gt"]
            iou = rotated_iou_bev(boxes, gt.boxes) if len(gt) and len(boxes) else \
                np.zeros((len(boxes), len(gt)))
            sim_fp.append(int((iou.max(axis=1) < 0.1).sum()) if iou.shape[1] else len(boxes))
        res["detections"] = det_rows
        res["false_positives_real_labelled"] = {
            "frames": len(labelled), "per_frame": n_fp / max(1, len(labelled)),
            "by_what_they_sit_on": dict(sorted(fp_classes.items(), key=lambda kv: -kv[1])),
            "in_camera_view_by_class": dict(sorted(fp_in_view.items(), key=lambda kv: -kv[1])),
            "by_predicted_class": fp_by_pred_class}
        res["false_positives_sim_per_frame"] = float(np.mean(sim_fp))
        off = {g: matched_offsets([x for x in ss if x["gt"] is not None])
               for g, ss in groups.items()}
        res["matched_car_dz"] = {}
        for g, o in off.items():
            d, dz = np.asarray(o["distance_m"]), np.asarray(o["dz_m"])
            res["matched_car_dz"][g] = {
                f"{lo}-{hi} m": ([round(float(np.median(dz[(d >= lo) & (d < hi)])), 2),
                                  int(((d >= lo) & (d < hi)).sum())]
                                 if ((d >= lo) & (d < hi)).any() else None)
                for lo, hi in ((0, 20), (20, 40), (40, 70))}
        res["real_cars"] = missed
        fig, ax = plt.subplots(figsize=(7, 4))
        keys = list(res["false_positives_real_labelled"]["by_what_they_sit_on"])
        ax.barh(keys, [fp_classes[k] for k in keys], label="all around")
        ax.barh(keys, [fp_in_view.get(k, 0) for k in keys], label="in the camera view")
        ax.set(xlabel=f"false positives on {len(labelled)} labelled real frames",
               title="what the false positives sit on")
        ax.legend()
        fig.savefig(out / "false_positives.png", dpi=90, bbox_inches="tight")
        plt.close(fig)
    return res


def table(res: Dict[str, Any]) -> str:
    def row(name, real, sim):
        return f"{name:<44} {real:>14} {sim:>14}"
    f1 = lambda v: f"{v:.1f}"  # noqa: E731
    f2 = lambda v: f"{v:.2f}"  # noqa: E731
    lines = [row("quantity", "real (KITTI)", "sim (hdl64)"), "-" * 74,
             row("scans", str(res["real_scans"]), str(res["sim_scans"])),
             row("points per scan", f"{res['points_per_scan']['real']:.0f}",
                 f"{res['points_per_scan']['sim']:.0f}"),
             row("elevation clusters beyond 3 m (of 64)",
                 str(res["beams"]["elevation_clusters_beyond_3m"]["real"]),
                 str(res["beams"]["elevation_clusters_beyond_3m"]["sim"])),
             row("scans with 64 lasers by scan order",
                 str(res["beams"]["real_scans_with_64_lasers_by_scan_order"]), "-")]
    d = res["beams"]["real_minus_table_deg"]
    t = res["beams"]["sim_table_deg"]
    lines += [row("upper block span (deg)", "/".join(f2(v) for v in d["real_span_upper"]),
                  f"{t[0]:.2f}/{t[31]:.2f}"),
              row("lower block span (deg)", "/".join(f2(v) for v in d["real_span_lower"]),
                  f"{t[32]:.2f}/{t[63]:.2f}"),
              row("beam spacing upper / lower block (deg)",
                  f"{d['real_spacing_upper']:.3f}/{d['real_spacing_lower']:.3f}",
                  f"{d['table_spacing_upper']:.3f}/{d['table_spacing_lower']:.3f}"),
              row("upper spacing min / max (deg)",
                  "/".join(f"{v:.2f}" for v in d["real_spacing_upper_min_max"]), "0.33/0.33"),
              row("real - table elevation upper/lower, max",
                  f"{d['upper_block_mean']:+.2f}/{d['lower_block_mean']:+.2f} "
                  f"{d['max_abs']:.2f}", ""),
              row("laser origin height upper / lower (m)",
                  "/".join(f"{v:.3f}" for v in res["beams"]["real_origin_height_upper_lower_m"]),
                  "0/0"),
              row("points per scan upper / lower block",
                  "/".join(f"{v:.0f}" for v in res["points_per_beam_blocks"]["real"]),
                  "/".join(f"{v:.0f}" for v in res["points_per_beam_blocks"]["sim"]))]
    for lo, hi in ((0, 10), (10, 20), (20, 40), (40, 80)):
        e = np.asarray(res["range_bin_edges_m"])
        sel = (e[:-1] >= lo) & (e[:-1] < hi)
        lines.append(row(f"points per scan at {lo}-{hi} m",
                         f"{np.sum(np.asarray(res['points_per_range_bin']['real'])[sel]):.0f}",
                         f"{np.sum(np.asarray(res['points_per_range_bin']['sim'])[sel]):.0f}"))
    for k in ("mean", "p50", "p95", "zero_pct"):
        lines.append(row(f"intensity {k}", f2(res["intensity"]["real"][k]),
                         f2(res["intensity"]["sim"][k])))
    for k in ("height_m", "slope_deg", "pitch_deg", "roll_deg", "residual_m"):
        r, s = res["ground"]["real"][k], res["ground"]["sim"][k]
        lines.append(row(f"ground {k} (min/median/max)", "/".join(f2(v) for v in r),
                         "/".join(f2(v) for v in s)))
    for k in ("median_min_range_m", "p10_min_range_m", "empty_azimuth_bins_pct"):
        lines.append(row(f"blind zone {k}", f2(res["blind_zone"]["real"][k]),
                         f2(res["blind_zone"]["sim"][k])))
    if "analyze_objects_per_frame" in res:
        r_, s_ = res["analyze_objects_per_frame"]
        lines.append(row("labelled objects per frame (admlops analyze)", f2(r_), f2(s_)))
        for r in res["analyze_shift"]:
            lines.append(row(f"analyze JSD {r['group']}/{r['feature']}"[:44],
                             f"{r['jsd_bits']:.2f} bits", ""))
    if "car_points_real_over_sim_fit" in res:
        lines.append(row("real car points / sim at same distance",
                         " ".join(f2(v) for v in res["car_points_real_over_sim_fit"]), "1"))
    if "detections" in res:
        dr = res["detections"]
        for k in ("per_frame", "cars_per_frame", "cars_in_camera_view_per_frame"):
            lines.append(row(f"detections {k}", f1(dr["real"][k]), f1(dr["sim"][k])))
        fp = res["false_positives_real_labelled"]
        lines.append(row("false positives per frame (BEV IoU < 0.1)", f1(fp["per_frame"]),
                         f1(res["false_positives_sim_per_frame"])))
        for k, v in fp["by_what_they_sit_on"].items():
            lines.append(row(f"  FP on {k}", f"{v} ({fp['in_camera_view_by_class'].get(k, 0)})",
                             ""))
        for band in ("0-20 m", "20-40 m", "40-70 m"):
            r_, s_ = (res["matched_car_dz"][g][band] for g in ("real", "sim"))
            lines.append(row(f"matched car dz median (n) {band}",
                             "-" if r_ is None else f"{r_[0]:+.2f} ({r_[1]})",
                             "-" if s_ is None else f"{s_[0]:+.2f} ({s_[1]})"))
        lines.append(row("  FP by predicted class", " ".join(
            f"{k[:3]} {v}" for k, v in fp["by_predicted_class"].items()), ""))
        for c in res["real_cars"]:
            lines.append(f"  real car {c['frame'][-6:]} at {c['distance_m']} m: {c['points']} "
                         f"pts, BEV IoU {c['best_bev_iou']}, 3D IoU {c.get('iou_3d', '-')}, "
                         f"score {c.get('score', '-')}, {c.get('fp_cars_scoring_higher', '-')} "
                         f"FP cars score higher, dz {c.get('dz_bottom_m', '-')} m (label bottom "
                         f"{c['bottom_z_m']} m, road around it {c['local_ground_z_m']} m), dh "
                         f"{c.get('dheight_m', '-')} m, dl {c.get('dlength_m', '-')} m")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kitti", default=str(ROOT / ".." / "shared" / "data" / "kitti"),
                    help="directory with training/ and testing/ (default ../shared/data/kitti)")
    ap.add_argument("--seed", type=int, default=5_000_000, help="first simulated seed")
    ap.add_argument("--count", type=int, default=12, help="simulated frames (default 12)")
    ap.add_argument("--out", default=str(ROOT / "build" / "real_vs_sim"))
    ap.add_argument("--engine", default=None, help="bundle (default: the shipped one)")
    ap.add_argument("--threshold", type=float, default=None,
                    help="detection score threshold (default: the node's, "
                         "config/lidar_detection.yaml)")
    ap.add_argument("--no-engine", action="store_true", help="skip the detector parts")
    ap.add_argument("--json", default=None, help="write every number here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.seed < 5_000_000:
        ap.error("--seed must be >= 5,000,000 (seeds below are training / evaluation frames)")
    kitti = Path(args.kitti).resolve()
    if not (kitti / "training" / "velodyne").is_dir():
        ap.error(f"no {kitti}/training/velodyne: give --kitti (KITTI object training/testing)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    real = real_scans(kitti)
    sim = sim_scans(args.seed, args.count, out / "sim_kitti")
    analysis = None
    try:
        from admlops_ros.data import analyze
        stats = analyze.analyze_sets([[str(kitti / "training")],
                                      [str(out / "sim_kitti" / "training")]], workers=1)
        analysis = analyze.analysis(stats[0], stats[1])
        (out / "analysis.json").write_text(json.dumps(analysis, indent=1, default=float))
    except Exception as exc:  # noqa: B902 - the rest of the comparison stands without it
        LOG.warning("admlops analyze part skipped: %s", exc)
    have = False
    if not args.no_engine:
        threshold = args.threshold
        if threshold is None:
            import yaml
            threshold = float(yaml.safe_load((ROOT / "config" / "lidar_detection.yaml")
                                             .read_text())["score_threshold"])
        detections(real + sim, args.engine, threshold)
        have = True
    res = summarise(real, sim, out, analysis, have)
    sys.stdout.write(table(res) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=float))
    LOG.info("plots in %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
