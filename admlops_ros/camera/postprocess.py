"""Engine dets -> Detections2D: score threshold, padded rows out, rescale and clip (mmdet)."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from admlops_ros.bundle.camera_spec import CameraSpec
from admlops_ros.camera.detections import Detections2D
from admlops_ros.camera.preprocess import ImageMeta
from admlops_ros.errors import AdmlopsError


class PostprocessError(AdmlopsError, ValueError):
    """A postprocess setting that cannot work; names it and the allowed range."""


def score_threshold_of(spec: CameraSpec, override: Optional[float] = None) -> float:
    """``override`` when given (checked to be in [0, 1]), else the spec's threshold.

    Raises:
        PostprocessError: an override that is not a number in [0, 1].
    """
    if override is None:
        return spec.score_threshold
    if isinstance(override, bool) or not isinstance(override, (int, float)) or \
            not 0.0 <= float(override) <= 1.0:
        raise PostprocessError(f"score_threshold must be a number in [0, 1], got "
                               f"{override!r}")
    return float(override)


def postprocess(dets: np.ndarray, labels: np.ndarray, meta: ImageMeta, score_threshold: float,
                class_names: Sequence[str]) -> Detections2D:
    """Detections in original-image pixels from the engine's outputs.

    Rows with score <= ``score_threshold`` (mmdeploy SDK ResizeBBox drops those; the engine's
    padded rows have score 0) or a label outside the classes are dropped. Boxes are divided by
    (w_scale, h_scale, w_scale, h_scale) as mmdet 3.x ``scale_boxes`` with rescale=True and
    clipped to [0, W] x [0, H] of the original image (mmdet clips at decode to the resized
    image, which maps onto exactly that).

    Args:
        dets: [1, N, 5] or [N, 5] float32 (x1, y1, x2, y2, score), network-input pixels.
        labels: [1, N] or [N] integer class indices.
        meta: the geometry of the image (from the preprocessor).
        score_threshold: keep score > this.
        class_names: class name per label.
    """
    d = np.asarray(dets, dtype=np.float32).reshape(-1, 5)
    lab = np.asarray(labels).reshape(-1).astype(np.int64)
    if len(lab) != len(d):
        raise ValueError(f"postprocess: dets has {len(d)} rows but labels {len(lab)}")
    scores = d[:, 4]
    keep = (scores > score_threshold) & (lab >= 0) & (lab < len(class_names)) & \
        np.isfinite(d).all(axis=1)
    d, lab = d[keep], lab[keep]
    w_scale, h_scale = meta.scale_factor
    boxes = d[:, :4] / np.asarray([w_scale, h_scale, w_scale, h_scale], np.float32)
    h, w = meta.ori_shape
    np.clip(boxes[:, 0::2], 0.0, float(w), out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], 0.0, float(h), out=boxes[:, 1::2])
    return Detections2D(boxes, d[:, 4], lab, tuple(class_names), image_size=(h, w))
