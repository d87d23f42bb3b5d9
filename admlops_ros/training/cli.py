"""Training subcommands of `admlops`: train, export-engine (torch is imported only when they run)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from typing import Any

from admlops_ros.argtypes import FRACTION, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT
from admlops_ros.errors import UsageError

LOG = logging.getLogger(__name__)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `admlops train` (scripts/train.py runs it)."""
    p.add_argument("--config", default="sim_small",
                   help="model config: sim_small (default), kitti_3class or a .json")
    p.add_argument("--out", required=True, help="output directory (latest.pth, logs)")
    p.add_argument("--iterations", type=POSITIVE_INT, default=None, help="total iterations")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=None)
    p.add_argument("--crop", type=POSITIVE_INT, nargs=2, metavar=("ROWS", "COLS"), default=None,
                   help="BEV crop of the canvas in cells (multiples of 8)")
    p.add_argument("--full-canvas", action="store_true", help="train on the whole canvas")
    p.add_argument("--lr", type=POSITIVE, default=None, help="one-cycle maximum lr")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--frame-seed-base", type=int, default=None,
                   help="first simulator seed of the training frames")
    p.add_argument("--gt-db-frames", type=NON_NEGATIVE_INT, default=None,
                   help="frames in the ground-truth sampling database")
    p.add_argument("--no-gt-sampling", action="store_true")
    p.add_argument("--scan-order", action="store_true",
                   help="keep points in scan order even if the model shuffles them (how the "
                        "first two phases of the shipped model were trained)")
    p.add_argument("--threads", type=POSITIVE_INT, default=None, help="torch threads")
    p.add_argument("--resume", action="store_true", help="continue from <out>/train_state.pth")
    p.add_argument("--init", help="start from these weights with a new schedule (fine-tuning): "
                                  "a .pth state_dict or an engine bundle directory (e.g. "
                                  "engines/pointpillars_sim_3class)")
    p.add_argument("--stop-at", type=POSITIVE_INT, default=None,
                   help="stop after this iteration (resume later with --resume)")
    p.add_argument("--benchmark", type=NON_NEGATIVE_INT, default=0, metavar="N",
                   help="only run N iterations in a temporary directory and print s/iteration")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    p.add_argument("--dataset", default=None,
                   help="KITTI-format directory (velodyne/, label_2/, calib/: real or "
                        "`admlops export`ed frames) to train on; its objects fill the "
                        "ground-truth sampling database")
    p.add_argument("--freeze-bn", action="store_true", default=None,
                   help="BatchNorm layers normalise with their running statistics (fine-tuning "
                        "with small batches, or from a bundle whose BN is folded into the "
                        "convolutions: batch statistics would change the model it starts from)")
    p.add_argument("--sim-sensor", default=None,
                   help="simulator sensor preset of the simulated frames (hdl64 default, "
                        "hdl64e_s2_kitti, hdl32, hdl32_roof, pandar40, vls128); a comma list "
                        "mixes presets, paired with --sim-scene's: frame seed s uses pair s %% n")
    p.add_argument("--sim-scene", default=None,
                   help="simulator scene preset (default, city, kitti_streets: street clutter "
                        "as unlabelled hard negatives, ground pitch/roll), or a comma list")
    p.add_argument("--dataset-split", default=None,
                   help="ImageSets file or name (e.g. train) of --dataset (default: every "
                        "labelled frame)")
    p.add_argument("--dataset-ratio", type=FRACTION, default=None,
                   help="fraction of training frames from --dataset, the rest simulated "
                        "(default 1: the dataset only)")
    p.add_argument("--dataset-all-points", action="store_true",
                   help="keep the points outside the labelled camera view (KITTI labels only "
                        "what image 2 sees, so they are dropped by default)")
    p.add_argument("--real-backgrounds", default=None, metavar="DIR[,DIR]",
                   help="KITTI-format directories with labels or pseudo-labels (admlops "
                        "pseudo-label) whose scans get simulated objects inserted, occlusion "
                        "recomputed along the rays")
    p.add_argument("--insert-ratio", type=FRACTION, default=None,
                   help="fraction of training frames that are such a real background "
                        "(default 0.5 with --real-backgrounds)")
    p.add_argument("--distill-from", default=None, metavar="TEACHER",
                   help="distil from this teacher (an engine bundle directory, e.g. "
                        "engines/pointpillars_sim_3class, or a .pth state_dict): head and "
                        "neck-feature imitation added to the ground-truth losses (a pruned "
                        "student after admlops prune)")
    p.add_argument("--distill-config", default=None,
                   help="the teacher's model config (name or .json; default sim_small)")


def _train_config(args: argparse.Namespace):
    from admlops_ros.training.augment import AugmentConfig
    from admlops_ros.training.train import TrainConfig
    cfg = TrainConfig(model=args.config)
    for key in ("iterations", "batch_size", "lr", "seed", "frame_seed_base", "gt_db_frames",
                "threads", "dataset", "dataset_split", "dataset_ratio", "sim_sensor",
                "sim_scene", "freeze_bn", "real_backgrounds", "insert_ratio"):
        value = getattr(args, key)
        if value is not None:
            setattr(cfg, key, value)
    if args.crop is not None:
        cfg.crop = tuple(args.crop)
    if args.full_canvas:
        cfg.crop = None
    if args.no_gt_sampling:
        cfg.augment = AugmentConfig(gt_sampling=False)
    if args.scan_order:
        cfg.shuffle_points = False
    if args.dataset_all_points:
        cfg.dataset_fov_only = False
    if cfg.dataset_ratio != 1.0 and not cfg.dataset:
        raise UsageError("--dataset-ratio needs --dataset DIR")
    if args.insert_ratio is not None and not cfg.real_backgrounds:
        raise UsageError("--insert-ratio needs --real-backgrounds DIR[,DIR]")
    if cfg.real_backgrounds and args.insert_ratio is None:
        cfg.insert_ratio = 0.5
    if args.distill_config is not None and not args.distill_from:
        raise UsageError("--distill-config needs --distill-from TEACHER")
    if args.distill_config is not None:
        cfg.distill_teacher_model = args.distill_config
    return cfg


def run_train(args: argparse.Namespace) -> int:
    """`admlops train`: train (or --benchmark) a model on simulated and/or dataset frames."""
    from admlops_ros.training.train import LOG_JSONL, train
    cfg = _train_config(args)
    if args.benchmark:
        n = int(args.benchmark)
        with tempfile.TemporaryDirectory() as tmp:
            cfg.log_every = 1
            cfg.checkpoint_every = 10 ** 9
            train(cfg, tmp, progress=not args.no_progress, stop_at=n + 2)
            with open(f"{tmp}/{LOG_JSONL}") as f:
                recs = [json.loads(line) for line in f][2:]  # skip warm-up
        import numpy as np
        s_it = float(np.median([r["s_per_it"] for r in recs]))
        data = float(np.median([r["data_wait_s"] for r in recs]))
        sys.stdout.write(
            f"{cfg.model}: batch {cfg.batch_size}, crop {cfg.crop}: median {s_it:.3f} "
            f"s/iteration (waiting for data {data:.3f} s, step {s_it - data:.3f} s) over "
            f"{len(recs)} iterations; {cfg.iterations} iterations -> "
            f"{s_it * cfg.iterations / 3600:.2f} h\n")
        return 0
    init = args.init
    if init is not None and not args.resume:  # a .pth, or an engine bundle directory
        from admlops_ros.training.from_bundle import resolve_init
        init = str(resolve_init(init, cfg, args.out))
    if args.distill_from:  # a bundle's weights are rebuilt into <out>/teacher/
        import dataclasses
        from admlops_ros.training.from_bundle import resolve_init
        teacher_cfg = dataclasses.replace(cfg, model=cfg.distill_teacher_model)
        cfg.distill_teacher = str(resolve_init(args.distill_from, teacher_cfg,
                                               f"{args.out}/teacher"))
    ckpt = train(cfg, args.out, resume=args.resume, progress=not args.no_progress,
                 stop_at=args.stop_at, init=init)
    sys.stdout.write(f"{ckpt}\n")
    return 0


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `admlops export-engine` (scripts/export_onnx.py runs it)."""
    p.add_argument("--config", default="sim_small",
                   help="model config: sim_small (default), kitti_3class or a .json "
                        "(e.g. <train out>/model_config.json)")
    p.add_argument("--checkpoint", default=None,
                   help="state_dict (.pth) from scripts/train.py or an mmdet3d checkpoint")
    p.add_argument("--random-weights", action="store_true",
                   help="export without a checkpoint (for tests and benchmarks)")
    p.add_argument("--bundle", default=None, help="write a full bundle directory here")
    p.add_argument("--onnx", default=None, help="only write this ONNX file")
    p.add_argument("--intensity-scale", type=POSITIVE, default=1.0)
    p.add_argument("--notes", default=None, help="free text stored in spec.yaml")


def run_export(args: argparse.Namespace) -> int:
    """`admlops export-engine`: ONNX (+ OpenVINO IR and spec.yaml with --bundle)."""
    from admlops_ros.training.configs import get_config
    from admlops_ros.training.export import export_bundle, export_onnx, load_checkpoint
    from admlops_ros.training.network import build_model
    if not args.checkpoint and not args.random_weights:
        raise UsageError("give --checkpoint <file.pth> (or --random-weights for a test export)")
    if not args.bundle and not args.onnx:
        raise UsageError("give --bundle <dir> and/or --onnx <file.onnx>")
    config = get_config(args.config)
    if args.onnx:
        model = build_model(config)
        if args.checkpoint:
            load_checkpoint(model, args.checkpoint)
        sys.stdout.write(f"{export_onnx(model, args.onnx)}\n")
    if args.bundle:
        out = export_bundle(config, args.bundle, checkpoint=args.checkpoint,
                            intensity_scale=args.intensity_scale, notes=args.notes)
        sys.stdout.write(f"{out}\n")
    return 0


def run_average(args: argparse.Namespace) -> int:
    """`admlops average-weights START TUNED --weight W -o OUT` (WiSE-FT)."""
    from admlops_ros.training.export import average_weights
    sys.stdout.write(f"{average_weights(args.start, args.tuned, args.weight, args.output)}\n")
    return 0


def run_prune(args: argparse.Namespace) -> int:
    """`admlops prune CHECKPOINT --config CONFIG --keep F -o OUT`: network-slimming channel
    pruning; writes OUT/pruned.pth and OUT/model_config.json to fine-tune with `train`."""
    from pathlib import Path

    import torch

    from admlops_ros.training.configs import get_config
    from admlops_ros.training.prune import prune_state_dict
    config = get_config(args.config)
    out = Path(args.output)
    checkpoint = args.checkpoint
    if Path(checkpoint).is_dir():  # an engine bundle: weights rebuilt, BN statistics measured
        from admlops_ros.training.from_bundle import resolve_init
        from admlops_ros.training.train import TrainConfig
        checkpoint = str(resolve_init(checkpoint, TrainConfig(model=args.config), out))
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    pruned, pconfig = prune_state_dict(state, config, args.keep)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(pruned, str(out / "pruned.pth"))
    (out / "model_config.json").write_text(json.dumps(pconfig.to_dict(), indent=1))
    sys.stdout.write(f"{out / 'pruned.pth'}: backbone {list(config.out_channels)} -> "
                     f"{list(pconfig.out_channels)}, neck {list(config.fpn_out_channels)} -> "
                     f"{list(pconfig.fpn_out_channels)}\n")
    return 0


def add_commands(subparsers: Any) -> None:
    """Register `train` and `export-engine` on the `admlops` parser."""
    p = subparsers.add_parser("train", help="train PointPillars on simulated lidar (CPU)",
                              description=run_train.__doc__)
    add_train_arguments(p)
    p.set_defaults(func=run_train)
    p = subparsers.add_parser("export-engine", help="export a checkpoint to ONNX / an engine bundle",
                              description=run_export.__doc__)
    add_export_arguments(p)
    p.set_defaults(func=run_export)
    p = subparsers.add_parser("average-weights", help="W x TUNED + (1 - W) x START, tensor by "
                              "tensor (a fine-tuned model averaged with where it started)",
                              description=run_average.__doc__)
    p.add_argument("start", help="state_dict the fine-tuning started from (.pth)")
    p.add_argument("tuned", help="fine-tuned state_dict (.pth)")
    p.add_argument("--weight", type=float, default=0.5, help="weight of TUNED (default 0.5)")
    p.add_argument("-o", "--output", required=True, help="averaged state_dict (.pth)")
    p.set_defaults(func=run_average)
    p = subparsers.add_parser("prune", help="channel pruning (BN scale) of a checkpoint: a "
                              "narrower model to fine-tune", description=run_prune.__doc__)
    p.add_argument("checkpoint", help="state_dict (.pth) of --config, or an engine bundle "
                                      "directory (its weights rebuilt)")
    p.add_argument("--config", default="sim_small", help="its model config (name or .json)")
    p.add_argument("--keep", type=FRACTION, required=True,
                   help="fraction of each backbone / neck layer's channels kept (0 < F <= 1)")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.set_defaults(func=run_prune)
