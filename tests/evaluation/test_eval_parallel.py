"""`admlops eval` over many bags: one task per bag, AP once over all frames, serial == pool == Ray."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from admlops_ros.evaluation import bags, replay
from admlops_ros.evaluation.rosbag_io import BagError
from tests.data.test_parallel import TOKEN  # one Ray auth token per pytest process
from tests.paths import REPO_ROOT

ENGINE = REPO_ROOT / "engines" / "pointpillars_sim_3class"
# fields that measure this run's wall clock, not the evaluation
TIMED = ("latency_ms", "stages_ms", "real_time_factor", "wall_s")


@pytest.fixture(scope="module")
def sim_bags(tmp_path_factory):
    try:
        bags.messages()
    except BagError as exc:
        pytest.skip(f"admlops_ros messages not built: {exc}")
    root = tmp_path_factory.mktemp("bags")
    for i, count in enumerate((3, 4, 3)):
        bags.bag_from_sim(root / f"s{i}.bag", count, seed=1_000_000 + 10 * i, progress=False)
    return root


def _metrics(bag_paths, **where):
    """summarize() of a multi-bag run: the parts that do not measure this run's wall clock."""
    from admlops_ros.evaluation.cli import eval_bags
    from admlops_ros.evaluation.protocol import EvalConfig
    result, per_bag, failed = eval_bags(bag_paths, engine=str(ENGINE), backend="onnxruntime",
                                        **where)
    res, _, _ = replay.summarize(result, EvalConfig(score_threshold=0.3))
    return {k: v for k, v in res.items() if k not in TIMED}, result, per_bag


def test_many_bags_serial_equals_pool_and_the_concatenated_frames(sim_bags):
    from admlops_ros.evaluation.metrics import evaluate
    from admlops_ros.evaluation.protocol import EvalConfig
    paths = sorted(sim_bags.glob("*.bag"))
    serial, merged, per_bag = _metrics(paths, workers=1)
    pool, _, _ = _metrics(paths, workers=2)
    assert serial == pool
    assert serial["frames"]["clouds"] == 10 and serial["frames"]["evaluated"] == 10
    assert [b["clouds"] for b in per_bag] == [3, 4, 3]
    assert [r.index for r in merged.records] == list(range(10))
    # AP computed once over all frames = evaluate() on the bags' frames one after another
    runs = [replay.run_offline(p, str(ENGINE), "onnxruntime", progress=False) for p in paths]
    ref = evaluate([g for r in runs for g in r.gts], [p for r in runs for p in r.preds],
                   EvalConfig(score_threshold=0.3)).to_dict()
    got = evaluate(merged.gts, merged.preds, EvalConfig(score_threshold=0.3)).to_dict()
    assert json.dumps(got, sort_keys=True) == json.dumps(ref, sort_keys=True)


def test_eval_command_on_a_directory_keeps_partial_results(sim_bags, tmp_path, capsys):
    from admlops_ros.cli import main
    junk = tmp_path / "junk.bag"
    junk.write_bytes(b"not a bag" * 20)
    out = tmp_path / "out"
    assert main(["eval", str(sim_bags), str(junk), "--engine", str(ENGINE), "--backend",
                 "onnxruntime", "--workers", "1", "--out", str(out), "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["frames"]["clouds"] == 10 and [b["clouds"] for b in res["bags"]] == [3, 4, 3]
    assert any("junk.bag" in p for p in res["problems"])
    assert len(list((out / "kitti_results").glob("*.txt"))) == 10
    assert "Car 3d" in capsys.readouterr().out
    bag = str(sim_bags / "s0.bag")
    assert main(["eval", bag, bag, "--online", "--out", str(tmp_path / "o")]) == 2
    assert "--online replays one bag" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["eval", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 1
    assert "holds no .bag" in capsys.readouterr().err


def _ray_bin():
    ray = Path(sys.executable).parent / "ray"
    return str(ray) if ray.exists() else shutil.which("ray")


@pytest.mark.skipif(_ray_bin() is None, reason="Ray is not installed (pip install ray)")
def test_local_ray_equals_serial(sim_bags, monkeypatch):
    from admlops_ros.parallel import LOCAL
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", TOKEN)
    paths = sorted(sim_bags.glob("*.bag"))[:2]
    assert _metrics(paths, ray_address=LOCAL, workers=2)[0] == _metrics(paths, workers=1)[0]
