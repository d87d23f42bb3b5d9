"""CenterPointDecoder and circle NMS against a plain loop decode written from mmdet3d 1.x."""
from __future__ import annotations

import math

import numpy as np
import pytest

from admlops_ros.bundle.spec import ModelSpec
from admlops_ros.lidar.geometry import HAVE_NUMBA
from admlops_ros.lidar.heads import HeadError, decoder_from_spec
from admlops_ros.lidar.heads import select_topk
from admlops_ros.lidar.heads.center_head import CenterPointDecoder
from admlops_ros.lidar.heads.nms import NMSError, circle_nms
from tests.lidar.heads.reference import loop_nms

BACKENDS = ["numpy"] + (["numba"] if HAVE_NUMBA else [])
TASKS = [["car"], ["truck", "bus"], ["pedestrian", "cone"]]
# 0.4 m voxels over 25.6 m x 19.2 m, out_size_factor 2: a 24 x 32 head map.
VOXEL = (0.4, 0.4, 8.0)
RANGE = (-12.8, -9.6, -5.0, 12.8, 9.6, 3.0)


def spec_dict(nms_type="rotate", code_size=9, max_num=40, **test_cfg):
    cfg = {"nms_type": nms_type, "min_radius": [4.0, 6.0, 0.5], "nms_thr": 0.2,
           "score_threshold": 0.15, "pre_max_size": 30, "post_max_size": 12,
           "post_center_limit_range": [-11.0, -8.0, -10.0, 11.0, 8.0, 10.0]}
    cfg.update(test_cfg)
    return {"version": 3, "name": "cp_test", "family": "centerpoint",
            "class_names": [c for t in TASKS for c in t],
            "input": {"point_features": ["x", "y", "z", "intensity", "time"]},
            "voxelization": {"voxel_size": list(VOXEL), "point_cloud_range": list(RANGE),
                             "max_points": 20, "max_voxels": 3000},
            "center_head": {"tasks": TASKS, "out_size_factor": 2, "norm_bbox": True,
                            "max_num": max_num, "score_threshold": 0.1,
                            "post_center_range": [-12.0, -9.0, -10.0, 12.0, 9.0, 10.0]},
            "box_coder": {"type": "CenterPointBBoxCoder", "code_size": code_size},
            "test_cfg": cfg}


def head_maps(seed=0, objects=40, h=24, w=32, code_size=9):
    """Head outputs with structure: Gaussian heatmap peaks at object cells (some objects
    close together so NMS matters), sub-cell offsets, log sizes, (sin, cos) of a yaw."""
    rng = np.random.default_rng(seed)
    k_n, t_n = sum(len(t) for t in TASKS), len(TASKS)
    box_ch = code_size - 1
    cls = rng.normal(-6.0, 1.0, (1, k_n, h, w)).astype(np.float32)
    bbox = rng.normal(0.0, 0.3, (1, t_n * box_ch, h, w)).astype(np.float32)
    rot = rng.normal(0.0, 1.0, (1, t_n * 2, h, w)).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    centres = rng.uniform([0, 0], [h, w], (objects, 2))
    centres[objects // 2:] = centres[:objects - objects // 2] + rng.normal(0, 1.2, (objects - objects // 2, 2))
    for cy, cx in centres:
        k = int(rng.integers(0, k_n))
        peak = rng.uniform(0.0, 4.0)
        g = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.0 ** 2))
        cls[0, k] = np.maximum(cls[0, k], -6.0 + (peak + 6.0) * g)
    cls += rng.normal(0, 1e-3, cls.shape).astype(np.float32)  # no exact ties
    for t in range(t_n):
        c = t * box_ch
        bbox[0, c + 3:c + 6] = np.log(rng.uniform([3.5, 1.6, 1.4], [5.0, 2.2, 1.9], (h, w, 3))
                                      ).transpose(2, 0, 1)
        yaw = rng.uniform(-math.pi, math.pi, (h, w))
        amp = rng.uniform(0.5, 2.0, (h, w))
        rot[0, 2 * t], rot[0, 2 * t + 1] = amp * np.sin(yaw), amp * np.cos(yaw)
    return cls, bbox, rot


# ----------------------------------------------------------------------------- reference
def _sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v))


def _inside(c, r):
    return all(r[i] <= c[i] <= r[i + 3] for i in range(3))


def reference_decode(spec, cls, bbox, rot):
    """mmdet3d 1.x predict_by_feat + CenterPointBBoxCoder.decode + circle_nms /
    get_task_detections, as plain Python loops over lists (float64)."""
    head, cfg, vox = spec.center_head, spec.test_cfg, spec.voxelization
    code = spec.box_coder.code_size
    box_ch = code - 1
    _, _, h, w = cls.shape
    out_boxes, out_scores, out_labels = [], [], []
    c0 = 0
    for t, names in enumerate(head.tasks):
        k_n = len(names)
        # _topk: per class the max_num best cells, then the max_num best of those
        per_class = []
        for k in range(k_n):
            vals = [(_sigmoid(float(cls[0, c0 + k, i // w, i % w])), i) for i in range(h * w)]
            vals.sort(key=lambda e: -e[0])
            per_class += [(s, k, i) for s, i in vals[:head.max_num]]
        per_class.sort(key=lambda e: -e[0])
        dets = []
        for score, k, i in per_class[:head.max_num]:
            y, x = i // w, i % w
            b = [float(bbox[0, t * box_ch + j, y, x]) for j in range(box_ch)]
            sx = (x + b[0]) * head.out_size_factor * vox.voxel_size[0] + vox.point_cloud_range[0]
            sy = (y + b[1]) * head.out_size_factor * vox.voxel_size[1] + vox.point_cloud_range[1]
            dims = [math.exp(v) for v in b[3:6]]
            yaw = math.atan2(float(rot[0, 2 * t, y, x]), float(rot[0, 2 * t + 1, y, x]))
            box = [sx, sy, b[2]] + dims + [yaw] + (b[6:8] if code == 9 else [])
            if score > head.score_threshold and _inside(box, head.post_center_range):
                dets.append((box, score, k))
        if cfg.nms_type == "circle":
            keep = []
            for i in range(len(dets)):      # dets are by score descending already
                if all((dets[i][0][0] - dets[j][0][0]) ** 2 + (dets[i][0][1] - dets[j][0][1]) ** 2
                       > cfg.min_radius[t] for j in keep):
                    keep.append(i)
            keep = keep[:cfg.post_max_size]
        else:
            dets = [d for d in dets if d[1] >= cfg.score_threshold]
            top = sorted(range(len(dets)), key=lambda i: -dets[i][1])[:cfg.pre_max_size]
            bev = [[dets[i][0][j] for j in (0, 1, 3, 4, 6)] for i in top]
            thr = cfg.nms_thr[t] if len(cfg.nms_thr) > 1 else cfg.nms_thr[0]
            kept = loop_nms(bev, [dets[i][1] for i in top], thr)[:cfg.post_max_size]
            keep = [top[i] for i in kept]
            if cfg.post_center_limit_range is not None:
                keep = [i for i in keep if _inside(dets[i][0], cfg.post_center_limit_range)]
        for i in keep:
            box, score, k = dets[i]
            out_boxes.append(box[:2] + [box[2] - box[5] * 0.5] + box[3:])
            out_scores.append(score)
            out_labels.append(c0 + k)
        c0 += k_n
    return (np.array(out_boxes, float).reshape(-1, code), np.array(out_scores),
            np.array(out_labels, int))


def _assert_same(det, ref, code=9):
    boxes, scores, labels = ref
    assert len(det) == len(boxes) > 0
    np.testing.assert_array_equal(det.labels, labels)
    np.testing.assert_allclose(det.scores, scores, rtol=0, atol=1e-6)
    np.testing.assert_allclose(det.boxes, boxes[:, :7], rtol=0, atol=1e-4)
    if code == 9:
        np.testing.assert_allclose(det.velocities, boxes[:, 7:9], rtol=0, atol=1e-6)
    else:
        assert det.velocities is None


# ----------------------------------------------------------------------------- decoder
@pytest.mark.parametrize("nms_type", ["circle", "rotate"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decode_matches_reference_loop(nms_type, seed):
    spec = ModelSpec.from_dict(spec_dict(nms_type))
    maps = head_maps(seed)
    det = decoder_from_spec(spec).decode(*([m] for m in maps))
    _assert_same(det, reference_decode(spec, *maps))
    assert det.class_names == spec.class_names
    assert set(det.timings_ms) == {"postprocess_select", "postprocess_nms"}


@pytest.mark.parametrize("nms_type", ["circle", "rotate"])
def test_decode_without_velocity_and_per_task_nms_thr(nms_type):
    spec = ModelSpec.from_dict(spec_dict(nms_type, code_size=7, nms_thr=[0.1, 0.3, 0.05]))
    maps = head_maps(3, code_size=7)
    det = CenterPointDecoder.from_spec(spec).decode(*maps)   # bare arrays = one level
    _assert_same(det, reference_decode(spec, *maps), code=7)


def test_max_num_truncates_before_the_threshold_and_the_range():
    """More centres pass than max_num: the coder keeps the max_num best, then filters."""
    spec = ModelSpec.from_dict(spec_dict("rotate", max_num=5, pre_max_size=1000,
                                         post_max_size=500, nms_thr=1.0))
    maps = head_maps(4, objects=60)
    det = decoder_from_spec(spec).decode(*maps)
    ref = reference_decode(spec, *maps)
    _assert_same(det, ref)
    task_of_label = np.repeat(np.arange(len(TASKS)), [len(t) for t in TASKS])
    assert np.bincount(task_of_label[det.labels]).max() == 5


def test_rotate_path_score_threshold_is_inclusive_and_applied_after_the_coder():
    spec = ModelSpec.from_dict(spec_dict("rotate", nms_thr=1.0, post_max_size=500,
                                         pre_max_size=1000))
    cls, bbox, rot = head_maps(5)
    cls[:] = -20.0
    logit = np.float32(math.log(0.15 / 0.85))
    score = np.float32(1) / (np.float32(1) + np.exp(-logit))
    cls[0, 0, 5, 5], cls[0, 0, 9, 9], cls[0, 0, 13, 13] = logit, logit - 1e-3, logit + 3.0
    dec = decoder_from_spec(spec)
    det = dec.decode(cls, bbox, rot)
    expect = {(5, 5), (13, 13)} if score >= np.float32(0.15) else {(13, 13)}
    assert len(det) == len(expect)
    dec.score_thr = 0.5            # the coder's threshold (strict), as LidarDetector sets it
    assert dec.score_thr == 0.5 and len(dec.decode(cls, bbox, rot)) == 1


def test_labels_offsets_z_bottom_and_velocity_of_one_centre():
    spec = ModelSpec.from_dict(spec_dict("circle"))
    cls, bbox, rot = head_maps(6)
    cls[:] = -20.0
    bbox[:] = 0.0
    rot[:] = 0.0
    t, k, y, x = 2, 1, 10, 20                       # task 2 class 1 = label 1 + 2 + 1 = 4
    cls[0, 3 + k, y, x] = 2.0
    c = t * 8
    bbox[0, c:c + 8, y, x] = [0.25, 0.75, 0.4, math.log(0.5), math.log(0.6), math.log(1.8),
                              1.5, -0.5]
    rot[0, 2 * t:2 * t + 2, y, x] = [1.0, 0.0]       # sin, cos: yaw pi/2
    det = decoder_from_spec(spec).decode(cls, bbox, rot)
    assert det.label_names() == ("cone",)
    np.testing.assert_allclose(
        det.boxes[0], [(20.25 * 2 * 0.4) - 12.8, (10.75 * 2 * 0.4) - 9.6, 0.4 - 0.9, 0.5, 0.6,
                       1.8, math.pi / 2], atol=1e-5)
    np.testing.assert_allclose(det.velocities[0], [1.5, -0.5])
    np.testing.assert_allclose(det.scores, [1 / (1 + math.exp(-2.0))], rtol=1e-6)


def test_empty_maps_give_empty_detections():
    for nms_type in ("circle", "rotate"):
        dec = decoder_from_spec(ModelSpec.from_dict(spec_dict(nms_type)))
        cls, bbox, rot = head_maps(7)
        cls[:] = -30.0
        det = dec.decode(cls, bbox, rot)
        assert len(det) == 0 and det.velocities.shape == (0, 2)


def test_shape_mismatches_name_the_numbers():
    dec = decoder_from_spec(ModelSpec.from_dict(spec_dict()))
    cls, bbox, rot = head_maps(8)
    with pytest.raises(HeadError, match=r"bbox_pred has shape \[C, H, W\] = \[18, 24, 32\] but "
                                        r"3 tasks x \(reg 2, height 1, dim 3, vel 2\)"):
        dec.decode(cls, bbox[:, :18], rot)
    with pytest.raises(HeadError, match=r"cls_score has shape .*\[4, 24, 32\].*5 classes"):
        dec.decode(cls[:, :4], bbox, rot)
    with pytest.raises(HeadError, match=r"head map \[H, W\] = \[12, 16\] but .* \[24, 32\]"):
        dec.decode(cls[..., ::2, ::2], bbox[..., ::2, ::2], rot[..., ::2, ::2])
    with pytest.raises(HeadError, match="one output level"):
        dec.decode([cls, cls], [bbox, bbox], [rot, rot])


def test_heatmap_topk_orders_ties_by_flat_id():
    scores = np.array([0.5, 0.9, 0.5, 0.7, 0.5], np.float32)
    ids = np.array([40, 3, 10, 7, 2])
    assert select_topk(scores, ids, 3).tolist() == [1, 3, 4]
    assert select_topk(scores, ids, 10).tolist() == [1, 3, 4, 2, 0]


# ----------------------------------------------------------------------------- circle NMS
def _loop_circle(xy, scores, thr, post):
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep = []
    for i in order:
        if all(float(np.float32(xy[i][0] - xy[j][0]) ** 2 + np.float32(xy[i][1] - xy[j][1]) ** 2)
               > thr for j in keep):
            keep.append(i)
    return keep[:post]


@pytest.mark.parametrize("backend", BACKENDS)
def test_circle_nms_matches_loop(backend):
    rng = np.random.default_rng(11)
    for thr in (0.175, 1.0, 4.0, 12.0):
        xy = rng.uniform(0, 20, (150, 2)).astype(np.float32)
        scores = rng.uniform(0, 1, 150).astype(np.float32)
        keep = circle_nms(xy, scores, thr, 83, backend=backend)
        assert keep.dtype == np.int64
        assert keep.tolist() == _loop_circle(xy, scores, thr, 83)


@pytest.mark.parametrize("backend", BACKENDS)
def test_circle_nms_squared_distance_inclusive_ties_and_empty(backend):
    xy = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.5], [9.0, 9.0]], np.float32)
    scores = np.array([0.9, 0.8, 0.8, 0.1])
    # squared distance 4 <= 4 suppresses; 6.25 does not
    assert circle_nms(xy, scores, 4.0, backend=backend).tolist() == [0, 2, 3]
    assert circle_nms(xy, scores, 3.99, backend=backend).tolist() == [0, 1, 2, 3]
    assert circle_nms(xy, scores, 4.0, post_max_size=2, backend=backend).tolist() == [0, 2]
    assert circle_nms(xy, np.full(4, 0.5), 200.0, backend=backend).tolist() == [0]
    assert circle_nms(np.zeros((0, 2)), np.zeros(0), 1.0, backend=backend).tolist() == []
    with pytest.raises(NMSError, match=r"centres \[N, 2\]"):
        circle_nms(np.zeros((3, 3)), np.zeros(3), 1.0)


def test_saturated_sigmoid_keeps_the_first_cells_in_position_order():
    """Logits so large that every float32 sigmoid is 1.0: the top-K are ties, taken in
    (class, cell) order, not by the (larger) logit."""
    data = spec_dict("rotate", max_num=6, nms_thr=1.0, post_max_size=500, pre_max_size=1000,
                     post_center_limit_range=None)
    data["center_head"]["post_center_range"] = [-50.0, -50.0, -10.0, 50.0, 50.0, 10.0]
    spec = ModelSpec.from_dict(data)
    cls, bbox, rot = head_maps(9)
    cls[:] = -30.0
    cls[0, 0] = 40.0 + np.arange(24 * 32, dtype=np.float32).reshape(24, 32) * 0.01
    det = decoder_from_spec(spec).decode(cls, bbox, rot)
    assert np.all(det.scores == 1.0) and len(det) == 6
    cells = np.arange(6)
    expect_x = (cells + bbox[0, 0, 0, :6]) * 2 * 0.4 - 12.8
    np.testing.assert_allclose(det.boxes[:, 0], expect_x, atol=1e-5)
