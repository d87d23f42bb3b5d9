"""What a dataset holds, and how far another one (the field data) shifts from it, on fixed bins.

Inputs are KITTI-format directories (read with :class:`KittiDataset`) and rosbags with ground
truth (:func:`read_bag`); several inputs merge into one set of statistics. The work is split
into shards (one per bag, one per ``chunk`` frames of a dataset) run by
:func:`admlops_ros.parallel.map_tasks`. Every shard counts on the FIXED bin edges of
:data:`FEATURES`, so merging is a sum of integer counts (and a min / max for ranges): the merged
result equals a serial run exactly, whatever ran the shards.

Histogram semantics (every feature): ``counts[i]`` holds values in ``[edges[i], edges[i+1])``,
the last bin also holds ``edges[-1]``; values below ``edges[0]`` and above ``edges[-1]`` are
counted in ``below`` / ``above``; a value the input does not carry (KITTI occlusion in a bag) is
counted in ``missing``. The shift between two datasets is measured on the bins plus below / above.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from admlops_ros.errors import AdmlopsError
from admlops_ros.evaluation.kitti_io import limit_period

LOG = logging.getLogger(__name__)

FORMAT = "admlops-analyze/1"
ALL = "all"                                   # the group of every object, whatever its class
MAIN_CLASSES: Tuple[str, ...] = ("Car", "Pedestrian", "Cyclist")
CLASS_2D = "Car"                              # the class of the distance x points-per-box grid
DEFAULT_CHUNK = 50                            # dataset frames per shard
#: JSD smoothing: every normalised frequency gets + SMOOTHING, then is renormalised.
SMOOTHING = 1e-6
DEFAULT_MIN_COUNT = 5
DEFAULT_MAX_RATIO = 0.2
HISTOGRAM_SEMANTICS = ("counts[i] holds values in [edges[i], edges[i+1]), the last bin also "
                       "edges[-1]; values outside the edges are in below / above; values the "
                       "input does not carry are in missing; total = below + bins + above")


class AnalyzeError(AdmlopsError, ValueError):
    """An input that cannot be analysed (not a dataset or bag, nothing readable); says why."""


@dataclass(frozen=True)
class Feature:
    """One histogrammed quantity: its fixed bin edges, unit and meaning."""

    name: str
    unit: str
    edges: Tuple[float, ...]
    description: str

    @property
    def bins(self) -> int:
        return len(self.edges) - 1


def _edges(lo: float, hi: float, step: float) -> Tuple[float, ...]:
    n = int(round((hi - lo) / step))
    return tuple(float(round(lo + i * step, 6)) for i in range(n + 1))


def _integer_edges(hi: int) -> Tuple[float, ...]:
    """Bins centred on the integers 0..hi-1."""
    return tuple(float(k) - 0.5 for k in range(hi + 1))


PI_EDGES = tuple(float(v) for v in np.linspace(-math.pi, math.pi, 13))  # 30 degree bins
POINTS_EDGES = (0.0, 1.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
                10000.0)

#: Per-object features (one value per ground-truth box).
OBJECT_FEATURES: Tuple[Feature, ...] = (
    Feature("distance_m", "m", _edges(0.0, 100.0, 5.0),
            "BEV range of the box centre from the sensor, hypot(x, y), LiDAR frame"),
    Feature("heading_rad", "rad", PI_EDGES,
            "box yaw in the LiDAR frame, wrapped to [-pi, pi) (0 = facing +x, forward)"),
    Feature("length_m", "m", _edges(0.0, 12.0, 0.5), "box length dx"),
    Feature("width_m", "m", _edges(0.0, 4.0, 0.25), "box width dy"),
    Feature("height_m", "m", _edges(0.0, 4.5, 0.25), "box height dz"),
    Feature("points_in_box", "points", POINTS_EDGES,
            "LiDAR points inside the rotated 3D box (lidar.geometry.points_in_boxes)"),
    Feature("occlusion", "level", _integer_edges(4),
            "KITTI occluded field: 0 visible, 1 partly, 2 largely, 3 unknown (KITTI only)"),
    Feature("truncation", "fraction", _edges(0.0, 1.0, 0.1),
            "KITTI truncated field 0..1 (KITTI only)"),
    Feature("difficulty", "level", tuple(float(k) - 0.5 for k in range(-1, 4)),
            "-1 none/ignored, 0 easy, 1 moderate, 2 hard: KITTI rules on a dataset "
            "(evaluation.protocol.kitti_difficulty), the ground-truth label in a bag"),
)
#: Per-frame feature, per group: objects of the group in a frame with ground truth.
FRAME_FEATURE = Feature("objects_per_frame", "objects", _integer_edges(40),
                        "objects of the group in one frame with ground truth (0 included)")
#: Per-scan features: points per cloud, and per point intensity and coordinates.
SCAN_FEATURES: Tuple[Feature, ...] = (
    Feature("points_per_scan", "points", _edges(0.0, 200000.0, 5000.0),
            "points in one cloud (after the FOV crop when --fov-only)"),
    Feature("intensity", "", _edges(0.0, 1.0, 0.05),
            "point intensity (KITTI 0..1; a 0..255 sensor lands in 'above')"),
    Feature("x_m", "m", _edges(-100.0, 100.0, 5.0), "point x, LiDAR frame (forward)"),
    Feature("y_m", "m", _edges(-100.0, 100.0, 5.0), "point y, LiDAR frame (left)"),
    Feature("z_m", "m", _edges(-5.0, 5.0, 0.5), "point z, LiDAR frame (up)"),
)
FEATURES: Dict[str, Feature] = {f.name: f for f in
                                OBJECT_FEATURES + (FRAME_FEATURE,) + SCAN_FEATURES}
RANGE_KEYS = ("x_m", "y_m", "z_m", "intensity")
GRID_2D = ("distance_m", "points_in_box")
KITTI_FILES = (("velodyne", "bin"), ("label_2", "txt"), ("calib", "txt"))


def histogram(values: np.ndarray, feature: Feature) -> np.ndarray:
    """[bins + 3] int64 counts: below, bins..., above, missing (non-finite values)."""
    v = np.asarray(values, np.float64).reshape(-1)
    finite = np.isfinite(v)
    good = v[finite]
    edges = np.asarray(feature.edges, np.float64)
    inner = np.histogram(good, bins=edges)[0].astype(np.int64)
    return np.concatenate([[np.count_nonzero(good < edges[0])], inner,
                           [np.count_nonzero(good > edges[-1]),
                            np.count_nonzero(~finite)]]).astype(np.int64)


def _empty(feature: Feature) -> np.ndarray:
    return np.zeros(feature.bins + 3, np.int64)


def class_order(names: Iterable[str]) -> List[str]:
    """Car, Pedestrian, Cyclist first (when present), then the other classes sorted."""
    names = set(names)
    return [c for c in MAIN_CLASSES if c in names] + sorted(names - set(MAIN_CLASSES))


# ---------------------------------------------------------------------------------------------
# Statistics of a set of frames

@dataclass
class Stats:
    """Mergeable counts of a set of frames (one shard, or the merge of many).

    Attributes:
        frames: clouds read. frames_with_gt: those with ground truth (objects counted).
        objects: group (ALL or a class) -> feature -> [bins + 3] counts (see :func:`histogram`).
        per_frame: group -> objects_per_frame counts over the frames with >= 1 object of the
            group (frames with none are added by :meth:`objects_per_frame`).
        scan: SCAN_FEATURES name -> counts.
        ranges: x_m / y_m / z_m / intensity -> [min, max] over every point (None: no point).
        grid: CLASS_2D objects, distance bins x points bins (inside both edge ranges).
        holes: what could not be read: {"source", "file", "problem"}.
        inputs: the inputs (dataset dirs, bags) in order.
    """

    frames: int = 0
    frames_with_gt: int = 0
    objects: Dict[str, Dict[str, np.ndarray]] = field(default_factory=dict)
    per_frame: Dict[str, np.ndarray] = field(default_factory=dict)
    scan: Dict[str, np.ndarray] = field(
        default_factory=lambda: {f.name: _empty(f) for f in SCAN_FEATURES})
    ranges: Dict[str, Optional[List[float]]] = field(
        default_factory=lambda: {k: None for k in RANGE_KEYS})
    grid: np.ndarray = field(default_factory=lambda: np.zeros(
        (FEATURES[GRID_2D[0]].bins, FEATURES[GRID_2D[1]].bins), np.int64))
    holes: List[Dict[str, str]] = field(default_factory=list)
    inputs: List[str] = field(default_factory=list)

    # -- filling ---------------------------------------------------------------------------
    def add_scan(self, points: np.ndarray) -> None:
        """Count one cloud ([N, >=4] x, y, z, intensity)."""
        pts = np.asarray(points, np.float64)
        self.frames += 1
        self.scan["points_per_scan"] += histogram(np.array([len(pts)]),
                                                  FEATURES["points_per_scan"])
        for col, key in zip((3, 0, 1, 2), ("intensity", "x_m", "y_m", "z_m")):
            values = pts[:, col] if pts.shape[1] > col else np.zeros(0)
            self.scan[key] += histogram(values, FEATURES[key])
            finite = values[np.isfinite(values)]
            if len(finite):
                lo, hi = float(finite.min()), float(finite.max())
                old = self.ranges[key]
                self.ranges[key] = [lo, hi] if old is None else [min(old[0], lo),
                                                                 max(old[1], hi)]

    def add_objects(self, boxes: np.ndarray, names: Sequence[str], num_points: np.ndarray,
                    difficulty: Optional[np.ndarray] = None,
                    occluded: Optional[np.ndarray] = None,
                    truncated: Optional[np.ndarray] = None) -> None:
        """Count the ground truth of one frame.

        Args:
            boxes: [M, 7] (x, y, z, dx, dy, dz, yaw) LiDAR frame, bottom centre.
            names: [M] class names. num_points: [M] points inside each box.
            difficulty: [M] level (-1 when None). occluded, truncated: [M] KITTI fields, or
                None (counted as missing).
        """
        b = np.asarray(boxes, np.float64).reshape(-1, 7)
        names = np.asarray(list(names), dtype=str).reshape(-1)
        m = len(b)
        nan = np.full(m, np.nan)
        values = {
            "distance_m": np.hypot(b[:, 0], b[:, 1]),
            "heading_rad": limit_period(b[:, 6], 0.5, 2 * math.pi),
            "length_m": b[:, 3], "width_m": b[:, 4], "height_m": b[:, 5],
            "points_in_box": np.asarray(num_points, np.float64).reshape(-1),
            "occlusion": nan if occluded is None else np.asarray(occluded, np.float64),
            "truncation": nan if truncated is None else np.asarray(truncated, np.float64),
            "difficulty": (np.full(m, -1.0) if difficulty is None
                           else np.asarray(difficulty, np.float64)),
        }
        self.frames_with_gt += 1
        for group in [ALL] + sorted(set(names.tolist())):
            keep = np.ones(m, bool) if group == ALL else names == group
            hists = self.objects.setdefault(group, {f.name: _empty(f) for f in OBJECT_FEATURES})
            for feature in OBJECT_FEATURES:
                hists[feature.name] += histogram(values[feature.name][keep], feature)
            if keep.any():
                self.per_frame.setdefault(group, _empty(FRAME_FEATURE))
                self.per_frame[group] += histogram(np.array([keep.sum()]), FRAME_FEATURE)
        cars = names == CLASS_2D
        if cars.any():
            d_edges, p_edges = (np.asarray(FEATURES[k].edges) for k in GRID_2D)
            self.grid += np.histogram2d(values["distance_m"][cars], values["points_in_box"][cars],
                                        bins=(d_edges, p_edges))[0].astype(np.int64)

    # -- merging and reading ---------------------------------------------------------------
    def merge(self, other: "Stats") -> "Stats":
        """This plus ``other`` (a new Stats; counts add, ranges widen, holes concatenate)."""
        out = Stats(self.frames + other.frames, self.frames_with_gt + other.frames_with_gt)
        for group in set(self.objects) | set(other.objects):
            a, b = self.objects.get(group), other.objects.get(group)
            out.objects[group] = {f.name: (a[f.name] if a else 0) + (b[f.name] if b else 0)
                                  for f in OBJECT_FEATURES}
        for group in set(self.per_frame) | set(other.per_frame):
            out.per_frame[group] = (self.per_frame.get(group, _empty(FRAME_FEATURE))
                                    + other.per_frame.get(group, _empty(FRAME_FEATURE)))
        out.scan = {k: self.scan[k] + other.scan[k] for k in self.scan}
        for key in RANGE_KEYS:
            rs = [r for r in (self.ranges[key], other.ranges[key]) if r is not None]
            out.ranges[key] = ([min(r[0] for r in rs), max(r[1] for r in rs)] if rs else None)
        out.grid = self.grid + other.grid
        out.holes = self.holes + other.holes
        out.inputs = self.inputs + [i for i in other.inputs if i not in self.inputs]
        return out

    def groups(self) -> List[str]:
        """ALL, then the classes present (Car, Pedestrian, Cyclist first)."""
        return [ALL] + class_order(g for g in self.objects if g != ALL)

    def class_counts(self) -> Dict[str, int]:
        return {g: int(self.objects[g]["distance_m"][:-1].sum()) for g in self.groups()[1:]}

    def objects_per_frame(self, group: str) -> np.ndarray:
        """objects_per_frame counts of a group over every frame with ground truth."""
        counts = self.per_frame.get(group, _empty(FRAME_FEATURE)).copy()
        counts[1] += self.frames_with_gt - int(counts.sum())  # bin 0: frames without any
        return counts


def merge_all(parts: Iterable[Stats]) -> Stats:
    """The merge of shards, in order."""
    out = Stats()
    for part in parts:
        out = out.merge(part)
    return out


# ---------------------------------------------------------------------------------------------
# Inputs and shards

@dataclass(frozen=True)
class Shard:
    """One task: frames ``ids`` of a KITTI directory, or one bag."""

    kind: str                     # "kitti" or "bag"
    path: str
    ids: Tuple[str, ...] = ()
    fov_only: bool = False
    points_topic: Optional[str] = None
    gt_topic: Optional[str] = None


def _hole(source: str, file: str, problem: str) -> Dict[str, str]:
    LOG.warning("%s: %s", file, problem)
    return {"source": source, "file": file, "problem": problem}


def _split_ids(root: Path, split: str) -> List[str]:
    from admlops_ros.evaluation.bags import read_split
    path = Path(split)
    if not path.is_file():
        path = root / "ImageSets" / f"{split}.txt"
    if not path.is_file():
        raise AnalyzeError(f"--split {split!r}: neither a file nor {path}; give an ImageSets "
                           "file or a name under DATASET/ImageSets")
    return read_split(path)


def dataset_ids(root: Path, split: Optional[str] = None
                ) -> Tuple[List[str], List[Dict[str, str]]]:
    """Frames of a KITTI directory that have velodyne, label_2 and calib files, and the holes.

    A frame missing one of its files is a hole (listed, not analysed); the rest is analysed.
    """
    for sub, _ in KITTI_FILES:
        if not (root / sub).is_dir():
            raise AnalyzeError(f"dataset {root}: no {sub}/ directory; give a KITTI-format "
                               "directory (velodyne/, label_2/, calib/)")
    stems = {sub: {p.stem for p in (root / sub).glob(f"*.{ext}")} for sub, ext in KITTI_FILES}
    wanted = (_split_ids(root, split) if split
              else sorted(stems["velodyne"] | stems["label_2"]))
    ids, holes = [], []
    for frame in wanted:
        lacking = [f"{sub}/{frame}.{ext}" for sub, ext in KITTI_FILES if frame not in stems[sub]]
        if not lacking:
            ids.append(frame)
            continue
        have = [f"{sub}/{frame}.{ext}" for sub, ext in KITTI_FILES if frame in stems[sub]]
        holes.append(_hole(str(root), str(root / lacking[0]),
                           f"frame {frame} skipped: {', '.join(lacking)} missing"
                           + (f" beside {', '.join(have)}" if have else "")
                           + " (add the file or remove the frame's other files)"))
    return ids, holes


def resolve_input(path: str) -> Tuple[str, List[str]]:
    """("kitti", [dir]) or ("bag", [bags]) for a dataset dir, a KITTI root, a bag or bag dir."""
    p = Path(path)
    if p.is_file():
        if p.suffix != ".bag":
            raise AnalyzeError(f"{p}: not a .bag file nor a KITTI-format directory "
                               "(velodyne/, label_2/, calib/)")
        return "bag", [str(p)]
    if not p.is_dir():
        raise AnalyzeError(f"{p} does not exist; give a KITTI-format directory or rosbags")
    if (p / "velodyne").is_dir():
        return "kitti", [str(p)]
    if (p / "training" / "velodyne").is_dir():
        return "kitti", [str(p / "training")]
    bags = sorted(str(b) for b in p.glob("*.bag"))
    if bags:
        return "bag", bags
    raise AnalyzeError(f"{p}: no velodyne/ (KITTI-format dataset) and no *.bag files; give a "
                       "directory with velodyne/, label_2/, calib/ or a directory of bags")


def plan_shards(inputs: Sequence[str], split: Optional[str] = None, fov_only: bool = False,
                chunk: int = DEFAULT_CHUNK, points_topic: Optional[str] = None,
                gt_topic: Optional[str] = None
                ) -> Tuple[List[Shard], List[Dict[str, str]], List[str]]:
    """(shards, holes found while listing, resolved input paths) of the inputs."""
    if chunk < 1:
        raise AnalyzeError(f"--chunk must be >= 1, got {chunk}")
    shards: List[Shard] = []
    holes: List[Dict[str, str]] = []
    resolved: List[str] = []
    for item in inputs:
        kind, paths = resolve_input(item)
        for path in paths:
            resolved.append(path)
            if kind == "bag":
                shards.append(Shard("bag", path, points_topic=points_topic, gt_topic=gt_topic))
                continue
            ids, found = dataset_ids(Path(path), split)
            holes += found
            for start in range(0, len(ids), chunk):
                shards.append(Shard("kitti", path, tuple(ids[start:start + chunk]), fov_only))
    return shards, holes, resolved


def _kitti_shard(shard: Shard) -> Stats:
    from admlops_ros.data.kitti_dataset import KittiDataset
    stats = Stats(inputs=[shard.path])
    root = Path(shard.path)
    dataset = KittiDataset(root, split=list(shard.ids), fov_only=shard.fov_only)
    for index, frame_id in enumerate(shard.ids):
        try:
            frame = dataset[index]
        except (AdmlopsError, OSError) as exc:
            where = str(exc).split(":")[0] if str(root) in str(exc) else str(root / frame_id)
            stats.holes.append(_hole(shard.path, where, f"frame {frame_id} skipped: "
                                     + " ".join(str(exc).split())))
            continue
        stats.add_scan(frame.points)
        stats.add_objects(frame.boxes, frame.names, frame.num_points, frame.difficulty,
                          frame.occluded.astype(np.float64), frame.truncated)
    return stats


def _bag_shard(shard: Shard) -> Stats:
    from admlops_ros.evaluation.bags import read_bag
    from admlops_ros.lidar.geometry import points_in_boxes
    stats = Stats(inputs=[shard.path])
    summary, frames = read_bag(shard.path, shard.points_topic, shard.gt_topic)
    for problem in summary.problems:
        stats.holes.append(_hole(shard.path, shard.path, problem))
    for frame in frames:
        if frame.points is None:
            stats.holes.append(_hole(shard.path, shard.path, frame.error))
            continue
        stats.add_scan(frame.points)
        if frame.gt is None:
            continue
        gt = frame.gt
        inside = (points_in_boxes(frame.points, gt.boxes).sum(axis=0) if len(gt)
                  else np.zeros(0, np.int64))
        stats.add_objects(gt.boxes, gt.names, inside, gt.difficulty, gt.occluded, gt.truncated)
    return stats


def analyze_shard(shard: Shard) -> Stats:
    """The statistics of one shard (a module-level task for :func:`map_tasks`)."""
    return _kitti_shard(shard) if shard.kind == "kitti" else _bag_shard(shard)


def analyze_sets(sets: Sequence[Sequence[str]], split: Sequence[Optional[str]] = (),
                 fov_only: bool = False, chunk: int = DEFAULT_CHUNK,
                 points_topic: Optional[str] = None, gt_topic: Optional[str] = None,
                 ray_address: Optional[str] = None,
                 workers: Optional[int] = None) -> List[Stats]:
    """Merged statistics of each set of inputs (all shards of all sets in one map_tasks run).

    Args:
        sets: e.g. [reference inputs, other inputs]; each a list of dataset dirs / bags.
        split: an ImageSets split per set (None: every frame).

    Raises:
        AnalyzeError: an input is neither a dataset nor a bag; a set has no readable frame.
    """
    from admlops_ros.parallel import map_tasks
    planned = []
    for k, inputs in enumerate(sets):
        planned.append(plan_shards(inputs, split[k] if k < len(split) else None, fov_only,
                                   chunk, points_topic, gt_topic))
    items = [s for shards, _, _ in planned for s in shards]
    outcomes = map_tasks(analyze_shard, items, ray_address=ray_address, workers=workers)
    out, pos = [], 0
    for (shards, holes, resolved), inputs in zip(planned, sets):
        stats = Stats(holes=list(holes), inputs=list(resolved))
        for outcome in outcomes[pos:pos + len(shards)]:
            if outcome.ok:
                stats = stats.merge(outcome.value)
            else:
                stats.holes.append(_hole(outcome.item.path, outcome.item.path, outcome.error))
        pos += len(shards)
        if stats.frames == 0:
            why = "; ".join(h["problem"] for h in stats.holes[:3])
            raise AnalyzeError(f"no readable frame in {', '.join(inputs)}"
                               + (f": {why}" if why else ""))
        out.append(stats)
    return out


# ---------------------------------------------------------------------------------------------
# JSON form

def _hist_json(counts: np.ndarray, feature: Feature) -> Dict[str, Any]:
    c = [int(v) for v in counts]
    return {"edges": list(feature.edges), "counts": c[1:-2], "below": c[0], "above": c[-2],
            "missing": c[-1], "total": int(sum(c[:-1]))}


def stats_json(stats: Stats) -> Dict[str, Any]:
    """The plain-JSON form of merged statistics (histograms with their edges)."""
    groups = stats.groups()
    return {
        "inputs": list(stats.inputs),
        "frames": stats.frames,
        "frames_with_gt": stats.frames_with_gt,
        "objects_total": int(stats.objects[ALL]["distance_m"][:-1].sum()) if ALL in stats.objects
        else 0,
        "class_counts": stats.class_counts() if ALL in stats.objects else {},
        "objects": {g: {f.name: _hist_json(stats.objects[g][f.name], f) for f in OBJECT_FEATURES}
                    for g in groups if g in stats.objects},
        "objects_per_frame": {g: _hist_json(stats.objects_per_frame(g), FRAME_FEATURE)
                              for g in groups if g in stats.objects},
        "scan": {f.name: _hist_json(stats.scan[f.name], f) for f in SCAN_FEATURES},
        "ranges": dict(stats.ranges),
        "car_distance_points": {
            "class": CLASS_2D, "rows": GRID_2D[0], "columns": GRID_2D[1],
            "row_edges": list(FEATURES[GRID_2D[0]].edges),
            "column_edges": list(FEATURES[GRID_2D[1]].edges),
            "counts": stats.grid.astype(int).tolist()},
        "holes": list(stats.holes),
        "notes": _notes(stats),
    }


def _notes(stats: Stats) -> List[str]:
    """Hints about the data that the histograms alone hide."""
    notes = []
    inten = stats.scan["intensity"]
    if inten[:-1].sum() and inten[-2] > 0.01 * inten[:-1].sum():
        notes.append(f"{int(inten[-2])} of {int(inten[:-1].sum())} points have intensity > 1: "
                     "a 0..255 sensor? KITTI and the simulator use 0..1 (rescale before "
                     "training on it)")
    if stats.frames and stats.frames_with_gt < stats.frames:
        notes.append(f"{stats.frames - stats.frames_with_gt} of {stats.frames} clouds have no "
                     "ground truth: they count in the scan statistics only")
    return notes


# ---------------------------------------------------------------------------------------------
# Shift between two datasets

def _extended(h: Dict[str, Any]) -> np.ndarray:
    """below, bins..., above (the support the shift is measured on)."""
    return np.array([h["below"]] + list(h["counts"]) + [h["above"]], np.float64)


def js_divergence_bits(p_counts: Sequence[float], q_counts: Sequence[float],
                       smoothing: float = SMOOTHING) -> Optional[float]:
    """Jensen-Shannon divergence (bits, 0..1) of two count vectors on the same bins.

    Each normalised frequency gets ``+ smoothing`` and is renormalised; None when a side is
    empty. Identical shapes give exactly 0.
    """
    p, q = np.asarray(p_counts, np.float64), np.asarray(q_counts, np.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        return None
    p = (p / p.sum() + smoothing) / (1.0 + smoothing * len(p))
    q = (q / q.sum() + smoothing) / (1.0 + smoothing * len(q))
    m = 0.5 * (p + q)
    jsd = 0.5 * float(np.sum(p * np.log2(p / m))) + 0.5 * float(np.sum(q * np.log2(q / m)))
    return max(0.0, jsd)


def total_variation(p_counts: Sequence[float], q_counts: Sequence[float]) -> Optional[float]:
    """Total-variation distance 0.5 * sum |p - q| of the normalised counts (no smoothing)."""
    p, q = np.asarray(p_counts, np.float64), np.asarray(q_counts, np.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        return None
    return 0.5 * float(np.abs(p / p.sum() - q / q.sum()).sum())


def _bin_range(edges: Sequence[float], k: int) -> Tuple[Optional[float], Optional[float]]:
    """Range of extended bin k (0 = below, len(edges) = above)."""
    if k == 0:
        return None, edges[0]
    if k == len(edges):
        return edges[-1], None
    return edges[k - 1], edges[k]


def _under_covered(group: str, feature: str, ref: np.ndarray, other: np.ndarray,
                   labels: Sequence[Dict[str, Any]], min_count: int,
                   max_ratio: float) -> List[Dict[str, Any]]:
    n_ref, n_other = ref.sum(), other.sum()
    if n_other <= 0:
        return []
    out = []
    for k in range(len(other)):
        if other[k] < min_count:
            continue
        f_ref = ref[k] / n_ref if n_ref > 0 else 0.0
        ratio = f_ref / (other[k] / n_other)
        if ratio < max_ratio:
            out.append(dict(group=group, feature=feature, **labels[k],
                            reference_count=int(ref[k]), other_count=int(other[k]),
                            frequency_ratio=float(ratio)))
    return out


def compare(ref: Dict[str, Any], other: Dict[str, Any], min_count: int = DEFAULT_MIN_COUNT,
            max_ratio: float = DEFAULT_MAX_RATIO,
            smoothing: float = SMOOTHING) -> Dict[str, Any]:
    """The shift from ``ref`` (e.g. the training set) to ``other`` (the field data).

    Args:
        ref, other: :func:`stats_json` dicts.
        min_count: a bin is checked when ``other`` has at least this many objects in it.
        max_ratio: under-covered when ref's normalised frequency / other's is below it.

    Returns:
        {"settings", "divergences" (ranked by JSD, largest first), "under_covered"}: one
        divergence row per (group, feature) present on both sides; under-covered bins per
        group (class) and object feature, for the class mix and the Car distance x points grid.
    """
    rows: List[Dict[str, Any]] = []
    under: List[Dict[str, Any]] = []

    def add(group: str, feature: str, p: np.ndarray, q: np.ndarray, kind: str,
            labels: Optional[Sequence[Dict[str, Any]]] = None) -> None:
        rows.append({"group": group, "feature": feature, "kind": kind,
                     "jsd_bits": js_divergence_bits(p, q, smoothing),
                     "total_variation": total_variation(p, q),
                     "reference_total": int(p.sum()), "other_total": int(q.sum())})
        if labels is not None:
            under.extend(_under_covered(group, feature, p, q, labels, min_count, max_ratio))

    classes = class_order(set(ref["class_counts"]) | set(other["class_counts"]))
    if classes:
        p = np.array([ref["class_counts"].get(c, 0) for c in classes], np.float64)
        q = np.array([other["class_counts"].get(c, 0) for c in classes], np.float64)
        add(ALL, "class", p, q, "objects", [{"bin": c} for c in classes])
    groups = [ALL] + classes
    for group in groups:
        h_ref, h_other = ref["objects"].get(group), other["objects"].get(group)
        if h_other is None:
            continue
        for feat in OBJECT_FEATURES:
            q = _extended(h_other[feat.name])
            p = (_extended(h_ref[feat.name]) if h_ref is not None else np.zeros_like(q))
            if q.sum() == 0 and p.sum() == 0:
                continue
            labels = [dict(zip(("low", "high"), _bin_range(feat.edges, k)))
                      for k in range(len(q))]
            add(group, feat.name, p, q, "objects", labels)
        if group in ref["objects_per_frame"]:
            add(group, FRAME_FEATURE.name, _extended(ref["objects_per_frame"][group]),
                _extended(other["objects_per_frame"][group]), "frames")
    for feat in SCAN_FEATURES:
        add("scan", feat.name, _extended(ref["scan"][feat.name]),
            _extended(other["scan"][feat.name]), "frames" if feat.name == "points_per_scan"
            else "points")
    g_ref = np.asarray(ref["car_distance_points"]["counts"], np.float64)
    g_other = np.asarray(other["car_distance_points"]["counts"], np.float64)
    if g_other.sum() > 0:
        d_edges = ref["car_distance_points"]["row_edges"]
        p_edges = ref["car_distance_points"]["column_edges"]
        labels = [{"low": d_edges[i], "high": d_edges[i + 1], "points_low": p_edges[j],
                   "points_high": p_edges[j + 1]}
                  for i in range(len(d_edges) - 1) for j in range(len(p_edges) - 1)]
        add(CLASS_2D, "distance_m x points_in_box", g_ref.reshape(-1), g_other.reshape(-1),
            "objects", labels)
    rows.sort(key=lambda r: (-(r["jsd_bits"] if r["jsd_bits"] is not None else -1.0),
                             r["group"], r["feature"]))
    under.sort(key=lambda u: (u["frequency_ratio"], -u["other_count"], u["group"],
                              u["feature"]))
    return {"settings": {"smoothing": smoothing, "min_count": int(min_count),
                         "max_ratio": float(max_ratio),
                         "jsd": "Jensen-Shannon divergence in bits (log2, 0..1) of the "
                                "normalised counts on the shared bins (with below/above), each "
                                f"frequency + {smoothing:g} then renormalised",
                         "total_variation": "0.5 * sum |p - q| of the normalised counts",
                         "under_covered": f"bins where other has >= {int(min_count)} objects "
                                          "and reference frequency / other frequency < "
                                          f"{max_ratio:g}"},
            "divergences": rows, "under_covered": under}


def definitions() -> Dict[str, Any]:
    """Every feature's unit, edges and meaning (for the JSON)."""
    return {f.name: {"unit": f.unit, "description": f.description, "edges": list(f.edges)}
            for f in FEATURES.values()}


def analysis(ref: Stats, other: Optional[Stats] = None, min_count: int = DEFAULT_MIN_COUNT,
             max_ratio: float = DEFAULT_MAX_RATIO, settings: Optional[Dict[str, Any]] = None
             ) -> Dict[str, Any]:
    """The analysis.json dict: reference statistics, optional other statistics and shift."""
    out: Dict[str, Any] = {"format": FORMAT, "settings": dict(settings or {}),
                           "histogram_semantics": HISTOGRAM_SEMANTICS,
                           "features": definitions(), "reference": stats_json(ref)}
    if other is not None:
        out["other"] = stats_json(other)
        out["shift"] = compare(out["reference"], out["other"], min_count, max_ratio)
    return out


def class_table(result: Dict[str, Any]) -> List[Tuple[str, int, int, float]]:
    """(class, reference count, other count or -1, reference share %) rows, in class order."""
    ref = result["reference"]["class_counts"]
    oth = result.get("other", {}).get("class_counts")
    total = max(1, sum(ref.values()))
    names = class_order(set(ref) | set(oth or {}))
    return [(c, ref.get(c, 0), -1 if oth is None else oth.get(c, 0), 100.0 * ref.get(c, 0) / total)
            for c in names]


__all__ = ["AnalyzeError", "Feature", "FEATURES", "OBJECT_FEATURES", "SCAN_FEATURES",
           "FRAME_FEATURE", "Stats", "Shard", "histogram", "merge_all", "dataset_ids",
           "plan_shards", "analyze_shard", "analyze_sets", "stats_json", "compare",
           "js_divergence_bits", "total_variation", "analysis", "class_table"]
