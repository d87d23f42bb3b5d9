#!/usr/bin/env python3
"""Benchmark the data-loop commands over many bags: bags/min per worker, to size a cluster.

Usage: .venv/bin/python scripts/bench_data.py [--bags 4] [--frames 8] [--workers 1,2]
       [--repeat 3] [--backend onnxruntime] [--json OUT]

Simulated bags (``bag_from_sim``, hdl64, ground truth) are written to a temp dir. Each timed
call is what the command does over all bags, one task per bag (``admlops_ros.parallel.
map_tasks``), without its report files:

- eval: offline replay of each bag through the engine, frames merged, AP computed once
  (``evaluation.cli.eval_bags`` + ``replay.summarize``);
- export: bags -> KITTI dataset with the bags' ground truth (``data.export.export_dataset``);
- mine: engine run and per-frame scores of each bag with ground truth, global ranking
  (``data.mine.mine``).

The first call of each command is a warm-up (numba kernels compiled in this process; worker
processes are forked from it, so they inherit them); then the median of ``--repeat`` calls.
Printed: median wall time, bags/min, bags/min per worker, and the speed-up against the
1-worker run of the same command in this process (ideal = workers). The numbers include each
task's engine session start, as a real run does.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from admlops_ros.evaluation.bags import bag_from_sim  # noqa: E402

COMMANDS = ("eval", "export", "mine")


def make_bags(root: Path, bags: int, frames: int, sensor: str) -> List[Path]:
    """``bags`` simulated bags of ``frames`` frames each (distinct seeds)."""
    paths = []
    for i in range(bags):
        path = root / f"sim_{i:02d}.bag"
        bag_from_sim(path, frames, seed=2_000_000 + 1000 * i, sensor=sensor, progress=False)
        paths.append(path)
    return paths


def runner(command: str, bags: List[Path], scratch: Path, engine, backend: str
           ) -> Callable[[int], object]:
    """A function of the worker count that runs ``command`` over all bags once."""
    if command == "eval":
        from admlops_ros.evaluation.cli import eval_bags
        from admlops_ros.evaluation.protocol import EvalConfig
        from admlops_ros.evaluation.replay import summarize

        def run(workers: int) -> object:
            result, _, failed = eval_bags(bags, engine=engine, backend=backend,
                                          workers=workers)
            assert not failed, failed
            return summarize(result, EvalConfig())[0]["metrics"]
        return run
    if command == "export":
        from admlops_ros.data.export import export_dataset
        count = [0]

        def run(workers: int) -> object:
            count[0] += 1
            out = scratch / f"export_{count[0]}"
            try:
                summary = export_dataset(bags, out, labels="gt", workers=workers)
                assert summary.ok, summary.line()
                return len(summary.frames)
            finally:
                shutil.rmtree(out, ignore_errors=True)
        return run
    from admlops_ros.data import mine as m

    def run(workers: int) -> object:
        tasks = [m.MineTask(str(b), engine, backend, with_gt=True) for b in bags]
        return len(m.mine(tasks, workers=workers).ranked)
    return run


def bench(commands, bags: List[Path], scratch: Path, workers: List[int], repeat: int,
          engine, backend: str) -> List[Dict[str, object]]:
    """Median seconds per command and worker count, bags/min, per worker, speed-up vs 1."""
    rows = []
    for command in commands:
        run = runner(command, bags, scratch, engine, backend)
        run(1)  # warm-up: kernels compiled here, inherited by the forked workers
        base = None
        for w in workers:
            times = []
            for _ in range(max(1, repeat)):
                t0 = time.perf_counter()
                run(w)
                times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            base = med if w == workers[0] else base
            rate = len(bags) / med * 60.0
            rows.append({"command": command, "workers": w, "median_s": med,
                         "bags_per_min": rate, "bags_per_min_per_worker": rate / w,
                         "speedup_vs_first": base / med, "runs_s": times})
    return rows


def table(rows, bags: int, frames: int, first: int) -> str:
    head = (f"{'command':<8}{'workers':>8}{'median s':>10}{'bags/min':>10}"
            f"{'per worker':>12}{f'vs {first} worker':>13}")
    lines = [f"{bags} simulated bags x {frames} frames (hdl64, ground truth); median of the "
             f"timed runs", head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['command']:<8}{r['workers']:>8d}{r['median_s']:>10.2f}"
                     f"{r['bags_per_min']:>10.1f}{r['bags_per_min_per_worker']:>12.1f}"
                     f"{r['speedup_vs_first']:>12.2f}x")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bags", type=int, default=4, help="simulated bags (default 4)")
    ap.add_argument("--frames", type=int, default=8, help="frames per bag (default 8)")
    ap.add_argument("--workers", default="1,2", help="worker counts, the first is the "
                                                     "reference (default 1,2)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per cell (default 3)")
    ap.add_argument("--commands", default=",".join(COMMANDS),
                    help=f"subset of {','.join(COMMANDS)}")
    ap.add_argument("--engine", default=None, help="engine bundle (default: the shipped one)")
    ap.add_argument("--backend", default="onnxruntime", help="default onnxruntime")
    ap.add_argument("--sensor", default="hdl64")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    commands = [c.strip() for c in args.commands.split(",") if c.strip()]
    unknown = [c for c in commands if c not in COMMANDS]
    if unknown or not workers or min(workers) < 1:
        ap.error(f"--commands from {COMMANDS}, --workers >= 1 (got {commands}, {workers})")
    tmp = Path(tempfile.mkdtemp(prefix="bench_data_"))
    try:
        t0 = time.perf_counter()
        bags = make_bags(tmp / "bags", args.bags, args.frames, args.sensor)
        print(f"wrote {len(bags)} bags in {time.perf_counter() - t0:.1f} s; "
              f"CPUs {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
        rows = bench(commands, bags, tmp, workers, args.repeat, args.engine, args.backend)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(table(rows, args.bags, args.frames, workers[0]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"bags": args.bags, "frames": args.frames,
                                         "backend": args.backend, "engine": args.engine,
                                         "load_average": os.getloadavg()[0], "rows": rows},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
