"""Data loop pieces on a tiny pool: bags, mining picks, labelling export, the fine-tuning
command (2 iterations from the shipped bundle), the table and targets; not the full loop."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from admlops_ros.data import loop
from admlops_ros.evaluation import bags
from tests.paths import REPO_ROOT


pytestmark = pytest.mark.usefixtures("bag_messages")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("loop")
    cfg = loop.LoopConfig(out=str(out), engine=str(REPO_ROOT / "engines/pointpillars_sim_3class"),
                          pool_frames=4, pool_bags=2, budget=1, backend="onnxruntime",
                          backend_b=None, iterations=2, gt_db_frames=1, workers=1,
                          holdout_frames=2, skip_eval=True, frame_height_b=1.73)
    pool_jobs, hold_b, hold_a = loop.bag_jobs(cfg)
    pool = [loop.write_bag(j) for j in pool_jobs]
    return cfg, pool, (hold_b, hold_a)


def test_bag_jobs_seeds_are_disjoint(tiny):
    cfg, pool, (hold_b, hold_a) = tiny
    assert [Path(p).name for p in pool] == ["pool_000.bag", "pool_001.bag"]
    full = loop.LoopConfig()
    pool_jobs, hb, ha = loop.bag_jobs(full)
    pool_seeds = {j.seed + i for j in pool_jobs for i in range(j.count)}
    assert pool_jobs[0].frame_height is None  # default: B in its sensor frame
    assert len(pool_seeds) == full.pool_frames
    held_b = set(range(hb.seed, hb.seed + hb.count))
    held_a = set(range(ha.seed, ha.seed + ha.count))
    assert not pool_seeds & held_b and ha.seed == 1_000_000 and ha.sensor == "hdl64"
    assert hb.sensor == "hdl32_roof" and not held_a & held_b
    assert min(pool_seeds | held_b) > 320_000  # above every training seed of M0
    summary, frames = bags.read_bag(pool[0])
    assert summary.num_clouds == 2 and summary.gt_topic is not None
    first = next(iter(frames))
    frames.close()
    # frame_height_b=1.73: B's clouds and boxes in a frame 1.73 m above ground, not the sensor's
    from admlops_ros.simulation import SceneConfig, SensorConfig, simulate_frame
    sim = simulate_frame(full.pool_seed, SceneConfig.preset("city"),
                         SensorConfig.preset("hdl32_roof"))
    assert np.allclose(first.gt.boxes[:, 2], sim.boxes[:, 2] + (2.4 - 1.73), atol=1e-5)
    assert np.allclose(first.points[:, 2], sim.points[:, 2] + (2.4 - 1.73), atol=1e-5)


def test_mine_select_label_and_fine_tune_command(tiny):
    cfg, pool, _ = tiny
    ranked, content = loop.mine_pool(cfg, pool)
    assert len(ranked) == 4 and (Path(cfg.out) / "mine" / "ranking.csv").is_file()
    picks = loop.select(cfg, ranked)
    assert sum(len(s) for s in picks["mined"].values()) == 1
    assert sum(len(s) for s in picks["random"].values()) == 1
    top = ranked[0]
    assert picks["mined"] == {top.bag: {top.stamp_ns}}
    ds = loop.label(picks["mined"], Path(cfg.out) / "datasets" / "mined")
    assert len(list((ds / "velodyne").glob("*.bin"))) == 1
    assert len(list((ds / "label_2").glob("*.txt"))) == 1

    from admlops_ros.cli import main
    out = Path(cfg.out) / "train" / "mined"
    args = loop.train_args(cfg, ds, out)
    assert args[args.index("--init") + 1] == cfg.engine
    assert main(args) == 0
    assert (out / "latest.pth").is_file() and (out / "init_from_bundle.pth").is_file()


def test_table_and_targets():
    evals = [{"model": m, "domain": d, "mAP_3d": v} for m, d, v in (
        ("M0", "B", 30.0), ("M0", "A", 76.0), ("M1_mined", "B", 60.0), ("M1_mined", "A", 75.5),
        ("M1_random", "B", 55.0), ("M1_random", "A", 75.0))]
    table = loop.summary_table(evals)
    assert math.isclose(table["gap_recovered_mined"], 30.0 / 46.0)
    assert math.isclose(table["mined_minus_random_B"], 5.0)
    met = loop.targets(table, budget=25, pool=500)
    assert all(met.values())
    assert not loop.targets(table, budget=26, pool=500)["K <= 5% of the pool"]
    text = loop.format_table(table, met)
    assert "| M1 mined | 60.0 | 75.5 |" in text


def test_bad_budget_is_named():
    with pytest.raises(loop.LoopError, match="budget"):
        loop.LoopConfig(pool_frames=10, budget=11)
