"""Channel pruning of a PointPillars checkpoint (network slimming): a narrower model to fine-tune.

Every convolution of the SECOND backbone and every upsampling layer of the SECONDFPN neck keeps
the ``keep`` fraction of its output channels with the largest BatchNorm scale ``|gamma|``
(the channels the following BN lets through most; Liu et al. 2017, "Learning Efficient
Convolutional Networks through Network Slimming"), and the next layer keeps the matching input
channels. The pillar encoder's 64 features, the scatter and the head's outputs are untouched, so
the pruned model has the same mmdeploy I/O contract (names, shapes except channel counts inside).

The pruned weights are a starting point: the model loses accuracy until it is fine-tuned
(``admlops train --config <out>/model_config.json --init <out>/pruned.pth``).
"""
from __future__ import annotations

import math
from typing import Dict, List, Tuple

import numpy as np
import torch

from admlops_ros.errors import AdmlopsError
from admlops_ros.training.configs import PointPillarsConfig

State = Dict[str, torch.Tensor]


class PruneError(AdmlopsError, ValueError):
    """A keep fraction or checkpoint that cannot be pruned; names the field."""


def _kept(gamma: torch.Tensor, count: int) -> torch.Tensor:
    """Indices (ascending) of the ``count`` channels with the largest |gamma|; ties by index."""
    order = np.argsort(-np.abs(gamma.detach().cpu().numpy()), kind="stable")[:count]
    return torch.as_tensor(np.sort(order), dtype=torch.long)


def _slice_bn(state: State, out: State, prefix: str, idx: torch.Tensor) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        out[f"{prefix}.{name}"] = state[f"{prefix}.{name}"][idx].clone()
    key = f"{prefix}.num_batches_tracked"
    if key in state:
        out[key] = state[key].clone()


def width(channels: int, keep: float, multiple: int = 8) -> int:
    """Pruned width: ``keep * channels`` rounded to a multiple of 8 (SIMD-friendly), >= 8."""
    return max(multiple, int(math.floor(channels * keep / multiple + 0.5)) * multiple)


def prune_state_dict(state: State, config: PointPillarsConfig, keep: float
                     ) -> Tuple[State, PointPillarsConfig]:
    """(pruned state_dict, pruned config) of a PointPillars state_dict of ``config``.

    Raises:
        PruneError: ``keep`` outside (0, 1], or the state_dict is not of ``config``.
    """
    if not 0.0 < float(keep) <= 1.0:
        raise PruneError(f"keep {keep}: give the fraction of channels to keep, 0 < keep <= 1")
    out: State = {k: v.clone() for k, v in state.items()}
    widths = [width(c, keep) for c in config.out_channels]
    fpn_widths = [width(c, keep) for c in config.fpn_out_channels]
    try:
        prev = torch.arange(config.feat_channels[-1])  # scatter channels feed block 0
        block_out: List[torch.Tensor] = []
        for i, layer_num in enumerate(config.layer_nums):
            for j in range(layer_num + 1):
                conv, bn = f"backbone.blocks.{i}.{3 * j}", f"backbone.blocks.{i}.{3 * j + 1}"
                idx = _kept(state[f"{bn}.weight"], widths[i])
                w = state[f"{conv}.weight"]
                out[f"{conv}.weight"] = w[idx][:, prev].clone()
                _slice_bn(state, out, bn, idx)
                prev = idx
            block_out.append(prev)
        head_idx, offset = [], 0
        for i, stride in enumerate(config.upsample_strides):
            up, bn = f"neck.deblocks.{i}.0", f"neck.deblocks.{i}.1"
            idx = _kept(state[f"{bn}.weight"], fpn_widths[i])
            w = state[f"{up}.weight"]
            if stride >= 1:  # ConvTranspose2d: [C_in, C_out, k, k]
                out[f"{up}.weight"] = w[block_out[i]][:, idx].clone()
            else:  # Conv2d: [C_out, C_in, k, k]
                out[f"{up}.weight"] = w[idx][:, block_out[i]].clone()
            _slice_bn(state, out, bn, idx)
            head_idx.append(idx + offset)
            offset += int(config.fpn_out_channels[i])
        cat = torch.cat(head_idx)
        for conv in ("conv_cls", "conv_reg", "conv_dir_cls"):
            key = f"bbox_head.{conv}.weight"
            out[key] = state[key][:, cat].clone()
    except (KeyError, IndexError) as exc:
        raise PruneError(f"the checkpoint does not match config {config.name!r} ({exc}); give "
                         f"the model_config.json it was trained with") from exc
    pruned = config.replace(name=f"{config.name}_pruned{int(round(keep * 100))}",
                            out_channels=tuple(widths), fpn_out_channels=tuple(fpn_widths))
    return out, pruned.validate()


__all__ = ["PruneError", "prune_state_dict", "width"]
