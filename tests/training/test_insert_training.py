"""`admlops train --real-backgrounds DIR --insert-ratio R`: real scans with inserted objects."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

pytest.importorskip("torch")

from admlops_ros.errors import UsageError  # noqa: E402
from admlops_ros.training.augment import AugmentConfig  # noqa: E402
from admlops_ros.training.cli import _train_config, add_train_arguments  # noqa: E402
from admlops_ros.training.configs import SIM_SMALL  # noqa: E402
from admlops_ros.training.dataset import SampleBuilder  # noqa: E402
from admlops_ros.training.train import LOG_JSONL, TrainConfig, train  # noqa: E402
from tests.paths import SHARED_KITTI  # noqa: E402
from tests.training.test_train import TINY  # noqa: E402

TRAINING = SHARED_KITTI / "training"
needs_kitti = pytest.mark.skipif(not (TRAINING / "velodyne").is_dir(),
                                 reason=f"real KITTI frames not found at {TRAINING} "
                                        "(../shared beside the repository)")


def _parse(*argv: str):
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return _train_config(parser.parse_args(["--out", "x", *argv]))


def test_cli_options_of_the_real_backgrounds():
    cfg = _parse("--real-backgrounds", "a,b")
    assert (cfg.real_backgrounds, cfg.insert_ratio) == ("a,b", 0.5)
    assert _parse("--real-backgrounds", "a", "--insert-ratio", "0.2").insert_ratio == 0.2
    assert _parse().insert_ratio == 0.0 and _parse().real_backgrounds is None
    with pytest.raises(UsageError, match="--real-backgrounds"):
        _parse("--insert-ratio", "0.3")


@needs_kitti
def test_inserted_frames_build_samples_and_train(tmp_path):
    from admlops_ros.data.insertion import inserted_frame_fn
    frame = inserted_frame_fn(str(TRAINING), 1.0)(5)
    assert frame.inserted.any()
    sample = SampleBuilder(SIM_SMALL, AugmentConfig(gt_sampling=False), crop=None).build(
        frame, np.random.default_rng(0))
    assert sample.num_gt >= 1 and len(sample.voxels) > 100
    cfg = TrainConfig(iterations=2, batch_size=1, crop=None, gt_db_frames=2, log_every=1,
                      checkpoint_every=10, threads=1, prefetch=False,
                      real_backgrounds=str(TRAINING), insert_ratio=1.0)
    train(cfg, tmp_path, model_config=TINY, progress=False)
    assert json.loads((tmp_path / "train_config.json").read_text())["insert_ratio"] == 1.0
    log = [json.loads(line) for line in (tmp_path / LOG_JSONL).read_text().splitlines()]
    assert len(log) == 2 and all(np.isfinite(r["loss"]) for r in log)
