"""2D detection metrics: COCO-style mAP@[.5:.95] / AP50 (pycocotools) and KITTI 2D bbox AP|R40."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from admlops_ros.errors import AdmlopsError
from admlops_ros.evaluation.frames import FrameGT, FramePred
from admlops_ros.evaluation.matching import image_box_overlap, njit
from admlops_ros.evaluation.metrics import evaluate
from admlops_ros.evaluation.protocol import KITTI_CLASSES, EvalConfig
from admlops_ros.evaluation.results import EvalResult

COCO_IOU_THRESHOLDS: np.ndarray = np.linspace(0.5, 0.95, 10)  # pycocotools Params.iouThrs
COCO_RECALL_POINTS: np.ndarray = np.linspace(0.0, 1.0, 101)  # pycocotools Params.recThrs
COCO_MAX_DETS = 100  # per image and class, as pycocotools' maxDets[-1]


class Metrics2DError(AdmlopsError, ValueError):
    """Inconsistent 2D ground truth / predictions handed to the evaluator."""


@dataclass
class ImageGT:
    """2D ground truth of one image.

    Attributes:
        boxes: [M, 4] float (x1, y1, x2, y2) pixels, original image.
        names: [M] class names (KITTI spelling: Car, Van, Pedestrian, Person_sitting, ...).
        occluded: [M] int KITTI occlusion state 0..3, or None (then no KITTI difficulty).
        truncated: [M] float KITTI truncation 0..1, or None.
        ignore: [M] bool boxes neither TP nor FP when matched (COCO's ``_ignore``), or None.
        dontcare: [K, 4] pixels, KITTI DontCare regions (KITTI metric only).
        frame_id: a name for messages (file stem or stamp).
    """

    boxes: np.ndarray
    names: Sequence[str]
    occluded: Optional[np.ndarray] = None
    truncated: Optional[np.ndarray] = None
    ignore: Optional[np.ndarray] = None
    dontcare: Optional[np.ndarray] = None
    frame_id: str = ""

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float64).reshape(-1, 4)
        self.names = np.asarray(list(self.names), dtype=str).reshape(-1)
        n = len(self.boxes)
        if len(self.names) != n:
            raise Metrics2DError(f"ImageGT {self.frame_id!r}: {n} boxes but {len(self.names)} "
                                 f"names; give one class name per box")
        for attr in ("occluded", "truncated", "ignore"):
            value = getattr(self, attr)
            if value is None:
                continue
            value = np.asarray(value).reshape(-1)
            if len(value) != n:
                raise Metrics2DError(f"ImageGT {self.frame_id!r}: {attr} has {len(value)} "
                                     f"values for {n} boxes; give one per box or None")
            setattr(self, attr, value)
        self.dontcare = (np.zeros((0, 4)) if self.dontcare is None
                         else np.asarray(self.dontcare, np.float64).reshape(-1, 4))

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def has_kitti_difficulty(self) -> bool:
        """Whether occlusion and truncation are both present (the 2D height comes from boxes)."""
        return self.occluded is not None and self.truncated is not None


@dataclass
class ImagePred:
    """2D detections of one image: boxes [N, 4] (x1, y1, x2, y2) px, scores [N], names [N]."""

    boxes: np.ndarray
    scores: np.ndarray
    names: Sequence[str]
    frame_id: str = ""

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float64).reshape(-1, 4)
        self.scores = np.asarray(self.scores, np.float64).reshape(-1)
        self.names = np.asarray(list(self.names), dtype=str).reshape(-1)
        if not len(self.boxes) == len(self.scores) == len(self.names):
            raise Metrics2DError(f"ImagePred {self.frame_id!r}: boxes, scores, names lengths "
                                 f"differ ({len(self.boxes)}, {len(self.scores)}, "
                                 f"{len(self.names)})")

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def from_detections(cls, detections: Any, frame_id: str = "") -> "ImagePred":
        """From a :class:`admlops_ros.camera.detections.Detections2D` (names by label index)."""
        return cls(detections.boxes, detections.scores, list(detections.names()), frame_id)

    @classmethod
    def empty(cls, frame_id: str = "") -> "ImagePred":
        """An image with no detections."""
        return cls(np.zeros((0, 4)), np.zeros(0), [], frame_id)


# ---------------------------------------------------------------------------------------------
# COCO (pycocotools COCOeval, iouType "bbox", areaRng "all", maxDets 100, no crowd boxes)

@njit(cache=False)
def _coco_match(ious, gt_ignore, thresholds, dt_matched, dt_ignored):
    """pycocotools evaluateImg matching for one image and class.

    ious: [D, G] with detections by descending score and ground truth non-ignored first;
    writes dt_matched / dt_ignored [T, D] (1 / 0).
    """
    n_dt, n_gt = ious.shape
    for t in range(thresholds.shape[0]):
        gt_taken = np.zeros(n_gt, np.bool_)
        for d in range(n_dt):
            best = min(thresholds[t], 1.0 - 1e-10)
            m = -1
            for g in range(n_gt):
                if gt_taken[g]:
                    continue
                if m > -1 and gt_ignore[m] == 0 and gt_ignore[g] == 1:
                    break  # matched a regular box; ignored ones (sorted last) cannot win
                if ious[d, g] < best:
                    continue
                best = ious[d, g]
                m = g
            if m == -1:
                continue
            dt_matched[t, d] = 1
            dt_ignored[t, d] = gt_ignore[m]
            gt_taken[m] = True


@dataclass
class CocoResult:
    """COCO-style numbers (fractions 0..1 as pycocotools; nan where a class has no gt).

    Attributes:
        classes: class names, index k below.
        iou_thresholds: [T] 0.5 .. 0.95.
        recall_points: [R] 0, 0.01 .. 1.
        precision: [T, R, K] interpolated precision at each recall point (-1: class absent).
        recall: [T, K] final recall (-1: class absent).
        scores: [T, R, K] score at each recall point (-1 absent, 0 past the last detection).
        num_gt: [K] non-ignored ground-truth boxes.
    """

    classes: List[str]
    iou_thresholds: np.ndarray
    recall_points: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    scores: np.ndarray
    num_gt: np.ndarray

    def _mean(self, values: np.ndarray) -> float:
        valid = values[values > -1]
        return float(valid.mean()) if valid.size else math.nan

    def ap(self, cls: Optional[str] = None, iou: Optional[float] = None) -> float:
        """AP averaged over recall points (and IoU thresholds when ``iou`` is None) of one
        class, or over the classes with ground truth (``cls`` None: the mAP). Fraction."""
        p = self.precision
        if iou is not None:
            t = np.flatnonzero(np.isclose(self.iou_thresholds, iou))
            if not len(t):
                raise Metrics2DError(f"iou {iou} is not one of the thresholds "
                                     f"{self.iou_thresholds.round(2).tolist()}")
            p = p[t]
        if cls is not None:
            p = p[:, :, self.classes.index(cls)]
        return self._mean(p)

    def mean_recall(self, cls: Optional[str] = None) -> float:
        """Recall averaged over IoU thresholds (AR@100 for ``cls`` None). Fraction."""
        r = self.recall if cls is None else self.recall[:, self.classes.index(cls)]
        return self._mean(r)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-friendly numbers (fractions) and the PR curves at IoU 0.5 and 0.75."""
        def clean(v: float) -> Optional[float]:
            return None if not math.isfinite(v) else round(float(v), 6)
        out: Dict[str, Any] = {"mAP": clean(self.ap()), "AP50": clean(self.ap(iou=0.5)),
                               "AP75": clean(self.ap(iou=0.75)),
                               "AR100": clean(self.mean_recall()), "per_class": {}}
        for k, c in enumerate(self.classes):
            out["per_class"][c] = {
                "AP": clean(self.ap(c)), "AP50": clean(self.ap(c, 0.5)),
                "AP75": clean(self.ap(c, 0.75)), "AR100": clean(self.mean_recall(c)),
                "num_gt": int(self.num_gt[k]),
                "pr_iou50": [clean(v) for v in self.precision[0, :, k]],
                "pr_iou75": [clean(v) for v in self.precision[5, :, k]]}
        out["recall_points"] = [round(float(r), 2) for r in self.recall_points]
        return out


def coco_evaluate(gts: Sequence[ImageGT], preds: Sequence[ImagePred], classes: Sequence[str],
                  max_dets: int = COCO_MAX_DETS,
                  iou_thresholds: np.ndarray = COCO_IOU_THRESHOLDS,
                  recall_points: np.ndarray = COCO_RECALL_POINTS,
                  min_height: float = 0.0, max_occlusion: Optional[int] = None) -> CocoResult:
    """COCO bbox AP exactly as pycocotools' COCOeval (evaluate + accumulate) computes it.

    Per image and class: detections sorted by score (stable), the top ``max_dets`` kept; at
    each IoU threshold each detection takes the unmatched ground truth of highest IoU >= the
    threshold (regular boxes before ignored ones); a detection matched to an ignored box is
    ignored. Per class over all images: detections sorted by score (stable, image order for
    ties), precision made monotone from the right and read at the 101 recall points (0 past
    the last reachable recall). IoU is area-based, no +1 (pycocotools on xywh boxes).
    Ground truth of other classes plays no part (COCO has no neighbour classes or DontCare).

    Args:
        gts, preds: one per image, same order.
        classes: class names to score (detections / boxes of other names are dropped).
        min_height: pixels; pycocotools' area-range rule on the box height instead of the area:
            ground truth lower than this is ignored, and so are unmatched detections lower
            than this (0: COCO's "all").
        max_occlusion: ground truth with a KITTI occlusion state above this is ignored too
            (None: not used).

    Raises:
        Metrics2DError: different numbers of images.
    """
    _check_pairs(gts, preds)
    classes = list(classes)
    T, R, K = len(iou_thresholds), len(recall_points), len(classes)
    precision = -np.ones((T, R, K))
    recall = -np.ones((T, K))
    scores_at = -np.ones((T, R, K))
    num_gt = np.zeros(K, np.int64)
    thr = np.asarray(iou_thresholds, np.float64)
    for k, cls in enumerate(classes):
        all_scores: List[np.ndarray] = []
        all_tp: List[np.ndarray] = []
        all_fp: List[np.ndarray] = []
        npig = 0
        seen = False
        for g, p in zip(gts, preds):
            gsel = g.names == cls
            dsel = p.names == cls
            if not gsel.any() and not dsel.any():
                continue  # pycocotools: evaluateImg returns None
            seen = True
            gb = g.boxes[gsel]
            gig = np.zeros(len(gb), bool) if g.ignore is None else np.asarray(g.ignore, bool)[gsel]
            gig = gig | ((gb[:, 3] - gb[:, 1]) < min_height)
            if max_occlusion is not None and g.occluded is not None:
                gig = gig | (np.asarray(g.occluded)[gsel] > max_occlusion)
            gig = gig.astype(np.int64)
            gorder = np.argsort(gig, kind="mergesort")
            gb, gig = gb[gorder], gig[gorder]
            order = np.argsort(-p.scores[dsel], kind="mergesort")[:max_dets]
            db, ds = p.boxes[dsel][order], p.scores[dsel][order]
            matched = np.zeros((T, len(db)), np.int64)
            ignored = np.zeros((T, len(db)), np.int64)
            if len(db) and len(gb):
                _coco_match(image_box_overlap(db, gb), gig, thr, matched, ignored)
            low = (db[:, 3] - db[:, 1]) < min_height  # unmatched and out of range: ignored
            ignored |= ((matched == 0) & low[None, :]).astype(np.int64)
            npig += int((gig == 0).sum())
            all_scores.append(ds)
            all_tp.append(matched.astype(bool) & ~ignored.astype(bool))
            all_fp.append(~matched.astype(bool) & ~ignored.astype(bool))
        num_gt[k] = npig
        if not seen or npig == 0:
            continue
        sc = np.concatenate(all_scores)
        order = np.argsort(-sc, kind="mergesort")
        sc = sc[order]
        tps = np.concatenate(all_tp, axis=1)[:, order]
        fps = np.concatenate(all_fp, axis=1)[:, order]
        tp_sum = np.cumsum(tps, axis=1).astype(np.float64)
        fp_sum = np.cumsum(fps, axis=1).astype(np.float64)
        for t in range(T):
            tp, fp = tp_sum[t], fp_sum[t]
            nd = len(tp)
            rc = tp / npig
            pr = tp / (fp + tp + np.spacing(1))
            recall[t, k] = rc[-1] if nd else 0.0
            pr = np.maximum.accumulate(pr[::-1])[::-1] if nd else pr
            inds = np.searchsorted(rc, recall_points, side="left")
            q = np.zeros(R)
            ss = np.zeros(R)
            ok = inds < nd
            q[ok] = pr[inds[ok]]
            ss[ok] = sc[inds[ok]]
            # pycocotools fills q in order and stops at the first out-of-range index; since
            # inds is non-decreasing, every later index is out of range too: same result
            precision[t, :, k] = q
            scores_at[t, :, k] = ss
    return CocoResult(classes, np.asarray(iou_thresholds, np.float64),
                      np.asarray(recall_points, np.float64), precision, recall, scores_at,
                      num_gt)


# ---------------------------------------------------------------------------------------------
# KITTI 2D bbox AP (the devkit's rules, via metrics.evaluate with metric "bbox")

def _check_pairs(gts: Sequence[ImageGT], preds: Sequence[ImagePred]) -> None:
    if len(gts) != len(preds):
        raise Metrics2DError(f"{len(gts)} ground-truth images but {len(preds)} prediction "
                             f"images; give one ImagePred (possibly empty) per image")


def to_frames(gts: Sequence[ImageGT], preds: Sequence[ImagePred]
              ) -> Tuple[List[FrameGT], List[FramePred]]:
    """The 2D data as FrameGT / FramePred with placeholder 3D boxes (metric "bbox" only)."""
    fg = [FrameGT(np.zeros((len(g), 7)), g.names, bbox2d=g.boxes, occluded=g.occluded,
                  truncated=g.truncated, ignore=g.ignore, dontcare_bbox2d=g.dontcare,
                  frame_id=g.frame_id) for g in gts]
    fp = [FramePred(np.zeros((len(p), 7)), p.scores, p.names, bbox2d=p.boxes,
                    frame_id=p.frame_id) for p in preds]
    return fg, fp


def kitti_bbox_evaluate(gts: Sequence[ImageGT], preds: Sequence[ImagePred],
                        classes: Sequence[str] = KITTI_CLASSES,
                        score_threshold: float = 0.3) -> EvalResult:
    """KITTI 2D bbox AP|R40 / AP|R11 with Easy / Moderate / Hard (the devkit's rules).

    Reuses :func:`admlops_ros.evaluation.metrics.evaluate` (metric "bbox", difficulty
    "kitti"): IoU > 0.7 Car, 0.5 Pedestrian / Cyclist; ground truth outside a difficulty
    (2D height <= 40/25/25 px, occlusion > 0/1/2, truncation > 0.15/0.3/0.5), Van for Car and
    Person_sitting for Pedestrian are ignored; detections lower than the difficulty's min
    height are ignored; unmatched detections inside DontCare regions are not false
    positives; 41 sample points, R40 drops the first.

    Raises:
        Metrics2DError: different numbers of images, or ground truth without occlusion /
            truncation (no KITTI difficulty).
    """
    _check_pairs(gts, preds)
    bad = [g.frame_id for g in gts if not g.has_kitti_difficulty]
    if bad:
        raise Metrics2DError(f"KITTI 2D AP needs occluded and truncated on every image; "
                             f"{len(bad)} lack them (first {bad[0]!r}): carry them in the "
                             f"ground truth or score COCO-style only")
    fg, fp = to_frames(gts, preds)
    res = evaluate(fg, fp, EvalConfig(classes=tuple(classes), metrics=("bbox",),
                                      difficulty_mode="kitti", score_threshold=score_threshold))
    for per_cls in res.operating.values():  # placeholder 3D boxes: no TP errors in 2D
        for vals in per_cls.values():
            for key in ("mean_translation_error_m", "mean_scale_error",
                        "mean_orientation_error_rad"):
                vals.pop(key, None)
    return res


# ---------------------------------------------------------------------------------------------
# Both

@dataclass
class Eval2DResult:
    """COCO-style and KITTI 2D numbers of one evaluation (KITTI None without difficulty)."""

    classes: List[str]
    coco: CocoResult
    kitti: Optional[EvalResult]
    num_images: int
    notes: List[str] = field(default_factory=list)

    def kitti_ap(self, cls: str, difficulty: str = "moderate") -> float:
        """KITTI 2D AP|R40 in percent (nan: no gt, or no KITTI difficulty)."""
        if self.kitti is None:
            return math.nan
        return self.kitti.ap("bbox", cls, difficulty, "strict", "R40")

    def kitti_pr(self, cls: str, difficulty: str = "moderate") -> Tuple[np.ndarray, np.ndarray]:
        """(recall sample points, interpolated precision) of the KITTI 2D curve as R40 uses."""
        if self.kitti is None:
            return np.zeros(0), np.zeros(0)
        k = self.kitti
        idx = (k.metrics.index("bbox"), k.iou_sets.index("strict"), k.classes.index(cls),
               k.difficulties.index(difficulty))
        n = int(np.count_nonzero(~np.isnan(k.thresholds[idx])))
        return np.arange(n) / (k.precision.shape[-1] - 1), k.precision[idx][:n]

    def to_dict(self) -> Dict[str, Any]:
        """JSON-friendly: coco (fractions), kitti_bbox_R40 (percent) per class / difficulty."""
        out: Dict[str, Any] = {"num_images": self.num_images, "classes": self.classes,
                               "coco": self.coco.to_dict(), "notes": list(self.notes)}
        if self.kitti is not None:
            k = self.kitti
            out["kitti_bbox_R40"] = {c: {d: _pct(self.kitti_ap(c, d)) for d in k.difficulties}
                                     for c in self.classes}
            out["kitti_bbox_R11"] = {c: {d: _pct(k.ap("bbox", c, d, "strict", "R11"))
                                         for d in k.difficulties} for c in self.classes}
            out["kitti_min_iou"] = {c: k.min_overlaps["bbox"]["strict"][c] for c in self.classes}
            out["kitti_num_gt"] = {c: {d: int(k.num_gt[ci, di])
                                       for di, d in enumerate(k.difficulties)}
                                   for ci, c in enumerate(self.classes)}
            out["kitti_pr_moderate"] = {c: [_pct(v * 100) for v in self.kitti_pr(c)[1]]
                                        for c in self.classes}
            out["operating_point"] = k.operating.get("strict", {})
        return out

    def table(self) -> str:
        """Plain-text table: per class COCO AP, AP50, AP75 (percent) and KITTI 2D AP|R40."""
        def f(v: float) -> str:
            return "    -" if not math.isfinite(v) else f"{v:5.1f}"
        lines = ["class           gt   COCO AP  AP50  AP75 | KITTI 2D AP|R40 easy   mod  hard"]
        for k, c in enumerate(self.classes):
            lines.append(f"{c:<14}{int(self.coco.num_gt[k]):4d}   {f(100 * self.coco.ap(c))} "
                         f"{f(100 * self.coco.ap(c, 0.5))} {f(100 * self.coco.ap(c, 0.75))} |"
                         f"                 {f(self.kitti_ap(c, 'easy'))} "
                         f"{f(self.kitti_ap(c, 'moderate'))} {f(self.kitti_ap(c, 'hard'))}")
        means = [np.nanmean([self.kitti_ap(c, d) for c in self.classes])
                 if self.kitti is not None and any(
                     math.isfinite(self.kitti_ap(c, d)) for c in self.classes) else math.nan
                 for d in ("easy", "moderate", "hard")]
        lines.append(f"{'mean':<14}{'':4}   {f(100 * self.coco.ap())} "
                     f"{f(100 * self.coco.ap(iou=0.5))} {f(100 * self.coco.ap(iou=0.75))} |"
                     f"                 "
                     f"{f(means[0])} {f(means[1])} {f(means[2])}")
        lines.append(f"({self.num_images} images; COCO: mAP@[.5:.95], 101-point, maxDets "
                     f"{COCO_MAX_DETS}; KITTI: 2D bbox, IoU 0.7 Car / 0.5 Ped, Cyc, 40 points)")
        return "\n".join(lines)


def _pct(v: float) -> Optional[float]:
    return None if not math.isfinite(v) else round(float(v), 4)


def evaluate_2d(gts: Sequence[ImageGT], preds: Sequence[ImagePred],
                classes: Sequence[str] = KITTI_CLASSES, score_threshold: float = 0.3,
                min_height: float = 0.0, max_occlusion: Optional[int] = None) -> Eval2DResult:
    """COCO-style and (when every image carries occlusion / truncation) KITTI 2D AP.

    ``min_height`` / ``max_occlusion`` apply to the COCO numbers only (see
    :func:`coco_evaluate`); the KITTI numbers always use the KITTI difficulties.

    Raises:
        Metrics2DError: different numbers of images.
    """
    _check_pairs(gts, preds)
    coco = coco_evaluate(gts, preds, classes, min_height=min_height,
                         max_occlusion=max_occlusion)
    notes: List[str] = []
    if min_height > 0 or max_occlusion is not None:
        notes.append(f"COCO numbers ignore ground truth lower than {min_height:g} px"
                     + (f" or occluded above {max_occlusion}" if max_occlusion is not None
                        else "") + " (and unmatched detections lower than that)")
    kitti = None
    if gts and all(g.has_kitti_difficulty for g in gts):
        kitti = kitti_bbox_evaluate(gts, preds, classes, score_threshold)
    else:
        notes.append("ground truth without occlusion / truncation: KITTI 2D AP skipped")
    return Eval2DResult(list(classes), coco, kitti, len(gts), notes)


__all__: Sequence[str] = ("Metrics2DError", "ImageGT", "ImagePred", "CocoResult",
                          "Eval2DResult", "coco_evaluate", "kitti_bbox_evaluate", "evaluate_2d",
                          "to_frames", "COCO_IOU_THRESHOLDS", "COCO_RECALL_POINTS",
                          "COCO_MAX_DETS")
