"""Drawing into BGR images (OpenCV): 2D detections with class and score, lidar wireframes."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from admlops_ros.camera.projection import ProjectedBoxes

Color = Tuple[int, int, int]
#: BGR colours per class index (cycled), distinct on road scenes.
PALETTE: Tuple[Color, ...] = ((0, 200, 0), (0, 140, 255), (255, 80, 0), (200, 0, 200),
                              (0, 220, 220), (255, 200, 0), (120, 120, 255), (80, 80, 80))
CONFIRMED_COLOR: Color = (0, 255, 255)   # lidar box confirmed by a 2D detection
UNCONFIRMED_COLOR: Color = (255, 160, 0)  # lidar box without a 2D match


def class_color(label: int) -> Color:
    """BGR colour of a class index."""
    return PALETTE[int(label) % len(PALETTE)]


def _label_text(img: np.ndarray, text: str, x: int, y: int, color: Color) -> None:
    import cv2  # noqa: WPS433

    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    y_top = max(y - th - base - 2, 0)
    cv2.rectangle(img, (x, y_top), (x + tw + 2, y_top + th + base + 2), color, -1)
    cv2.putText(img, text, (x + 1, y_top + th + 1), font, scale, (0, 0, 0), thick, cv2.LINE_AA)


def draw_detections(image: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                    labels: np.ndarray, class_names: Sequence[str],
                    thickness: int = 2) -> np.ndarray:
    """Draw 2D boxes with "name score" labels in place.

    Args:
        image: HxWx3 uint8 BGR, modified in place (must be writable).
        boxes: [N, 4] (x1, y1, x2, y2) pixels.
        scores: [N] in [0, 1].
        labels: [N] class indices into ``class_names``.
        class_names: names per class index.
        thickness: line width in pixels.

    Returns:
        ``image``.
    """
    import cv2  # noqa: WPS433

    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    for box, score, label in zip(boxes, np.asarray(scores).reshape(-1),
                                 np.asarray(labels).reshape(-1)):
        if not np.all(np.isfinite(box)):
            continue
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        color = class_color(int(label))
        cv2.rectangle(image, (x1, y1), (x2, y2), color, thickness)
        name = class_names[label] if 0 <= label < len(class_names) else str(label)
        _label_text(image, f"{name} {float(score):.2f}", x1, y1, color)
    return image


def draw_projected_boxes(image: np.ndarray, projected: ProjectedBoxes,
                         confirmed: Optional[np.ndarray] = None,
                         names: Optional[Sequence[str]] = None, thickness: int = 1) -> np.ndarray:
    """Draw lidar boxes as 3D wireframes (edges clipped at the near plane) in place.

    Args:
        image: HxWx3 uint8 BGR, modified in place.
        projected: the boxes projected into this image (``CameraModel.project_boxes``).
        confirmed: [N] bool: confirmed boxes are drawn in ``CONFIRMED_COLOR``, others in
            ``UNCONFIRMED_COLOR``; None draws all as unconfirmed.
        names: class name per box, written above it; None writes nothing.
        thickness: line width in pixels.

    Returns:
        ``image``.
    """
    import cv2  # noqa: WPS433

    height, width = image.shape[:2]
    rect = (0, 0, width, height)
    limit = 4.0 * max(height, width)  # far-off end points: cv2 wants int coordinates
    for i in range(len(projected)):
        if not projected.edge_visible[i].any():
            continue
        ok = confirmed is not None and bool(confirmed[i])
        color = CONFIRMED_COLOR if ok else UNCONFIRMED_COLOR
        for (pa, pb), vis in zip(projected.edges[i], projected.edge_visible[i]):
            if not vis:
                continue
            pa = np.clip(pa, -limit, limit)
            pb = np.clip(pb, -limit, limit)
            inside, p1, p2 = cv2.clipLine(rect, (int(pa[0]), int(pa[1])), (int(pb[0]), int(pb[1])))
            if inside:
                cv2.line(image, p1, p2, color, thickness, cv2.LINE_AA)
        if names is not None and projected.valid[i]:
            x1, y2 = int(round(projected.boxes2d[i, 0])), int(round(projected.boxes2d[i, 3]))
            # below the box: the 2D detection's label sits above it
            _label_text(image, f"lidar {names[i]}" + (" ok" if ok else ""), x1, y2 + 16, color)
    return image


def annotate(image: np.ndarray, detections: object = None,
             projected: Optional[ProjectedBoxes] = None,
             confirmed: Optional[np.ndarray] = None,
             names3d: Optional[Sequence[str]] = None) -> np.ndarray:
    """A copy of ``image`` with lidar wireframes (below) and 2D detections (above) drawn.

    Args:
        image: HxWx3 uint8 BGR (not modified; may be read-only).
        detections: a Detections2D (``boxes``, ``scores``, ``labels``, ``class_names``) or None.
        projected, confirmed, names3d: see :func:`draw_projected_boxes`.
    """
    out = np.array(image, dtype=np.uint8, copy=True)
    if projected is not None:
        draw_projected_boxes(out, projected, confirmed, names3d)
    if detections is not None:
        draw_detections(out, detections.boxes, detections.scores, detections.labels,
                        detections.class_names)
    return out


__all__ = ["PALETTE", "CONFIRMED_COLOR", "UNCONFIRMED_COLOR", "class_color", "draw_detections",
           "draw_projected_boxes", "annotate"]
