"""nuScenes-style PointPillars decoding (several levels, multi-range anchors, 9-value codes with
velocity) against a straightforward mmdet3d ``Anchor3DHead._predict_by_feat_single``."""
from __future__ import annotations

import copy
import math
from typing import Dict, List, Sequence

import numpy as np
import pytest

from admlops_ros.bundle.spec import ModelSpec
from admlops_ros.lidar.heads import Anchor3DDecoder, HeadError, decoder_from_spec
from tests.lidar.heads.reference import poly

NUS_CLASSES = ["car", "truck", "trailer", "bus", "construction_vehicle", "bicycle",
               "motorcycle", "pedestrian", "traffic_cone", "barrier"]
NUS_TEST_CFG = {"use_rotate_nms": True, "nms_across_levels": False, "nms_pre": 1000,
                "nms_thr": 0.2, "score_thr": 0.05, "min_bbox_size": 0, "max_num": 500}
FPN_SIZES = [[2.5981, 0.8660, 1.0], [1.7321, 0.5774, 1.0], [1.0, 1.0, 1.0], [0.4, 0.4, 1.0]]
SECFPN_Z = [-1.80032795, -1.74440365, -1.68526504, -1.67339111, -1.61785072, -1.80984986,
            -1.763965]
SECFPN_SIZES = [[4.60718145, 1.95017717, 1.72270761], [6.73778078, 2.4560939, 2.73004906],
                [12.01320693, 2.87427237, 3.81509561], [1.68452161, 0.60058911, 1.27192197],
                [0.7256437, 0.66344886, 1.75748069], [0.40359262, 0.39694519, 1.06232151],
                [0.48578221, 2.49008838, 0.98297065]]


def nus_fpn_spec(half: float = 50.0, voxel: float = 0.25, **test_cfg) -> Dict:
    """pointpillars_hv_fpn_nus.py as a spec.yaml mapping, on a +-half metre square."""
    canvas = int(round(2 * half / voxel))
    return {
        "version": 3, "name": "nus_fpn", "family": "pointpillars", "class_names": NUS_CLASSES,
        "input": {"point_features": ["x", "y", "z", "time"]},
        "voxelization": {"voxel_size": [voxel, voxel, 8.0],
                         "point_cloud_range": [-half, -half, -5.0, half, half, 3.0],
                         "max_points": 64, "max_voxels": 40000},
        "anchors": {"ranges": [[-half, -half, -1.8, half, half, -1.8]], "sizes": FPN_SIZES,
                    "rotations": [0.0, 1.57], "align_corner": False,
                    "feature_map_size": [[canvas // 2] * 2, [canvas // 4] * 2,
                                         [canvas // 8] * 2],
                    "scales": [1.0, 2.0, 4.0], "custom_values": [0.0, 0.0]},
        "box_coder": {"type": "DeltaXYZWLHRBBoxCoder", "code_size": 9},
        "head": {"use_direction_classifier": True, "dir_offset": -0.7854,
                 "dir_limit_offset": 0.0},
        "test_cfg": dict(NUS_TEST_CFG, **test_cfg),
        "engine": {"output_layout": "mmdeploy-1.2"},
    }


def nus_secfpn_spec(half: float = 49.6, voxel: float = 0.248, **test_cfg) -> Dict:
    """pointpillars_hv_secfpn_sbn-all_8xb4-2x_nus-3d.py: one range per size, one level."""
    spec = nus_fpn_spec(**test_cfg)
    canvas = int(round(2 * half / voxel))
    spec["name"] = "nus_secfpn"
    spec["voxelization"].update(voxel_size=[voxel, voxel, 8.0],
                                point_cloud_range=[-half, -half, -5.0, half, half, 3.0])
    spec["anchors"].update(ranges=[[-half, -half, z, half, half, z] for z in SECFPN_Z],
                           sizes=SECFPN_SIZES, feature_map_size=[canvas // 2] * 2,
                           scales=[1.0])
    return spec


# ----------------------------------------------------------------------------- reference
def loop_nms(bev: np.ndarray, scores: np.ndarray, thr: float) -> List[int]:
    """Greedy rotated NMS: visit by score (stable), keep unless the shapely IoU with a kept
    box is > thr. Boxes whose circumscribed circles are apart cannot overlap: not compared."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    radius = 0.5 * np.hypot(bev[:, 2], bev[:, 3])
    polys = [poly(b) for b in bev]

    def iou(i: int, j: int) -> float:
        inter = polys[i].intersection(polys[j]).area
        return inter / (polys[i].area + polys[j].area - inter)

    keep: List[int] = []
    for i in order:
        if keep:
            kept = np.asarray(keep)
            near = np.hypot(bev[kept, 0] - bev[i, 0], bev[kept, 1] - bev[i, 1]) < \
                radius[kept] + radius[i]
            if any(iou(i, j) > thr for j in kept[near]):
                continue
        keep.append(i)
    return keep


def reference_anchors(fms, ranges, sizes, rotations, scale, code_size) -> np.ndarray:
    """mmdet3d AlignedAnchor3DRangeGenerator (align_corner False, size_per_range True) of one
    level: per range/size, float32 linspace(min, max, n + 1) shifted by half a step, first n;
    rows ordered (H, W, size, rotation); custom columns are zeros (mmdet3d ignores the values)."""
    h, w = fms
    if len(ranges) == 1:
        ranges = list(ranges) * len(sizes)
    rows = np.zeros((h, w, len(sizes), len(rotations), code_size), np.float32)
    for s, (rng, size) in enumerate(zip(ranges, sizes)):
        xs = np.linspace(rng[0], rng[3], w + 1, dtype=np.float32)
        ys = np.linspace(rng[1], rng[4], h + 1, dtype=np.float32)
        xs, ys = xs + (xs[1] - xs[0]) / 2, ys + (ys[1] - ys[0]) / 2
        for r, rot in enumerate(rotations):
            rows[:, :, s, r, 0] = xs[None, :w]
            rows[:, :, s, r, 1] = ys[:h, None]
            rows[:, :, s, r, 2] = rng[2]
            rows[:, :, s, r, 3:6] = np.asarray(size, np.float32) * np.float32(scale)
            rows[:, :, s, r, 6] = rot
    return rows.reshape(-1, code_size)


def reference_decode(spec: Dict, cls_l, box_l, dir_l):
    """Straightforward mmdet3d Anchor3DHead._predict_by_feat_single + box3d_multiclass_nms.

    Returns a list of (box [7], velocity [2] or None, score, label) in output order.
    """
    a, cfg, head = spec["anchors"], spec["test_cfg"], spec["head"]
    k_n, code = len(spec["class_names"]), spec["box_coder"]["code_size"]
    fms_list = a["feature_map_size"]
    if not isinstance(fms_list[0], list):
        fms_list = [fms_list]
    boxes, scores, dirs = [], [], []
    for level, (cls, box, dirp) in enumerate(zip(cls_l, box_l, dir_l)):
        anchors = reference_anchors(fms_list[level], a["ranges"], a["sizes"], a["rotations"],
                                    a["scales"][level], code)
        logits = cls[0].transpose(1, 2, 0).reshape(-1, k_n)
        sc = np.float32(1.0) / (np.float32(1.0) + np.exp(-logits))     # float32, as torch
        deltas = box[0].transpose(1, 2, 0).reshape(-1, code).astype(np.float64)
        dl = dirp[0].transpose(1, 2, 0).reshape(-1, 2).argmax(axis=1)
        assert len(anchors) == len(sc)
        if 0 < cfg["nms_pre"] < len(sc):
            sel = np.argsort(-sc.max(axis=1), kind="stable")[:cfg["nms_pre"]]
        else:
            sel = np.arange(len(sc))
        for i in sel:                                    # DeltaXYZWLHRBBoxCoder.decode
            xa, ya, za, wa, la, ha, ra = (float(v) for v in anchors[i, :7])
            xt, yt, zt, wt, lt, ht, rt = deltas[i, :7]
            diag = math.sqrt(wa * wa + la * la)
            zc = za + ha / 2
            hg = math.exp(ht) * ha
            boxes.append([xt * diag + xa, yt * diag + ya, zt * ha + zc - hg / 2,
                          math.exp(wt) * wa, math.exp(lt) * la, hg, rt + ra]
                         + [deltas[i, j] + float(anchors[i, j]) for j in range(7, code)])
            scores.append(sc[i])
            dirs.append(int(dl[i]))
    boxes, scores = np.array(boxes), np.array(scores)
    out = []
    for k in range(k_n):                                 # box3d_multiclass_nms
        idx = [j for j in range(len(boxes)) if scores[j, k] > cfg["score_thr"]]
        if not idx:
            continue
        bev = boxes[idx][:, [0, 1, 3, 4, 6]]
        for j in loop_nms(bev, scores[idx, k], cfg["nms_thr"]):
            out.append((boxes[idx[j]].copy(), scores[idx[j], k], k, dirs[idx[j]]))
    if len(out) > cfg["max_num"]:
        out = sorted(out, key=lambda o: -o[1])[:cfg["max_num"]]
    result = []
    for box, score, k, d in out:
        off, lim = head["dir_offset"], head["dir_limit_offset"]
        yaw = box[6] - off
        yaw = yaw - math.floor(yaw / math.pi + lim) * math.pi
        box[6] = yaw + off + math.pi * d
        result.append((box[:7], box[7:9] if code >= 9 else None, score, k))
    return result


def structured_head(rng, fms_list: Sequence, a_n: int, k_n: int, code: int,
                    objects: int = 10, hot_cells: int = 2, clutter: int = 40):
    """Head outputs with the structure of a real frame: background logits near -9 and
    ``clutter`` isolated anchors of one level above the threshold; a few
    objects, each a block of neighbouring cells where every anchor scores one class high
    (and a second class lower), with box deltas near zero (so neighbours overlap and NMS
    suppresses) and velocities; some objects repeated on the next level at the same place."""
    levels = []
    for h, w in fms_list:
        levels.append([rng.normal(-9.0, 1.2, (1, a_n * k_n, h, w)).astype(np.float32),
                       rng.normal(0.0, 0.05, (1, a_n * code, h, w)).astype(np.float32),
                       rng.normal(0.0, 1.0, (1, a_n * 2, h, w)).astype(np.float32)])
    for o in range(objects):
        lv = o % len(levels)
        h, w = fms_list[lv]
        ci, cj = rng.integers(0, h), rng.integers(0, w)
        k, k2 = rng.choice(k_n, 2, replace=False)
        vel = rng.normal(0, 3, 2)
        for rep in (lv, lv + 1) if (o % 3 == 0 and lv + 1 < len(levels)) else (lv,):
            ratio = fms_list[rep][0] / h
            i0, j0 = int(ci * ratio), int(cj * ratio)
            cls, box, _ = levels[rep]
            hh, ww = fms_list[rep]
            for i in range(max(0, i0 - hot_cells), min(hh, i0 + hot_cells + 1)):
                for j in range(max(0, j0 - hot_cells), min(ww, j0 + hot_cells + 1)):
                    for a in range(a_n):
                        cls[0, a * k_n + k, i, j] = rng.uniform(-3.0, 4.0)
                        cls[0, a * k_n + k2, i, j] = rng.uniform(-4.0, 0.0)
                        if code >= 9:
                            box[0, a * code + 7:a * code + 9, i, j] = vel + rng.normal(0, .1, 2)
    flat = levels[0][0].reshape(-1)
    flat[rng.choice(flat.size, clutter, replace=False)] = rng.uniform(-2.5, 1.0, clutter)
    return tuple(zip(*levels))


def _canonical(labels, scores, boxes):
    """Detection order with exact float32 score ties broken by position (mmdet3d's torch
    sorts leave the order of equal scores unspecified)."""
    return np.lexsort((boxes[:, 1], boxes[:, 0], -scores, labels))


def _check_against_reference(det, ref, max_num):
    assert len(det) == len(ref) > 0
    # output order: class-major and by score inside a class, or by score alone after the
    # max_num cut (box3d_multiclass_nms)
    if len(det) == max_num:
        assert np.all(np.diff(det.scores) <= 0)
    else:
        assert np.all(np.diff(det.labels) >= 0)
        same = np.diff(det.labels) == 0
        assert np.all(np.diff(det.scores)[same] <= 0)
    ref_boxes = np.array([r[0] for r in ref])
    ref_scores = np.array([r[2] for r in ref], np.float32)
    ref_labels = np.array([r[3] for r in ref])
    i = _canonical(det.labels, det.scores, det.boxes)
    j = _canonical(ref_labels, ref_scores, ref_boxes)
    det = det.select(i)
    ref = [ref[k] for k in j]
    np.testing.assert_array_equal(det.labels, [r[3] for r in ref])
    np.testing.assert_allclose(det.scores, [r[2] for r in ref], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(det.boxes, np.array([r[0] for r in ref]), atol=2e-4)
    if ref[0][1] is None:
        assert det.velocities is None
    else:
        assert det.velocities is not None and det.velocities.dtype == np.float32
        np.testing.assert_allclose(det.velocities, np.array([r[1] for r in ref]), atol=1e-5)


def _decode_both(spec_dict, seed, objects=10):
    spec = ModelSpec.from_dict(copy.deepcopy(spec_dict))
    dec = decoder_from_spec(spec)
    assert isinstance(dec, Anchor3DDecoder)
    rng = np.random.default_rng(seed)
    cls_l, box_l, dir_l = structured_head(rng, spec.anchors.feature_map_sizes,
                                          spec.anchors.num_anchors, spec.num_classes,
                                          spec.box_coder.code_size, objects)
    det = dec.decode(list(cls_l), list(box_l), list(dir_l))
    ref = reference_decode(spec_dict, cls_l, box_l, dir_l)
    _check_against_reference(det, ref, spec.test_cfg.max_num)
    _, cand, _ = dec.select(list(cls_l), list(box_l), list(dir_l))
    assert (cand > spec.test_cfg.score_thr).sum() > 2 * len(det)    # NMS really suppresses
    return det, ref


@pytest.mark.parametrize("seed", [0, 1])
def test_fpn_three_levels_matches_reference(seed):
    # 48x48 canvas -> levels 24, 12, 6 (8 anchors: 4608, 1152, 288); nms_pre 400 cuts the
    # first two levels and keeps the third whole, in anchor order
    spec = nus_fpn_spec(half=9.6, voxel=0.4, nms_pre=400)
    det, ref = _decode_both(spec, seed, objects=12)
    assert det.class_names == tuple(NUS_CLASSES)
    assert len(set(det.labels.tolist())) > 2


def test_fpn_full_nuscenes_shapes_matches_reference():
    spec = nus_fpn_spec()                           # 200x200, 100x100, 50x50; nms_pre 1000
    det, ref = _decode_both(spec, 5, objects=20)


@pytest.mark.parametrize("seed", [2, 3])
def test_secfpn_multi_range_matches_reference(seed):
    # 7 ranges/sizes x 2 rotations = 14 anchors per cell, each scoring the 10 classes
    spec = nus_secfpn_spec(half=9.92, voxel=0.496, nms_pre=300)   # canvas 40 -> map 20x20
    det, ref = _decode_both(spec, seed, objects=8)


def test_max_num_cut_sorts_by_score_across_classes():
    spec = nus_fpn_spec(half=9.6, voxel=0.4, nms_pre=400, max_num=7)
    det, ref = _decode_both(spec, 7, objects=12)
    assert len(det) == 7 and np.all(np.diff(det.scores) <= 0)


def test_lyft_style_code7_has_no_velocity():
    spec = nus_fpn_spec(half=9.6, voxel=0.4, nms_pre=400)
    spec["anchors"].pop("custom_values")
    spec["box_coder"]["code_size"] = 7
    det, ref = _decode_both(spec, 8)


def test_velocity_is_the_decoded_custom_columns():
    """One hot anchor: velocity = its two extra deltas (anchor columns are zero)."""
    spec = ModelSpec.from_dict(nus_fpn_spec(half=9.6, voxel=0.4))
    dec = Anchor3DDecoder.from_spec(spec)
    a_n, k_n = dec.num_anchors, dec.num_classes
    fms = spec.anchors.feature_map_sizes
    cls = [np.full((1, a_n * k_n, h, w), -20.0, np.float32) for h, w in fms]
    box = [np.zeros((1, a_n * 9, h, w), np.float32) for h, w in fms]
    drs = [np.zeros((1, a_n * 2, h, w), np.float32) for h, w in fms]
    cls[1][0, 3 * k_n + 7, 5, 6] = 2.0                 # level 1, anchor 3, pedestrian
    box[1][0, 3 * 9 + 7:3 * 9 + 9, 5, 6] = [1.5, -0.25]
    det = dec.decode(cls, box, drs)
    assert len(det) == 1 and det.label_names() == ("pedestrian",)
    np.testing.assert_allclose(det.velocities, [[1.5, -0.25]])
    anchor = dec.anchors_for(1, fms[1], 3)[(5 * fms[1][1] + 6) * a_n + 3]
    np.testing.assert_allclose(det.boxes[0, :2], anchor[:2], atol=1e-6)
    np.testing.assert_allclose(det.boxes[0, 3:6], anchor[3:6], rtol=1e-6)
    assert anchor[3] == pytest.approx(FPN_SIZES[1][0] * 2.0)   # size 1 rot 1 at scale 2
    assert anchor[6] == pytest.approx(1.57)
    assert np.all(anchor[7:] == 0)


def test_runtime_anchors_equal_reference_anchors():
    spec = nus_secfpn_spec(half=9.92, voxel=0.496)
    dec = decoder_from_spec(ModelSpec.from_dict(spec))
    a = spec["anchors"]
    ref = reference_anchors(a["feature_map_size"], a["ranges"], a["sizes"], a["rotations"],
                            1.0, 9)
    np.testing.assert_allclose(dec.anchors_for(0, tuple(a["feature_map_size"]), 1), ref,
                               atol=2e-6)


def test_level_count_mismatch_is_an_error():
    spec = ModelSpec.from_dict(nus_fpn_spec(half=9.6, voxel=0.4))
    dec = Anchor3DDecoder.from_spec(spec)
    a_n, k_n = dec.num_anchors, dec.num_classes
    h, w = spec.anchors.feature_map_sizes[0]
    with pytest.raises(HeadError, match="levels"):   # an mmdeploy < 1.2 export: level 0 only
        dec.decode([np.zeros((1, a_n * k_n, h, w), np.float32)],
                   [np.zeros((1, a_n * 9, h, w), np.float32)],
                   [np.zeros((1, a_n * 2, h, w), np.float32)])

