"""The exported (deploy) graph: folded pillar feature net and row scatter equal the original."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from admlops_ros.training.deploy_graph import (FoldedPillarFeatureNet, RowScatter,  # noqa: E402
                                               can_fold, deploy_model)
from admlops_ros.training.export import random_voxels  # noqa: E402
from admlops_ros.training.network import PillarFeatureNet, build_model  # noqa: E402
from tests.training.configs import TINY  # noqa: E402



def _random_model(cfg, seed=0):
    """Eval-mode model with non-trivial PFN weights and BN statistics (negative shifts too)."""
    torch.manual_seed(seed)
    model = build_model(cfg)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_()
                m.bias.normal_()
    return model.eval()


def _inputs(cfg, n, seed):
    v, num, c = random_voxels(cfg, n, seed=seed)
    num[: n // 4] = cfg.max_points  # full pillars take the no-padding branch
    return torch.from_numpy(v), torch.from_numpy(num), torch.from_numpy(c)


@pytest.mark.parametrize("legacy,cluster,centre", [
    (legacy, cluster, centre)
    for legacy, (cluster, centre) in itertools.product(
        (True, False), ((True, True), (True, False), (False, True), (False, False)))])
def test_folded_pfn_equals_pillar_feature_net(legacy, cluster, centre):
    cfg = TINY.replace(legacy=legacy, with_cluster_center=cluster, with_voxel_center=centre)
    model = _random_model(cfg)
    folded = FoldedPillarFeatureNet(model.voxel_encoder)
    inputs = _inputs(cfg, 200, seed=1)
    with torch.no_grad():
        ref = model.voxel_encoder(*inputs)
        ours = folded(*inputs)
    assert ref.abs().max() > 0.5 and (ref == 0).any()  # both ReLU sides exercised
    torch.testing.assert_close(ours, ref, rtol=0, atol=2e-5)


def test_deploy_model_equals_model_and_leaves_it_untouched():
    model = _random_model(TINY)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    deployed = deploy_model(model)
    assert isinstance(deployed.voxel_encoder, FoldedPillarFeatureNet)
    assert isinstance(deployed.middle_encoder, RowScatter)
    assert isinstance(model.voxel_encoder, PillarFeatureNet)
    inputs = _inputs(TINY, 300, seed=2)
    with torch.no_grad():
        for ref, ours in zip(model(*inputs), deployed(*inputs)):
            torch.testing.assert_close(ours, ref, rtol=0, atol=1e-4)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("change", [{"with_distance": True}, {"feat_channels": (16, 16)}])
def test_unfoldable_encoders_are_exported_as_they_are(change):
    cfg = TINY.replace(**change)
    model = _random_model(cfg)
    assert not can_fold(model.voxel_encoder)
    with pytest.raises(ValueError, match="with_distance=False and one PFN layer"):
        FoldedPillarFeatureNet(model.voxel_encoder)
    deployed = deploy_model(model)
    assert isinstance(deployed.voxel_encoder, PillarFeatureNet)
    inputs = _inputs(cfg, 100, seed=3)
    with torch.no_grad():
        for ref, ours in zip(model(*inputs), deployed(*inputs)):
            torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


def test_row_scatter_equals_channels_first_scatter():
    model = build_model(TINY).eval()
    enc = model.middle_encoder
    rows = RowScatter(enc.in_channels, (enc.nx, enc.ny))
    _, _, coors = random_voxels(TINY, 80, seed=4)
    feats = torch.from_numpy(np.random.default_rng(0).normal(size=(80, enc.in_channels))
                             .astype(np.float32))
    torch.testing.assert_close(rows(feats, torch.from_numpy(coors)),
                               enc(feats, torch.from_numpy(coors)), rtol=0, atol=0)
    with pytest.raises(ValueError, match="one full-grid frame"):
        rows(feats, torch.from_numpy(coors), batch_size=2)
