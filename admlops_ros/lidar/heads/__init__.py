"""Detection heads: anchors, box coder, BEV NMS, the Anchor3DHead and CenterHead decoders."""
from __future__ import annotations

from typing import Any

from admlops_ros.lidar.heads.anchor3d import Anchor3DDecoder, HeadError, select_topk
from admlops_ros.lidar.heads.anchors import AnchorError, aligned_anchors, num_base_anchors
from admlops_ros.lidar.heads.box_coder import BoxCoderError, decode, encode
from admlops_ros.lidar.heads.nms import NMSError, aligned_nms, multiclass_nms, rotated_nms



def decoder_from_spec(spec: Any) -> Any:
    """The head decoder of a bundle spec's family (``decode(cls, bbox, dir) -> Detections``,
    a settable ``score_thr``, ``warmup()``): Anchor3DDecoder or CenterPointDecoder."""
    if spec.family == "centerpoint":
        from admlops_ros.lidar.heads.center_head import CenterPointDecoder
        return CenterPointDecoder.from_spec(spec)
    return Anchor3DDecoder.from_spec(spec)


__all__ = [
    "decoder_from_spec", "Anchor3DDecoder", "HeadError", "select_topk",
    "AnchorError", "aligned_anchors", "num_base_anchors",
    "BoxCoderError", "decode", "encode",
    "NMSError", "aligned_nms", "multiclass_nms", "rotated_nms",
]
