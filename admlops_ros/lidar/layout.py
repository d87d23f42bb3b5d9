"""Engine output layouts of mmdeploy versions, detected from output names and normalized."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from admlops_ros.bundle.spec import OUTPUT_LAYOUTS
from admlops_ros.errors import AdmlopsError

LAYOUTS = OUTPUT_LAYOUTS  # the spec's vocabulary: layout -> (description, output names)
LAYOUT_NAMES = tuple(LAYOUTS)
_LEVEL_RE = re.compile(r"^(cls_score|bbox_pred|dir_cls_pred)(\d+)$")


class LayoutError(AdmlopsError, ValueError):
    """Engine outputs that match no supported mmdeploy layout."""


@dataclass(frozen=True)
class OutputLayout:
    """Which engine output holds what.

    Attributes:
        name: one of ``LAYOUT_NAMES``.
        decoded: True when boxes/scores/labels come out of the engine (NMS inside).
        cls_names, bbox_names, dir_names: raw layouts, one output name per level
            (``dir_names`` empty when the engine has no direction classifier).
        decoded_names: decoded layout, (boxes, scores, labels) output names.
    """

    name: str
    decoded: bool = False
    cls_names: Tuple[str, ...] = ()
    bbox_names: Tuple[str, ...] = ()
    dir_names: Tuple[str, ...] = ()
    decoded_names: Tuple[str, ...] = ()

    @property
    def num_levels(self) -> int:
        return len(self.cls_names)

    @property
    def description(self) -> str:
        return LAYOUTS[self.name][0]


@dataclass
class HeadOutputs:
    """Raw Anchor3DHead outputs, one array per level: [1, A*K, H, W], [1, A*7, H, W],
    [1, A*2, H, W] (``dir_cls_preds`` empty without a direction classifier)."""

    cls_scores: List[np.ndarray]
    bbox_preds: List[np.ndarray]
    dir_cls_preds: List[np.ndarray]


@dataclass
class DecodedOutputs:
    """Post-processed engine outputs: boxes [N, 7] float32 (LiDAR frame, bottom centre),
    scores [N] float32, labels [N] int64 (padding rows with label < 0 removed)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


def _supported_text() -> str:
    return "; ".join(f"{n} ({d}): {', '.join(names)}" for n, (d, names) in LAYOUTS.items())


def detect_layout(output_names: Sequence[str]) -> OutputLayout:
    """The layout whose output names are exactly ``output_names`` (any order).

    Raises:
        LayoutError: listing the names found and every supported layout.
    """
    names = set(output_names)
    for lname in ("mmdeploy-0.5", "mmdeploy-1.0"):
        cls_n, bbox_n, dir_n = LAYOUTS[lname][1]
        if names in ({cls_n, bbox_n, dir_n}, {cls_n, bbox_n}):
            return OutputLayout(lname, False, (cls_n,), (bbox_n,),
                                (dir_n,) if dir_n in names else ())
    if names == set(LAYOUTS["mmdeploy-0.11"][1]):
        return OutputLayout("mmdeploy-0.11", True, decoded_names=LAYOUTS["mmdeploy-0.11"][1])
    levels: Dict[str, Dict[int, str]] = {"cls_score": {}, "bbox_pred": {}, "dir_cls_pred": {}}
    matched = [_LEVEL_RE.match(n) for n in names]
    if names and all(matched):
        for m in matched:
            levels[m.group(1)][int(m.group(2))] = m.group(0)
        n_levels = len(levels["cls_score"])
        expected = set(range(n_levels))
        if n_levels and set(levels["cls_score"]) == expected and \
                set(levels["bbox_pred"]) == expected and \
                set(levels["dir_cls_pred"]) in (expected, set()):
            def ordered(kind: str) -> Tuple[str, ...]:
                return tuple(levels[kind][i] for i in sorted(levels[kind]))
            return OutputLayout("mmdeploy-1.2", False, ordered("cls_score"), ordered("bbox_pred"),
                                ordered("dir_cls_pred"))
    raise LayoutError(f"engine outputs {sorted(names)} match no supported mmdeploy output "
                      f"layout; supported: {_supported_text()}. Export with mmdeploy's "
                      "voxel-detection configs (output names unchanged).")


def resolve_layout(output_names: Sequence[str], expected: Optional[str] = None) -> OutputLayout:
    """Detect the layout and check it against the spec's ``engine.output_layout`` if given."""
    layout = detect_layout(output_names)
    if expected and expected != "auto" and expected != layout.name:
        raise LayoutError(f"spec.yaml engine.output_layout is {expected!r} but the engine "
                          f"outputs {sorted(output_names)} are layout {layout.name!r} "
                          f"({layout.description}); fix engine.output_layout or set it to auto")
    return layout


def _get(outputs: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    if name not in outputs:
        raise LayoutError(f"engine output {name!r} missing; got {sorted(outputs)}")
    return outputs[name]


def to_head_outputs(outputs: Mapping[str, np.ndarray], layout: OutputLayout
                    ) -> Union[HeadOutputs, DecodedOutputs]:
    """Normalize raw engine outputs (name -> array) to ``HeadOutputs`` or ``DecodedOutputs``."""
    if layout.decoded:
        b_name, s_name, l_name = layout.decoded_names
        boxes = np.asarray(_get(outputs, b_name), dtype=np.float32)
        boxes = boxes.reshape(-1, boxes.shape[-1]) if boxes.size else boxes.reshape(0, 7)
        scores = np.asarray(_get(outputs, s_name), dtype=np.float32).reshape(-1)
        labels = np.asarray(_get(outputs, l_name)).reshape(-1).astype(np.int64)
        if not len(boxes) == len(scores) == len(labels):
            raise LayoutError(f"decoded outputs disagree in length: {b_name} {len(boxes)}, "
                              f"{s_name} {len(scores)}, {l_name} {len(labels)}")
        keep = labels >= 0  # TensorRT NMS plugins pad with label -1
        return DecodedOutputs(boxes[keep, :7], scores[keep], labels[keep])
    return HeadOutputs([_get(outputs, n) for n in layout.cls_names],
                       [_get(outputs, n) for n in layout.bbox_names],
                       [_get(outputs, n) for n in layout.dir_names])
