"""Tests of admlops_ros.lidar.heads: anchors, box coder, BEV NMS and the Anchor3DHead decoder."""
from __future__ import annotations

import math

import numpy as np
import pytest
from shapely.geometry import Polygon

from admlops_ros.lidar.geometry import HAVE_NUMBA
from admlops_ros.lidar.heads import (Anchor3DDecoder, HeadError, aligned_anchors, aligned_nms, decode,
                               encode, multiclass_nms, rotated_nms, select_topk)

_rotated_nms = rotated_nms

# The KITTI 3-class PointPillars numbers of docs/design.md (spec.yaml example).
KITTI_SPEC = {
    "class_names": ["Pedestrian", "Cyclist", "Car"],
    "anchors": {
        "ranges": [[0, -39.68, -0.6, 69.12, 39.68, -0.6], [0, -39.68, -0.6, 69.12, 39.68, -0.6],
                   [0, -39.68, -1.78, 69.12, 39.68, -1.78]],
        "sizes": [[0.8, 0.6, 1.73], [1.76, 0.6, 1.73], [3.9, 1.6, 1.56]],
        "rotations": [0.0, 1.57],
        "align_corner": False,
        "feature_map_size": [248, 216],
    },
    "box_coder": {"type": "DeltaXYZWLHRBBoxCoder", "code_size": 7},
    "head": {"use_direction_classifier": True, "dir_offset": -1.5707963267948966,
             "dir_limit_offset": 0.0},
    "test_cfg": {"use_rotate_nms": True, "nms_thr": 0.01, "score_thr": 0.1, "nms_pre": 100,
                 "max_num": 50},
}


def spec_with(fms=None, **test_cfg):
    spec = {k: (dict(v) if isinstance(v, dict) else v) for k, v in KITTI_SPEC.items()}
    if fms is not None:
        spec["anchors"]["feature_map_size"] = fms
    spec["test_cfg"].update(test_cfg)
    return spec


def poly(b5):
    x, y, dx, dy, yaw = [float(v) for v in b5]
    c, s = math.cos(yaw), math.sin(yaw)
    return Polygon([(x + lx * c - ly * s, y + lx * s + ly * c)
                    for lx, ly in ((-dx / 2, -dy / 2), (dx / 2, -dy / 2),
                                   (dx / 2, dy / 2), (-dx / 2, dy / 2))])


def shapely_iou(a5, b5):
    pa, pb = poly(a5), poly(b5)
    union = pa.union(pb).area
    return pa.intersection(pb).area / union if union > 0 else 0.0


def loop_nms(bev, scores, thr, iou_fn=shapely_iou):
    """Plain greedy NMS: visit by score (stable), keep unless IoU > thr with a kept box."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep = []
    for i in order:
        if all(iou_fn(bev[i], bev[j]) <= thr for j in keep):
            keep.append(i)
    return keep


# --- anchors -------------------------------------------------------------------------------

def test_kitti_anchor_grid():
    a = KITTI_SPEC["anchors"]
    anchors = aligned_anchors(a["feature_map_size"], a["ranges"], a["sizes"], a["rotations"])
    assert anchors.shape == (321408, 7) and anchors.dtype == np.float32
    np.testing.assert_allclose(anchors[0], [0.16, -39.52, -0.6, 0.8, 0.6, 1.73, 0.0], atol=1e-5)
    np.testing.assert_allclose(anchors[1], [0.16, -39.52, -0.6, 0.8, 0.6, 1.73, 1.57], atol=1e-5)
    np.testing.assert_allclose(anchors[2], [0.16, -39.52, -0.6, 1.76, 0.6, 1.73, 0.0], atol=1e-5)
    np.testing.assert_allclose(anchors[5], [0.16, -39.52, -1.78, 3.9, 1.6, 1.56, 1.57], atol=1e-5)
    grid = anchors.reshape(248, 216, 6, 7)
    np.testing.assert_allclose(np.diff(grid[0, :, 0, 0]), 0.32, atol=1e-5)     # along W: x
    np.testing.assert_allclose(np.diff(grid[:, 0, 0, 1]), 0.32, atol=1e-5)     # along H: y
    np.testing.assert_allclose(grid[-1, -1, 0, :2], [69.12 - 0.16, 39.68 - 0.16], atol=1e-4)
    np.testing.assert_allclose(np.unique(grid[..., 2]), [-1.78, -0.6], atol=1e-6)
    np.testing.assert_allclose(grid[..., :4, 2], -0.6, atol=1e-6)
    np.testing.assert_allclose(grid[..., 4:, 2], -1.78, atol=1e-6)
    # cached and read-only
    assert aligned_anchors(a["feature_map_size"], a["ranges"], a["sizes"],
                           a["rotations"]) is anchors
    assert not anchors.flags.writeable


def test_anchor_order_matches_plain_loop():
    ranges = [[0, -4, -1, 8, 4, -1], [0, -4, -2, 8, 4, -2]]
    sizes = [[1.0, 0.5, 1.5], [4.0, 2.0, 1.6]]
    rots = [0.0, 0.5, 1.57]
    h, w = 5, 4
    for align in (False, True):
        got = aligned_anchors((h, w), ranges, sizes, rots, align_corner=align)
        ref = []
        for yi in range(h):
            for xi in range(w):
                for rng, size in zip(ranges, sizes):
                    sx, sy = (rng[3] - rng[0]) / w, (rng[4] - rng[1]) / h
                    off = 0.0 if align else 0.5
                    for r in rots:
                        ref.append([rng[0] + (xi + off) * sx, rng[1] + (yi + off) * sy, rng[2],
                                    *size, r])
        np.testing.assert_allclose(got, np.array(ref), atol=1e-6)
    # a single range is shared by all sizes
    one = aligned_anchors((h, w), ranges[:1], sizes, rots)
    assert np.all(one.reshape(h, w, 2, 3, 7)[..., 2] == np.float32(-1))


# --- box coder -----------------------------------------------------------------------------

def test_box_coder_round_trip_and_hand_case():
    rng = np.random.default_rng(0)
    anchors = np.c_[rng.uniform(0, 70, (500, 2)), rng.uniform(-2, 0, 500),
                    rng.uniform(0.5, 4, (500, 3)), rng.uniform(-3, 3, 500)]
    boxes = anchors + np.c_[rng.normal(0, 1, (500, 3)), np.zeros((500, 3)),
                            rng.normal(0, 1, 500)]
    boxes[:, 3:6] = anchors[:, 3:6] * rng.uniform(0.5, 2, (500, 3))
    deltas = encode(anchors, boxes)
    np.testing.assert_allclose(decode(anchors, deltas), boxes, atol=1e-9)
    np.testing.assert_allclose(encode(anchors, decode(anchors, deltas)), deltas, atol=1e-9)
    # hand case: anchor 3.9 x 1.6 x 1.56 at bottom z -1.78
    a = np.array([[10.0, 2.0, -1.78, 3.9, 1.6, 1.56, 0.0]])
    t = np.array([[0.1, -0.2, 0.5, math.log(1.1), 0.0, math.log(0.5), 0.3]])
    diag = math.hypot(3.9, 1.6)
    zc = 0.5 * 1.56 + (-1.78 + 0.78)
    expect = [10 + 0.1 * diag, 2 - 0.2 * diag, zc - 0.39, 3.9 * 1.1, 1.6, 0.78, 0.3]
    np.testing.assert_allclose(decode(a, t)[0], expect, atol=1e-12)
    assert decode(a.astype(np.float32), t.astype(np.float32)).dtype == np.float32


# --- NMS -----------------------------------------------------------------------------------

def _clustered_bev(rng, n, spread=3.0):
    centres = rng.uniform(0, 40, (max(n // 8, 1), 2))
    pick = rng.integers(0, len(centres), n)
    xy = centres[pick] + rng.normal(0, spread / 4, (n, 2))
    return np.c_[xy, rng.uniform(0.5, 4.5, (n, 2)), rng.uniform(-3.2, 3.2, n)]


BACKENDS = ["numpy"] + (["numba"] if HAVE_NUMBA else [])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("thr", [0.0, 0.01, 0.1, 0.5, 0.7])
def test_rotated_nms_matches_shapely_loop(thr, backend):
    rng = np.random.default_rng(int(thr * 100) + 7)
    for _ in range(3):
        bev = _clustered_bev(rng, 80)
        scores = rng.uniform(0, 1, 80)
        keep = rotated_nms(bev, scores, thr, backend=backend)
        assert keep.dtype == np.int64
        assert keep.tolist() == loop_nms(bev, scores, thr)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rotated_nms_ties_pre_post_and_empty(backend):
    def rotated_nms(*args, **kwargs):
        return _rotated_nms(*args, backend=backend, **kwargs)

    bev = np.array([[0, 0, 2, 2, 0], [0.1, 0, 2, 2, 0], [10, 0, 2, 2, 0], [10.1, 0, 2, 2, 0.1]],
                   float)
    scores = np.array([0.5, 0.5, 0.5, 0.5])
    assert rotated_nms(bev, scores, 0.1).tolist() == [0, 2]       # ties: input order
    assert rotated_nms(bev[::-1], scores, 0.1).tolist() == [0, 2]
    scores = np.array([0.1, 0.9, 0.8, 0.2])
    assert rotated_nms(bev, scores, 0.1).tolist() == [1, 2]
    assert rotated_nms(bev, scores, 0.1, post_max_size=1).tolist() == [1]
    assert rotated_nms(bev, scores, 0.1, pre_max_size=1).tolist() == [1]
    assert rotated_nms(bev, scores, 1.0).tolist() == [1, 2, 3, 0]   # nothing > 1
    assert rotated_nms(np.zeros((0, 5)), np.zeros(0), 0.1).tolist() == []


def test_aligned_nms_ignores_yaw():
    rng = np.random.default_rng(5)
    bev = _clustered_bev(rng, 60)
    scores = rng.uniform(0, 1, 60)

    def aa_iou(a, b):
        return shapely_iou([*a[:4], 0.0], [*b[:4], 0.0])

    for thr in (0.01, 0.3, 0.6):
        assert aligned_nms(bev, scores, thr).tolist() == loop_nms(bev, scores, thr, aa_iou)


@pytest.mark.parametrize("backend", BACKENDS)
def test_multiclass_nms_semantics(backend):
    rng = np.random.default_rng(11)
    n = 120
    bev = _clustered_bev(rng, n)
    boxes = np.c_[bev[:, :2], rng.uniform(-2, 0, n), bev[:, 2:4], rng.uniform(1, 2, n), bev[:, 4]]
    scores = rng.uniform(0, 0.6, (n, 3))
    dirs = rng.integers(0, 2, n)
    out_b, out_s, out_l, out_d = multiclass_nms(boxes, scores, 0.2, 0.1, 1000, True, dirs,
                                                backend=backend)
    exp_idx, exp_lab = [], []
    for k in range(3):
        idx = [i for i in range(n) if scores[i, k] > 0.2]
        keep = loop_nms(bev[idx], scores[idx, k], 0.1)
        exp_idx += [idx[j] for j in keep]
        exp_lab += [k] * len(keep)
    assert out_l.tolist() == exp_lab                       # class-major, not re-sorted
    np.testing.assert_array_equal(out_b, boxes[exp_idx])
    np.testing.assert_array_equal(out_s, scores[exp_idx, exp_lab])
    np.testing.assert_array_equal(out_d, dirs[exp_idx])
    # cut to max_num: sorted by score descending
    cut_b, cut_s, cut_l, _ = multiclass_nms(boxes, scores, 0.2, 0.1, 5, True, dirs)
    order = np.argsort(-out_s, kind="stable")[:5]
    np.testing.assert_array_equal(cut_s, out_s[order])
    np.testing.assert_array_equal(cut_l, out_l[order])
    # nothing passes
    e_b, e_s, e_l, e_d = multiclass_nms(boxes, scores, 0.9, 0.1, 50, True, dirs)
    assert e_b.shape == (0, 7) and len(e_s) == len(e_l) == len(e_d) == 0
    # axis-aligned variant runs through the same path
    a_b, _, a_l, _ = multiclass_nms(boxes, scores, 0.2, 0.1, 1000, False, None)
    assert len(a_b) == len(a_l) > 0


def test_select_topk_stable():
    vals = np.array([1.0, 3.0, 2.0, 3.0, 2.0, 0.5])
    ids = np.array([10, 11, 12, 13, 14, 15])
    assert select_topk(vals, ids, 3).tolist() == [1, 3, 2]
    assert select_topk(vals, ids, 0).tolist() == [1, 3, 2, 4, 0, 5]
    assert select_topk(vals, ids[::-1].copy(), 1).tolist() == [3]


# --- decoder -------------------------------------------------------------------------------

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
    dec = Anchor3DDecoder.from_spec(spec_with([h, w]))
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
    spec = spec_with([[20, 18], [10, 9]])
    spec["anchors"]["scales"] = [1, 2]
    dec = Anchor3DDecoder.from_spec(spec)
    lv0 = random_head(rng, 20, 18, 30)
    lv1 = random_head(rng, 10, 9, 30)
    det = dec.decode([lv0[0], lv1[0]], [lv0[1], lv1[1]], [lv0[2], lv1[2]])
    # same as a single decoder per level followed by one NMS over the union
    a = spec["anchors"]
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
    dec = Anchor3DDecoder.from_spec(spec_with([8, 6]))
    anchor_id = (3 * 6 + 2) * 6 + 4 + anchor_rot            # a Car anchor at cell (3, 2)
    det = dec.decode(*_single_anchor_head(dec, 8, 6, anchor_id, delta, dir_logits))
    assert len(det) == 1 and det.labels[0] == 2
    assert det.boxes[0, 6] == pytest.approx(expect, abs=1e-5)
    assert det.scores[0] == pytest.approx(1 / (1 + math.exp(-2.0)), rel=1e-6)
    a = KITTI_SPEC["anchors"]
    anchor = aligned_anchors((8, 6), a["ranges"], a["sizes"], a["rotations"])[anchor_id]
    np.testing.assert_allclose(det.boxes[0, :6], anchor[:6], atol=1e-6)


def test_empty_when_nothing_passes_score_thr():
    dec = Anchor3DDecoder.from_spec(spec_with([16, 12]))
    rng = np.random.default_rng(9)
    cls, bbox, dirp = random_head(rng, 16, 12, n_above=0)
    cls[:] = np.minimum(cls, np.float32(-2.3))                     # sigmoid(-2.3) = 0.091
    det = dec.decode([cls], [bbox], [dirp])
    assert len(det) == 0 and det.boxes.shape == (0, 7) and det.labels.dtype == np.int64


def test_shape_mismatch_raises_head_error():
    dec = Anchor3DDecoder.from_spec(KITTI_SPEC)
    rng = np.random.default_rng(0)
    cls, bbox, dirp = random_head(rng, 124, 108, 10)
    with pytest.raises(HeadError, match=r"\[124, 108\].*\[248, 216\]"):
        dec.decode([cls], [bbox], [dirp])
    dec = Anchor3DDecoder.from_spec(spec_with([16, 12]))
    cls, bbox, dirp = random_head(rng, 16, 12, 10)
    with pytest.raises(HeadError, match=r"bbox_pred.*\[35, 16, 12\].*\[42, 16, 12\]"):
        dec.decode([cls], [bbox[:, :35]], [dirp])
    with pytest.raises(HeadError, match="cls_score"):
        dec.decode([cls[:, :12]], [bbox], [dirp])
    with pytest.raises(HeadError, match="levels"):
        dec.decode([cls, cls], [bbox], [dirp])


def test_from_spec_errors_and_defaults():
    spec = spec_with()
    del spec["test_cfg"]["nms_thr"]
    with pytest.raises(HeadError, match="test_cfg.nms_thr"):
        Anchor3DDecoder.from_spec(spec)
    with pytest.raises(HeadError, match="anchors"):
        Anchor3DDecoder.from_spec({"class_names": ["Car"], "test_cfg": {}})

    class Wrapped:
        raw = KITTI_SPEC
    dec = Anchor3DDecoder.from_spec(Wrapped())
    dec.warmup()
    assert dec.num_anchors == 6 and dec.num_classes == 3
    assert dec.dir_offset == pytest.approx(-math.pi / 2) and dec.nms_pre == 100
