"""Backend parity over one bag: raw-output differences, matched-box agreement, AP deltas."""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Optional, Sequence

import numpy as np

from admlops_ros.evaluation.bags import read_bag
from admlops_ros.evaluation.frames import FrameGT, FramePred
from admlops_ros.evaluation.matching import box_overlaps
from admlops_ros.evaluation.metrics import evaluate
from admlops_ros.evaluation.protocol import EvalConfig
from admlops_ros.evaluation.replay import ReplayError, open_detector, restrict_to_range

LOG = logging.getLogger(__name__)

AGREEMENT_IOU = 0.7  # BEV IoU for two backends' boxes to count as the same detection


@dataclass
class BackendParity:
    """One backend against the reference (the first backend listed)."""

    backend: str
    max_abs_diff: Dict[str, float] = field(default_factory=dict)  # raw output name -> max |a-b|
    boxes_ref: int = 0
    boxes: int = 0
    matched: int = 0
    max_score_diff: float = 0.0
    max_center_diff_m: float = 0.0
    ap: Dict[str, float] = field(default_factory=dict)  # "3d"/"bev" mean AP|R40 strict
    error: str = ""
    detect_ms: List[float] = field(default_factory=list)  # per cloud: preprocess .. decode + NMS

    @property
    def detect_ms_p50(self) -> float:
        """Median detect time per cloud (ms), nan before any cloud."""
        return float(np.median(self.detect_ms)) if self.detect_ms else math.nan

    @property
    def agreement(self) -> float:
        """Matched boxes / max(reference boxes, boxes); 1.0 when both are empty."""
        n = max(self.boxes_ref, self.boxes)
        return self.matched / n if n else 1.0


def match_boxes(ref: FramePred, other: FramePred, iou: float = AGREEMENT_IOU):
    """Greedy one-to-one same-class matches by BEV IoU (reference in score order).

    Returns:
        list of (ref index, other index) pairs.
    """
    if not len(ref) or not len(other):
        return []
    ov = box_overlaps("bev", ref.boxes, other.boxes)
    ov[np.asarray(ref.names)[:, None] != np.asarray(other.names)[None, :]] = 0.0
    pairs, used = [], np.zeros(len(other), bool)
    for i in np.argsort(-ref.scores, kind="stable"):
        cand = np.where(used, -1.0, ov[i])
        j = int(np.argmax(cand))
        if cand[j] >= iou:
            used[j] = True
            pairs.append((int(i), j))
    return pairs


class Candidate(NamedTuple):
    """One engine on one backend in a comparison."""

    label: str
    engine: Optional[str]  # bundle directory; None: the shipped default
    backend: str  # e.g. openvino-f32


def compare_backends(bag: os.PathLike, engine: Optional[str], backends: Sequence[str],
                     limit: Optional[int] = None, progress: bool = True,
                     config: Optional[EvalConfig] = None) -> List[BackendParity]:
    """Run every backend on every cloud; the first backend is the reference.

    A backend that cannot open here (e.g. TensorRT without a GPU) is reported with its error
    and skipped.
    """
    if len(backends) < 2:
        raise ReplayError(f"compare needs two or more backends, got {list(backends)}")
    return compare_engines(bag, [Candidate(b, engine, b) for b in backends], limit, progress,
                           config)


def compare_engines(bag: os.PathLike, candidates: Sequence[Candidate],
                    limit: Optional[int] = None, progress: bool = True,
                    config: Optional[EvalConfig] = None) -> List[BackendParity]:
    """Run every candidate (engine, backend) on every cloud; the first is the reference.

    Candidates run one after the other on each cloud, so their detect times are measured
    under the same machine load. One that cannot open here is reported with its error and
    skipped.
    """
    from tqdm import tqdm
    if len(candidates) < 2:
        raise ReplayError(f"compare needs two or more engines, got {list(candidates)}")
    summary, frames = read_bag(bag)
    detectors, parity = [], []
    for cand in candidates:
        p = BackendParity(cand.label)
        try:
            detectors.append(open_detector(cand.engine, cand.backend))
            parity.append(p)
        except ReplayError as exc:
            if not detectors:
                raise
            p.error = str(exc)
            LOG.warning("skipping %s: %s", cand.label, exc)
            parity.append(p)
    live = [p for p in parity if not p.error]
    gts: List[FrameGT] = []
    preds: Dict[str, List[FramePred]] = {p.backend: [] for p in live}
    total = summary.num_clouds if limit is None else min(limit, summary.num_clouds)
    try:
        for frame in tqdm(frames, total=total, desc="compare", unit="cloud", disable=not progress):
            if limit is not None and frame.index >= limit:
                break
            if frame.points is None:
                continue
            raw, dets, times = [], [], []
            for det in detectors:
                t0 = time.perf_counter()
                out = det.infer_raw(frame.points)
                d = det.postprocess(out)
                times.append((time.perf_counter() - t0) * 1e3)
                raw.append(out)
                dets.append(FramePred.from_detections(d, frame.frame_id))
            ref_raw, ref_pred = raw[0], dets[0]
            for p, out, pred, ms in zip(live, raw, dets, times):
                p.detect_ms.append(ms)
                for name, arr in out.items():
                    if name in ref_raw and np.shape(ref_raw[name]) == np.shape(arr):
                        diff = float(np.max(np.abs(np.asarray(arr, np.float64)
                                                   - np.asarray(ref_raw[name], np.float64)))) \
                            if np.size(arr) else 0.0
                        p.max_abs_diff[name] = max(p.max_abs_diff.get(name, 0.0), diff)
                pairs = match_boxes(ref_pred, pred)
                p.boxes_ref += len(ref_pred)
                p.boxes += len(pred)
                p.matched += len(pairs)
                if pairs:
                    i, j = np.array(pairs).T
                    p.max_score_diff = max(p.max_score_diff, float(
                        np.abs(ref_pred.scores[i] - pred.scores[j]).max()))
                    p.max_center_diff_m = max(p.max_center_diff_m, float(np.linalg.norm(
                        ref_pred.boxes[i, :3] - pred.boxes[j, :3], axis=1).max()))
                preds[p.backend].append(pred)
            if frame.gt is not None:
                gts.append(restrict_to_range(frame.gt, detectors[0].voxelizer.point_cloud_range))
            else:
                for p in live:
                    preds[p.backend].pop()
    finally:
        for det in detectors:
            det.close()
    if gts:
        for p in live:
            res = evaluate(gts, preds[p.backend], config)
            for m in res.metrics:
                p.ap[m] = res.mean_ap(m)
                for cls in res.classes:
                    p.ap[f"{m}/{cls}"] = res.ap(m, cls)
    return parity


def parity_table(parity: Sequence[BackendParity]) -> str:
    """Fixed-width table: raw diff, agreement, AP and AP delta vs the reference."""
    ref = parity[0]
    keys = sorted({k for p in parity for k in p.ap if "/" not in k})  # per class: --json
    head = (f"{'backend':<18}{'max|raw diff|':>14}{'boxes':>7}{'agree':>7}{'max|dscore|':>12}"
            + "".join(f"{'mAP ' + k:>10}{'delta':>8}" for k in keys))
    lines = [head, "-" * len(head)]
    for p in parity:
        if p.error:
            lines.append(f"{p.backend:<18}not run: {p.error}")
            continue
        raw = max(p.max_abs_diff.values()) if p.max_abs_diff else math.nan
        row = (f"{p.backend:<18}{raw:>14.3g}{p.boxes:>7d}{p.agreement:>7.3f}"
               f"{p.max_score_diff:>12.3g}")
        for k in keys:
            v, r = p.ap.get(k, math.nan), ref.ap.get(k, math.nan)
            row += f"{v:>10.2f}{v - r:>+8.2f}"
        lines.append(row)
    return "\n".join(lines)


__all__ = ("BackendParity", "Candidate", "compare_backends", "compare_engines", "parity_table", "match_boxes")
