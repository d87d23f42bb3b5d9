"""PyTorch PointPillars reference: mmdet3d state_dict names/shapes and PillarFeatureNet semantics."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from admlops_ros.training.configs import KITTI_3CLASS, SIM_SMALL, PointPillarsConfig  # noqa: E402
from admlops_ros.training.export import random_voxels  # noqa: E402
from admlops_ros.training.network import build_model  # noqa: E402
from tests.training.configs import TINY  # noqa: E402



def mmdet3d_kitti_3class_keys():
    """Keys and shapes of an mmdet3d 1.x pointpillars_hv_secfpn_8xb6-160e_kitti-3d-3class
    checkpoint, derived from the module definitions (PillarFeatureNet/PFNLayer, SECOND,
    SECONDFPN with deconv upsampling, Anchor3DHead with 6 anchors and 3 classes)."""
    shapes = {}

    def bn(prefix, c):
        for k in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{k}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    shapes["voxel_encoder.pfn_layers.0.linear.weight"] = (64, 10)
    bn("voxel_encoder.pfn_layers.0.norm", 64)
    cin = 64
    for i, (n, c) in enumerate(zip((3, 5, 5), (64, 128, 256))):
        shapes[f"backbone.blocks.{i}.0.weight"] = (c, cin, 3, 3)
        bn(f"backbone.blocks.{i}.1", c)
        for j in range(n):
            shapes[f"backbone.blocks.{i}.{3 * (j + 1)}.weight"] = (c, c, 3, 3)
            bn(f"backbone.blocks.{i}.{3 * (j + 1) + 1}", c)
        cin = c
    for i, (c, s) in enumerate(zip((64, 128, 256), (1, 2, 4))):
        shapes[f"neck.deblocks.{i}.0.weight"] = (c, 128, s, s)  # ConvTranspose2d: [in, out, k, k]
        bn(f"neck.deblocks.{i}.1", 128)
    for name, c in (("conv_cls", 18), ("conv_reg", 42), ("conv_dir_cls", 12)):
        shapes[f"bbox_head.{name}.weight"] = (c, 384, 1, 1)
        shapes[f"bbox_head.{name}.bias"] = (c,)
    return shapes


def test_kitti_state_dict_matches_mmdet3d_and_loads_strict():
    model = build_model(KITTI_3CLASS, init=False)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == mmdet3d_kitti_3class_keys()
    fake_ckpt = {"state_dict": {k: torch.zeros(s) for k, s in mmdet3d_kitti_3class_keys().items()}}
    model.load_state_dict(fake_ckpt["state_dict"], strict=True)


def test_kitti_output_shapes_and_config_numbers():
    assert KITTI_3CLASS.grid_size == (432, 496)
    assert KITTI_3CLASS.feature_map_size == (248, 216)
    assert SIM_SMALL.grid_size == (216, 248)
    assert SIM_SMALL.feature_map_size == (124, 108)
    assert PointPillarsConfig.from_dict(SIM_SMALL.to_dict()) == SIM_SMALL
    model = build_model(TINY).eval()
    v, n, c = random_voxels(TINY, 50)
    with torch.no_grad():
        cls, reg, d = model(torch.from_numpy(v), torch.from_numpy(n), torch.from_numpy(c))
    h, w = TINY.feature_map_size
    assert cls.shape == (1, 18, h, w) and reg.shape == (1, 42, h, w) and d.shape == (1, 12, h, w)


def _mmdet3d_pfn_reference(pfn, features, num_points, coors):
    """mmdet3d 1.x PillarFeatureNet.forward transliterated, including the legacy in-place write
    into a view of ``features`` (so features[:, :, :3] become the voxel-centre offsets)."""
    features_ls = [features]
    points_mean = features[:, :, :3].sum(dim=1, keepdim=True) / \
        num_points.type_as(features).view(-1, 1, 1)
    features_ls.append(features[:, :, :3] - points_mean)
    if not pfn.legacy:
        f_center = torch.zeros_like(features[:, :, :3])
        f_center[:, :, 0] = features[:, :, 0] - (coors[:, 3].to(features.dtype).unsqueeze(1)
                                                 * pfn.vx + pfn.x_offset)
        f_center[:, :, 1] = features[:, :, 1] - (coors[:, 2].to(features.dtype).unsqueeze(1)
                                                 * pfn.vy + pfn.y_offset)
        f_center[:, :, 2] = features[:, :, 2] - (coors[:, 1].to(features.dtype).unsqueeze(1)
                                                 * pfn.vz + pfn.z_offset)
    else:
        f_center = features[:, :, :3]
        f_center[:, :, 0] = f_center[:, :, 0] - (coors[:, 3].type_as(features).unsqueeze(1)
                                                 * pfn.vx + pfn.x_offset)
        f_center[:, :, 1] = f_center[:, :, 1] - (coors[:, 2].type_as(features).unsqueeze(1)
                                                 * pfn.vy + pfn.y_offset)
        f_center[:, :, 2] = f_center[:, :, 2] - (coors[:, 1].type_as(features).unsqueeze(1)
                                                 * pfn.vz + pfn.z_offset)
    features_ls.append(f_center)
    features = torch.cat(features_ls, dim=-1)
    arange = torch.arange(features.shape[1], dtype=torch.int).view(1, -1)
    mask = (num_points.int().unsqueeze(1) > arange).unsqueeze(-1).type_as(features)
    features *= mask
    decorated = features.clone()
    for layer in pfn.pfn_layers:
        features = layer(features)
    return features.squeeze(1), decorated


@pytest.mark.parametrize("legacy", [True, False])
def test_pillar_feature_net_equals_mmdet3d(legacy):
    cfg = TINY.replace(legacy=legacy, feat_channels=(16, 16))  # two PFN layers: concat path too
    model = build_model(cfg).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    v, n, c = random_voxels(cfg, 120, seed=3)
    vt, nt, ct = torch.from_numpy(v), torch.from_numpy(n), torch.from_numpy(c)
    with torch.no_grad():
        ours = model.voxel_encoder(vt, nt, ct)
        ref, decorated = _mmdet3d_pfn_reference(model.voxel_encoder, vt.clone(), nt, ct)
    assert torch.equal(vt, torch.from_numpy(v)), "our encoder must not modify its input"
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    if legacy:  # raw x, y, z replaced by the voxel-centre offsets (channels 7..9)
        torch.testing.assert_close(decorated[..., :3], decorated[..., 7:10])
    else:
        torch.testing.assert_close(decorated[..., :3], torch.from_numpy(v[..., :3]))


def test_scatter_matches_index_put_and_batches():
    model = build_model(TINY).eval()
    enc = model.middle_encoder
    v, n, c = random_voxels(TINY, 80, seed=1)
    feats = torch.randn(80, enc.in_channels)
    ct = torch.from_numpy(c).long()
    canvas = torch.zeros(enc.in_channels, enc.ny * enc.nx)
    canvas[:, ct[:, 2] * enc.nx + ct[:, 3]] = feats.t()  # mmdet3d forward_single
    torch.testing.assert_close(enc(feats, torch.from_numpy(c)),
                               canvas.view(1, enc.in_channels, enc.ny, enc.nx))
    # batched forward == per-sample forward (eval mode)
    v2, n2, c2 = random_voxels(TINY, 60, seed=2)
    c2b = c2.copy()
    c2b[:, 0] = 1
    cat = [torch.from_numpy(np.concatenate(x)) for x in ((v, v2), (n, n2), (c, c2b))]
    with torch.no_grad():
        batched = model.forward_batch(*cat, batch_size=2)
        single = [model(*(torch.from_numpy(a) for a in s)) for s in ((v, n, c), (v2, n2, c2))]
    for i in range(3):
        torch.testing.assert_close(batched[i], torch.cat([s[i] for s in single]), atol=1e-5,
                                   rtol=1e-5)
