#!/usr/bin/env python3
"""Renders the camera caches (once), trains the default camera detector, evaluates, exports.

    .venv/bin/python scripts/train_camera.py --minutes 14 --export engines/camera_sim_3class
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from admlops_ros.simulation.camera import CameraConfig  # noqa: E402
from admlops_ros.training import camera_data as cd  # noqa: E402
from admlops_ros.training import camera_train as ct  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", default="build/camera", help="cache directory (rendered once)")
    p.add_argument("--out", default="build/camera/run", help="training output directory")
    p.add_argument("--train-frames", type=int, default=2400)
    p.add_argument("--eval-frames", type=int, default=200)
    p.add_argument("--workers", type=int, default=2, help="render processes")
    p.add_argument("--iterations", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--minutes", type=float, default=None,
                   help="wall-clock training budget; the lr schedule anneals by then")
    p.add_argument("--init", default=None, help="start from this checkpoint")
    p.add_argument("--skip-train", action="store_true", help="evaluate/export --out/latest.pth")
    p.add_argument("--export", default=None, help="write the camera bundle here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cache = Path(args.cache)
    h, w = ct.INPUT_SIZE
    train_dir = cache / f"train_{w}x{h}"
    eval_dir = cache / "heldout_1242x375"
    if not (train_dir / "meta.json").exists():
        seeds = range(cd.TRAIN_SEED_BASE, cd.TRAIN_SEED_BASE + args.train_frames)
        cd.render_cache(train_dir, seeds, cd.scaled_camera(w, h), cd.TRAIN_SCENE,
                        workers=args.workers)
    out = Path(args.out)
    if args.skip_train:
        model = ct.load_model(out / "latest.pth")
    else:
        cfg = ct.TrainConfig(iterations=args.iterations, batch_size=args.batch_size, lr=args.lr,
                             threads=args.threads)
        deadline = None if args.minutes is None else time.time() + 60.0 * args.minutes
        model = ct.train(train_dir, out, cfg, deadline=deadline,
                         init=Path(args.init) if args.init else None)
    if not (eval_dir / "meta.json").exists():
        cd.render_cache(eval_dir, range(cd.EVAL_SEED_BASE, cd.EVAL_SEED_BASE + args.eval_frames),
                        CameraConfig(), None, workers=args.workers)
    t = time.time()
    res = ct.evaluate_cache(lambda ims: ct.detect_torch(model, ims), cd.CameraCache(eval_dir))
    res["eval_s"] = round(time.time() - t, 1)
    logging.info("held-out AP50 (PyTorch): %s", res)
    (out / "eval_torch.json").write_text(json.dumps(res, indent=1))
    if args.export:
        from admlops_ros.training.camera_export import export_camera_bundle
        export_camera_bundle(
            model, args.export, input_size=ct.INPUT_SIZE, class_names=cd.CAMERA_CLASSES,
            preprocessing=dict(keep_ratio=False, scale=(w, h), mean=ct.MEAN_RGB, std=ct.STD_RGB,
                               to_rgb=True),
            score_threshold=0.3, nms_score_threshold=0.05, iou_threshold=0.5,
            max_per_image=100, pre_top_k=1000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
