"""CPU training loop for PointPillars on simulated frames (AdamW + one-cycle, resumable)."""
from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from admlops_ros.errors import AdmlopsError
from admlops_ros.training.augment import AugmentConfig, GTSampler
from admlops_ros.training.configs import PointPillarsConfig, get_config
from admlops_ros.training.dataset import SampleBuilder, collate, mixed_simulated_frame_fn
from admlops_ros.training.distill import DistillConfig, Distiller
from admlops_ros.training.losses import LossConfig, head_losses
from admlops_ros.training.network import PointPillars, build_model

__all__ = ["TrainConfig", "TrainError", "train", "train_step", "batch_to_torch",
           "CHECKPOINT", "STATE", "CONFIG_JSON", "LOG_JSONL"]

LOG = logging.getLogger(__name__)

CHECKPOINT = "latest.pth"  # plain state_dict: torch.load(path, weights_only=True)
STATE = "train_state.pth"  # optimizer / scheduler / iteration, for --resume
CONFIG_JSON = "model_config.json"
LOG_JSONL = "train_log.jsonl"
PathLike = Union[str, Path]


class TrainError(AdmlopsError, RuntimeError):
    """Training cannot start or continue; the message names the setting and the fix."""


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved beside the checkpoint).

    Frames are simulated on the fly: sample j of iteration i uses seed
    ``frame_seed_base + i * batch_size + j`` (evaluation must use other seeds); the
    ground-truth database uses the first ``gt_db_frames`` training seeds. With ``dataset`` (a
    KITTI-format directory, ``data.kitti_dataset``), a seed gives a dataset frame with
    probability ``dataset_ratio`` (1: the dataset only) and the ground-truth database is built
    from the dataset's objects (its first ``gt_db_frames`` frames). With ``real_backgrounds``,
    a seed first gives, with probability ``insert_ratio``, a real scan of those directories
    with simulated objects inserted (``data.insertion``), else the frame above.
    """

    model: str = "sim_small"
    iterations: int = 12000
    batch_size: int = 2
    crop: Optional[Tuple[int, int]] = (128, 128)  # canvas cells; None: full canvas
    lr: float = 1e-3  # one-cycle maximum
    div_factor: float = 10.0  # start lr = lr / div_factor
    final_div_factor: float = 1e3  # final lr = start lr / final_div_factor
    pct_start: float = 0.4
    weight_decay: float = 0.01
    betas: Tuple[float, float] = (0.95, 0.99)
    grad_clip: float = 35.0
    seed: int = 0
    frame_seed_base: int = 0
    gt_db_frames: int = 300
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    min_points: int = 1
    shuffle_points: Optional[bool] = None  # None: the model config's shuffle_points
    threads: int = 2
    checkpoint_every: int = 250
    prefetch: bool = True  # build the next batch in a thread while the model trains
    log_every: int = 25
    dataset: Optional[str] = None        # KITTI-format directory of real or exported frames
    dataset_split: Optional[str] = None  # ImageSets file or name (None: every labelled frame)
    dataset_ratio: float = 1.0           # fraction of training frames from the dataset
    dataset_fov_only: bool = True        # drop points outside the labelled camera view
    sim_sensor: str = "hdl64"            # simulator sensor preset(s), comma list: frame seed
    sim_scene: str = "default"           # picks pair seed % n (default, city, kitti_streets)
    freeze_bn: bool = False              # BatchNorm layers keep their statistics (fine-tuning)
    real_backgrounds: Optional[str] = None  # KITTI dirs (comma list): real scans that get
    insert_ratio: float = 0.0               # simulated objects inserted, in this frame fraction
    distill_teacher: Optional[str] = None   # teacher state_dict (.pth): distil from it
    distill_teacher_model: str = "sim_small"  # the teacher's model config (name or .json)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def to_dict(self) -> Dict:
        return dataclasses.asdict(self)


def batch_to_torch(batch: Dict[str, np.ndarray]) -> Dict[str, torch.Tensor]:
    """numpy batch from :func:`collate` -> torch tensors (int64 labels, bool mask)."""
    out = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()
           if isinstance(v, np.ndarray) and v.ndim > 0}
    out["labels"] = out["labels"].long()
    out["dir_targets"] = out["dir_targets"].long()
    return out


def train_step(model: PointPillars, batch: Dict[str, np.ndarray], batch_size: int,
               canvas_hw: Tuple[int, int], loss_cfg: LossConfig,
               distiller: Optional[Distiller] = None) -> Dict[str, torch.Tensor]:
    """Forward + losses of one batch (no backward); returns the loss dict with ``loss``
    (with a ``distiller``, plus its ``loss_kd_*`` terms)."""
    t = batch_to_torch(batch)
    feats = model.features_batch(t["voxels"], t["num_points"], t["coors"],
                                 batch_size=batch_size, canvas_hw=canvas_hw,
                                 scatter_coors=t["scatter_coors"])
    cls, reg, dirs = model.bbox_head(feats)
    avg_factor = float(batch["avg_factor"])
    losses = head_losses(cls, reg, dirs, t["labels"], t["label_weights"], t["bbox_targets"],
                         t["pos_mask"], t["dir_targets"], avg_factor, loss_cfg)
    if distiller is not None:
        t_feats, t_heads = distiller.teacher_outputs(t, batch_size, canvas_hw)
        losses.update(distiller.losses(feats, (cls, reg, dirs), t_feats, t_heads, avg_factor))
    losses["loss"] = sum(losses.values())
    return losses


def build_distiller(cfg: TrainConfig, student: PointPillars) -> Optional[Distiller]:
    """The :class:`Distiller` of ``cfg.distill_teacher`` (None without a teacher)."""
    if not cfg.distill_teacher:
        return None
    path = Path(cfg.distill_teacher)
    if not path.is_file():
        raise TrainError(f"distill_teacher {path} does not exist; give the teacher's .pth "
                         f"state_dict (admlops train --distill-from also takes a bundle)")
    teacher = build_model(get_config(cfg.distill_teacher_model))
    teacher.load_state_dict(torch.load(str(path), map_location="cpu", weights_only=True))
    return Distiller(teacher, student, cfg.distill, cfg.losses)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def _save(model: PointPillars, opt, sched, it: int, out: Path,
          distiller: Optional[Distiller] = None) -> None:
    tmp = out / (CHECKPOINT + ".tmp")
    torch.save(model.state_dict(), str(tmp))
    tmp.replace(out / CHECKPOINT)
    tmp = out / (STATE + ".tmp")
    state = {"iteration": it, "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    if distiller is not None:
        state["adapter"] = distiller.adapter.state_dict()
    torch.save(state, str(tmp))
    tmp.replace(out / STATE)


def train(cfg: TrainConfig, out_dir: PathLike, frame_fn: Optional[Callable[[int], object]] = None,
          model_config: Optional[PointPillarsConfig] = None, resume: bool = False,
          progress: bool = True, stop_at: Optional[int] = None,
          init: Optional[PathLike] = None) -> Path:
    """Train and write ``latest.pth`` (+ model_config.json, train_state.pth, train_log.jsonl).

    Args:
        cfg: training settings.
        out_dir: output directory (created).
        frame_fn: ``seed -> frame`` (points, boxes, names, difficulty, num_points); default the
            simulator with its default scene and sensor.
        model_config: overrides ``cfg.model``.
        resume: continue from ``train_state.pth`` in out_dir.
        progress: show a tqdm bar.
        stop_at: stop (with a checkpoint) after this iteration; the schedule still spans
            ``cfg.iterations`` so a later ``resume`` finishes the same run.
        init: start from these weights (a state_dict file) with a new schedule, e.g. a
            fine-tuning phase after a finished run.

    Returns:
        Path of the final checkpoint.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mcfg = model_config if model_config is not None else get_config(cfg.model)
    torch.set_num_threads(max(1, int(cfg.threads)))
    _seed_everything(cfg.seed)
    db_fn = None
    sim_fn = None
    if frame_fn is None and (cfg.dataset is None or cfg.dataset_ratio < 1.0):
        sim_fn = mixed_simulated_frame_fn(cfg.sim_sensor, cfg.sim_scene)
    if frame_fn is None and cfg.dataset:
        from admlops_ros.data.kitti_dataset import KittiDataset, mixed_frame_fn
        dataset = KittiDataset(cfg.dataset, cfg.dataset_split, cfg.dataset_fov_only)
        frame_fn = mixed_frame_fn(dataset, cfg.dataset_ratio, sim_fn)
        db_fn = lambda i: dataset[i] if i < len(dataset) else None  # noqa: E731
        LOG.info("training frames: %d from %s (ratio %.2f, the rest simulated)", len(dataset),
                 cfg.dataset, cfg.dataset_ratio)
    frame_fn = frame_fn if frame_fn is not None else sim_fn
    if cfg.real_backgrounds and cfg.insert_ratio > 0.0:  # data.insertion: real backgrounds
        from admlops_ros.data.insertion import inserted_frame_fn
        frame_fn = inserted_frame_fn(cfg.real_backgrounds, cfg.insert_ratio, frame_fn)
    if db_fn is None:
        db_fn = lambda i: frame_fn(cfg.frame_seed_base + i)  # noqa: E731
    model = build_model(mcfg)
    if init is not None and not resume:
        model.load_state_dict(torch.load(str(init), map_location="cpu", weights_only=True))
        LOG.info("initialised from %s", init)
    distiller = build_distiller(cfg, model)
    params = list(model.parameters())
    if distiller is not None:
        params += list(distiller.adapter.parameters())
        LOG.info("distilling from %s (%s)", cfg.distill_teacher, cfg.distill_teacher_model)
    opt = torch.optim.AdamW(params, lr=cfg.lr / cfg.div_factor,
                            betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.iterations, pct_start=cfg.pct_start,
        div_factor=cfg.div_factor, final_div_factor=cfg.final_div_factor,
        base_momentum=0.85, max_momentum=cfg.betas[0])
    start = 0
    if resume and (out / STATE).is_file():
        state = torch.load(str(out / STATE), map_location="cpu", weights_only=True)
        model.load_state_dict(torch.load(str(out / CHECKPOINT), map_location="cpu",
                                         weights_only=True))
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if distiller is not None and "adapter" in state:
            distiller.adapter.load_state_dict(state["adapter"])
        start = int(state["iteration"])
        LOG.info("resuming %s at iteration %d", out, start)
    elif resume:
        raise TrainError(f"--resume: {out / STATE} does not exist; start without --resume")
    (out / CONFIG_JSON).write_text(json.dumps(mcfg.to_dict(), indent=1))
    (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=1))

    sampler = None
    if cfg.augment.gt_sampling and cfg.gt_db_frames > 0:
        t0 = time.time()
        db = [f for f in (db_fn(i) for i in range(cfg.gt_db_frames)) if f is not None]
        sampler = GTSampler(db, mcfg.class_names, cfg.augment.sample_groups,
                            cfg.augment.min_points)
        LOG.info("gt database from %d frames in %.1f s", len(db), time.time() - t0)
        del db
    builder = SampleBuilder(mcfg, cfg.augment, cfg.crop, sampler, cfg.min_points,
                            shuffle_points=cfg.shuffle_points)
    canvas_hw = builder.canvas_hw

    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.iterations, initial=start, desc="train", unit="it")
    model.train()
    if cfg.freeze_bn:  # normalise with the running statistics; gamma and beta still learn
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()
    pool = None
    log_f = (out / LOG_JSONL).open("a")
    running: Dict[str, List[float]] = {}
    t_data = t_step = 0.0
    try:
        end = cfg.iterations if stop_at is None else min(int(stop_at), cfg.iterations)

        def make_batch(i: int) -> Dict[str, np.ndarray]:
            rng = np.random.default_rng([cfg.seed, i])  # per iteration: resumable, thread-safe
            return collate([builder.build(frame_fn(cfg.frame_seed_base + i * cfg.batch_size + j),
                                          rng) for j in range(cfg.batch_size)])

        pool = ThreadPoolExecutor(max_workers=1) if cfg.prefetch else None
        pending = pool.submit(make_batch, start) if pool is not None and start < end else None
        for it in range(start, end):
            t0 = time.perf_counter()
            if pending is not None:
                batch = pending.result()
                pending = pool.submit(make_batch, it + 1) if it + 1 < end else None
            else:
                batch = make_batch(it)
            t1 = time.perf_counter()
            losses = train_step(model, batch, cfg.batch_size, canvas_hw, cfg.losses,
                                distiller)
            opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            t2 = time.perf_counter()
            t_data += t1 - t0
            t_step += t2 - t1
            for k, v in losses.items():
                running.setdefault(k, []).append(float(v.detach()))
            running.setdefault("num_pos", []).append(float(batch["num_pos"]))
            done = it + 1
            if bar is not None:
                bar.update(1)
            if done % cfg.log_every == 0 or done == end:
                n = len(running["loss"])
                rec = {k: float(np.mean(v)) for k, v in running.items()}
                rec.update(iteration=done, lr=float(sched.get_last_lr()[0]),
                           s_per_it=(t_data + t_step) / n, data_wait_s=t_data / n,
                           step_s=t_step / n)
                log_f.write(json.dumps(rec) + "\n")
                log_f.flush()
                if bar is not None:
                    bar.set_postfix(loss=f"{rec['loss']:.3f}", cls=f"{rec['loss_cls']:.3f}",
                                    box=f"{rec['loss_bbox']:.3f}", lr=f"{rec['lr']:.1e}")
                LOG.debug("it %d %s", done, rec)
                running, t_data, t_step = {}, 0.0, 0.0
            if done % cfg.checkpoint_every == 0 or done == end:
                _save(model, opt, sched, done, out, distiller)
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
        log_f.close()
        if bar is not None:
            bar.close()
    return out / CHECKPOINT
