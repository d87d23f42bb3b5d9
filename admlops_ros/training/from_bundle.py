"""Training weights rebuilt from an exported engine bundle's ONNX (fine-tuning a shipped model).

A shipped bundle holds no torch checkpoint, only ``end2end.onnx`` (plus its IR). Its
initializers still carry the training names for the neck (ConvTranspose + BatchNorm, not folded
by the exporter) and the head; the SECOND backbone's convolutions are BatchNorm-folded by
constant folding (``onnx::Conv_NNN`` weight and bias, in graph order); the pillar encoder is the
:class:`~admlops_ros.training.deploy_graph.FoldedPillarFeatureNet` rewrite (``w_offsets``,
``w_cluster``, ``shift``). This module inverts both:

- folded conv ``(W, b)`` -> conv weight ``c W`` and a BatchNorm with gamma ``1 / c``, beta
  ``b``, running mean 0, running var ``1 - eps`` (in eval mode the folded conv again); ``c``,
  a power of two, gives the weight about the std of the trainer's initialisation, as a
  trained weight has, where the fold left it 5-10x smaller (fine-tuning steps would
  otherwise be that much larger);
- the pillar fold ``s * (W' (p - c) + bias_v) + t`` -> a PFN linear layer whose columns sum to
  ``W'`` (the voxel-centre columns, which in mmdet3d's legacy mode see the same offsets as the
  raw x, y, z, get zero) and a BatchNorm with scale 1 and shift ``t``.

Both give the exported function exactly in eval mode. Training runs BatchNorm on batch
statistics, and an identity BN would then normalise activations the network never saw, so
:func:`recalibrate_batchnorm` re-expresses every BN with the statistics of real inputs while
keeping its eval-mode function (``init_checkpoint`` does it before fine-tuning).
torch and onnx only.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from admlops_ros.errors import AdmlopsError
from admlops_ros.training.configs import PointPillarsConfig

__all__ = ["BundleWeightsError", "state_dict_from_bundle", "kaiming_std", "recalibrate_batchnorm",
           "init_checkpoint", "resolve_init"]

LOG = logging.getLogger(__name__)
PathLike = Union[str, Path]
ONNX_FILE = "end2end.onnx"


class BundleWeightsError(AdmlopsError, ValueError):
    """A bundle's ONNX does not hold the weights of the config; the message names both."""


def _onnx_path(bundle: PathLike) -> Path:
    path = Path(bundle)
    if path.is_dir():
        path = path / ONNX_FILE
    if not path.is_file():
        raise BundleWeightsError(f"{path} does not exist; give an engine bundle directory "
                                 f"(with {ONNX_FILE}) or an .onnx file exported by admlops")
    return path


def _folded_backbone_convs(graph, arrays: Dict[str, np.ndarray]
                           ) -> List[Tuple[np.ndarray, np.ndarray]]:
    """(weight, bias) of the Conv nodes whose weights lost their names, in graph order."""
    out = []
    for node in graph.node:
        if node.op_type != "Conv" or len(node.input) < 2:
            continue
        w_name = node.input[1]
        if w_name.startswith("bbox_head.") or w_name.startswith("neck."):
            continue
        if w_name not in arrays:
            raise BundleWeightsError(f"Conv node {node.name}: weight {w_name} is not an "
                                     "initializer (the graph was not exported by admlops)")
        weight = arrays[w_name]
        bias = arrays[node.input[2]] if len(node.input) > 2 and node.input[2] else \
            np.zeros(weight.shape[0], np.float32)
        out.append((weight, bias))
    return out


def kaiming_std(shape: Tuple[int, ...]) -> float:
    """Std of the trainer's initialisation of a weight of this shape: Kaiming normal, fan out,
    for convolutions [out, in, kh, kw]; PyTorch's default Linear init for [out, in]."""
    if len(shape) == 4:
        return math.sqrt(2.0 / (shape[0] * shape[2] * shape[3]))
    return 1.0 / math.sqrt(3.0 * shape[1])


def _natural_scale(weight: np.ndarray, target_std: float) -> float:
    """The power of two nearest to ``target_std / std(weight)`` (exact in float: scaling by
    it and by its inverse rounds nothing, so the re-exported graph keeps its values)."""
    std = float(np.std(weight))
    return float(2.0 ** round(math.log2(target_std / std))) if std > 0 else 1.0


def state_dict_from_bundle(bundle_dir: PathLike, config: PointPillarsConfig,
                           natural_scale: bool = True) -> Dict[str, torch.Tensor]:
    """A ``PointPillars(config)`` state_dict whose eval-mode outputs equal the bundle's ONNX.

    Args:
        bundle_dir: engine bundle directory (or its ``end2end.onnx``), exported from this
            project's training network with the pillar fold (``export_onnx(fold=True)``).
        config: the model config it was trained with (e.g. ``SIM_SMALL``).
        natural_scale: give each rebuilt weight the std of the trainer's initialisation
            (the BN after it divides it back out), so that fine-tuning steps have the size
            they had in training; False keeps the folded weights and identity BNs.

    Returns:
        A state_dict for ``model.load_state_dict(..., strict=True)``.

    Raises:
        BundleWeightsError: the ONNX lacks a tensor or a shape differs from the config's.
    """
    import onnx
    from onnx import numpy_helper

    from admlops_ros.training.network import build_model
    path = _onnx_path(bundle_dir)
    proto = onnx.load(str(path))
    arrays = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    target = build_model(config, init=False).state_dict()
    eps = float(config.norm_eps)
    out: Dict[str, torch.Tensor] = {}

    def put(key: str, value: np.ndarray) -> None:
        want = tuple(target[key].shape)
        if tuple(value.shape) != want:
            raise BundleWeightsError(f"{path}: {key} has shape {tuple(value.shape)}, config "
                                     f"{config.name} needs {want}; pass the config the bundle "
                                     "was trained with")
        out[key] = torch.from_numpy(np.array(value, dtype=np.float32))

    def identity_bn(prefix: str, beta: np.ndarray, gamma: float = 1.0) -> None:
        n = beta.shape[0]
        put(prefix + ".weight", np.full(n, gamma, np.float32))
        put(prefix + ".bias", beta)
        put(prefix + ".running_mean", np.zeros(n, np.float32))
        put(prefix + ".running_var", np.full(n, 1.0 - eps, np.float32))
        out[prefix + ".num_batches_tracked"] = torch.tensor(0, dtype=torch.long)

    for key in target:  # named tensors: neck and head
        if key.startswith(("neck.", "bbox_head.")) and not key.endswith("num_batches_tracked"):
            if key not in arrays:
                raise BundleWeightsError(f"{path}: no initializer {key}; not an admlops export "
                                         f"of {config.name}")
            put(key, arrays[key])
        elif key.endswith("num_batches_tracked") and key.startswith("neck."):
            out[key] = torch.tensor(0, dtype=torch.long)

    convs = _folded_backbone_convs(proto.graph, arrays)
    bb_convs = [k[:-len(".weight")] for k, v in target.items()
                if k.startswith("backbone.") and k.endswith(".weight") and v.dim() == 4]
    if len(convs) != len(bb_convs):
        raise BundleWeightsError(f"{path}: {len(convs)} folded backbone convolutions, config "
                                 f"{config.name} has {len(bb_convs)}")
    for conv_key, (weight, bias) in zip(bb_convs, convs):
        # Folding multiplied each filter by gamma / sigma (0.005-0.02 in the deep stages,
        # against ~0.04 at Kaiming init): Adam steps of a fine-tuning lr would be 5-10x
        # larger relative to such weights. Give the conv a training-like scale c and the BN
        # gamma 1 / c, which leaves the eval-mode function unchanged.
        c = _natural_scale(weight, kaiming_std(weight.shape)) if natural_scale else 1.0
        put(conv_key + ".weight", weight * c)
        block, index = conv_key.rsplit(".", 1)  # backbone.blocks.i.j -> BN at j + 1
        identity_bn(f"{block}.{int(index) + 1}", bias, 1.0 / c)

    _invert_pillar_fold(path, arrays, config, put, identity_bn, natural_scale)
    missing = set(target) - set(out)
    if missing:
        raise BundleWeightsError(f"{path}: could not rebuild {sorted(missing)}")
    return out


def _invert_pillar_fold(path: Path, arrays: Dict[str, np.ndarray], config: PointPillarsConfig,
                        put: Callable, identity_bn: Callable, natural_scale: bool) -> None:
    """PFN linear + BN from the folded encoder's ``w_offsets`` [C, U], ``w_cluster`` [3, U]
    and ``shift`` [U] (see FoldedPillarFeatureNet: with BN scale 1 the fold is the sum of the
    columns that see the same offsets)."""
    if (config.with_distance or len(config.feat_channels) != 1 or not config.legacy
            or not config.with_voxel_center):
        raise BundleWeightsError(f"config {config.name}: only the folded single-layer legacy "
                                 "pillar encoder (with voxel centre, no distance) is inverted")
    for name in ("w_offsets", "shift") + (("w_cluster",) if config.with_cluster_center else ()):
        if "voxel_encoder." + name not in arrays:
            raise BundleWeightsError(f"{path}: no voxel_encoder.{name}; the bundle was exported "
                                     "without the pillar fold (fold=False), not supported")
    w_offsets = arrays["voxel_encoder.w_offsets"].astype(np.float64).T  # [U, C]
    units, c = w_offsets.shape
    weight = np.zeros((units, config.pfn_in_channels), np.float64)
    weight[:, :c] = w_offsets
    col = c
    if config.with_cluster_center:
        w_cluster = arrays["voxel_encoder.w_cluster"].astype(np.float64).T  # [U, 3]
        weight[:, col:col + 3] = w_cluster
        weight[:, :3] -= w_cluster
        col += 3
    # the voxel-centre columns [col, col + 3) stay zero: in legacy mode they multiply the same
    # offsets as the raw x, y, z columns, which carry the sum
    c = _natural_scale(weight, kaiming_std(weight.shape)) if natural_scale else 1.0
    put("voxel_encoder.pfn_layers.0.linear.weight", (weight * c).astype(np.float32))
    identity_bn("voxel_encoder.pfn_layers.0.norm", arrays["voxel_encoder.shift"], 1.0 / c)


def recalibrate_batchnorm(model: nn.Module, batches: Iterable[Callable[[nn.Module], object]]
                          ) -> int:
    """Give every BatchNorm the statistics of its real inputs, keeping its eval-mode function.

    For each BN with old (gamma, beta, mean, var) and measured input statistics (mu, v):
    ``var := v, mean := mu, gamma := gamma * sqrt(v + eps) / sqrt(var + eps),
    beta := beta + gamma * (mu - mean) / sqrt(var + eps)``, so ``BN(x)`` is unchanged in eval
    mode while batch statistics in train mode now start close to the running ones.

    Args:
        model: the network (put in eval mode for the measurement; left in eval mode).
        batches: callables ``run(model)`` each doing one forward pass on real inputs.

    Returns:
        The number of BatchNorm layers recalibrated (0 when no batch was given).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    sums: Dict[int, List[torch.Tensor]] = {i: [] for i in range(len(norms))}

    def hook(i):
        def fn(module, inputs, output):
            x = inputs[0].detach().double()
            dims = [d for d in range(x.dim()) if d != 1]
            count = x.numel() / x.shape[1]
            sums[i].append(torch.stack([torch.full((x.shape[1],), count, dtype=x.dtype),
                                        x.sum(dim=dims), (x * x).sum(dim=dims)]))
        return fn

    handles = [n.register_forward_hook(hook(i)) for i, n in enumerate(norms)]
    model.eval()
    try:
        with torch.no_grad():
            for run in batches:
                run(model)
    finally:
        for h in handles:
            h.remove()
    done = 0
    with torch.no_grad():
        for i, norm in enumerate(norms):
            if not sums[i]:
                continue
            n, s, ss = torch.stack(sums[i]).sum(dim=0)
            mu = s / n
            var = (ss / n - mu * mu).clamp(min=0.0) * n / (n - 1).clamp(min=1.0)
            eps = norm.eps
            old_std = torch.sqrt(norm.running_var.double() + eps)
            gamma, beta = norm.weight.double(), norm.bias.double()
            new_beta = beta + gamma * (mu - norm.running_mean.double()) / old_std
            new_gamma = gamma * torch.sqrt(var + eps) / old_std
            norm.weight.copy_(new_gamma.float())
            norm.bias.copy_(new_beta.float())
            norm.running_mean.copy_(mu.float())
            norm.running_var.copy_(var.float())
            done += 1
    return done


def init_checkpoint(bundle_dir: PathLike, config: PointPillarsConfig, out_path: PathLike,
                    frames: Optional[Iterable[object]] = None, crop: Optional[Tuple[int, int]]
                    = (128, 128), batch_size: int = 2, seed: int = 0) -> Path:
    """Write a state_dict file to fine-tune from: the bundle's weights, BN recalibrated.

    Args:
        bundle_dir: engine bundle directory.
        config: its model config.
        out_path: the .pth written (``torch.load(weights_only=True)`` reads it).
        frames: frames (points, boxes, names, difficulty) whose training samples (same crop
            and batch as the training run, no augmentation) measure the BN statistics; None
            keeps the identity BatchNorms.
        crop, batch_size, seed: as the training run's.

    Returns:
        ``out_path``.
    """
    from admlops_ros.training.dataset import SampleBuilder, collate
    from admlops_ros.training.network import build_model
    from admlops_ros.training.train import batch_to_torch
    model = build_model(config, init=False)
    model.load_state_dict(state_dict_from_bundle(bundle_dir, config), strict=True)
    if frames is not None:
        builder = SampleBuilder(config, None, crop)
        rng = np.random.default_rng(seed)
        frames = list(frames)

        def runner(group):
            def run(m):
                batch = batch_to_torch(collate([builder.build(f, rng) for f in group]))
                m.forward_batch(batch["voxels"], batch["num_points"], batch["coors"],
                                batch_size=len(group), canvas_hw=builder.canvas_hw,
                                scatter_coors=batch["scatter_coors"])
            return run

        groups = [frames[i:i + batch_size] for i in range(0, len(frames), batch_size)]
        n = recalibrate_batchnorm(model, [runner(g) for g in groups if g])
        LOG.info("recalibrated %d BatchNorm layers on %d frames", n, len(frames))
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), str(out))
    return out


def resolve_init(init: PathLike, train_cfg, out_dir: PathLike, calibration_frames: int = 8
                 ) -> Path:
    """The weights file ``admlops train --init`` starts from: ``init`` itself when it is a
    file, or for an engine bundle directory ``<out_dir>/init_from_bundle.pth`` written by
    :func:`init_checkpoint` (BN statistics from the run's first training frames).

    Args:
        init: a .pth state_dict or an engine bundle directory.
        train_cfg: the run's ``TrainConfig`` (model config, crop, batch size, frame source).
        out_dir: the run's output directory.
        calibration_frames: frames measured for the BatchNorm statistics.

    Raises:
        BundleWeightsError: ``init`` is neither a file nor a bundle directory.
    """
    path = Path(init)
    if path.is_file():
        return path
    if not path.is_dir():
        raise BundleWeightsError(f"--init {init}: no such file or directory; give a .pth "
                                 "state_dict or an engine bundle directory")
    from admlops_ros.training.configs import get_config
    config = get_config(train_cfg.model)
    if train_cfg.dataset:
        from admlops_ros.data.kitti_dataset import KittiDataset
        dataset = KittiDataset(train_cfg.dataset, train_cfg.dataset_split,
                               train_cfg.dataset_fov_only)
        frames = [dataset[i] for i in range(min(calibration_frames, len(dataset)))]
    else:
        from admlops_ros.training.dataset import simulated_frame_fn
        sim = simulated_frame_fn()
        frames = [sim(train_cfg.frame_seed_base + i) for i in range(calibration_frames)]
    out = init_checkpoint(path, config, Path(out_dir) / "init_from_bundle.pth", frames,
                          crop=train_cfg.crop, batch_size=train_cfg.batch_size,
                          seed=train_cfg.seed)
    LOG.info("fine-tuning from bundle %s (weights rebuilt into %s)", path, out)
    return out
