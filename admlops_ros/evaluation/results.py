"""EvalResult: AP / PR / operating-point arrays with lookups, JSON dict and text tables."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from admlops_ros.evaluation.frames import MetricsError


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
                headline = self.difficulties.index(self.headline_difficulty)
                row += f"{int(self.num_gt[ci, headline]):>14}"
                lines.append(row)
        for m in metrics:
            row = f"{'mean ' + m:<22}"
            for d in self.difficulties:
                v = self.mean_ap(m, d, iou_set, kind)
                row += f"{'-' if math.isnan(v) else format(v, '.2f'):>10}"
            lines.append(row)
        return "\n".join(lines)


__all__: Sequence[str] = ("EvalResult",)
