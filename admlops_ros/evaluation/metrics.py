"""KITTI-style 3D / BEV / 2D average precision with the devkit's matching, plus TP errors."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from admlops_ros.errors import AdmlopsError

try:  # numba is a runtime requirement; the pure-Python fallback gives the same numbers, slowly
    from numba import njit
except ImportError:  # pragma: no cover - exercised only without numba
    def njit(*args, **kwargs):  # type: ignore[no-redef]
        """No-op stand-in for numba.njit."""
        if args and callable(args[0]):
            return args[0]
        return lambda f: f

LOG = logging.getLogger(__name__)

# KITTI protocol constants (devkit eval.py / mmdet3d kitti_utils/eval.py).
KITTI_CLASSES: Tuple[str, ...] = ("Car", "Pedestrian", "Cyclist")
STRICT_IOU: Dict[str, float] = {"Car": 0.7, "Pedestrian": 0.5, "Cyclist": 0.5}
LOOSE_IOU: Dict[str, float] = {"Car": 0.5, "Pedestrian": 0.25, "Cyclist": 0.25}
BBOX_IOU: Dict[str, float] = dict(STRICT_IOU)  # 2D boxes keep the strict thresholds in both sets
NEIGHBOUR_CLASS: Dict[str, str] = {"car": "van", "pedestrian": "person_sitting"}
KITTI_DIFFICULTIES: Tuple[str, ...] = ("easy", "moderate", "hard")
KITTI_MIN_HEIGHT_PX: Tuple[float, ...] = (40.0, 25.0, 25.0)
KITTI_MAX_OCCLUSION: Tuple[int, ...] = (0, 1, 2)
KITTI_MAX_TRUNCATION: Tuple[float, ...] = (0.15, 0.3, 0.5)
DISTANCE_BANDS_M: Tuple[Tuple[float, float], ...] = ((0.0, 20.0), (20.0, 40.0),
                                                     (40.0, math.inf))
N_SAMPLE_PTS = 41
METRICS: Tuple[str, ...] = ("bbox", "bev", "3d")
IOU_SETS: Tuple[str, ...] = ("strict", "loose")


class MetricsError(AdmlopsError):
    """Inconsistent ground truth / predictions handed to the evaluator."""


@dataclass
class FrameGT:
    """Ground truth of one frame.

    Attributes:
        boxes: [M, 7] float (x, y, z, dx, dy, dz, yaw) LiDAR frame, z bottom centre; m, rad.
        names: [M] class names (KITTI spelling: Car, Van, Pedestrian, Person_sitting, ...).
        bbox2d: [M, 4] image box (left, top, right, bottom) px, or None (then no KITTI
            difficulty and no 2D AP).
        occluded: [M] int KITTI occlusion state 0..3, or None.
        truncated: [M] float KITTI truncation 0..1, or None.
        ignore: [M] bool boxes to ignore (matches are neither TP nor FP, e.g. the simulator's
            difficulty -1), or None.
        difficulty: [M] int 0/1/2 (-1 ignore) as the simulator labels it, or None.
        dontcare_bbox2d: [K, 4] px KITTI DontCare regions (2D metric only).
        frame_id: a name for messages (file stem or stamp).
    """

    boxes: np.ndarray
    names: Sequence[str]
    bbox2d: Optional[np.ndarray] = None
    occluded: Optional[np.ndarray] = None
    truncated: Optional[np.ndarray] = None
    ignore: Optional[np.ndarray] = None
    difficulty: Optional[np.ndarray] = None
    dontcare_bbox2d: Optional[np.ndarray] = None
    frame_id: str = ""

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 7)
        self.names = np.asarray(list(self.names), dtype=str).reshape(-1)
        n = len(self.boxes)
        if len(self.names) != n:
            raise MetricsError(f"FrameGT {self.frame_id!r}: {n} boxes but {len(self.names)} names")
        for attr, width in (("bbox2d", 4), ("occluded", 0), ("truncated", 0), ("ignore", 0),
                            ("difficulty", 0)):
            value = getattr(self, attr)
            if value is None:
                continue
            value = np.asarray(value)
            value = value.reshape(-1, width) if width else value.reshape(-1)
            if len(value) != n:
                raise MetricsError(
                    f"FrameGT {self.frame_id!r}: {attr} has {len(value)} rows for {n} boxes")
            setattr(self, attr, value)
        self.dontcare_bbox2d = (np.zeros((0, 4)) if self.dontcare_bbox2d is None
                                else np.asarray(self.dontcare_bbox2d, np.float64).reshape(-1, 4))

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def has_kitti_difficulty(self) -> bool:
        """Whether 2D box, occlusion and truncation are all present."""
        return (self.bbox2d is not None and self.occluded is not None
                and self.truncated is not None)


@dataclass
class FramePred:
    """Predictions of one frame.

    Attributes:
        boxes: [N, 7] float LiDAR frame, z bottom centre (as Detections.boxes).
        scores: [N] float confidence.
        names: [N] class names.
        bbox2d: [N, 4] image boxes px, or None.
        frame_id: a name for messages.
    """

    boxes: np.ndarray
    scores: np.ndarray
    names: Sequence[str]
    bbox2d: Optional[np.ndarray] = None
    frame_id: str = ""

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 7)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        self.names = np.asarray(list(self.names), dtype=str).reshape(-1)
        n = len(self.boxes)
        if len(self.scores) != n or len(self.names) != n:
            raise MetricsError(
                f"FramePred {self.frame_id!r}: boxes, scores, names lengths differ "
                f"({n}, {len(self.scores)}, {len(self.names)})")
        if self.bbox2d is not None:
            self.bbox2d = np.asarray(self.bbox2d, np.float64).reshape(-1, 4)
            if len(self.bbox2d) != n:
                raise MetricsError(f"FramePred {self.frame_id!r}: bbox2d rows != boxes")

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def from_detections(cls, detections, frame_id: str = "") -> "FramePred":
        """From an :class:`admlops_ros.lidar.detections.Detections` (class names by label index)."""
        return cls(detections.boxes, detections.scores, list(detections.label_names()),
                   frame_id=frame_id)

    @classmethod
    def empty(cls, frame_id: str = "") -> "FramePred":
        """A frame with no predictions."""
        return cls(np.zeros((0, 7)), np.zeros(0), [], frame_id=frame_id)


@dataclass
class EvalConfig:
    """What to evaluate.

    Attributes:
        classes: class names to score.
        metrics: subset of ("bbox", "bev", "3d"); "bbox" needs 2D boxes on both sides.
        difficulty_mode: "auto" (KITTI when every gt frame carries 2D box, occlusion and
            truncation, else distance), "kitti", "distance" or "labels" (FrameGT.difficulty
            used as cumulative KITTI level).
        distance_bands: [lo, hi) BEV range bands in metres for the distance mode.
        score_threshold: operating score threshold for precision / recall / TP errors.
        strict_iou, loose_iou: IoU thresholds per class for bev / 3d (classes missing here
            fall back to 0.5 / 0.25).
    """

    classes: Tuple[str, ...] = KITTI_CLASSES
    metrics: Tuple[str, ...] = ("bev", "3d")
    difficulty_mode: str = "auto"
    distance_bands: Tuple[Tuple[float, float], ...] = DISTANCE_BANDS_M
    score_threshold: float = 0.3
    strict_iou: Dict[str, float] = field(default_factory=lambda: dict(STRICT_IOU))
    loose_iou: Dict[str, float] = field(default_factory=lambda: dict(LOOSE_IOU))

    def min_overlap(self, metric: str, iou_set: str, cls: str) -> float:
        """IoU a match must exceed for a metric ("bbox"/"bev"/"3d"), set and class."""
        if metric == "bbox":
            return BBOX_IOU.get(cls, 0.5)
        table = self.strict_iou if iou_set == "strict" else self.loose_iou
        return float(table.get(cls, 0.5 if iou_set == "strict" else 0.25))


@dataclass
class EvalResult:
    """AP and operating-point numbers. Arrays are indexed [metric, iou_set, class, difficulty].

    AP values are percent (0..100); nan where the class has no valid ground truth at that
    difficulty ("no gt"); 0 where there is ground truth but no true positive.
    """

    classes: List[str]
    difficulties: List[str]
    metrics: List[str]
    iou_sets: List[str]
    min_overlaps: Dict[str, Dict[str, Dict[str, float]]]  # metric -> iou_set -> class -> iou
    ap_r40: np.ndarray
    ap_r11: np.ndarray
    precision: np.ndarray  # [..., 41]
    recall: np.ndarray  # [..., 41]
    thresholds: np.ndarray  # [..., 41] score at each sample point (nan past the last)
    num_gt: np.ndarray  # [class, difficulty]
    headline_difficulty: str
    difficulty_mode: str
    operating: Dict[str, Dict[str, Dict[str, float]]]  # iou_set -> class -> numbers
    num_frames: int = 0

    def _index(self, metric: str, iou_set: str, cls: str, difficulty: str) -> Tuple[int, ...]:
        try:
            return (self.metrics.index(metric), self.iou_sets.index(iou_set),
                    self.classes.index(cls), self.difficulties.index(difficulty))
        except ValueError as exc:
            raise MetricsError(
                f"no result for metric={metric!r} iou_set={iou_set!r} class={cls!r} "
                f"difficulty={difficulty!r}; have metrics {self.metrics}, classes "
                f"{self.classes}, difficulties {self.difficulties}") from exc

    def ap(self, metric: str, cls: str, difficulty: Optional[str] = None,
           iou_set: str = "strict", kind: str = "R40") -> float:
        """One AP value in percent (nan: no gt). kind is "R40" or "R11"."""
        idx = self._index(metric, iou_set, cls, difficulty or self.headline_difficulty)
        return float((self.ap_r40 if kind == "R40" else self.ap_r11)[idx])

    def mean_ap(self, metric: str = "3d", difficulty: Optional[str] = None,
                iou_set: str = "strict", kind: str = "R40") -> float:
        """Mean over classes with ground truth (nan when none has any)."""
        vals = [self.ap(metric, c, difficulty, iou_set, kind) for c in self.classes]
        vals = [v for v in vals if not math.isnan(v)]
        return float(np.mean(vals)) if vals else math.nan

    def to_dict(self) -> Dict[str, object]:
        """JSON-friendly nested dict (nan -> None)."""
        def clean(x):
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [clean(v) for v in x]
            if isinstance(x, np.ndarray):
                return clean(x.tolist())
            if isinstance(x, (float, np.floating)):
                return None if not math.isfinite(float(x)) else round(float(x), 6)
            if isinstance(x, np.integer):
                return int(x)
            return x

        ap = {}
        for kind, arr in (("R40", self.ap_r40), ("R11", self.ap_r11)):
            ap[kind] = {m: {s: {c: {d: arr[mi, si, ci, di]
                                    for di, d in enumerate(self.difficulties)}
                                for ci, c in enumerate(self.classes)}
                            for si, s in enumerate(self.iou_sets)}
                        for mi, m in enumerate(self.metrics)}
        curves = {m: {s: {c: {"precision": self.precision[mi, si, ci, self.difficulties.index(
            self.headline_difficulty)], "recall": self.recall[mi, si, ci, self.difficulties.index(
                self.headline_difficulty)]} for ci, c in enumerate(self.classes)}
            for si, s in enumerate(self.iou_sets)} for mi, m in enumerate(self.metrics)}
        return clean({
            "num_frames": self.num_frames,
            "classes": self.classes,
            "difficulties": self.difficulties,
            "difficulty_mode": self.difficulty_mode,
            "headline_difficulty": self.headline_difficulty,
            "min_overlaps": self.min_overlaps,
            "num_gt": {c: {d: self.num_gt[ci, di] for di, d in enumerate(self.difficulties)}
                       for ci, c in enumerate(self.classes)},
            "ap": ap,
            "mAP_3d_R40_strict": self.mean_ap("3d") if "3d" in self.metrics else None,
            "operating_point": self.operating,
            "pr_curves_" + self.headline_difficulty: curves,
        })

    def table(self, kind: str = "R40", iou_set: str = "strict",
              metrics: Optional[Sequence[str]] = None) -> str:
        """A fixed-width AP table (rows class x metric, columns difficulties)."""
        metrics = list(metrics or self.metrics)
        head = f"{'AP|' + kind + ' ' + iou_set:<22}" + "".join(
            f"{d:>10}" for d in self.difficulties) + f"{'#gt ' + self.headline_difficulty:>14}"
        lines = [head, "-" * len(head)]
        for ci, cls in enumerate(self.classes):
            for m in metrics:
                iou = self.min_overlaps[m][iou_set][cls]
                row = f"{cls + ' ' + m + ' @' + format(iou, '.2f'):<22}"
                for d in self.difficulties:
                    v = self.ap(m, cls, d, iou_set, kind)
                    row += f"{'-' if math.isnan(v) else format(v, '.2f'):>10}"
                row += f"{int(self.num_gt[ci, self.difficulties.index(self.headline_difficulty)]):>14}"
                lines.append(row)
        for m in metrics:
            row = f"{'mean ' + m:<22}"
            for d in self.difficulties:
                v = self.mean_ap(m, d, iou_set, kind)
                row += f"{'-' if math.isnan(v) else format(v, '.2f'):>10}"
            lines.append(row)
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Matching kernels (compute_statistics_jit semantics). Flat arrays over all frames:
# overlaps of frame f are ov[ov_off[f]:ov_off[f+1]] reshaped [D_f, G_f] (det x gt).
# ignored_gt / ignored_dt: 0 valid, 1 ignored (neighbour class / outside difficulty), -1 other.

_NO_DETECTION = -10000000.0


@njit(cache=False)
def _match_frame(ov, ig, idt, sc, dcov, n_dc, min_overlap, thresh, compute_fp, match):
    """Devkit matching on one frame; writes match[g] = det index of TPs; returns tp, fp, fn."""
    n_dt = idt.shape[0]
    n_gt = ig.shape[0]
    assigned = np.zeros(n_dt, np.bool_)
    below = np.zeros(n_dt, np.bool_)
    if compute_fp:
        for j in range(n_dt):
            below[j] = sc[j] < thresh
    tp = 0
    fp = 0
    fn = 0
    for i in range(n_gt):
        match[i] = -1
        if ig[i] == -1:
            continue
        det_idx = -1
        valid = _NO_DETECTION
        max_overlap = 0.0
        assigned_ignored = False
        for j in range(n_dt):
            if idt[j] == -1 or assigned[j] or below[j]:
                continue
            o = ov[j, i]
            if not compute_fp:
                if o > min_overlap and sc[j] > valid:
                    det_idx = j
                    valid = sc[j]
            elif o > min_overlap and (o > max_overlap or assigned_ignored) and idt[j] == 0:
                max_overlap = o
                det_idx = j
                valid = 1.0
                assigned_ignored = False
            elif o > min_overlap and valid == _NO_DETECTION and idt[j] == 1:
                det_idx = j
                valid = 1.0
                assigned_ignored = True
        if valid == _NO_DETECTION:
            if ig[i] == 0:
                fn += 1
        elif ig[i] == 1 or idt[det_idx] == 1:
            assigned[det_idx] = True
        else:
            tp += 1
            match[i] = det_idx
            assigned[det_idx] = True
    if compute_fp:
        for j in range(n_dt):
            if not (assigned[j] or idt[j] != 0 or below[j]):
                fp += 1
        nstuff = 0
        for k in range(n_dc):
            for j in range(n_dt):
                if assigned[j] or idt[j] != 0 or below[j]:
                    continue
                if dcov[j, k] > min_overlap:
                    assigned[j] = True
                    nstuff += 1
        fp -= nstuff
    return tp, fp, fn


@njit(cache=False)
def _run_frames(ov, ov_off, gt_off, dt_off, dcov, dcov_off, dc_off, ig, idt, sc, min_overlap,
                thresh, compute_fp, match):
    """:func:`_match_frame` over all frames; match[g] is a flat det index (or -1)."""
    tp = 0
    fp = 0
    fn = 0
    for f in range(gt_off.shape[0] - 1):
        g0, g1 = gt_off[f], gt_off[f + 1]
        d0, d1 = dt_off[f], dt_off[f + 1]
        if g1 == g0 and d1 == d0:
            continue
        n_dc = dc_off[f + 1] - dc_off[f]
        o = ov[ov_off[f]:ov_off[f + 1]].reshape((d1 - d0, g1 - g0))
        dc = dcov[dcov_off[f]:dcov_off[f + 1]].reshape((d1 - d0, n_dc))
        m = match[g0:g1]
        a, b, c = _match_frame(o, ig[g0:g1], idt[d0:d1], sc[d0:d1], dc, n_dc, min_overlap,
                               thresh, compute_fp, m)
        for i in range(g1 - g0):
            if m[i] >= 0:
                m[i] += d0
        tp += a
        fp += b
        fn += c
    return tp, fp, fn


@njit(cache=False)
def _pr_counts(ov, ov_off, gt_off, dt_off, dcov, dcov_off, dc_off, ig, idt, sc, min_overlap,
               thresholds):
    """[T, 3] (tp, fp, fn) summed over frames at each score threshold."""
    out = np.zeros((thresholds.shape[0], 3), np.int64)
    match = np.empty(ig.shape[0], np.int64)
    for t in range(thresholds.shape[0]):
        tp, fp, fn = _run_frames(ov, ov_off, gt_off, dt_off, dcov, dcov_off, dc_off, ig, idt,
                                 sc, min_overlap, thresholds[t], True, match)
        out[t, 0] = tp
        out[t, 1] = fp
        out[t, 2] = fn
    return out


@njit(cache=False)
def _sample_thresholds(scores_desc, num_gt, num_sample_pts):
    """Devkit get_thresholds: scores at which recall passes each of the sample points."""
    out = np.empty(scores_desc.shape[0], np.float64)
    k = 0
    current = 0.0
    n = scores_desc.shape[0]
    for i in range(n):
        l_recall = (i + 1) / num_gt
        r_recall = (i + 2) / num_gt if i < n - 1 else l_recall
        if (r_recall - current) < (current - l_recall) and i < n - 1:
            continue
        out[k] = scores_desc[i]
        k += 1
        current += 1.0 / (num_sample_pts - 1.0)
    return out[:k]


# ---------------------------------------------------------------------------------------------
# Preparation: flatten frames, overlaps per metric, ignore flags per class and difficulty.

def image_box_overlap(a: np.ndarray, b: np.ndarray, criterion: int = -1) -> np.ndarray:
    """Axis-aligned 2D overlap [len(a), len(b)] of image boxes (left, top, right, bottom).

    criterion -1: IoU; 0: intersection / area of a (devkit's DontCare rule); 1: / area of b.
    """
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    area_a = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None]
    area_b = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None, :]
    if criterion == -1:
        denom = area_a + area_b - inter
    elif criterion == 0:
        denom = np.broadcast_to(area_a, inter.shape)
    else:
        denom = np.broadcast_to(area_b, inter.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter > 0, inter / denom, 0.0)


def box_overlaps(metric: str, dt_boxes: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """[D, G] overlap for "bev" or "3d" from admlops_ros.lidar.geometry (exact rotated rectangles)."""
    if len(dt_boxes) == 0 or len(gt_boxes) == 0:
        return np.zeros((len(dt_boxes), len(gt_boxes)))
    from admlops_ros.lidar import geometry
    fn = geometry.rotated_iou_bev if metric == "bev" else geometry.iou_3d
    return np.asarray(fn(dt_boxes, gt_boxes), np.float64).reshape(len(dt_boxes), len(gt_boxes))


@dataclass
class _Flat:
    """All frames concatenated; per-frame offsets into each array."""

    gt_off: np.ndarray
    dt_off: np.ndarray
    gt_names: np.ndarray
    dt_names: np.ndarray
    gt_boxes: np.ndarray
    dt_boxes: np.ndarray
    scores: np.ndarray
    gt_ignore: np.ndarray
    ov: Dict[str, np.ndarray]
    ov_off: np.ndarray
    dc_off: np.ndarray
    dcov: np.ndarray
    dcov_off: np.ndarray
    gt_height: Optional[np.ndarray] = None
    dt_height: Optional[np.ndarray] = None
    occluded: Optional[np.ndarray] = None
    truncated: Optional[np.ndarray] = None
    difficulty: Optional[np.ndarray] = None


def _offsets(counts: Sequence[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.asarray(counts, np.int64))]).astype(np.int64)


def _cat(arrays: List[np.ndarray], width: int = 0, dtype=np.float64) -> np.ndarray:
    if not arrays:
        return np.zeros((0, width) if width else 0, dtype)
    return np.concatenate([np.asarray(a, dtype).reshape((-1, width) if width else -1)
                           for a in arrays])


def _flatten(gts: Sequence[FrameGT], preds: Sequence[FramePred], metrics: Sequence[str],
             mode: str) -> _Flat:
    n_gt = [len(g) for g in gts]
    n_dt = [len(p) for p in preds]
    ov: Dict[str, List[np.ndarray]] = {m: [] for m in metrics}
    dcov: List[np.ndarray] = []
    for g, p in zip(gts, preds):
        for m in metrics:
            if m == "bbox":
                o = image_box_overlap(p.bbox2d, g.bbox2d)
            else:
                o = box_overlaps(m, p.boxes, g.boxes)
            ov[m].append(o.reshape(-1))
        if "bbox" in metrics:
            dcov.append(image_box_overlap(p.bbox2d, g.dontcare_bbox2d, 0).reshape(-1))
    n_dc = [len(g.dontcare_bbox2d) if "bbox" in metrics else 0 for g in gts]
    flat = _Flat(
        gt_off=_offsets(n_gt), dt_off=_offsets(n_dt),
        gt_names=np.char.lower(_cat([g.names for g in gts], dtype=str)),
        dt_names=np.char.lower(_cat([p.names for p in preds], dtype=str)),
        gt_boxes=_cat([g.boxes for g in gts], 7), dt_boxes=_cat([p.boxes for p in preds], 7),
        scores=_cat([p.scores for p in preds]),
        gt_ignore=_cat([np.zeros(len(g), bool) if g.ignore is None else g.ignore for g in gts],
                       dtype=bool),
        ov={m: _cat(v) for m, v in ov.items()},
        ov_off=_offsets([a * b for a, b in zip(n_gt, n_dt)]),
        dc_off=_offsets(n_dc), dcov=_cat(dcov),
        dcov_off=_offsets([a * b for a, b in zip(n_dt, n_dc)]))
    if mode == "kitti":
        flat.gt_height = _cat([g.bbox2d[:, 3] - g.bbox2d[:, 1] for g in gts])
        flat.dt_height = _cat([np.abs(p.bbox2d[:, 3] - p.bbox2d[:, 1]) if p.bbox2d is not None
                               else np.full(len(p), np.inf) for p in preds])
        flat.occluded = _cat([g.occluded for g in gts], dtype=np.int64)
        flat.truncated = _cat([g.truncated for g in gts])
    elif mode == "labels":
        flat.difficulty = _cat([g.difficulty for g in gts], dtype=np.int64)
    if len(flat.gt_names) == 0:
        flat.gt_names = np.zeros(0, dtype="<U1")
    if len(flat.dt_names) == 0:
        flat.dt_names = np.zeros(0, dtype="<U1")
    return flat


def _levels(mode: str, bands: Sequence[Tuple[float, float]]) -> Tuple[List[str], str]:
    if mode in ("kitti", "labels"):
        return list(KITTI_DIFFICULTIES), "moderate"
    names = [f"{lo:g}m+" if math.isinf(hi) else f"{lo:g}-{hi:g}m" for lo, hi in bands]
    return names + ["all"], "all"


def _ignore_flags(flat: _Flat, cls: str, mode: str, level: int,
                  bands: Sequence[Tuple[float, float]]) -> Tuple[np.ndarray, np.ndarray]:
    """(ignored_gt, ignored_dt) int64 arrays as the devkit's clean_data, per difficulty mode."""
    name = cls.lower()
    neighbour = NEIGHBOUR_CLASS.get(name, "\0")
    same = flat.gt_names == name
    valid_class = np.where(same, 1, np.where(flat.gt_names == neighbour, 0, -1))
    dt_same = flat.dt_names == name
    if mode == "kitti":
        outside = ((flat.occluded > KITTI_MAX_OCCLUSION[level])
                   | (flat.truncated > KITTI_MAX_TRUNCATION[level])
                   | (flat.gt_height <= KITTI_MIN_HEIGHT_PX[level]))
        ig_dt = np.where(flat.dt_height < KITTI_MIN_HEIGHT_PX[level], 1, np.where(dt_same, 0, -1))
    elif mode == "labels":
        outside = (flat.difficulty > level) | (flat.difficulty < 0)
        ig_dt = np.where(dt_same, 0, -1)
    else:
        if level < len(bands):
            lo, hi = bands[level]
            gd = np.hypot(flat.gt_boxes[:, 0], flat.gt_boxes[:, 1])
            dd = np.hypot(flat.dt_boxes[:, 0], flat.dt_boxes[:, 1])
            outside = (gd < lo) | (gd >= hi)
            dt_out = (dd < lo) | (dd >= hi)
        else:
            outside = np.zeros(len(flat.gt_names), bool)
            dt_out = np.zeros(len(flat.dt_names), bool)
        ig_dt = np.where(dt_same, np.where(dt_out, 1, 0), -1)
    outside = outside | flat.gt_ignore
    ig_gt = np.where((valid_class == 1) & ~outside, 0,
                     np.where(valid_class >= 0, 1, -1))
    return ig_gt.astype(np.int64), ig_dt.astype(np.int64)


def _resolve_mode(gts: Sequence[FrameGT], mode: str, metrics: Sequence[str],
                  preds: Sequence[FramePred]) -> str:
    if mode == "auto":
        mode = "kitti" if gts and all(g.has_kitti_difficulty for g in gts) else "distance"
    if mode == "kitti" and not all(g.has_kitti_difficulty for g in gts):
        bad = next(g.frame_id for g in gts if not g.has_kitti_difficulty)
        raise MetricsError(f"difficulty_mode 'kitti' needs bbox2d, occluded and truncated on "
                           f"every ground-truth frame; frame {bad!r} lacks them (use 'distance')")
    if mode == "labels" and not all(g.difficulty is not None for g in gts):
        raise MetricsError("difficulty_mode 'labels' needs FrameGT.difficulty on every frame")
    if mode not in ("kitti", "distance", "labels"):
        raise MetricsError(f"difficulty_mode {mode!r} unknown; use auto, kitti, distance, labels")
    if "bbox" in metrics:
        if not all(g.bbox2d is not None for g in gts) or not all(
                p.bbox2d is not None for p in preds):
            raise MetricsError("metric 'bbox' needs bbox2d on every FrameGT and FramePred")
    return mode


def _average_precision(precision: np.ndarray) -> Tuple[float, float]:
    """(AP|R40, AP|R11) in percent from the 41-point interpolated precision."""
    r40 = precision[1:].sum() / 40.0 * 100.0
    r11 = precision[::4].sum() / 11.0 * 100.0
    return float(r40), float(r11)


def tp_errors(dt_boxes: np.ndarray, gt_boxes: np.ndarray) -> Dict[str, np.ndarray]:
    """Per-pair errors of matched boxes (nuScenes TP metrics, LiDAR frame).

    Returns:
        ``translation_m``: BEV centre distance (m); ``scale``: 1 - 3D IoU after aligning
        centre and yaw; ``orientation_rad``: smallest yaw difference in [0, pi].
    """
    dt_boxes = np.asarray(dt_boxes, np.float64).reshape(-1, 7)
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 7)
    trans = np.hypot(dt_boxes[:, 0] - gt_boxes[:, 0], dt_boxes[:, 1] - gt_boxes[:, 1])
    dims_d = np.maximum(dt_boxes[:, 3:6], 0.0)
    dims_g = np.maximum(gt_boxes[:, 3:6], 0.0)
    inter = np.prod(np.minimum(dims_d, dims_g), axis=1)
    union = np.prod(dims_d, axis=1) + np.prod(dims_g, axis=1) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = 1.0 - np.where(union > 0, inter / union, 0.0)
    dyaw = np.abs((dt_boxes[:, 6] - gt_boxes[:, 6] + np.pi) % (2 * np.pi) - np.pi)
    return {"translation_m": trans, "scale": scale, "orientation_rad": dyaw}


def _operating_point(flat: _Flat, metric: str, ig: np.ndarray, idt: np.ndarray,
                     min_overlap: float, thresh: float,
                     dc: Tuple[np.ndarray, np.ndarray, np.ndarray]) -> Dict[str, float]:
    match = np.empty(len(ig), np.int64)
    tp, fp, fn = _run_frames(flat.ov[metric], flat.ov_off, flat.gt_off, flat.dt_off, dc[0],
                             dc[1], dc[2], ig, idt, flat.scores, min_overlap, thresh, True,
                             match)
    hit = match >= 0
    err = tp_errors(flat.dt_boxes[match[hit]], flat.gt_boxes[hit])
    nan = math.nan
    return {
        "score_threshold": float(thresh), "tp": int(tp), "fp": int(fp), "fn": int(fn),
        "precision": tp / (tp + fp) if tp + fp else nan,
        "recall": tp / (tp + fn) if tp + fn else nan,
        "mean_translation_error_m": float(err["translation_m"].mean()) if tp else nan,
        "mean_scale_error": float(err["scale"].mean()) if tp else nan,
        "mean_orientation_error_rad": float(err["orientation_rad"].mean()) if tp else nan,
    }


def _zero_off(flat: _Flat) -> np.ndarray:
    return np.zeros(len(flat.gt_off), np.int64)


def evaluate(gts: Sequence[FrameGT], preds: Sequence[FramePred],
             config: Optional[EvalConfig] = None) -> EvalResult:
    """KITTI-protocol AP of predictions against ground truth, frame by frame.

    Matching follows the KITTI devkit (mmdet3d ``kitti_utils/eval.py``): per frame and class,
    each ground truth takes the highest-scoring unassigned detection with overlap strictly
    above the class threshold to collect true-positive scores; the 41 recall sample points
    pick score thresholds from those; at each threshold each ground truth takes the
    best-overlapping valid detection (ignored detections only as a fallback). Neighbouring
    classes (Van for Car, Person_sitting for Pedestrian), ground truth outside the difficulty
    and ``FrameGT.ignore`` boxes are ignored: their matches are neither TP nor FP. Detections
    outside the difficulty (2D height, or distance band) are ignored likewise.

    Args:
        gts: ground truth per frame.
        preds: predictions per frame, same order and length (empty FramePred for none).
        config: what to evaluate; defaults to :class:`EvalConfig`.

    Returns:
        EvalResult with AP|R40, AP|R11 (percent; nan where a class has no valid ground truth,
        0 where it has ground truth but no prediction matches), PR curves and operating-point
        precision / recall / TP errors (3D metric when evaluated, else the first metric; at the
        headline difficulty).

    Raises:
        MetricsError: lengths differ, frame ids disagree, or the difficulty mode / metric needs
            fields the frames lack.
    """
    config = config or EvalConfig()
    if len(gts) != len(preds):
        raise MetricsError(f"{len(gts)} ground-truth frames but {len(preds)} prediction frames")
    for g, p in zip(gts, preds):
        if g.frame_id and p.frame_id and g.frame_id != p.frame_id:
            raise MetricsError(f"frame order differs: gt {g.frame_id!r} vs pred {p.frame_id!r}")
    metrics = [m for m in METRICS if m in config.metrics]
    unknown = set(config.metrics) - set(METRICS)
    if unknown:
        raise MetricsError(f"unknown metrics {sorted(unknown)}; use {list(METRICS)}")
    mode = _resolve_mode(gts, config.difficulty_mode, metrics, preds)
    flat = _flatten(gts, preds, metrics, mode)
    levels, headline = _levels(mode, config.distance_bands)
    classes = list(config.classes)
    shape = (len(metrics), len(IOU_SETS), len(classes), len(levels))
    ap40 = np.full(shape, np.nan)
    ap11 = np.full(shape, np.nan)
    prec = np.zeros(shape + (N_SAMPLE_PTS,))
    rec = np.zeros(shape + (N_SAMPLE_PTS,))
    thr = np.full(shape + (N_SAMPLE_PTS,), np.nan)
    num_gt = np.zeros((len(classes), len(levels)), np.int64)
    operating: Dict[str, Dict[str, Dict[str, float]]] = {s: {} for s in IOU_SETS}
    op_metric = "3d" if "3d" in metrics else metrics[0]
    no_dc = np.zeros(0)
    zero = _zero_off(flat)
    for ci, cls in enumerate(classes):
        for li in range(len(levels)):
            ig, idt = _ignore_flags(flat, cls, mode, li, config.distance_bands)
            n_valid = int((ig == 0).sum())
            num_gt[ci, li] = n_valid
            for mi, metric in enumerate(metrics):
                dcov, dcov_off, dc_off = ((flat.dcov, flat.dcov_off, flat.dc_off)
                                          if metric == "bbox" else (no_dc, zero, zero))
                for si, iou_set in enumerate(IOU_SETS):
                    min_ov = config.min_overlap(metric, iou_set, cls)
                    if li == levels.index(headline) and metric == op_metric:
                        operating[iou_set][cls] = _operating_point(
                            flat, metric, ig, idt, min_ov, config.score_threshold,
                            (dcov, dcov_off, dc_off))
                    if n_valid == 0:
                        continue
                    match = np.empty(len(ig), np.int64)
                    _run_frames(flat.ov[metric], flat.ov_off, flat.gt_off, flat.dt_off, dcov,
                                dcov_off, dc_off, ig, idt, flat.scores, min_ov, 0.0, False,
                                match)
                    tp_scores = np.sort(flat.scores[match[match >= 0]])[::-1].copy()
                    thresholds = _sample_thresholds(tp_scores, float(n_valid),
                                                    N_SAMPLE_PTS)[:N_SAMPLE_PTS]
                    idx = (mi, si, ci, li)
                    if len(thresholds):
                        pr = _pr_counts(flat.ov[metric], flat.ov_off, flat.gt_off, flat.dt_off,
                                        dcov, dcov_off, dc_off, ig, idt, flat.scores, min_ov,
                                        thresholds).astype(np.float64)
                        t = len(thresholds)
                        with np.errstate(divide="ignore", invalid="ignore"):
                            r = pr[:, 0] / (pr[:, 0] + pr[:, 2])
                            p = pr[:, 0] / (pr[:, 0] + pr[:, 1])
                        # devkit: running max from the right (interpolated precision)
                        prec[idx][:t] = np.maximum.accumulate(np.nan_to_num(p)[::-1])[::-1]
                        rec[idx][:t] = np.maximum.accumulate(np.nan_to_num(r)[::-1])[::-1]
                        thr[idx][:t] = thresholds
                    ap40[idx], ap11[idx] = _average_precision(prec[idx])
    min_overlaps = {m: {s: {c: config.min_overlap(m, s, c) for c in classes} for s in IOU_SETS}
                    for m in metrics}
    return EvalResult(classes=classes, difficulties=levels, metrics=metrics,
                      iou_sets=list(IOU_SETS), min_overlaps=min_overlaps, ap_r40=ap40,
                      ap_r11=ap11, precision=prec, recall=rec, thresholds=thr, num_gt=num_gt,
                      headline_difficulty=headline, difficulty_mode=mode, operating=operating,
                      num_frames=len(gts))


__all__: Sequence[str] = ("FrameGT", "FramePred", "EvalConfig", "EvalResult", "MetricsError",
                          "evaluate", "tp_errors", "image_box_overlap", "box_overlaps",
                          "KITTI_CLASSES", "STRICT_IOU", "LOOSE_IOU", "DISTANCE_BANDS_M")
