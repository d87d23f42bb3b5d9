"""Anchor3DDecoder against a straightforward mmdet3d decode: top-k, box decode, direction, NMS."""
from __future__ import annotations

import math

import numpy as np
import pytest

from admlops_ros.bundle.spec import ModelSpec, SpecError
from admlops_ros.lidar.heads import (Anchor3DDecoder, HeadError, aligned_anchors, decode,
                                     multiclass_nms, select_topk)
from tests.bundle.kitti_spec import KITTI as KITTI_SPEC
from tests.lidar.heads.reference import loop_nms


def decoder_with(fms=None, scales=None, **test_cfg):
    """The KITTI decoder on any feature map (a spec's map must fit its voxel grid)."""
    a, head = KITTI_SPEC["anchors"], KITTI_SPEC["head"]
    cfg = dict(KITTI_SPEC["test_cfg"], **test_cfg)
    return Anchor3DDecoder(
        ranges=a["ranges"], sizes=a["sizes"], rotations=a["rotations"], align_corner=False,
        feature_map_size=fms if fms is not None else a["feature_map_size"], scales=scales,
        nms_thr=cfg["nms_thr"], max_num=cfg["max_num"], use_rotate_nms=cfg["use_rotate_nms"],
        nms_pre=cfg["nms_pre"], score_thr=cfg["score_thr"], dir_offset=head["dir_offset"],
        dir_limit_offset=head["dir_limit_offset"], use_direction_classifier=True, code_size=7,
        class_names=KITTI_SPEC["class_names"])


def test_select_topk_stable():
    vals = np.array([1.0, 3.0, 2.0, 3.0, 2.0, 0.5])
    ids = np.array([10, 11, 12, 13, 14, 15])
    assert select_topk(vals, ids, 3).tolist() == [1, 3, 2]
    assert select_topk(vals, ids, 0).tolist() == [1, 3, 2, 4, 0, 5]
    assert select_topk(vals, ids[::-1].copy(), 1).tolist() == [3]


def reference_decode(cls, bbox, dirp, anchors, cfg, dir_offset, dir_limit_offset):
    """Straightforward mmdet3d predict_by_feat_single for one level, one frame."""
    k_n = len(KITTI_SPEC["class_names"])
    logits = cls[0].transpose(1, 2, 0).reshape(-1, k_n).astype(np.float64)
    scores = 1.0 / (1.0 + np.exp(-logits))                       # sigmoid of all anchors
    deltas = bbox[0].transpose(1, 2, 0).reshape(-1, 7).astype(np.float64)
    dir_labels = dirp[0].transpose(1, 2, 0).reshape(-1, 2).argmax(axis=1)
    top = np.argsort(-scores.max(axis=1), kind="stable")[:cfg["nms_pre"]]
    boxes, sel_scores, sel_dirs = [], [], []
    for i in top:                                                # per-anchor decode
        xa, ya, za, wa, la, ha, ra = [float(v) for v in anchors[i]]
        xt, yt, zt, wt, lt, ht, rt = deltas[i]
        diag = math.sqrt(wa * wa + la * la)
        hg = math.exp(ht) * ha
        boxes.append([xt * diag + xa, yt * diag + ya, zt * ha + za + ha / 2 - hg / 2,
                      math.exp(wt) * wa, math.exp(lt) * la, hg, rt + ra])
        sel_scores.append(scores[i])
        sel_dirs.append(dir_labels[i])
    boxes = np.array(boxes)
    sel_scores = np.array(sel_scores)
    out = []
    for k in range(k_n):
        idx = [j for j in range(len(boxes)) if sel_scores[j, k] > cfg["score_thr"]]
        bev = boxes[idx][:, [0, 1, 3, 4, 6]] if idx else np.zeros((0, 5))
        for j in loop_nms(bev, sel_scores[idx, k], cfg["nms_thr"]):
            out.append((boxes[idx[j]].copy(), sel_scores[idx[j], k], k, sel_dirs[idx[j]]))
    if len(out) > cfg["max_num"]:
        out = sorted(out, key=lambda o: -o[1])[:cfg["max_num"]]
    for box, _, _, d in out:
        yaw = box[6] - dir_offset
        yaw = yaw - math.floor(yaw / math.pi + dir_limit_offset) * math.pi
        box[6] = yaw + dir_offset + math.pi * d
    return out


def random_head(rng, h, w, n_above=150, a_n=6, k_n=3):
    """Random logits with about n_above class scores above 0.1."""
    cls = rng.normal(-7.0, 1.0, (1, a_n * k_n, h, w)).astype(np.float32)
    flat = cls.reshape(-1)
    hot = rng.choice(flat.size, n_above, replace=False)
    flat[hot] = rng.uniform(-2.0, 3.0, n_above)
    bbox = rng.normal(0, 0.3, (1, a_n * 7, h, w)).astype(np.float32)
    dirp = rng.normal(0, 1, (1, a_n * 2, h, w)).astype(np.float32)
    return cls, bbox, dirp


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decoder_matches_reference_decode(seed):
    rng = np.random.default_rng(seed)
    h, w = (248, 216) if seed == 0 else (40, 36)
    dec = decoder_with([h, w])
    cls, bbox, dirp = random_head(rng, h, w, n_above=150 if seed != 2 else 40)
    if seed == 2:          # cluster the hot anchors so that NMS really suppresses
        bbox[:, 0::7] = 0.0
        bbox[:, 1::7] = 0.0
    det = dec.decode([cls], [bbox], [dirp])
    a = KITTI_SPEC["anchors"]
    anchors = aligned_anchors((h, w), a["ranges"], a["sizes"], a["rotations"])
    ref = reference_decode(cls, bbox, dirp, anchors, KITTI_SPEC["test_cfg"],
                           KITTI_SPEC["head"]["dir_offset"], 0.0)
    assert len(det) == len(ref) > 0
    np.testing.assert_array_equal(det.labels, [r[2] for r in ref])
    np.testing.assert_allclose(det.scores, [r[1] for r in ref], rtol=1e-5)
    np.testing.assert_allclose(det.boxes, np.array([r[0] for r in ref]), atol=2e-4)
    assert det.boxes.dtype == np.float32 and det.class_names == ("Pedestrian", "Cyclist", "Car")


def test_decoder_multi_level_concatenates():
    rng = np.random.default_rng(4)
    dec = decoder_with([[20, 18], [10, 9]], scales=[1, 2])
    lv0 = random_head(rng, 20, 18, 30)
    lv1 = random_head(rng, 10, 9, 30)
    det = dec.decode([lv0[0], lv1[0]], [lv0[1], lv1[1]], [lv0[2], lv1[2]])
    # same as a single decoder per level followed by one NMS over the union
    a = KITTI_SPEC["anchors"]
    anchors = np.concatenate([
        aligned_anchors((20, 18), a["ranges"], a["sizes"], a["rotations"], scale=1),
        aligned_anchors((10, 9), a["ranges"], a["sizes"], a["rotations"], scale=2)])
    cls = [lv[0][0].transpose(1, 2, 0).reshape(-1, 3) for lv in (lv0, lv1)]
    box = [lv[1][0].transpose(1, 2, 0).reshape(-1, 7) for lv in (lv0, lv1)]
    drs = [lv[2][0].transpose(1, 2, 0).reshape(-1, 2).argmax(1) for lv in (lv0, lv1)]
    sel = []
    offset = 0
    for c in cls:                                     # nms_pre per level
        sel.append(offset + np.argsort(-c.max(1), kind="stable")[:100])
        offset += len(c)
    sel = np.concatenate(sel)
    logits = np.concatenate(cls)[sel]
    boxes = decode(anchors[sel].astype(np.float64), np.concatenate(box)[sel].astype(np.float64))
    dirs = np.concatenate(drs)[sel]
    rb, rs, rl, rd = multiclass_nms(boxes, 1 / (1 + np.exp(-logits.astype(np.float64))),
                                    0.1, 0.01, 50, True, dirs)
    assert len(det) == len(rb) > 0
    np.testing.assert_array_equal(det.labels, rl)
    np.testing.assert_allclose(det.scores, rs, rtol=1e-5)
    np.testing.assert_allclose(det.boxes[:, :6], rb[:, :6], atol=2e-4)


def _single_anchor_head(dec, h, w, anchor_id, delta_yaw, dir_logits):
    a_n, k_n = dec.num_anchors, dec.num_classes
    cls = np.full((1, a_n * k_n, h, w), -20.0, np.float32)
    bbox = np.zeros((1, a_n * 7, h, w), np.float32)
    dirp = np.zeros((1, a_n * 2, h, w), np.float32)
    cell, a = divmod(anchor_id, a_n)
    y, x = divmod(cell, w)
    cls[0, a * k_n + 2, y, x] = 2.0                         # class Car
    bbox[0, a * 7 + 6, y, x] = delta_yaw
    dirp[0, a * 2:a * 2 + 2, y, x] = dir_logits
    return [cls], [bbox], [dirp]


@pytest.mark.parametrize("anchor_rot,delta,dir_logits,expect", [
    (0, 0.0, (1.0, 0.0), 0.0),                 # label 0: yaw in [-pi/2, pi/2)
    (0, 0.0, (0.0, 1.0), math.pi),             # label 1 adds pi
    (1, 0.0, (1.0, 0.0), 1.57),                # 1.57 < pi/2 stays in [-pi/2, pi/2)
    (1, 0.0, (0.0, 1.0), 1.57 + math.pi),
    (1, 0.01, (1.0, 0.0), 1.58 - math.pi),     # 1.58 >= pi/2 wraps
    (0, 2.0, (1.0, 0.0), 2.0 - math.pi),       # 2.0 rad wraps into [-pi/2, pi/2)
    (0, -1.0, (0.0, 1.0), -1.0 + math.pi),
    (0, 0.3, (0.5, 0.5), 0.3),                 # tie -> label 0 (first max)
])
def test_dir_offset_yaw(anchor_rot, delta, dir_logits, expect):
    dec = decoder_with([8, 6])
    anchor_id = (3 * 6 + 2) * 6 + 4 + anchor_rot            # a Car anchor at cell (3, 2)
    det = dec.decode(*_single_anchor_head(dec, 8, 6, anchor_id, delta, dir_logits))
    assert len(det) == 1 and det.labels[0] == 2
    assert det.boxes[0, 6] == pytest.approx(expect, abs=1e-5)
    assert det.scores[0] == pytest.approx(1 / (1 + math.exp(-2.0)), rel=1e-6)
    a = KITTI_SPEC["anchors"]
    anchor = aligned_anchors((8, 6), a["ranges"], a["sizes"], a["rotations"])[anchor_id]
    np.testing.assert_allclose(det.boxes[0, :6], anchor[:6], atol=1e-6)


def test_empty_when_nothing_passes_score_thr():
    dec = decoder_with([16, 12])
    rng = np.random.default_rng(9)
    cls, bbox, dirp = random_head(rng, 16, 12, n_above=0)
    cls[:] = np.minimum(cls, np.float32(-2.3))                     # sigmoid(-2.3) = 0.091
    det = dec.decode([cls], [bbox], [dirp])
    assert len(det) == 0 and det.boxes.shape == (0, 7) and det.labels.dtype == np.int64


def test_shape_mismatch_raises_head_error():
    dec = Anchor3DDecoder.from_spec(ModelSpec.from_dict(KITTI_SPEC))
    rng = np.random.default_rng(0)
    cls, bbox, dirp = random_head(rng, 124, 108, 10)
    with pytest.raises(HeadError, match=r"\[124, 108\].*\[248, 216\]"):
        dec.decode([cls], [bbox], [dirp])
    dec = decoder_with([16, 12])
    cls, bbox, dirp = random_head(rng, 16, 12, 10)
    with pytest.raises(HeadError, match=r"bbox_pred.*\[35, 16, 12\].*\[42, 16, 12\]"):
        dec.decode([cls], [bbox[:, :35]], [dirp])
    with pytest.raises(HeadError, match="cls_score"):
        dec.decode([cls[:, :12]], [bbox], [dirp])
    with pytest.raises(HeadError, match="levels"):
        dec.decode([cls, cls], [bbox], [dirp])


def test_from_spec_errors_and_defaults():
    # a missing number is named by the spec (the decoder reads no YAML of its own)
    spec = {k: (dict(v) if isinstance(v, dict) else v) for k, v in KITTI_SPEC.items()}
    spec["test_cfg"] = dict(spec["test_cfg"])
    del spec["test_cfg"]["nms_thr"]
    with pytest.raises(SpecError, match="test_cfg.nms_thr"):
        Anchor3DDecoder.from_spec(ModelSpec.from_dict(spec))
    with pytest.raises(SpecError, match="anchors"):
        ModelSpec.from_dict({k: v for k, v in KITTI_SPEC.items() if k != "anchors"})
    # head defaults come from the spec's defaults (mmdet3d 1.x)
    no_head = {k: v for k, v in KITTI_SPEC.items() if k != "head"}
    dec = Anchor3DDecoder.from_spec(ModelSpec.from_dict(no_head))
    dec.warmup()
    assert dec.num_anchors == 6 and dec.num_classes == 3
    assert dec.dir_offset == pytest.approx(-math.pi / 2) and dec.nms_pre == 100
