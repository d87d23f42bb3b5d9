"""KITTI-style AP metrics: hand-computed AP, devkit semantics, edge cases."""
from __future__ import annotations

import math

import numpy as np
import pytest

from admlops_ros.evaluation.frames import FrameGT, FramePred, MetricsError
from admlops_ros.evaluation.matching import box_overlaps
from admlops_ros.evaluation.metrics import evaluate
from admlops_ros.evaluation.protocol import EvalConfig
from tests.evaluation.boxes import car

pytestmark = pytest.mark.usefixtures("geometry")


CAR = np.array([10.0, 0.0, -1.6, 4.0, 2.0, 1.5, 0.0])


def scene(n_frames=30, seed=0):
    """Frames with 2 cars, 1 pedestrian, 1 cyclist each at random places (no overlaps)."""
    rng = np.random.default_rng(seed)
    gts = []
    for f in range(n_frames):
        xs = rng.permutation(np.arange(5.0, 70.0, 7.0))[:4]
        ys = rng.uniform(-20, 20, 4)
        boxes = np.stack([car(xs[0], ys[0], yaw=rng.uniform(-3, 3)),
                          car(xs[1], ys[1], yaw=rng.uniform(-3, 3)),
                          np.array([xs[2], ys[2], -1.6, 0.8, 0.6, 1.7, rng.uniform(-3, 3)]),
                          np.array([xs[3], ys[3], -1.6, 1.8, 0.6, 1.7, rng.uniform(-3, 3)])])
        gts.append(FrameGT(boxes, ["Car", "Car", "Pedestrian", "Cyclist"], frame_id=str(f)))
    return gts


def test_perfect_predictions_give_ap_100():
    """(The devkit samples one threshold per TP score, so AP 100 needs >= 40 gt per class.)"""
    gts = scene(45)
    preds = [FramePred(g.boxes, np.linspace(0.9, 0.6, len(g)), g.names, frame_id=g.frame_id)
             for g in gts]
    res = evaluate(gts, preds)
    assert res.difficulty_mode == "distance"
    for cls in ("Car", "Pedestrian", "Cyclist"):
        for metric in ("bev", "3d"):
            assert res.ap(metric, cls, "all") == pytest.approx(100.0)
            assert res.ap(metric, cls, "all", kind="R11") == pytest.approx(100.0)
            assert res.ap(metric, cls, "all", iou_set="loose") == pytest.approx(100.0)
        op = res.operating["strict"][cls]
        assert op["precision"] == 1.0 and op["recall"] == 1.0
        assert op["mean_translation_error_m"] == pytest.approx(0.0, abs=1e-9)
        assert op["mean_scale_error"] == pytest.approx(0.0, abs=1e-9)
        assert op["mean_orientation_error_rad"] == pytest.approx(0.0, abs=1e-9)
    assert res.mean_ap("3d") == pytest.approx(100.0)


def test_shifted_box_passes_loose_fails_strict():
    gts = [FrameGT(car(x=10.0 + 10 * i)[None], ["Car"]) for i in range(50)]
    preds = [FramePred(car(x=11.0 + 10 * i)[None], [0.9], ["Car"]) for i in range(50)]  # IoU 0.6
    res = evaluate(gts, preds, EvalConfig(classes=("Car",)))
    assert res.ap("3d", "Car", "all") == 0.0
    assert res.ap("3d", "Car", "all", iou_set="loose") == pytest.approx(100.0)
    op = res.operating["loose"]["Car"]
    assert op["mean_translation_error_m"] == pytest.approx(1.0)
    assert op["tp"] == 50 and op["fp"] == 0
    assert res.operating["strict"]["Car"]["fp"] == 50


def test_r40_vs_r11_hand_case():
    """2 gt; dets TP 0.9, FP 0.8, TP 0.7. Devkit thresholds [0.9, 0.7] (one per TP score):
    precision at the sample points [1, 2/3, 0, ...] -> R40 = (2/3)/40, R11 = 1/11."""
    gts = [FrameGT(np.stack([car(), car(x=30)]), ["Car", "Car"])]
    preds = [FramePred(np.stack([car(), car(x=50), car(x=30)]), [0.9, 0.8, 0.7], ["Car"] * 3)]
    res = evaluate(gts, preds, EvalConfig(classes=("Car",)))
    assert res.ap("3d", "Car", "all") == pytest.approx(100 * (2 / 3) / 40)
    assert res.ap("3d", "Car", "all", kind="R11") == pytest.approx(100 / 11)
    np.testing.assert_allclose(res.thresholds[1, 0, 0, -1, :2], [0.9, 0.7])


def test_r40_r11_many_gt():
    """40 gt over 40 frames, every 2nd frame adds a FP scoring above all TPs.

    The FP scores 0.95 (> every TP), so precision at threshold k is tp / (tp + 20);
    with 40 gt every TP is its own recall sample point (thresholds i=0..39)."""
    gts = [FrameGT(car()[None], ["Car"]) for _ in range(40)]
    preds = []
    for i in range(40):
        boxes, scores = [car()], [0.9 - i * 0.01]
        if i % 2 == 0:
            boxes.append(car(x=40))
            scores.append(0.95)
        preds.append(FramePred(np.stack(boxes), scores, ["Car"] * len(boxes)))
    res = evaluate(gts, preds, EvalConfig(classes=("Car",)))
    p = np.array([(k + 1) / (k + 1 + 20) for k in range(40)])
    p = np.maximum.accumulate(p[::-1])[::-1]
    prec = np.zeros(41)
    prec[:40] = p
    assert res.ap("3d", "Car", "all") == pytest.approx(prec[1:].sum() / 40 * 100)
    assert res.ap("3d", "Car", "all", kind="R11") == pytest.approx(prec[::4].sum() / 11 * 100)


def test_empty_ground_truth_is_nan_and_empty_predictions_zero():
    gts = [FrameGT(np.zeros((0, 7)), []) for _ in range(3)]
    preds = [FramePred(car()[None], [0.9], ["Car"]) for _ in range(3)]
    res = evaluate(gts, preds)
    assert math.isnan(res.ap("3d", "Car"))
    assert math.isnan(res.mean_ap("3d"))
    assert res.operating["strict"]["Car"]["fp"] == 3
    assert res.to_dict()["ap"]["R40"]["3d"]["strict"]["Car"]["all"] is None
    gts = [FrameGT(car()[None], ["Car"]) for _ in range(3)]
    preds = [FramePred.empty() for _ in range(3)]
    res = evaluate(gts, preds)
    assert res.ap("3d", "Car") == 0.0
    assert res.operating["strict"]["Car"]["recall"] == 0.0
    assert math.isnan(res.operating["strict"]["Car"]["precision"])
    assert math.isnan(res.ap("3d", "Pedestrian"))
    res = evaluate([], [])
    assert res.num_frames == 0 and math.isnan(res.ap("bev", "Car"))
    assert "Car" in res.table()


def test_neighbour_and_ignored_gt_are_not_false_positives():
    # a Car prediction on a Van, and one on an ignored Car: neither TP nor FP
    gts = [FrameGT(np.stack([car(), car(x=30), car(x=50)]), ["Van", "Car", "Car"],
                   ignore=[False, True, False])]
    preds = [FramePred(np.stack([car(), car(x=30), car(x=50)]), [0.9, 0.8, 0.7], ["Car"] * 3)]
    res = evaluate(gts, preds, EvalConfig(classes=("Car",)))
    op = res.operating["strict"]["Car"]
    assert (op["tp"], op["fp"], op["fn"]) == (1, 0, 0)
    assert res.num_gt[0, res.difficulties.index("all")] == 1
    # a prediction on a Truck (another class) is a false positive for Car
    gts = [FrameGT(np.stack([car(), car(x=50)]), ["Truck", "Car"])]
    res = evaluate(gts, [FramePred(np.stack([car(), car(x=50)]), [0.9, 0.7], ["Car"] * 2)],
                   EvalConfig(classes=("Car",)))
    assert res.operating["strict"]["Car"]["fp"] == 1


def test_distance_bands():
    gts = [FrameGT(np.stack([car(x=10), car(x=30), car(x=60)]), ["Car"] * 3) for _ in range(45)]
    preds = [FramePred(np.stack([car(x=10), car(x=31.5)]), [0.9, 0.8], ["Car"] * 2)
             for _ in range(45)]
    res = evaluate(gts, preds, EvalConfig(classes=("Car",)))
    assert res.difficulties == ["0-20m", "20-40m", "40m+", "all"]
    assert res.ap("3d", "Car", "0-20m") == pytest.approx(100.0)
    assert res.ap("3d", "Car", "20-40m") == 0.0
    assert res.ap("3d", "Car", "20-40m", iou_set="loose") == 0.0  # IoU 2.5/5.5 < 0.5
    assert res.ap("3d", "Car", "40m+") == 0.0
    assert 0.0 < res.ap("3d", "Car", "all") < 100.0
    assert list(res.num_gt[0]) == [45, 45, 45, 135]


def kitti_frame(heights, occluded, truncated, names=None):
    n = len(heights)
    boxes = np.stack([car(x=10 + 10 * i) for i in range(n)])
    bbox = np.stack([[100, 100, 200, 100 + h] for h in heights]).astype(float)
    return FrameGT(boxes, names or ["Car"] * n, bbox2d=bbox, occluded=occluded,
                   truncated=truncated)


def test_kitti_difficulty_rules():
    # easy: h>40, occ<=0, trunc<=0.15; moderate: h>25, occ<=1, trunc<=0.3; hard: occ<=2, <=0.5
    g = kitti_frame([50, 30, 30, 50, 25], [0, 1, 2, 0, 0], [0.0, 0.2, 0.4, 0.6, 0.0])
    res = evaluate([g], [FramePred.empty()], EvalConfig(classes=("Car",)))
    assert res.difficulty_mode == "kitti"
    assert res.difficulties == ["easy", "moderate", "hard"]
    assert list(res.num_gt[0]) == [1, 2, 3]  # height 25 is not > 25; truncation 0.6 never


def test_bbox_metric_and_dontcare():
    g = kitti_frame([50], [0], [0.0])
    g.dontcare_bbox2d = np.array([[500, 100, 600, 200.0]])
    pb = np.array([[100, 100, 200, 150], [500, 100, 600, 200], [800, 100, 900, 200.0]])
    p = FramePred(np.stack([car(), car(x=40), car(x=60)]), [0.5, 0.8, 0.7], ["Car"] * 3,
                  bbox2d=pb)
    res = evaluate([g], [p], EvalConfig(classes=("Car",), metrics=("bbox", "bev", "3d")))
    assert res.metrics == ["bbox", "bev", "3d"]
    # one threshold (0.5): in 2D the DontCare-covered FP is forgiven -> precision 1/2;
    # in BEV both FPs count -> 1/3
    assert res.ap("bbox", "Car", "easy", kind="R11") == pytest.approx(100 * 0.5 / 11)
    assert res.ap("bev", "Car", "easy", kind="R11") == pytest.approx(100 / 3 / 11)


def test_shapes_validated():
    with pytest.raises(MetricsError, match="names"):
        FrameGT(np.zeros((2, 7)), ["Car"])
    with pytest.raises(MetricsError, match="2 ground-truth frames but 1"):
        evaluate([FrameGT(np.zeros((0, 7)), [])] * 2, [FramePred.empty()])
    with pytest.raises(MetricsError, match="kitti"):
        evaluate([FrameGT(np.zeros((0, 7)), [])], [FramePred.empty()],
                 EvalConfig(difficulty_mode="kitti"))


# ---- an independent, loop-by-loop transcription of the devkit as oracle ---------------------

def _oracle_ap(gts, preds, cls, min_overlap, metric):
    def clean(g, p):
        ig, idt = [], []
        for n in g.names:
            ig.append(0 if n == cls else (1 if (cls, n) in (("Car", "Van"),) else -1))
        for n in p.names:
            idt.append(0 if n == cls else -1)
        return ig, idt

    def stats(ov, ig, idt, sc, thresh, compute_fp):
        assigned = [False] * len(idt)
        tp = fp = fn = 0
        tps = []
        for i in range(len(ig)):
            if ig[i] == -1:
                continue
            det, valid, maxo = -1, None, 0.0
            for j in range(len(idt)):
                if idt[j] == -1 or assigned[j] or (compute_fp and sc[j] < thresh):
                    continue
                if not compute_fp:
                    if ov[j, i] > min_overlap and (valid is None or sc[j] > valid):
                        det, valid = j, sc[j]
                elif ov[j, i] > min_overlap and ov[j, i] > maxo and idt[j] == 0:
                    det, valid, maxo = j, 1, ov[j, i]
            if valid is None:
                fn += ig[i] == 0
            elif ig[i] == 1:
                assigned[det] = True
            else:
                tp += 1
                tps.append(sc[det])
                assigned[det] = True
        fp = sum(1 for j in range(len(idt))
                 if not (assigned[j] or idt[j] != 0 or sc[j] < thresh)) if compute_fp else 0
        return tp, fp, fn, tps

    frames = []
    n_gt = 0
    scores = []
    for g, p in zip(gts, preds):
        ov = box_overlaps(metric, p.boxes, g.boxes)
        ig, idt = clean(g, p)
        n_gt += sum(1 for v in ig if v == 0)
        frames.append((ov, ig, idt, list(p.scores)))
        scores += stats(ov, ig, idt, list(p.scores), 0, False)[3]
    scores = sorted(scores, reverse=True)
    th, cur = [], 0.0
    for i, s in enumerate(scores):
        lr = (i + 1) / n_gt
        rr = (i + 2) / n_gt if i < len(scores) - 1 else lr
        if (rr - cur) < (cur - lr) and i < len(scores) - 1:
            continue
        th.append(s)
        cur += 1 / 40.0
    prec = np.zeros(41)
    for k, t in enumerate(th):
        tp = fp = 0
        for ov, ig, idt, sc in frames:
            a, b, _, _ = stats(ov, ig, idt, sc, t, True)
            tp += a
            fp += b
        prec[k] = tp / (tp + fp)
    for k in range(len(th)):
        prec[k] = prec[k:].max()
    return prec[1:].sum() / 40 * 100, prec[::4].sum() / 11 * 100


def test_matches_devkit_transcription_on_noisy_scene():
    rng = np.random.default_rng(3)
    gts = scene(40, seed=1)
    preds = []
    for g in gts:
        keep = rng.random(len(g)) < 0.85
        boxes = g.boxes[keep].copy()
        boxes[:, :2] += rng.normal(0, 0.25, (len(boxes), 2))
        boxes[:, 6] += rng.normal(0, 0.1, len(boxes))
        names = list(np.asarray(g.names)[keep])
        fp = np.array([car(x=rng.uniform(5, 60), y=rng.uniform(-30, 30))])
        preds.append(FramePred(np.concatenate([boxes, fp]), rng.random(len(boxes) + 1),
                               names + ["Car"]))
    res = evaluate(gts, preds)
    for cls in ("Car", "Pedestrian"):
        for metric in ("bev", "3d"):
            for iou_set in ("strict", "loose"):
                ov = res.min_overlaps[metric][iou_set][cls]
                r40, r11 = _oracle_ap(gts, preds, cls, ov, metric)
                assert res.ap(metric, cls, "all", iou_set) == pytest.approx(r40), (cls, metric)
                assert res.ap(metric, cls, "all", iou_set, "R11") == pytest.approx(r11)


def test_pr_curve_points_average_to_ap_r40():
    """The plotted PR curve is the one AP|R40 averages (not the devkit's running-max recall)."""
    from admlops_ros.evaluation.report import pr_curve_points
    rng = np.random.default_rng(3)
    gts, preds = [], []
    for _ in range(30):
        boxes = np.column_stack([rng.uniform(5, 40, 4), rng.uniform(-10, 10, 4),
                                 np.full(4, -1.7), np.full(4, 3.9), np.full(4, 1.6),
                                 np.full(4, 1.5), rng.uniform(-3, 3, 4)]).astype(np.float32)
        noisy = boxes + rng.normal(0, 0.25, boxes.shape).astype(np.float32)
        fp = boxes.copy()
        fp[:, 1] += 30.0  # far from every ground truth box: false positives
        gts.append(FrameGT(boxes=boxes, names=["Car"] * 4))
        preds.append(FramePred(boxes=np.concatenate([noisy, fp[:2]]),
                               scores=rng.uniform(0.1, 1.0, 6).astype(np.float32),
                               names=["Car"] * 6))
    res = evaluate(gts, preds, EvalConfig(classes=("Car",), difficulty_mode="distance"))
    recall, precision = pr_curve_points(res, "3d", "loose", "Car")
    assert recall[0] == 0.0 and np.all(np.diff(recall) > 0)
    assert np.all(np.diff(precision) <= 1e-12)  # interpolated precision never rises
    ap = res.ap("3d", "Car", None, "loose")
    assert 0 < ap < 100
    assert precision[1:].sum() / 40.0 * 100.0 == pytest.approx(ap)
