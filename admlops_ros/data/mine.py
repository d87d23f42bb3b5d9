"""Which unlabelled frames are worth labelling: per-frame scores from an engine run, ranked.

Each bag is scored in one task (:func:`score_bag`, run by :func:`admlops_ros.parallel.
map_tasks`): the engine detects every cloud, and every frame gets raw scores from these
components (all computed on the detections a node would publish, ``score >= threshold``, except
the uncertainty, which looks at the scores around the threshold):

- ``uncertainty``: sum over detections of a triangle ``max(0, 1 - |score - threshold| / band)``:
  1 for an object scored exactly at the node's threshold, 0 beyond ``threshold +- band``
  (:func:`uncertainty_scores`).
- ``temporal``: births, deaths and class switches between consecutive frames not explained by
  an object entering or leaving the model's range (:func:`temporal_scores`). Box centres are
  associated greedily, nearest first, within ``gate_m`` (same class first, then across classes:
  a class switch). A one-frame gap (an object seen at t-1 and t+1 but not at t: flicker) counts
  once, at t; a one-frame ghost (seen at t only) counts once, at t. Births / deaths within
  ``edge_margin_m`` of the range's x/y edges are explained, and so is everything across a gap
  of more than ``max_gap_s`` between clouds. No ego-motion compensation: the gate must cover
  an object's motion relative to the sensor in one frame.
- ``disagreement`` (with a second engine / backend): ``1 - matched / max(n_a, n_b)``, matched
  = same-class greedy pairs with BEV IoU >= ``agree_iou`` (:func:`disagreement_scores`).
- ``misses`` and ``false_positives`` (with ground truth in the bag): the KITTI devkit's
  matching at the threshold (BEV overlap, loose or strict IoU per class, neighbour classes and
  ignored ground truth neither missed nor false) (:func:`gt_errors`).

The ranking (:func:`rank`) is global: each component divided by its maximum over all frames of
all bags (so in [0, 1]; a component all zero, or absent, adds 0), the total the weighted sum,
ties broken by bag path then stamp, so a serial run and a Ray run rank identically.
"""
from __future__ import annotations

import csv
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import (Any, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Set,
                    Tuple)

import numpy as np

from admlops_ros.errors import AdmlopsError, UsageError
from admlops_ros.evaluation.frames import FrameGT, FramePred

LOG = logging.getLogger(__name__)

COMPONENTS: Tuple[str, ...] = ("uncertainty", "temporal", "disagreement", "misses",
                               "false_positives")
DEFAULT_WEIGHTS: Dict[str, float] = {"uncertainty": 1.0, "temporal": 1.0, "disagreement": 1.0,
                                     "misses": 1.0, "false_positives": 1.0}


class MineError(AdmlopsError):
    """Mining cannot run as asked (bags, engines, weights); the message says how to fix it."""


def node_threshold() -> float:
    """The lidar node's operating score threshold (``score_threshold`` in
    config/lidar_detection.yaml).

    Raises:
        MineError: the config keeps the spec's threshold (negative value): pass one.
    """
    from admlops_ros.ros.params import CONFIG_NAME, load_defaults
    value = float(load_defaults().get("score_threshold", -1.0))
    if value < 0:
        raise MineError(f"config/{CONFIG_NAME} score_threshold is {value} (the spec's); give "
                        f"the operating threshold (--threshold)")
    return value


@dataclass(frozen=True)
class MineConfig:
    """How frames are scored.

    Attributes:
        threshold: the operating score threshold (what the node publishes; default: the
            node's, :func:`node_threshold`).
        band: half-width of the uncertainty triangle around ``threshold``.
        gate_m: association gate (m, BEV centre distance) between consecutive frames.
        edge_margin_m: births / deaths this close (m) to the x/y range edges are explained.
        agree_iou: BEV IoU for two engines' boxes to count as the same object.
        max_gap_s: consecutive scored clouds further apart than this (s) are not compared
            (a gap in the recording, dropped clouds): the later one starts a new sequence.
        gt_iou: "loose" or "strict" KITTI IoU per class for misses / false positives.
    """

    threshold: float = field(default_factory=node_threshold)
    band: float = 0.2
    gate_m: float = 2.0
    edge_margin_m: float = 2.0
    agree_iou: float = 0.5
    gt_iou: str = "loose"
    max_gap_s: float = 0.25

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise MineError(f"threshold must be in [0, 1], got {self.threshold}")
        for name in ("band", "gate_m", "agree_iou", "max_gap_s"):
            if not getattr(self, name) > 0:
                raise MineError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.edge_margin_m < 0:
            raise MineError(f"edge_margin_m must be >= 0, got {self.edge_margin_m}")
        if self.gt_iou not in ("loose", "strict"):
            raise MineError(f"gt_iou must be 'loose' or 'strict', got {self.gt_iou!r}")


# ---------------------------------------------------------------------------------------------
# Scoring functions: pure, on per-frame predictions (FramePred) of one bag in time order

def published(pred: FramePred, threshold: float) -> FramePred:
    """The detections a node with this operating threshold publishes."""
    keep = pred.scores >= threshold
    return FramePred(pred.boxes[keep], pred.scores[keep], np.asarray(pred.names)[keep],
                     frame_id=pred.frame_id)


def uncertainty_scores(preds: Sequence[FramePred], threshold: float,
                       band: float) -> np.ndarray:
    """[F] sum over detections of ``max(0, 1 - |score - threshold| / band)``."""
    return np.array([float(np.clip(1.0 - np.abs(p.scores - threshold) / band, 0.0, None).sum())
                     for p in preds], np.float64)


@dataclass
class Association:
    """Greedy nearest-centre association of two frames' detections.

    Attributes:
        pairs: (a index, b index) same-class pairs.
        switches: (a index, b index) pairs of different classes (a class switch).
        lost: a indices without a partner (deaths, seen from a).
        new: b indices without a partner (births, seen from b).
    """

    pairs: List[Tuple[int, int]]
    switches: List[Tuple[int, int]]
    lost: List[int]
    new: List[int]


def _greedy(dist: np.ndarray, allowed: np.ndarray, gate: float) -> List[Tuple[int, int]]:
    """One-to-one pairs, nearest first (ties by index), among ``allowed`` within ``gate``."""
    ok = allowed & (dist <= gate)
    ia, ib = np.nonzero(ok)
    order = np.lexsort((ib, ia, dist[ia, ib]))
    used_a: Set[int] = set()
    used_b: Set[int] = set()
    pairs = []
    for k in order:
        a, b = int(ia[k]), int(ib[k])
        if a not in used_a and b not in used_b:
            used_a.add(a)
            used_b.add(b)
            pairs.append((a, b))
    return pairs


def associate(a: FramePred, b: FramePred, gate_m: float) -> Association:
    """Same-class pairs first, then class switches, by BEV centre distance within ``gate_m``."""
    if not len(a) or not len(b):
        return Association([], [], list(range(len(a))), list(range(len(b))))
    dist = np.linalg.norm(a.boxes[:, None, :2] - b.boxes[None, :, :2], axis=2)
    same = np.asarray(a.names)[:, None] == np.asarray(b.names)[None, :]
    pairs = _greedy(dist, same, gate_m)
    free = np.ones(dist.shape, bool)
    for i, j in pairs:
        free[i, :] = False
        free[:, j] = False
    switches = _greedy(dist, free, gate_m)
    got_a = {i for i, _ in pairs + switches}
    got_b = {j for _, j in pairs + switches}
    return Association(pairs, switches, [i for i in range(len(a)) if i not in got_a],
                       [j for j in range(len(b)) if j not in got_b])


def near_edge(boxes: np.ndarray, point_cloud_range: Optional[Sequence[float]],
              margin_m: float) -> np.ndarray:
    """[N] bool: box centre within ``margin_m`` of (or outside) the range's x/y edges."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    if point_cloud_range is None:
        return np.zeros(len(boxes), bool)
    lo_x, lo_y, _, hi_x, hi_y, _ = [float(v) for v in point_cloud_range]
    x, y = boxes[:, 0], boxes[:, 1]
    return ((x < lo_x + margin_m) | (x > hi_x - margin_m)
            | (y < lo_y + margin_m) | (y > hi_y - margin_m))


@dataclass
class TemporalEvents:
    """Unexplained events per frame (flickers and ghosts are included in deaths / births)."""

    births: np.ndarray
    deaths: np.ndarray
    switches: np.ndarray
    flickers: np.ndarray
    ghosts: np.ndarray

    @property
    def score(self) -> np.ndarray:
        """[F] births + deaths + class switches."""
        return (self.births + self.deaths + self.switches).astype(np.float64)


def temporal_events(preds: Sequence[FramePred], threshold: float, gate_m: float,
                    point_cloud_range: Optional[Sequence[float]] = None,
                    edge_margin_m: float = 2.0,
                    breaks: Optional[Sequence[bool]] = None) -> TemporalEvents:
    """Births, deaths and class switches of the published detections, frame by frame.

    Frame t is compared with t-1 (frame 0 has no events: the bag's start explains them; so
    does a frame with ``breaks[t]`` True, e.g. after a gap in the recording). A death at t
    that reappears at t+1 within ``2 * gate_m`` (same class) is a flicker: it counts at t and
    its rebirth at t+1 does not count. A birth at t that dies at t+1 is a ghost: it counts at
    t and its death at t+1 does not count.
    """
    kept = [published(p, threshold) for p in preds]
    n = len(kept)
    cut = [True] + [bool(b) for b in (breaks[1:] if breaks is not None else [False] * (n - 1))]
    births = np.zeros(n, np.int64)
    deaths = np.zeros(n, np.int64)
    switches = np.zeros(n, np.int64)
    flickers = np.zeros(n, np.int64)
    ghosts = np.zeros(n, np.int64)
    assoc = [associate(kept[t - 1], kept[t], gate_m) for t in range(1, n)]  # assoc[t-1]: t-1->t
    edge_prev = [near_edge(p.boxes, point_cloud_range, edge_margin_m) for p in kept]
    lost = [[]] + [[] if cut[t + 1] else [i for i in a.lost if not edge_prev[t][i]]
                   for t, a in enumerate(assoc)]
    new = [[]] + [[] if cut[t + 1] else [j for j in a.new if not edge_prev[t + 1][j]]
                  for t, a in enumerate(assoc)]
    skip_new: List[Set[int]] = [set() for _ in range(n)]  # rebirths of flickers
    skip_lost: List[Set[int]] = [set() for _ in range(n)]  # deaths of ghosts
    for t in range(1, n - 1):
        if lost[t] and new[t + 1]:  # flicker: t-1 object absent at t, back at t+1
            a = _subset(kept[t - 1], lost[t])
            b = _subset(kept[t + 1], new[t + 1])
            for _, j in associate(a, b, 2.0 * gate_m).pairs:
                flickers[t] += 1
                skip_new[t + 1].add(new[t + 1][j])
        ghost_b = set() if cut[t + 1] else set(assoc[t].lost)  # t objects gone at t+1
        for j in new[t]:
            if j in ghost_b:
                ghosts[t] += 1
                skip_lost[t + 1].add(j)
    for t in range(1, n):
        births[t] = sum(1 for j in new[t] if j not in skip_new[t])
        deaths[t] = sum(1 for i in lost[t] if i not in skip_lost[t])
        switches[t] = 0 if cut[t] else len(assoc[t - 1].switches)
    return TemporalEvents(births, deaths, switches, flickers, ghosts)


def _subset(pred: FramePred, idx: Sequence[int]) -> FramePred:
    idx = np.asarray(idx, np.int64)
    return FramePred(pred.boxes[idx], pred.scores[idx], np.asarray(pred.names)[idx],
                     frame_id=pred.frame_id)


def temporal_scores(preds: Sequence[FramePred], threshold: float, gate_m: float,
                    point_cloud_range: Optional[Sequence[float]] = None,
                    edge_margin_m: float = 2.0,
                    breaks: Optional[Sequence[bool]] = None) -> np.ndarray:
    """[F] unexplained births + deaths + class switches (see :func:`temporal_events`)."""
    return temporal_events(preds, threshold, gate_m, point_cloud_range, edge_margin_m,
                           breaks).score


def gaps(stamps_ns: Sequence[int], max_gap_s: float) -> List[bool]:
    """[F] True where a frame follows the previous one by more than ``max_gap_s`` (and at 0)."""
    s = np.asarray(stamps_ns, np.int64)
    return [True] + (np.diff(s) > int(round(max_gap_s * 1e9))).tolist()


def disagreement_scores(preds_a: Sequence[FramePred], preds_b: Sequence[FramePred],
                        threshold: float, iou: float) -> np.ndarray:
    """[F] ``1 - matched / max(n_a, n_b)`` of the published detections (0 when both empty)."""
    from admlops_ros.evaluation.compare import match_boxes
    if len(preds_a) != len(preds_b):
        raise MineError(f"disagreement needs the same frames from both engines, got "
                        f"{len(preds_a)} and {len(preds_b)}")
    out = np.zeros(len(preds_a), np.float64)
    for k, (a, b) in enumerate(zip(preds_a, preds_b)):
        a, b = published(a, threshold), published(b, threshold)
        most = max(len(a), len(b))
        if most:
            out[k] = 1.0 - len(match_boxes(a, b, iou)) / most
    return out


def gt_errors(preds: Sequence[FramePred], gts: Sequence[Optional[FrameGT]],
              classes: Sequence[str], threshold: float,
              iou_set: str = "loose") -> Tuple[np.ndarray, np.ndarray]:
    """([F] misses, [F] false positives) at ``threshold``; nan where a frame has no gt.

    The KITTI devkit's matching per class on BEV overlaps: ground truth of the class that no
    detection above the threshold overlaps by the class's IoU is a miss; such a detection
    matching nothing is a false positive. Ignored ground truth (``FrameGT.ignore``) and the
    neighbour class (Van for Car, Person_sitting for Pedestrian) are neither.
    """
    from admlops_ros.evaluation.matching import match_frame, box_overlaps
    from admlops_ros.evaluation.protocol import NEIGHBOUR_CLASS, EvalConfig
    config = EvalConfig()
    misses = np.full(len(preds), math.nan)
    fps = np.full(len(preds), math.nan)
    for k, (p, g) in enumerate(zip(preds, gts)):
        if g is None:
            continue
        ov = box_overlaps("bev", p.boxes, g.boxes)
        g_names = np.char.lower(np.asarray(g.names, str))
        d_names = np.char.lower(np.asarray(p.names, str))
        ignore = np.zeros(len(g), bool) if g.ignore is None else np.asarray(g.ignore, bool)
        miss = fp = 0
        for cls in classes:
            name = cls.lower()
            ig = np.where(g_names == name, np.where(ignore, 1, 0),
                          np.where(g_names == NEIGHBOUR_CLASS.get(name, "\0"), 1, -1))
            idt = np.where(d_names == name, 0, -1)
            _, f, m = match_frame(ov, ig.astype(np.int64), idt.astype(np.int64),
                                   p.scores.astype(np.float64), np.zeros((len(p), 0)), 0,
                                   config.min_overlap("bev", iou_set, cls), float(threshold),
                                   True, np.empty(len(g), np.int64))
            miss += int(m)
            fp += int(f)
        misses[k], fps[k] = miss, fp
    return misses, fps


# ---------------------------------------------------------------------------------------------
# One bag (one task)

@dataclass(frozen=True)
class MineTask:
    """What one task scores: a bag, the engine(s) and the options (picklable)."""

    bag: str
    engine: Optional[str] = None
    backend: str = "auto"
    engine_b: Optional[str] = None  # second engine; None: the first engine's bundle
    backend_b: Optional[str] = None  # None with engine_b None: no disagreement
    config: Optional[MineConfig] = None  # None: MineConfig() (the node's threshold)
    with_gt: bool = False
    points_topic: Optional[str] = None
    gt_topic: Optional[str] = None
    limit: Optional[int] = None

    @property
    def two_engines(self) -> bool:
        return self.engine_b is not None or self.backend_b is not None


@dataclass
class FrameScore:
    """One frame's scores.

    Attributes:
        bag, stamp_ns, index: where the frame is (the cloud's header stamp, position in bag).
        raw: component -> raw value (None when not computed for this frame).
        counts: detections, births, deaths, switches, flickers, ghosts (for the report).
        normalized: component -> raw / max over all frames (filled by :func:`rank`).
        total: weighted sum of the normalised components (filled by :func:`rank`).
    """

    bag: str
    stamp_ns: int
    index: int
    raw: Dict[str, Optional[float]]
    counts: Dict[str, int] = field(default_factory=dict)
    normalized: Dict[str, float] = field(default_factory=dict)
    total: float = 0.0


@dataclass
class BagScores:
    """Everything one task gives: the bag's frame scores and what was wrong with it."""

    bag: str
    clouds: int
    frames: List[FrameScore]
    problems: List[str]
    engine: Dict[str, Any] = field(default_factory=dict)


class _Scored(NamedTuple):
    """A cloud the detectors handled, without its points (a bag's worth is kept)."""

    stamp_ns: int
    index: int
    gt: Optional[FrameGT]
    preds: List[FramePred]  # one per detector


def _detect_frames(task: MineTask, detectors: Sequence[Any], frames: Iterator[Any],
                   problems: List[str]) -> Iterator[_Scored]:
    """Every cloud the detectors handled, with one FramePred per detector."""
    from admlops_ros.evaluation.replay import restrict_to_range
    pcr = detectors[0].voxelizer.point_cloud_range
    for frame in frames:
        if task.limit is not None and frame.index >= task.limit:
            break
        if frame.points is None:
            problems.append(f"{task.bag}: {frame.error}; frame not scored")
            continue
        try:
            preds = [FramePred.from_detections(d.detect(frame.points), frame.frame_id)
                     for d in detectors]
        except Exception as exc:  # noqa: B902 - keep the partial results
            problems.append(f"{task.bag}: detector failed on cloud at stamp "
                            f"{frame.stamp_ns / 1e9:.6f}: {exc}; frame not scored")
            continue
        gt = None if frame.gt is None else restrict_to_range(frame.gt, pcr)
        yield _Scored(int(frame.stamp_ns), int(frame.index), gt, preds)


def score_bag(task: MineTask) -> BagScores:
    """Detect every cloud of one bag and score its frames (the task of :func:`mine`).

    Raises:
        BagError, ReplayError: the bag cannot be read, the engine cannot open.
    """
    from admlops_ros.evaluation.bags import read_bag
    from admlops_ros.evaluation.replay import open_detector
    from admlops_ros.lidar.detector import detector_summary
    cfg = task.config or MineConfig()
    summary, frames = read_bag(task.bag, task.points_topic,
                               task.gt_topic if task.with_gt else None)
    problems = [p for p in summary.problems if task.with_gt or "ground-truth" not in p]
    if task.with_gt and summary.gt_topic is None:
        problems.append(f"{task.bag}: --with-gt but no ground truth in the bag: misses and "
                        f"false positives are not scored for it")
    detectors: List[Any] = []
    try:
        detectors.append(open_detector(task.engine, task.backend))
        if task.two_engines:
            detectors.append(open_detector(task.engine_b or task.engine,
                                           task.backend_b or task.backend))
        for d in detectors:
            d.warmup()
        engine = detector_summary(detectors[0])
        classes = tuple(detectors[0].class_names)
        pcr = tuple(float(v) for v in detectors[0].voxelizer.point_cloud_range)
        kept = list(_detect_frames(task, detectors, frames, problems))
    finally:
        frames.close()
        for d in detectors:
            d.close()
    preds_a = [k.preds[0] for k in kept]
    n = len(kept)
    raw: Dict[str, np.ndarray] = {
        "uncertainty": uncertainty_scores(preds_a, cfg.threshold, cfg.band)}
    events = temporal_events(preds_a, cfg.threshold, cfg.gate_m, pcr, cfg.edge_margin_m,
                             gaps([k.stamp_ns for k in kept], cfg.max_gap_s))
    raw["temporal"] = events.score
    raw["disagreement"] = (disagreement_scores(preds_a, [k.preds[1] for k in kept],
                                               cfg.threshold, cfg.agree_iou)
                           if task.two_engines else np.full(n, math.nan))
    if task.with_gt:
        raw["misses"], raw["false_positives"] = gt_errors(
            preds_a, [k.gt for k in kept], classes, cfg.threshold, cfg.gt_iou)
    else:
        raw["misses"] = raw["false_positives"] = np.full(n, math.nan)
    scores = []
    for k, frame in enumerate(kept):
        values = {c: (None if math.isnan(raw[c][k]) else float(raw[c][k])) for c in COMPONENTS}
        counts = {"detections": int(np.sum(frame.preds[0].scores >= cfg.threshold)),
                  "births": int(events.births[k]), "deaths": int(events.deaths[k]),
                  "switches": int(events.switches[k]), "flickers": int(events.flickers[k]),
                  "ghosts": int(events.ghosts[k])}
        scores.append(FrameScore(task.bag, frame.stamp_ns, frame.index, values, counts))
    return BagScores(task.bag, summary.num_clouds, scores, problems, engine)


# ---------------------------------------------------------------------------------------------
# Ranking, selection, outputs

def parse_weights(pairs: Sequence[str]) -> Dict[str, float]:
    """``["temporal=2", "uncertainty=0.5"]`` over :data:`DEFAULT_WEIGHTS`."""
    weights = dict(DEFAULT_WEIGHTS)
    for text in pairs:
        name, sep, value = text.partition("=")
        name = name.strip()
        if not sep or name not in weights:
            raise UsageError(f"--weight {text!r}: use NAME=WEIGHT with NAME one of "
                             f"{', '.join(COMPONENTS)}")
        try:
            w = float(value)
        except ValueError:
            raise UsageError(f"--weight {text!r}: {value!r} is not a number") from None
        if not math.isfinite(w) or w < 0:
            raise UsageError(f"--weight {text!r}: the weight must be a finite number >= 0")
        weights[name] = w
    return weights


def rank(bags: Sequence[BagScores], weights: Optional[Mapping[str, float]] = None
         ) -> List[FrameScore]:
    """All frames of all bags, best first: normalised components, weighted total, ties by
    (bag, stamp). Fills ``normalized`` and ``total`` of every FrameScore."""
    weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
    frames = [f for b in bags for f in b.frames]
    frames.sort(key=lambda f: (f.bag, f.stamp_ns, f.index))  # fixed order for the sums
    peak = {c: max([f.raw[c] for f in frames if f.raw.get(c) is not None] or [0.0])
            for c in COMPONENTS}
    for f in frames:
        f.normalized = {c: (f.raw[c] / peak[c] if f.raw.get(c) is not None and peak[c] > 0
                            else 0.0) for c in COMPONENTS}
        f.total = float(sum(weights.get(c, 0.0) * f.normalized[c] for c in COMPONENTS))
    return sorted(frames, key=lambda f: (-f.total, f.bag, f.stamp_ns, f.index))


def pick_random(frames: Sequence[FrameScore], k: int, seed: int) -> List[FrameScore]:
    """``k`` frames uniformly at random (without replacement) from the pool, by seed.

    The pool is put in (bag, stamp) order first, so the pick does not depend on how the
    frames were scored (serially, in a pool or on Ray).
    """
    pool = sorted(frames, key=lambda f: (f.bag, f.stamp_ns, f.index))
    k = min(int(k), len(pool))
    idx = np.random.default_rng(seed).choice(len(pool), size=k, replace=False)
    return [pool[i] for i in sorted(idx.tolist())]


def stamps_by_bag(frames: Sequence[FrameScore]) -> Dict[str, Set[int]]:
    """``{bag: {stamp_ns, ...}}`` as :func:`admlops_ros.data.export.export_dataset` takes it."""
    out: Dict[str, Set[int]] = {}
    for f in frames:
        out.setdefault(str(f.bag), set()).add(int(f.stamp_ns))
    return out


def frame_row(f: FrameScore, rank_no: int) -> Dict[str, Any]:
    """A flat row: rank, bag, stamp, frame index, each raw component, total."""
    row: Dict[str, Any] = {"rank": rank_no, "bag": f.bag, "stamp_ns": f.stamp_ns,
                           "frame_index": f.index}
    row.update({c: f.raw.get(c) for c in COMPONENTS})
    row["total"] = f.total
    return row


def write_csv(path: os.PathLike, ranked: Sequence[FrameScore]) -> None:
    """ranking.csv: one row per frame, best first (empty cell: component not computed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = ["rank", "bag", "stamp_ns", "frame_index", *COMPONENTS, "total"]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols)
        writer.writeheader()
        for i, f in enumerate(ranked, 1):
            writer.writerow({k: ("" if v is None else v) for k, v in frame_row(f, i).items()})


def ranking_json(ranked: Sequence[FrameScore], bags: Sequence[BagScores],
                 weights: Mapping[str, float], config: MineConfig,
                 errors: Sequence[str] = ()) -> Dict[str, Any]:
    """The ranking.json content: options, per-bag summary, frames best first."""
    return {
        "components": list(COMPONENTS), "weights": dict(weights), "config": asdict(config),
        "normalisation": "each component / its maximum over all frames (0 if absent or all 0)",
        "bags": [{"bag": b.bag, "clouds": b.clouds, "scored": len(b.frames),
                  "problems": list(b.problems)} for b in bags],
        "failed_bags": list(errors),
        "engine": bags[0].engine if bags else {},
        "frames": [dict(frame_row(f, i), normalized=dict(f.normalized), counts=dict(f.counts))
                   for i, f in enumerate(ranked, 1)],
    }


def table(ranked: Sequence[FrameScore], top: int = 10) -> str:
    """Fixed-width table of the top frames (raw components; '-' not computed)."""
    short = {"uncertainty": "uncert", "temporal": "tempor", "disagreement": "disagr",
             "misses": "miss", "false_positives": "fp"}
    head = (f"{'rank':>4}  {'bag':<28}{'stamp s':>18}{'frame':>6}"
            + "".join(f"{short[c]:>8}" for c in COMPONENTS) + f"{'total':>8}")
    lines = [head, "-" * len(head)]
    for i, f in enumerate(ranked[:top], 1):
        name = Path(f.bag).name
        name = name if len(name) <= 27 else "..." + name[-24:]
        vals = "".join("       -" if f.raw.get(c) is None else f"{f.raw[c]:>8.2f}"
                       for c in COMPONENTS)
        lines.append(f"{i:>4}  {name:<28}{f.stamp_ns / 1e9:>18.3f}{f.index:>6d}{vals}"
                     f"{f.total:>8.3f}")
    return "\n".join(lines)


@dataclass
class MineResult:
    """What :func:`mine` gives: the ranking, per-bag scores and the bags that failed."""

    ranked: List[FrameScore]
    bags: List[BagScores]
    errors: List[str]


def mine(tasks: Sequence[MineTask], weights: Optional[Mapping[str, float]] = None, *,
         ray_address: Optional[str] = None, workers: Optional[int] = None) -> MineResult:
    """Score every bag (one task per bag) and rank all frames.

    A bag that fails (unreadable, missing topic) is reported in ``errors``; the others are
    ranked. Raises MineError when no bag could be scored.
    """
    from admlops_ros.parallel import map_tasks
    outcomes = map_tasks(score_bag, list(tasks), ray_address=ray_address, workers=workers)
    bags = [o.value for o in outcomes if o.ok]
    errors = [f"{o.item.bag}: {o.error}" for o in outcomes if not o.ok]
    for e in errors:
        LOG.warning("skipped %s", e)
    if not bags:
        raise MineError("no bag could be scored: " + "; ".join(errors))
    return MineResult(rank(bags, weights), bags, errors)


__all__: Sequence[str] = ("MineError", "MineConfig", "node_threshold", "MineTask", "FrameScore", "BagScores",
                          "MineResult", "COMPONENTS", "DEFAULT_WEIGHTS", "uncertainty_scores",
                          "associate", "temporal_events", "temporal_scores", "gaps",
                          "disagreement_scores", "gt_errors", "score_bag", "rank", "mine",
                          "parse_weights", "pick_random", "stamps_by_bag", "write_csv",
                          "ranking_json", "table")
