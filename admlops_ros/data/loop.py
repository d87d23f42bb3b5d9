"""One iteration of the data loop, measured: pool -> mine -> label -> fine-tune -> evaluate.

M0 is a shipped engine bundle trained on the simulator's domain A (HDL-64E at 1.73 m, default
scenes). Domain B is the shift a fleet meets when a second vehicle type joins on other routes:
an HDL-32E on a roof rack 2.4 m up (``SensorConfig.preset("hdl32_roof")``: half the beams, a
wider and coarser elevation fan, objects seen from 0.67 m higher, so sparser and more from the
top) on city-centre streets (``SceneConfig.preset("city")``: up to twice the pedestrians and
cyclists, so some frames are crowded and others are not). The clouds stay in B's sensor
frame, so every box sits 0.67 m lower than any M0 saw: M0 keeps 28 of its 77 mAP there.
(Tried: B recorded in a common frame at A's 1.73 m, ``frame_height_b=1.73``, M0 keeps 58.7
and 30-50 labelled frames gained nothing on it.) One iteration (:func:`run_loop`):

1. record an unlabelled pool of B frames as bags (``bag_from_sim``; the bag's ground-truth
   topic plays the labelling company and is read only when frames are "labelled");
2. run M0 over the pool and rank the frames with ``admlops mine`` (detection uncertainty around
   the node's operating threshold and fp32 / bf16 disagreement; no ground truth);
3. "label" the top K (``admlops export`` with the ground truth) and, as the control, K frames
   picked at random from the same pool;
4. fine-tune M0 on each labelled set mixed with simulated A frames (``admlops train --init
   <bundle> --dataset DIR --dataset-ratio R``) and export M1 as an engine bundle;
5. evaluate M0 and both M1 on held-out B and held-out A frames (3D AP|R40 over Car,
   Pedestrian, Cyclist, as ``admlops eval``).

Seeds: M0 trained on simulator seeds below 320,000; held-out A are the README's 200 frames from
1,000,000; the B pool starts at 2,000,000, held-out B at 2,500,000, the simulated A frames
mixed into fine-tuning at 400,000. Every step writes under ``LoopConfig.out``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from admlops_ros.errors import AdmlopsError

LOG = logging.getLogger(__name__)

CLASSES = ("Car", "Pedestrian", "Cyclist")
MODELS = ("M0", "M1_mined", "M1_random")


class LoopError(AdmlopsError):
    """A loop step failed; the message names the step and its log."""


@dataclass(frozen=True)
class LoopConfig:
    """Every choice of one loop iteration (saved in loop.json).

    Attributes:
        out: directory of every intermediate output.
        engine: M0's bundle.
        model_config: M0's training config name (``sim_small``).
        sensor_a, sensor_b: sensor presets of domains A and B.
        scene_a, scene_b: scene presets (``SceneConfig.preset``) of domains A and B.
        frame_height_b: height above ground of B's lidar frame (e.g. 1.73: the rig's static
            transform to a common frame at A's height); None (default) keeps the sensor
            frame.
        pool_seed, pool_frames, pool_bags: the unlabelled B pool (seeds pool_seed + i),
            split into bags of equal size (one mining task each).
        holdout_b_seed, holdout_a_seed, holdout_frames: the held-out evaluation frames.
        budget: K frames labelled (mined and random alike).
        random_seed: seed of the random control pick.
        mine_weights: ``admlops mine`` component weights.
        backend, backend_b: M0's engine backend, and the second backend for disagreement.
        iterations, lr, batch_size, dataset_ratio, frame_seed_base, gt_db_frames: the
            fine-tuning (``admlops train``) settings.
        gt_sampling: ground-truth sampling while fine-tuning. Off by default: its database
            holds the labelled B objects, and in B's sensor frame they would be pasted into
            the mixed-in A frames 0.67 m below A's ground.
        freeze_bn: fine-tune with BatchNorm in eval mode (``admlops train --freeze-bn``): batch-2
            statistics would change the model M0 starts from.
        weight_average: M1 = ``weight_average`` x fine-tuned + (1 - it) x M0, parameter by
            parameter (weight-space ensembling, WiSE-FT): keeps most of what M0 knew of A for
            part of B's gain; 1 = the fine-tuned weights as they are (also exported and
            evaluated as ``M1_<name>_plain``).
        train_threads: torch threads per fine-tuning run (the two runs go in parallel).
        workers: processes for the per-bag steps (bags, mining, evaluation).
        skip_eval: stop after exporting the M1 bundles (smoke tests).
    """

    out: str = "build/loop"
    engine: str = "engines/pointpillars_sim_3class"
    model_config: str = "sim_small"
    sensor_a: str = "hdl64"
    sensor_b: str = "hdl32_roof"
    scene_a: str = "default"
    scene_b: str = "city"
    frame_height_b: Optional[float] = None
    pool_seed: int = 2_000_000
    pool_frames: int = 600
    pool_bags: int = 6
    holdout_b_seed: int = 2_500_000
    holdout_a_seed: int = 1_000_000
    holdout_frames: int = 200
    budget: int = 30
    random_seed: int = 0
    mine_weights: Dict[str, float] = field(default_factory=lambda: {
        "uncertainty": 1.0, "temporal": 0.0, "disagreement": 0.5, "misses": 0.0,
        "false_positives": 0.0})
    backend: str = "openvino"
    backend_b: Optional[str] = "openvino-bf16"
    iterations: int = 1000
    lr: float = 2e-4
    batch_size: int = 2
    dataset_ratio: float = 0.5
    frame_seed_base: int = 400_000
    gt_db_frames: int = 300
    gt_sampling: bool = False
    freeze_bn: bool = True
    weight_average: float = 0.5
    train_threads: int = 1
    workers: int = 2
    skip_eval: bool = False

    def __post_init__(self) -> None:
        if self.pool_frames < 1 or self.pool_bags < 1 or self.pool_bags > self.pool_frames:
            raise LoopError(f"pool: {self.pool_frames} frames in {self.pool_bags} bags; "
                            "give 1 <= bags <= frames")
        if not 1 <= self.budget <= self.pool_frames:
            raise LoopError(f"budget K={self.budget} must be in 1..{self.pool_frames} (pool)")
        if not 0.0 < self.weight_average <= 1.0:
            raise LoopError(f"weight_average {self.weight_average} must be in (0, 1]")

    @property
    def root(self) -> Path:
        return Path(self.out)


@dataclass(frozen=True)
class BagJob:
    """One simulated bag to write (picklable task of :func:`write_bag`)."""

    path: str
    seed: int
    count: int
    sensor: str
    scene: str = "default"
    frame_height: Optional[float] = None  # metres above ground of the bag's lidar frame


@dataclass(frozen=True)
class EvalJob:
    """One evaluation (picklable task of :func:`evaluate_bag`)."""

    model: str
    domain: str
    engine: str
    bag: str
    backend: str
    out: str


# ---------------------------------------------------------------------------------------------
# Steps

def write_bag(job: BagJob) -> str:
    """Simulate ``job.count`` frames into ``job.path`` (kept when it already holds them)."""
    from admlops_ros.evaluation.bags import bag_from_sim
    from admlops_ros.simulation import SceneConfig
    path = Path(job.path)
    stamp = path.with_suffix(".json")
    meta = {"seed": job.seed, "count": job.count, "sensor": job.sensor, "scene": job.scene,
            "frame_height": job.frame_height}
    if path.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == meta:
        return str(path)
    tmp = path.with_name(path.stem + ".tmp.bag")
    if job.frame_height is None:
        bag_from_sim(tmp, job.count, job.seed, job.sensor, scene=SceneConfig.preset(job.scene),
                     progress=False)
    else:
        _bag_in_common_frame(tmp, job)
    tmp.replace(path)
    stamp.write_text(json.dumps(meta))
    return str(path)


def _bag_in_common_frame(path: Path, job: BagJob) -> None:
    """``bag_from_sim`` with clouds and boxes moved up into a lidar frame ``frame_height``
    above the ground (the rig's static transform to the fleet's common lidar frame)."""
    import numpy as np

    from admlops_ros.evaluation.bags import BagWriter
    from admlops_ros.evaluation.frames import FrameGT
    from admlops_ros.simulation import SceneConfig, SensorConfig, simulate_frame
    sensor = SensorConfig.preset(job.sensor)
    scene = SceneConfig.preset(job.scene)
    dz = np.float32(sensor.mount_height - float(job.frame_height))
    with BagWriter(path) as writer:
        for i in range(job.count):
            frame = simulate_frame(job.seed + i, scene, sensor)
            points = np.array(frame.points, np.float32)
            boxes = np.array(frame.boxes, np.float32).reshape(-1, 7)
            points[:, 2] += dz
            boxes[:, 2] += dz
            difficulty = np.asarray(frame.difficulty, np.int64)
            writer.write(points, FrameGT(boxes, list(frame.names), ignore=difficulty < 0,
                                         difficulty=difficulty, frame_id=str(job.seed + i)))


def bag_jobs(cfg: LoopConfig) -> Tuple[List[BagJob], BagJob, BagJob]:
    """(pool bags, held-out B, held-out A) of ``cfg``."""
    bags = cfg.root / "bags"
    per = int(math.ceil(cfg.pool_frames / cfg.pool_bags))
    pool = []
    for i in range(cfg.pool_bags):
        start = i * per
        count = min(per, cfg.pool_frames - start)
        if count > 0:
            pool.append(BagJob(str(bags / f"pool_{i:03d}.bag"), cfg.pool_seed + start, count,
                               cfg.sensor_b, cfg.scene_b, cfg.frame_height_b))
    hold_b = BagJob(str(bags / "holdout_b.bag"), cfg.holdout_b_seed, cfg.holdout_frames,
                    cfg.sensor_b, cfg.scene_b, cfg.frame_height_b)
    hold_a = BagJob(str(bags / "holdout_a.bag"), cfg.holdout_a_seed, cfg.holdout_frames,
                    cfg.sensor_a, cfg.scene_a)
    return pool, hold_b, hold_a


def _map(fn, items: Sequence[Any], workers: int) -> List[Any]:
    from admlops_ros.parallel import map_tasks
    outcomes = map_tasks(fn, list(items), workers=workers)
    failed = [f"{o.item}: {o.error}" for o in outcomes if not o.ok]
    if failed:
        raise LoopError("; ".join(failed))
    return [o.value for o in outcomes]


def mine_pool(cfg: LoopConfig, pool: Sequence[str]) -> Tuple[List[Any], Dict[str, Any]]:
    """M0 over every pool bag, frames ranked by ``admlops mine`` (no ground truth used).

    Returns:
        (ranked FrameScore list, ranking.json content).
    """
    from admlops_ros.data import mine
    tasks = [mine.MineTask(bag=b, engine=cfg.engine, backend=cfg.backend,
                           backend_b=cfg.backend_b, with_gt=False) for b in pool]
    result = mine.mine(tasks, cfg.mine_weights, workers=cfg.workers)
    if result.errors:
        raise LoopError("mining: " + "; ".join(result.errors))
    out = cfg.root / "mine"
    mine.write_csv(out / "ranking.csv", result.ranked)
    content = mine.ranking_json(result.ranked, result.bags, cfg.mine_weights,
                                mine.MineConfig())
    (out / "ranking.json").write_text(json.dumps(content, indent=1))
    return result.ranked, content


def select(cfg: LoopConfig, ranked: Sequence[Any]) -> Dict[str, Dict[str, Set[int]]]:
    """``{"mined": {bag: stamps}, "random": {bag: stamps}}``: the top K and K at random."""
    from admlops_ros.data import mine
    return {"mined": mine.stamps_by_bag(list(ranked)[:cfg.budget]),
            "random": mine.stamps_by_bag(mine.pick_random(ranked, cfg.budget,
                                                          cfg.random_seed))}


def label(bags_stamps: Dict[str, Set[int]], out: Path) -> Path:
    """The labelling company: export the chosen frames with their ground truth (``admlops
    export --labels gt``); returns the KITTI ``training`` directory ``admlops train`` reads."""
    from admlops_ros.data.export import export_dataset
    if out.exists():
        shutil.rmtree(out)
    summary = export_dataset(sorted(bags_stamps), out, labels="gt", stamps=bags_stamps,
                             workers=1)
    if getattr(summary, "failed", None):
        raise LoopError(f"labelling export to {out} failed for {summary.failed}")
    return out / "training"


def _cli(args: Sequence[str], log: Path) -> None:
    """``python -m admlops_ros ARGS`` with its output in ``log``; LoopError on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "admlops_ros", *args]
    LOG.info("$ %s  (log %s)", " ".join(cmd), log)
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text().strip().splitlines()[-3:]
        raise LoopError(f"`admlops {args[0]}` failed (exit {proc.returncode}), see {log}: "
                        + " / ".join(tail))


def train_args(cfg: LoopConfig, dataset: Path, out: Path) -> List[str]:
    """The ``admlops train`` command line of one fine-tuning run."""
    return ["train", "--config", cfg.model_config, "--out", str(out), "--init", cfg.engine,
            "--dataset", str(dataset), "--dataset-ratio", str(cfg.dataset_ratio),
            "--iterations", str(cfg.iterations), "--lr", str(cfg.lr),
            "--batch-size", str(cfg.batch_size), "--frame-seed-base", str(cfg.frame_seed_base),
            "--gt-db-frames", str(cfg.gt_db_frames), "--threads", str(cfg.train_threads),
            "--no-progress"] + ([] if cfg.gt_sampling else ["--no-gt-sampling"]) \
        + (["--freeze-bn"] if cfg.freeze_bn else [])


def fine_tune(cfg: LoopConfig, datasets: Dict[str, Path]) -> Dict[str, Path]:
    """One ``admlops train`` + ``admlops export-engine`` per dataset, the runs in parallel.

    Returns:
        ``{name: M1 bundle directory}``.
    """
    root = cfg.root
    procs = {}
    env = dict(os.environ, OMP_NUM_THREADS=str(cfg.train_threads))
    for name, ds in datasets.items():
        out = root / "train" / name
        if out.exists():
            shutil.rmtree(out)
        log = root / "logs" / f"train_{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "admlops_ros", *train_args(cfg, ds, out)]
        LOG.info("$ %s  (log %s)", " ".join(cmd), log)
        fh = open(log, "w")
        procs[name] = (subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env),
                       fh, log)
    failed = []
    for name, (proc, fh, log) in procs.items():
        rc = proc.wait()
        fh.close()
        if rc != 0:
            failed.append(f"{name} (exit {rc}, see {log})")
    if failed:
        raise LoopError("fine-tuning failed: " + ", ".join(failed))
    bundles = {}
    for name in datasets:
        train_dir = root / "train" / name
        checkpoints = {name: train_dir / "latest.pth"}
        if cfg.weight_average < 1.0:
            _cli(["average-weights", str(train_dir / "init_from_bundle.pth"),
                  str(train_dir / "latest.pth"), "--weight", str(cfg.weight_average),
                  "-o", str(train_dir / "averaged.pth")],
                 root / "logs" / f"average_{name}.log")
            checkpoints = {name: train_dir / "averaged.pth",
                           f"{name}_plain": train_dir / "latest.pth"}
        for key, checkpoint in checkpoints.items():
            bundle = root / "engines" / f"m1_{key}"
            if bundle.exists():
                shutil.rmtree(bundle)
            how = ("fine-tuned" if key.endswith("_plain") or cfg.weight_average >= 1.0 else
                   f"fine-tuned, weights averaged with M0 ({cfg.weight_average:g} x fine-tuned)")
            _cli(["export-engine", "--config", cfg.model_config, "--checkpoint",
                  str(checkpoint), "--bundle", str(bundle),
                  "--notes", f"data loop M1 ({key}): M0 {cfg.engine} {how} on "
                  f"{cfg.budget} labelled {cfg.sensor_b} frames"],
                 root / "logs" / f"export_{key}.log")
            bundles[key] = bundle
    return bundles


def evaluate_bag(job: EvalJob) -> Dict[str, Any]:
    """3D AP|R40 (strict IoU, every distance) of one engine on one bag, as ``admlops eval``."""
    from admlops_ros.evaluation.cli import write_json
    from admlops_ros.evaluation.replay import run_offline, summarize
    result = run_offline(job.bag, engine=job.engine, backend=job.backend, progress=False)
    results, main, _ = summarize(result)
    write_json(Path(job.out), results)
    if main is None:
        raise LoopError(f"{job.bag}: no ground truth to evaluate {job.model} on")
    ap = {c: main.ap("3d", c) for c in CLASSES if c in main.classes}
    return {"model": job.model, "domain": job.domain, "engine": job.engine, "bag": job.bag,
            "mAP_3d": main.mean_ap("3d"), "AP_3d": ap, "difficulty": main.headline_difficulty,
            "frames": main.num_frames}


# ---------------------------------------------------------------------------------------------
# The loop

def summary_table(evals: Sequence[Dict[str, Any]]) -> Dict[str, float]:
    """The loop figures (mAP, percent) and the targets' derived numbers."""
    m = {(e["model"], e["domain"]): e["mAP_3d"] for e in evals}
    out = {"AP_B(M0)": m[("M0", "B")], "AP_B(M1 mined)": m[("M1_mined", "B")],
           "AP_B(M1 random)": m[("M1_random", "B")], "AP_A(M0)": m[("M0", "A")],
           "AP_A(M1 mined)": m[("M1_mined", "A")], "AP_A(M1 random)": m[("M1_random", "A")]}
    gap = out["AP_A(M0)"] - out["AP_B(M0)"]
    out["gap_recovered_mined"] = (out["AP_B(M1 mined)"] - out["AP_B(M0)"]) / gap \
        if gap > 0 else math.nan
    out["gap_recovered_random"] = (out["AP_B(M1 random)"] - out["AP_B(M0)"]) / gap \
        if gap > 0 else math.nan
    out["mined_minus_random_B"] = out["AP_B(M1 mined)"] - out["AP_B(M1 random)"]
    out["A_change_mined"] = out["AP_A(M1 mined)"] - out["AP_A(M0)"]
    for name in ("mined", "random"):  # the fine-tuned weights before averaging, if evaluated
        for dom in ("B", "A"):
            if (f"M1_{name}_plain", dom) in m:
                out[f"AP_{dom}(M1 {name}, not averaged)"] = m[(f"M1_{name}_plain", dom)]
    return out


def targets(table: Dict[str, float], budget: int, pool: int) -> Dict[str, bool]:
    """The issue's targets, each True when met."""
    return {"K <= 5% of the pool": budget <= 0.05 * pool,
            "M1 recovers >= 50% of the gap": table["gap_recovered_mined"] >= 0.5,
            "mined beats random by >= 3 mAP": table["mined_minus_random_B"] >= 3.0,
            "M1 loses <= 1 mAP on A": table["A_change_mined"] >= -1.0}


def format_table(table: Dict[str, float], met: Dict[str, bool]) -> str:
    """The printed loop table."""
    lines = ["| 3D mAP R40 (Car/Ped/Cyc) | held-out B | held-out A |", "|---|---|---|",
             f"| M0 (shipped) | {table['AP_B(M0)']:.1f} | {table['AP_A(M0)']:.1f} |",
             f"| M1 mined | {table['AP_B(M1 mined)']:.1f} | {table['AP_A(M1 mined)']:.1f} |",
             f"| M1 random | {table['AP_B(M1 random)']:.1f} | {table['AP_A(M1 random)']:.1f} |"]
    for name in ("mined", "random"):
        key = f"(M1 {name}, not averaged)"
        if f"AP_B{key}" in table:
            lines.append(f"| M1 {name}, fine-tuned weights not averaged | "
                         f"{table['AP_B' + key]:.1f} | {table['AP_A' + key]:.1f} |")
    lines += ["",
             f"gap recovered: mined {100 * table['gap_recovered_mined']:.0f}%, random "
             f"{100 * table['gap_recovered_random']:.0f}%; mined - random on B "
             f"{table['mined_minus_random_B']:+.1f}; M1 mined on A "
             f"{table['A_change_mined']:+.1f}"]
    lines += [f"  [{'x' if ok else ' '}] {name}" for name, ok in met.items()]
    return "\n".join(lines)


def run_loop(cfg: LoopConfig) -> Dict[str, Any]:
    """Run one iteration and write ``<out>/loop.json``; returns its content."""
    root = cfg.root
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    times: Dict[str, float] = {}

    def lap(name: str, start: float) -> float:
        times[name] = round(time.time() - start, 1)
        LOG.info("%s: %.1f s", name, times[name])
        return time.time()

    pool_jobs, hold_b, hold_a = bag_jobs(cfg)
    jobs = pool_jobs + ([] if cfg.skip_eval else [hold_b, hold_a])
    paths = _map(write_bag, jobs, cfg.workers)
    pool = paths[:len(pool_jobs)]
    t = lap("bags", t0)
    ranked, _ = mine_pool(cfg, pool)
    picks = select(cfg, ranked)
    t = lap("mine", t)
    datasets = {name: label(stamps, root / "datasets" / name) for name, stamps in picks.items()}
    t = lap("label", t)
    bundles = fine_tune(cfg, datasets)
    t = lap("fine_tune", t)
    evals: List[Dict[str, Any]] = []
    table: Dict[str, float] = {}
    met: Dict[str, bool] = {}
    if not cfg.skip_eval:
        engines = {"M0": cfg.engine}
        engines.update({f"M1_{key}": str(path) for key, path in bundles.items()})
        ejobs = [EvalJob(model, dom, eng, bag, cfg.backend,
                         str(root / "eval" / f"{model}_{dom}.json"))
                 for model, eng in engines.items()
                 for dom, bag in (("B", hold_b.path), ("A", hold_a.path))]
        evals = _map(evaluate_bag, ejobs, cfg.workers)
        t = lap("evaluate", t)
        table = summary_table(evals)
        met = targets(table, cfg.budget, cfg.pool_frames)
    times["total"] = round(time.time() - t0, 1)
    picked = {name: {Path(b).name: sorted(s) for b, s in st.items()}
              for name, st in picks.items()}
    content = {"config": asdict(cfg), "table": table, "targets": met, "evaluations": evals,
               "picked": picked, "bundles": {k: str(v) for k, v in bundles.items()},
               "seconds": times,
               "commands": {n: "admlops " + " ".join(train_args(cfg, d, root / "train" / n))
                            for n, d in datasets.items()}}
    (root / "loop.json").write_text(json.dumps(content, indent=1, default=_json_default))
    return content


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (set, tuple)):
        return sorted(obj)
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def with_overrides(cfg: LoopConfig, **changes: Any) -> LoopConfig:
    """A copy of ``cfg`` with some fields changed (None values ignored)."""
    return replace(cfg, **{k: v for k, v in changes.items() if v is not None})


__all__: Sequence[str] = ("LoopError", "LoopConfig", "BagJob", "EvalJob", "write_bag",
                          "bag_jobs", "mine_pool", "select", "label", "train_args", "fine_tune",
                          "evaluate_bag", "summary_table", "targets", "format_table",
                          "run_loop", "with_overrides")
