"""Simulated training frames from a mix of sensor/scene presets (`--sim-sensor a,b`)."""
from __future__ import annotations

import numpy as np
import pytest

from admlops_ros.simulation import SceneConfig, SensorConfig
from admlops_ros.training.dataset import (DatasetError, mixed_simulated_frame_fn, preset_mix,
                                          simulated_frame_fn)


def test_preset_mix_pairs_lists_and_broadcasts_one_name():
    assert preset_mix("hdl64", "default") == [("hdl64", "default")]
    assert preset_mix("hdl64e_s2_kitti,hdl64", "kitti_streets") == [
        ("hdl64e_s2_kitti", "kitti_streets"), ("hdl64", "kitti_streets")]
    assert preset_mix("a, b", "c,d") == [("a", "c"), ("b", "d")]
    with pytest.raises(DatasetError, match="sim_sensor lists 2 presets and sim_scene 3"):
        preset_mix("a,b", "c,d,e")
    with pytest.raises(DatasetError, match="empty preset"):
        preset_mix("a,,b", "c")


def test_frame_seed_picks_the_pair():
    mixed = mixed_simulated_frame_fn("hdl32,hdl64", "default")
    hdl32 = simulated_frame_fn(SceneConfig(), SensorConfig.preset("hdl32"))
    hdl64 = simulated_frame_fn(SceneConfig(), SensorConfig.preset("hdl64"))
    np.testing.assert_array_equal(mixed(10).points, hdl32(10).points)
    np.testing.assert_array_equal(mixed(11).points, hdl64(11).points)
    single = mixed_simulated_frame_fn("hdl64", "default")
    np.testing.assert_array_equal(single(3).points, simulated_frame_fn()(3).points)


def test_unknown_preset_is_named():
    with pytest.raises(Exception, match="unknown sensor preset 'hdl99'"):
        mixed_simulated_frame_fn("hdl64,hdl99", "default")
