"""Camera test bundles from the tiny deterministic net, and test images with colour blobs."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np

# pipelines: name -> (input_size (H, W), preprocessing) covering keep-ratio with a divisor
# (dynamic engine), non-keep-ratio (static), and keep-ratio padded raw to a fixed non-square size
PIPELINES: Dict[str, tuple] = {
    "keep_ratio": ((384, 640), dict(keep_ratio=True, scale=(640, 384), size_divisor=32)),
    "no_keep_ratio": ((192, 640), dict(keep_ratio=False, scale=(640, 192))),
    "keep_ratio_pad_raw": ((256, 704), dict(keep_ratio=True, scale=(704, 256),
                                            pad_size=(704, 256), pad_val=114.0,
                                            pad_stage="raw", to_rgb=False,
                                            mean=(103.53, 116.28, 123.675),
                                            std=(57.375, 57.12, 58.395))),
}
CLASSES = ("Car", "Pedestrian", "Cyclist")


def make_bundle(root: Path, pipeline: str) -> Path:
    """Export the tiny net with one of PIPELINES into ``root``."""
    from admlops_ros.training.camera_export import TinyCameraNet, export_camera_bundle
    size, pre = PIPELINES[pipeline]
    net = TinyCameraNet(num_classes=3, stride=16, box_size=64.0, gain=1.5, bias=4.0)
    return export_camera_bundle(net, root, input_size=size, class_names=CLASSES,
                                preprocessing=dict(pre), score_threshold=0.3,
                                iou_threshold=0.5, max_per_image=100, pre_top_k=1000)


def images() -> List[np.ndarray]:
    """Three bgr test images (KITTI size and two others) with a handful of blobs each."""
    from admlops_ros.training.camera_export import blob_image
    return [
        blob_image(375, 1242, [(200, 150, 18, 0), (610, 205, 14, 1), (1000, 110, 20, 2),
                               (880, 290, 12, 0)], seed=1),
        blob_image(480, 640, [(120, 300, 16, 1), (400, 120, 22, 0), (520, 380, 15, 2)],
                   seed=2),
        blob_image(300, 900, [(100, 80, 14, 2), (450, 150, 18, 1), (760, 220, 16, 0)], seed=3),
    ]
