"""metrics2d: COCO AP vs hand cases, a plain reference and pycocotools; KITTI 2D AP cases."""
from __future__ import annotations

import math
from typing import List

import numpy as np
import pytest

from admlops_ros.evaluation.metrics2d import (COCO_IOU_THRESHOLDS, COCO_RECALL_POINTS,
                                              ImageGT, ImagePred, Metrics2DError,
                                              coco_evaluate, evaluate_2d, kitti_bbox_evaluate)


def _gt(boxes, names, occ=None, trunc=None, **kw) -> ImageGT:
    n = len(names)
    return ImageGT(np.asarray(boxes, float).reshape(-1, 4), names,
                   occluded=np.zeros(n, int) if occ is None else occ,
                   truncated=np.zeros(n) if trunc is None else trunc, **kw)


def _pred(boxes, scores, names) -> ImagePred:
    return ImagePred(np.asarray(boxes, float).reshape(-1, 4), scores, names)


def _shift(box, dx):
    """The box moved right by dx px (IoU with the original: (w - dx) / (w + dx))."""
    return [box[0] + dx, box[1], box[2] + dx, box[3]]


CAR = [100.0, 100.0, 200.0, 160.0]  # 100 x 60 px: easy by height


# ---------------------------------------------------------------------------------------------
# COCO, hand-computed

def test_coco_perfect_detection_is_one():
    res = coco_evaluate([_gt([CAR], ["Car"])], [_pred([CAR], [0.9], ["Car"])], ["Car"])
    assert res.ap() == pytest.approx(1.0)
    assert res.ap("Car", 0.5) == pytest.approx(1.0)
    assert res.mean_recall() == pytest.approx(1.0)


def test_coco_iou_passes_some_thresholds():
    # width 100, shift 24: IoU 76/124 = 0.613 -> thresholds 0.5, 0.55, 0.6 pass
    res = coco_evaluate([_gt([CAR], ["Car"])], [_pred([_shift(CAR, 24)], [0.9], ["Car"])],
                        ["Car"])
    assert res.ap(iou=0.5) == pytest.approx(1.0) and res.ap(iou=0.65) == 0.0
    assert res.ap() == pytest.approx(0.3)


def test_coco_interpolated_precision_by_hand():
    a, b = CAR, [300.0, 100.0, 400.0, 160.0]
    gts = [_gt([a, b], ["Car", "Car"])]
    preds = [_pred([a, [600, 100, 700, 160], b], [0.9, 0.8, 0.7], ["Car"] * 3)]
    res = coco_evaluate(gts, preds, ["Car"])
    # recall/precision: (.5, 1), (.5, .5), (1, 2/3); monotone from the right: 1, 2/3, 2/3
    # recall points 0 .. 0.50 (51) read 1, points 0.51 .. 1 (50) read 2/3
    assert res.ap(iou=0.5) == pytest.approx((51 + 50 * 2 / 3) / 101)


def test_coco_max_dets_per_image_and_class():
    boxes = [[10.0 * i, 0, 10.0 * i + 5, 5] for i in range(150)]
    gts = [_gt([boxes[120]], ["Car"])]
    preds = [_pred(boxes, np.linspace(1.0, 0.5, 150), ["Car"] * 150)]
    assert coco_evaluate(gts, preds, ["Car"]).ap(iou=0.5) == 0.0  # the 121st det is cut
    assert coco_evaluate(gts, preds, ["Car"], max_dets=150).ap(iou=0.5) > 0.0


def test_coco_class_without_gt_is_nan_and_excluded_from_map():
    res = coco_evaluate([_gt([CAR], ["Car"])],
                        [_pred([CAR, CAR], [0.9, 0.8], ["Car", "Cyclist"])],
                        ["Car", "Pedestrian", "Cyclist"])
    assert math.isnan(res.ap("Pedestrian")) and math.isnan(res.ap("Cyclist"))
    assert res.ap() == pytest.approx(1.0)


def test_coco_ignored_gt_match_is_neither_tp_nor_fp():
    gts = [_gt([CAR, [300, 100, 400, 160]], ["Car", "Car"], ignore=np.array([False, True]))]
    preds = [_pred([[300, 100, 400, 160], CAR], [0.95, 0.9], ["Car", "Car"])]
    assert coco_evaluate(gts, preds, ["Car"]).ap() == pytest.approx(1.0)


def test_coco_min_height_is_pycocotools_area_rule_on_height():
    small = [300.0, 100.0, 320.0, 115.0]  # 15 px high
    gts = [_gt([CAR, small], ["Car", "Car"], occ=np.array([0, 0]))]
    miss_small = [_pred([CAR], [0.9], ["Car"])]
    assert coco_evaluate(gts, miss_small, ["Car"]).ap(iou=0.5) < 0.6
    assert coco_evaluate(gts, miss_small, ["Car"], min_height=25).ap(iou=0.5) == pytest.approx(1.0)
    # an unmatched low detection is ignored, a matched one to an ignored gt too
    low_fp = [_pred([[600, 0, 610, 10], CAR, small], [0.99, 0.9, 0.95], ["Car"] * 3)]
    assert coco_evaluate(gts, low_fp, ["Car"], min_height=25).ap(iou=0.5) == pytest.approx(1.0)
    occl = [_gt([CAR, [300, 100, 400, 160]], ["Car", "Car"], occ=np.array([0, 3]))]
    assert coco_evaluate(occl, miss_small, ["Car"],
                         max_occlusion=2).ap(iou=0.5) == pytest.approx(1.0)


def test_lengths_checked():
    with pytest.raises(Metrics2DError, match="prediction images"):
        coco_evaluate([_gt([CAR], ["Car"])], [], ["Car"])


# ---------------------------------------------------------------------------------------------
# COCO against a plain reference and against pycocotools

def _reference_coco(gts: List[ImageGT], preds: List[ImagePred], classes, max_dets=100):
    """Straightforward pycocotools evaluate + accumulate: precision [T, R, K] (-1 absent)."""
    def iou(a, b):
        iw = min(a[2], b[2]) - max(a[0], b[0])
        ih = min(a[3], b[3]) - max(a[1], b[1])
        if iw <= 0 or ih <= 0:
            return 0.0
        inter = iw * ih
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    T, R = len(COCO_IOU_THRESHOLDS), len(COCO_RECALL_POINTS)
    out = -np.ones((T, R, len(classes)))
    for k, c in enumerate(classes):
        for t, thr in enumerate(COCO_IOU_THRESHOLDS):
            rows = []  # (score, image index, position, tp, ignored)
            npig = 0
            for im, (g, p) in enumerate(zip(gts, preds)):
                gl = [(bool(g.ignore[i]) if g.ignore is not None else False, list(g.boxes[i]))
                      for i in range(len(g)) if g.names[i] == c]
                gl = sorted(gl, key=lambda x: x[0])  # stable: regular first
                dl = sorted([(p.scores[i], list(p.boxes[i])) for i in range(len(p))
                             if p.names[i] == c], key=lambda x: -x[0])[:max_dets]
                npig += sum(1 for ig, _ in gl if not ig)
                taken = [False] * len(gl)
                for pos, (s, db) in enumerate(dl):
                    best, m = min(thr, 1 - 1e-10), -1
                    for gi, (ig, gb) in enumerate(gl):
                        if taken[gi]:
                            continue
                        if m > -1 and not gl[m][0] and ig:
                            break
                        o = iou(db, gb)
                        if o < best:
                            continue
                        best, m = o, gi
                    if m >= 0:
                        taken[m] = True
                        rows.append((s, im, pos, True, gl[m][0]))
                    else:
                        rows.append((s, im, pos, False, False))
            if npig == 0:
                continue
            rows.sort(key=lambda r: (-r[0], r[1], r[2]))  # mergesort of the concatenation
            tp = fp = 0
            rc, pr = [], []
            for s, _, _, is_tp, ig in rows:
                if ig:
                    pass
                elif is_tp:
                    tp += 1
                else:
                    fp += 1
                rc.append(tp / npig)
                pr.append(tp / (tp + fp + np.spacing(1)))
            for i in range(len(pr) - 1, 0, -1):
                pr[i - 1] = max(pr[i - 1], pr[i])
            for ri, r in enumerate(COCO_RECALL_POINTS):
                j = next((j for j, v in enumerate(rc) if v >= r), None)
                out[t, ri, k] = pr[j] if j is not None else 0.0
    return out


def _random_set(seed: int, n_img: int = 12, ignore: bool = False):
    rng = np.random.default_rng(seed)
    classes = ["Car", "Pedestrian", "Cyclist"]
    gts, preds = [], []
    for i in range(n_img):
        m = rng.integers(0, 6)
        xy = rng.uniform(0, 800, (m, 2))
        wh = rng.uniform(10, 150, (m, 2))
        gb = np.hstack([xy, xy + wh])
        gn = list(rng.choice(classes, m))
        boxes, scores, names = [], [], []
        for b, n in zip(gb, gn):
            for _ in range(rng.integers(0, 3)):
                boxes.append(b + rng.normal(0, 0.08, 4) * np.r_[b[2:] - b[:2], b[2:] - b[:2]])
                scores.append(round(float(rng.uniform(0.05, 1)), 2))  # ties on purpose
                names.append(n if rng.uniform() > 0.15 else str(rng.choice(classes)))
        for _ in range(rng.integers(0, 4)):  # false positives
            xy = rng.uniform(0, 800, 2)
            boxes.append(np.r_[xy, xy + rng.uniform(10, 100, 2)])
            scores.append(round(float(rng.uniform(0.05, 1)), 2))
            names.append(str(rng.choice(classes)))
        ig = rng.uniform(size=m) < 0.2 if ignore else None
        gts.append(ImageGT(gb, gn, ignore=ig, frame_id=str(i)))
        preds.append(ImagePred(np.array(boxes).reshape(-1, 4), scores, names, str(i)))
    return gts, preds, classes


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ignore", [False, True])
def test_coco_matches_plain_reference(seed, ignore):
    gts, preds, classes = _random_set(seed, ignore=ignore)
    res = coco_evaluate(gts, preds, classes)
    np.testing.assert_allclose(res.precision, _reference_coco(gts, preds, classes), atol=1e-12)


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_coco_matches_pycocotools(seed):
    pytest.importorskip("pycocotools", reason="pycocotools not installed (pip install "
                                              "pycocotools to compare with the original)")
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    gts, preds, classes = _random_set(seed, n_img=20)
    images, anns, dets = [], [], []
    for i, (g, p) in enumerate(zip(gts, preds)):
        images.append({"id": i + 1, "width": 1000, "height": 1000})
        for b, n in zip(g.boxes, g.names):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id":
                         classes.index(n) + 1, "bbox": [b[0], b[1], w, h], "area": w * h,
                         "iscrowd": 0})
        for b, s, n in zip(p.boxes, p.scores, p.names):
            dets.append({"image_id": i + 1, "category_id": classes.index(n) + 1,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": anns,
                        "categories": [{"id": k + 1, "name": c} for k, c in enumerate(classes)]}
        coco.createIndex()
        cdt = coco.loadRes(dets)
        ev = COCOeval(coco, cdt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    res = coco_evaluate(gts, preds, classes)
    np.testing.assert_allclose(res.precision, ev.eval["precision"][:, :, :, 0, 2], atol=1e-9)
    assert res.ap() == pytest.approx(ev.stats[0], abs=1e-9)
    assert res.ap(iou=0.5) == pytest.approx(ev.stats[1], abs=1e-9)
    assert res.ap(iou=0.75) == pytest.approx(ev.stats[2], abs=1e-9)
    assert res.mean_recall() == pytest.approx(ev.stats[8], abs=1e-9)


# ---------------------------------------------------------------------------------------------
# KITTI 2D, hand-computed (the devkit's rules)

# The devkit samples one score threshold per true positive at most (get_thresholds), so with
# n found boxes only n of the 41 points can be non-zero: AP|R40 of one perfect box is 0 and of
# 41 is 100. The cases below repeat each image 41 times.
REPEAT = 41


def _kitti_res(gts, preds):
    return kitti_bbox_evaluate(list(gts) * REPEAT, list(preds) * REPEAT)


def _kitti(gts, preds, cls="Car", level="moderate"):
    return _kitti_res(gts, preds).ap("bbox", cls, level)


def test_kitti_single_box_is_zero_as_in_the_devkit():
    assert kitti_bbox_evaluate([_gt([CAR], ["Car"])],
                               [_pred([CAR], [0.9], ["Car"])]).ap("bbox", "Car") == 0.0
    assert kitti_bbox_evaluate([_gt([CAR], ["Car"])] * 40,
                               [_pred([CAR], [0.9], ["Car"])] * 40).ap("bbox", "Car") == 97.5


def test_kitti_perfect_car_all_levels():
    res = _kitti_res([_gt([CAR], ["Car"])], [_pred([CAR], [0.9], ["Car"])])
    for level in ("easy", "moderate", "hard"):
        assert res.ap("bbox", "Car", level) == pytest.approx(100.0)


def test_kitti_iou_threshold_per_class():
    # IoU 0.65: below Car's 0.7, above Pedestrian's 0.5
    det = _shift(CAR, 100 * 0.35 / 1.65)
    assert _kitti([_gt([CAR], ["Car"])], [_pred([det], [0.9], ["Car"])]) == 0.0
    assert _kitti([_gt([CAR], ["Pedestrian"])], [_pred([det], [0.9], ["Pedestrian"])],
                  "Pedestrian") == pytest.approx(100.0)


def test_kitti_half_recall_is_50():
    gts = [_gt([CAR, [300, 100, 400, 160]], ["Car", "Car"])]
    assert _kitti(gts, [_pred([CAR], [0.9], ["Car"])]) == pytest.approx(50.0)


def test_kitti_van_for_car_is_ignored():
    van = [300.0, 100.0, 400.0, 160.0]
    preds = [_pred([van, CAR], [0.95, 0.9], ["Car", "Car"])]
    assert _kitti([_gt([CAR, van], ["Car", "Van"])], preds) == pytest.approx(100.0)
    # the same box labelled Truck is not a neighbour: a false positive ranked first
    assert _kitti([_gt([CAR, van], ["Car", "Truck"])], preds) == pytest.approx(50.0)


def test_kitti_dontcare_region_absorbs_a_false_positive():
    fp = [300.0, 100.0, 400.0, 160.0]
    preds = [_pred([fp, CAR], [0.95, 0.9], ["Car", "Car"])]
    assert _kitti([_gt([CAR], ["Car"], dontcare=[[290, 90, 410, 170]])],
                  preds) == pytest.approx(100.0)
    assert _kitti([_gt([CAR], ["Car"])], preds) == pytest.approx(50.0)


def test_kitti_difficulty_by_height_occlusion_truncation():
    short = [100.0, 100.0, 160.0, 130.0]  # 30 px high: moderate, not easy
    res = _kitti_res([_gt([short], ["Car"])], [_pred([short], [0.9], ["Car"])])
    assert math.isnan(res.ap("bbox", "Car", "easy"))
    assert res.ap("bbox", "Car", "moderate") == pytest.approx(100.0)
    occ = _kitti_res([_gt([CAR], ["Car"], occ=np.array([2]))], [_pred([CAR], [0.9], ["Car"])])
    assert math.isnan(occ.ap("bbox", "Car", "moderate"))
    assert occ.ap("bbox", "Car", "hard") == pytest.approx(100.0)
    tr = _kitti_res([_gt([CAR], ["Car"], trunc=np.array([0.2]))], [_pred([CAR], [0.9], ["Car"])])
    assert math.isnan(tr.ap("bbox", "Car", "easy"))
    assert tr.ap("bbox", "Car", "moderate") == pytest.approx(100.0)


def test_kitti_needs_occlusion_and_truncation():
    with pytest.raises(Metrics2DError, match="occluded and truncated"):
        kitti_bbox_evaluate([ImageGT([CAR], ["Car"])], [_pred([CAR], [0.9], ["Car"])])
    res = evaluate_2d([ImageGT([CAR], ["Car"])], [_pred([CAR], [0.9], ["Car"])])
    assert res.kitti is None and res.coco.ap() == pytest.approx(1.0)
    assert "KITTI 2D AP skipped" in res.notes[0]


def test_evaluate_2d_dict_and_table():
    gts = [_gt([CAR, [300, 100, 400, 160]], ["Car", "Pedestrian"])]
    preds = [_pred([CAR, [300, 100, 400, 160]], [0.9, 0.8], ["Car", "Pedestrian"])]
    res = evaluate_2d(gts * REPEAT, preds * REPEAT)
    d = res.to_dict()
    assert d["coco"]["per_class"]["Car"]["AP50"] == 1.0
    assert d["kitti_bbox_R40"]["Car"]["moderate"] == pytest.approx(100.0)
    assert d["kitti_bbox_R40"]["Cyclist"]["moderate"] is None
    assert len(d["coco"]["per_class"]["Car"]["pr_iou50"]) == 101
    r, p = res.kitti_pr("Car")
    assert len(r) == len(p) == 41 and r[-1] == 1.0
    table = res.table()
    assert "Car" in table and "100.0" in table


def test_kitti_2d_equals_the_kitti_eval_bbox_on_label_files(tmp_path):
    """The same label/result files through kitti_eval's bbox metric give the same AP."""
    from admlops_ros.evaluation.kitti_eval import kitti_eval
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    gl = ("Car 0.00 0 0 100 100 200 160 1.5 1.6 3.9 1 1.5 20 0\n"
          "Van 0.00 0 0 300 100 400 160 2 1.8 4.5 5 1.5 20 0\n"
          "Pedestrian 0.20 1 0 500 100 530 170 1.7 0.6 0.8 -2 1.5 15 0\n"
          "DontCare -1 -1 -10 600 100 700 160 -1 -1 -1 -1000 -1000 -1000 -10\n")
    pl = ("Car 0 0 0 102 101 201 161 1.5 1.6 3.9 1 1.5 20 0 0.9\n"
          "Car 0 0 0 300 100 400 160 1.5 1.6 3.9 5 1.5 20 0 0.95\n"
          "Car 0 0 0 610 100 690 160 1.5 1.6 3.9 5 1.5 20 0 0.97\n"
          "Pedestrian 0 0 0 501 102 531 168 1.7 0.6 0.8 -2 1.5 15 0 0.6\n")
    for i in range(REPEAT):
        (gt_dir / f"{i:06d}.txt").write_text(gl)
        (pred_dir / f"{i:06d}.txt").write_text(pl)
    ref = kitti_eval(gt_dir, pred_dir)
    gts = [_gt([[100, 100, 200, 160], [300, 100, 400, 160], [500, 100, 530, 170]],
               ["Car", "Van", "Pedestrian"], occ=np.array([0, 0, 1]),
               trunc=np.array([0.0, 0.0, 0.2]), dontcare=[[600, 100, 700, 160]])]
    preds = [_pred([[102, 101, 201, 161], [300, 100, 400, 160], [610, 100, 690, 160],
                    [501, 102, 531, 168]], [0.9, 0.95, 0.97, 0.6],
                   ["Car", "Car", "Car", "Pedestrian"])]
    res = _kitti_res(gts, preds)
    for cls in ("Car", "Pedestrian"):
        for level in ("easy", "moderate", "hard"):
            a, b = res.ap("bbox", cls, level), ref.ap("bbox", cls, level)
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)
    assert res.ap("bbox", "Car", "moderate") == pytest.approx(100.0)
    assert res.ap("bbox", "Pedestrian", "moderate") == pytest.approx(100.0)
