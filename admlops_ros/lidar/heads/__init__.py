"""Detection heads: anchors, box coder, BEV NMS and the Anchor3DHead decoder."""
from __future__ import annotations

from admlops_ros.lidar.heads.anchor3d import Anchor3DDecoder, HeadError, select_topk
from admlops_ros.lidar.heads.anchors import AnchorError, aligned_anchors, num_base_anchors
from admlops_ros.lidar.heads.box_coder import BoxCoderError, decode, encode
from admlops_ros.lidar.heads.nms import NMSError, aligned_nms, multiclass_nms, rotated_nms

__all__ = [
    "Anchor3DDecoder", "HeadError", "select_topk",
    "AnchorError", "aligned_anchors", "num_base_anchors",
    "BoxCoderError", "decode", "encode",
    "NMSError", "aligned_nms", "multiclass_nms", "rotated_nms",
]
