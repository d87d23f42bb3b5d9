"""Channel pruning (network slimming): shapes, exactness at keep 1, channels picked by |gamma|."""
from __future__ import annotations

import pytest
import torch

from admlops_ros.training.configs import get_config
from admlops_ros.training.network import build_model
from admlops_ros.training.prune import PruneError, prune_state_dict, width


def _inputs(config, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = 300
    voxels = torch.rand((v, config.max_points, 4), generator=g) * torch.tensor([60, 60, 3, 1.0])
    voxels[..., 1] -= 30
    voxels[..., 2] -= 2
    num = torch.randint(1, config.max_points + 1, (v,), generator=g).int()
    nx, ny = config.grid_size[0], config.grid_size[1]
    flat = torch.randperm(nx * ny, generator=g)[:v]
    coors = torch.stack([torch.zeros(v, dtype=torch.long), torch.zeros(v, dtype=torch.long),
                         flat // nx, flat % nx], 1).int()
    return voxels, num, coors


def _random_bn(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = torch.rand(m.weight.shape, generator=g) + 0.1
            m.running_var.data = torch.rand(m.running_var.shape, generator=g) + 0.5
            m.running_mean.data = torch.randn(m.running_mean.shape, generator=g) * 0.1


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model(get_config("sim_small")).eval()
    _random_bn(m)
    return m


def test_keep_one_is_the_same_model(model):
    config = model.config
    state, pconfig = prune_state_dict(model.state_dict(), config, 1.0)
    assert pconfig.out_channels == config.out_channels
    other = build_model(pconfig, init=False).eval()
    other.load_state_dict(state)
    x = _inputs(config)
    with torch.no_grad():
        for a, b in zip(model(*x), other(*x)):
            torch.testing.assert_close(a, b)


def test_pruned_widths_load_and_run(model):
    config = model.config
    state, pconfig = prune_state_dict(model.state_dict(), config, 0.75)
    assert pconfig.out_channels == (24, 48, 96) and pconfig.fpn_out_channels == (48, 48, 48)
    assert pconfig.head_in_channels == 144
    pruned = build_model(pconfig, init=False).eval()
    pruned.load_state_dict(state, strict=True)  # every shape matches the narrower config
    with torch.no_grad():
        outs = pruned(*_inputs(config))
    full = model(*_inputs(config))
    assert [o.shape for o in outs] == [o.shape for o in full]  # same I/O contract


def test_channels_with_the_largest_bn_scale_are_kept(model):
    state = model.state_dict()
    gamma = state["backbone.blocks.0.1.weight"]
    pruned, _ = prune_state_dict(state, model.config, 0.75)
    kept = set(torch.argsort(gamma.abs(), descending=True)[:24].tolist())
    expect = torch.stack([gamma[i] for i in sorted(kept)])
    torch.testing.assert_close(pruned["backbone.blocks.0.1.weight"], expect)


def test_bad_keep_and_wrong_config_are_named(model):
    with pytest.raises(PruneError, match="keep 0"):
        prune_state_dict(model.state_dict(), model.config, 0.0)
    with pytest.raises(PruneError, match="does not match config"):
        prune_state_dict({}, model.config, 0.5)
    assert width(64, 0.5) == 32 and width(32, 0.1) == 8
