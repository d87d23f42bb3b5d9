"""admlops mine: scoring functions on synthetic detections, ranking, and a real engine run."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from admlops_ros.data import mine as m
from admlops_ros.errors import AdmlopsError
from admlops_ros.evaluation.frames import FrameGT, FramePred
from tests.paths import REPO_ROOT

ENGINE = REPO_ROOT / "engines" / "pointpillars_sim_3class"
PCR = (0.0, -39.68, -3.0, 69.12, 39.68, 1.0)
CAR = (3.9, 1.6, 1.56)
PED = (0.8, 0.6, 1.73)


def box(x, y, size=CAR, yaw=0.0):
    return [x, y, -1.7, *size, yaw]


def pred(objs, frame_id=""):
    """FramePred from (x, y, name, score) tuples."""
    sizes = {"Car": CAR, "Pedestrian": PED, "Cyclist": (1.76, 0.6, 1.73)}
    return FramePred(np.array([box(x, y, sizes[n]) for x, y, n, _ in objs]).reshape(-1, 7),
                     [s for *_, s in objs], [n for _, _, n, _ in objs], frame_id=frame_id)


# ---------------------------------------------------------------------------------------------
# Components

def test_uncertainty_is_a_triangle_around_the_threshold():
    p = pred([(10, 0, "Car", 0.3), (20, 0, "Car", 0.4), (30, 0, "Car", 0.2),
              (40, 0, "Car", 0.95), (50, 0, "Car", 0.1)])
    got = m.uncertainty_scores([p, pred([])], threshold=0.3, band=0.2)
    np.testing.assert_allclose(got, [1.0 + 0.5 + 0.5 + 0.0 + 0.0, 0.0])


def test_association_nearest_same_class_first_then_class_switch():
    a = pred([(10, 0, "Car", 0.9), (20, 0, "Pedestrian", 0.9), (30, 0, "Car", 0.9)])
    b = pred([(10.5, 0, "Car", 0.9), (20.3, 0, "Cyclist", 0.9), (45, 0, "Car", 0.9)])
    asc = m.associate(a, b, gate_m=2.0)
    assert asc.pairs == [(0, 0)] and asc.switches == [(1, 1)]
    assert asc.lost == [2] and asc.new == [2]
    # two candidates: the nearer one wins, one-to-one
    asc = m.associate(pred([(10, 0, "Car", 0.9)]),
                      pred([(11.5, 0, "Car", 0.9), (10.2, 0, "Car", 0.9)]), 2.0)
    assert asc.pairs == [(0, 1)] and asc.new == [0]


def test_flicker_counts_once_in_the_frame_where_the_object_is_missing():
    steady = [(10 + 0.5 * t, 2, "Car", 0.9) for t in range(6)]
    frames = []
    for t in range(6):
        objs = [steady[t], (30, -5, "Pedestrian", 0.8)]
        if t == 2:
            objs = objs[1:]  # the car vanishes for one frame
        frames.append(pred(objs))
    ev = m.temporal_events(frames, 0.3, 2.0, PCR, 2.0)
    assert ev.score.tolist() == [0, 0, 1, 0, 0, 0]
    assert ev.flickers.tolist() == [0, 0, 1, 0, 0, 0] and ev.births.sum() == 0


def test_ghost_switch_and_range_edge():
    ped = (30, -5, "Pedestrian", 0.8)
    frames = [pred([ped]), pred([ped]), pred([ped, (15, 10, "Car", 0.5)]), pred([ped]),
              pred([(30, -5, "Cyclist", 0.8)]), pred([(30, -5, "Cyclist", 0.8)])]
    ev = m.temporal_events(frames, 0.3, 2.0, PCR, 2.0)
    assert ev.ghosts.tolist() == [0, 0, 1, 0, 0, 0]
    assert ev.score.tolist() == [0, 0, 1, 0, 1, 0]  # ghost once at 2, switch at 4
    # leaving through the range edge and dropping below the threshold
    frames = [pred([(67.5, 0, "Car", 0.9), (20, 0, "Car", 0.9)]),
              pred([(20, 0, "Car", 0.9)]),
              pred([(20, 0, "Car", 0.9), (5, 38.5, "Car", 0.9)]),
              pred([(20, 0, "Car", 0.2), (5, 38.5, "Car", 0.9)])]
    ev = m.temporal_events(frames, 0.3, 2.0, PCR, 2.0)
    assert ev.score.tolist() == [0, 0, 0, 1]  # only the car that fell below 0.3 at frame 3
    assert m.temporal_scores(frames, 0.3, 2.0, None, 0.0).tolist() == [0, 1, 1, 1]


def test_a_gap_in_the_recording_starts_a_new_sequence():
    car, ped = (20, 0, "Car", 0.9), (30, -5, "Pedestrian", 0.8)
    frames = [pred([car]), pred([car]), pred([ped]), pred([ped]), pred([car])]
    assert m.temporal_scores(frames, 0.3, 2.0, PCR).tolist() == [0, 0, 2, 0, 2]
    stamps = [0, 100, 1100, 1200, 1300]  # ms: 1 s without clouds before frame 2
    breaks = m.gaps([t * 1_000_000 for t in stamps], 0.25)
    assert breaks == [True, False, True, False, False]
    assert m.temporal_scores(frames, 0.3, 2.0, PCR, breaks=breaks).tolist() == [0, 0, 0, 0, 2]


def test_disagreement_is_one_minus_matched_fraction():
    a = pred([(10, 0, "Car", 0.9), (20, 0, "Car", 0.9)])
    same = pred([(10.05, 0, "Car", 0.8), (20, 0, "Car", 0.7)])
    half = pred([(10, 0, "Car", 0.9), (20, 0, "Car", 0.1)])  # second one not published
    wrong = pred([(10, 0, "Pedestrian", 0.9)])
    got = m.disagreement_scores([a, a, a, pred([])], [same, half, wrong, pred([])], 0.3, 0.5)
    np.testing.assert_allclose(got, [0.0, 0.5, 1.0, 0.0])
    with pytest.raises(m.MineError, match="same frames"):
        m.disagreement_scores([a], [], 0.3, 0.5)


def test_gt_errors_misses_and_false_positives_at_the_threshold():
    gt = FrameGT(np.array([box(10, 0), box(20, 5), box(30, -5), box(40, 0), box(50, 0)]),
                 ["Car", "Car", "Van", "Car", "Pedestrian"],
                 ignore=[False, False, False, True, False])
    p = pred([(10.1, 0, "Car", 0.9),   # TP
              (20, 5, "Car", 0.2),     # below 0.3: car 2 is missed
              (30, -5, "Car", 0.8),    # on the Van: neither TP nor FP
              (40, 0, "Car", 0.9),     # on ignored gt: neither
              (60, 20, "Car", 0.7)])   # FP
    misses, fps = m.gt_errors([p, p], [gt, None], ("Pedestrian", "Cyclist", "Car"), 0.3)
    assert misses[0] == 2 and fps[0] == 1  # car at 20 m + the pedestrian; the car at 60 m
    assert np.isnan(misses[1]) and np.isnan(fps[1])


# ---------------------------------------------------------------------------------------------
# Ranking, weights, random control

def _frames(bag, raws):
    return m.BagScores(bag, len(raws), [m.FrameScore(bag, 100 + i, i, dict(r))
                                        for i, r in enumerate(raws)], [])


def _raw(u=0.0, t=0.0, d=None, miss=None, fp=None):
    return {"uncertainty": u, "temporal": t, "disagreement": d, "misses": miss,
            "false_positives": fp}


def test_rank_normalises_weights_and_breaks_ties_by_bag_and_stamp():
    b1 = _frames("b1.bag", [_raw(2, 0), _raw(1, 1), _raw(0, 0)])
    b0 = _frames("b0.bag", [_raw(1, 1), _raw(4, 2)])
    ranked = m.rank([b1, b0])
    assert [(f.bag, f.index) for f in ranked] == [
        ("b0.bag", 1), ("b0.bag", 0), ("b1.bag", 1), ("b1.bag", 0), ("b1.bag", 2)]
    assert ranked[0].total == pytest.approx(2.0)
    assert ranked[1].normalized == {"uncertainty": 0.25, "temporal": 0.5, "disagreement": 0.0,
                                    "misses": 0.0, "false_positives": 0.0}
    weighted = m.rank([b1, b0], m.parse_weights(["uncertainty=0"]))
    assert [f.total for f in weighted][:2] == [1.0, 0.5]
    assert m.rank([b0, b1]) == m.rank([b1, b0])


def test_parse_weights_and_random_pick():
    assert m.parse_weights(["temporal=2.5"])["temporal"] == 2.5
    for bad in ("temporal", "speed=1", "temporal=x", "temporal=-1"):
        with pytest.raises(AdmlopsError, match="--weight"):
            m.parse_weights([bad])
    pool = [f for b in (_frames("a.bag", [_raw()] * 5), _frames("b.bag", [_raw()] * 5))
            for f in b.frames]
    pick = m.pick_random(pool, 3, seed=7)
    assert len({(f.bag, f.stamp_ns) for f in pick}) == 3
    assert pick == m.pick_random(list(reversed(pool)), 3, seed=7)
    assert m.stamps_by_bag(pick) == {b: {f.stamp_ns for f in pick if f.bag == b}
                                     for b in {f.bag for f in pick}}


# ---------------------------------------------------------------------------------------------
# A real engine over small bags of a static scene with injected flicker and misses

def _messages_or_skip():
    from admlops_ros.evaluation import bags
    from admlops_ros.evaluation.rosbag_io import BagError
    try:
        return bags.messages()
    except BagError as exc:
        pytest.skip(f"admlops_ros messages not built: {exc}")


@pytest.fixture(scope="module")
def scene():
    """One simulated frame and the index of a box the shipped engine finds with confidence."""
    _messages_or_skip()
    from admlops_ros.evaluation.replay import open_detector
    from admlops_ros.simulation import simulate_frame
    frame = simulate_frame(1_000_000)
    with open_detector(str(ENGINE), "onnxruntime") as det:
        dets = det.detect(frame.points)
    best = int(np.argmax(dets.scores))
    dist = np.linalg.norm(frame.boxes[:, :2] - dets.boxes[best, :2], axis=1)
    return frame, int(np.argmin(dist))


def _static_bag(path, frame, count, drop_at=None, drop_box=None, extra_gt_at=None):
    """``count`` copies of one frame; at ``drop_at`` the points of box ``drop_box`` are
    removed (the engine loses it for one frame: flicker + miss); at ``extra_gt_at`` the ground
    truth gains a car where there are no points (a miss)."""
    from admlops_ros.evaluation.bags import BagWriter
    diff = np.asarray(frame.difficulty, np.int64)
    with BagWriter(path) as w:
        for i in range(count):
            points, boxes, names, d = frame.points, frame.boxes, list(frame.names), diff
            if i == drop_at:
                points = points[frame.point_owner != drop_box]
            if i == extra_gt_at:
                boxes = np.vstack([boxes, box(30.0, -20.0)])
                names, d = names + ["Car"], np.append(diff, 0)
            w.write(points, FrameGT(boxes, names, ignore=d < 0, difficulty=d))


def test_real_engine_ranks_injected_flicker_and_miss_first_serial_equals_pool(tmp_path, scene,
                                                                               capsys):
    from admlops_ros.cli import main
    frame, target = scene
    a, b = tmp_path / "a.bag", tmp_path / "b.bag"
    _static_bag(a, frame, 6, drop_at=3, drop_box=target)
    _static_bag(b, frame, 6, extra_gt_at=4)
    tasks = [m.MineTask(str(p), str(ENGINE), "onnxruntime", with_gt=True) for p in (a, b)]
    serial = m.mine(tasks, workers=1)
    top = [(Path(f.bag).name, f.index) for f in serial.ranked]
    # the two injected frames come first (their order is the engine's: both score high)
    assert set(top[:2]) == {("a.bag", 3), ("b.bag", 4)}, m.table(serial.ranked)
    by_bag = {Path(f.bag).name: f for f in serial.ranked[:2]}
    assert by_bag["a.bag"].counts["flickers"] >= 1 and by_bag["a.bag"].raw["temporal"] >= 1
    assert by_bag["b.bag"].raw["misses"] > serial.ranked[-1].raw["misses"]
    pool = m.mine(tasks, workers=2)
    assert [(f.bag, f.stamp_ns, f.total, f.raw) for f in pool.ranked] == \
        [(f.bag, f.stamp_ns, f.total, f.raw) for f in serial.ranked]
    # the command: ranking.json / .csv, the table, a second backend as the disagreement
    out = tmp_path / "out"
    assert main(["mine", str(tmp_path), "--engine", str(ENGINE), "--backend", "onnxruntime",
                 "--backend-b", "onnxruntime", "--with-gt", "--out", str(out),
                 "--workers", "1", "--top", "3"]) == 0
    text = capsys.readouterr().out
    assert "12 frames from 2 bags" in text and top[0][0] in text.splitlines()[3]
    doc = json.loads((out / "ranking.json").read_text())
    assert [(Path(f["bag"]).name, f["frame_index"]) for f in doc["frames"][:2]] == top[:2]
    assert all(f["disagreement"] == 0.0 for f in doc["frames"])  # same engine twice
    rows = list(csv.DictReader(open(out / "ranking.csv")))
    assert len(rows) == 12 and rows[0]["frame_index"] == str(top[0][1]) and rows[0]["rank"] == "1"


def test_budget_and_random_export_a_labelling_batch(tmp_path, scene):
    from admlops_ros.cli import main
    frame, target = scene
    _static_bag(tmp_path / "bags" / "a.bag", frame, 4, drop_at=2, drop_box=target)
    bag = str(tmp_path / "bags" / "a.bag")
    common = ["mine", str(tmp_path / "bags"), "--engine", str(ENGINE), "--backend",
              "onnxruntime", "--workers", "1", "--out"]
    assert main(common + [str(tmp_path / "top"), "--budget", "1"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "top" / "batch" / "lineage.csv")))
    # the flicker frame (2, 0.1 s period), pre-annotated by the engine
    assert [(r["bag"], r["stamp_ns"]) for r in rows] == [(bag, "1600000000200000000")]
    label = (tmp_path / "top" / "batch" / "training" / "label_2" / "000000.txt").read_text()
    assert label.strip() and len(label.splitlines()[0].split()) == 16  # with scores
    assert rows[0]["labels"].startswith("engine")
    doc = json.loads((tmp_path / "top" / "ranking.json").read_text())
    assert doc["selection"]["method"] == "top" and doc["export"]["frames"] == 1
    assert main(common + [str(tmp_path / "rnd"), "--random", "2", "--seed", "3", "--labels",
                          "gt", "--batch", str(tmp_path / "batch")]) == 0
    doc = json.loads((tmp_path / "rnd" / "ranking.json").read_text())
    picked = sorted(str(f["stamp_ns"]) for f in doc["selection"]["frames"])
    rows = list(csv.DictReader(open(tmp_path / "batch" / "lineage.csv")))
    assert sorted(r["stamp_ns"] for r in rows) == picked and len(picked) == 2
    assert all(r["labels"].startswith("gt") for r in rows)


def test_bad_input_messages(tmp_path, capsys):
    from admlops_ros.cli import main
    (tmp_path / "empty").mkdir()
    assert main(["mine", str(tmp_path / "empty")]) == 1
    assert "holds no .bag" in capsys.readouterr().err
    assert main(["mine", str(tmp_path / "nope.bag"), "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert "no bag could be scored" in err and "nope.bag" in err
    assert main(["mine", str(tmp_path / "nope.bag"), "--weight", "speed=2"]) == 2
    with pytest.raises(m.MineError, match="gt_iou"):
        m.MineConfig(gt_iou="tight")
    from admlops_ros.ros.params import load_defaults
    assert m.MineConfig().threshold == load_defaults()["score_threshold"]  # the node's
