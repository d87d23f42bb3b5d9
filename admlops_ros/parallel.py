"""One task per bag, run serially, in a process pool, or on a Ray cluster; results in input order.

``eval``, ``mine``, ``analyze`` and ``export`` over many bags call :func:`map_tasks` with a
module-level function and one item per bag. Whatever runs the tasks, the caller gets the outcomes
in the order of the items, so merging them gives what a serial run gives.

Where the tasks run (``ray_address``):

- ``None``: this machine; ``workers`` processes (1 = serially in this process).
- ``"local"``: a Ray instance started for this run on 127.0.0.1 with ``workers`` CPUs, stopped
  after it.
- ``"auto"`` or ``"HOST:PORT"``: an existing Ray cluster (``ray start --head ...``, see README).

A task that raises :class:`AdmlopsError` (a bad bag, a missing topic) does not stop the others:
its outcome carries the one-line message and the caller keeps the partial results. Any other
exception is a bug and propagates.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence

from admlops_ros.errors import AdmlopsError, UsageError

LOG = logging.getLogger(__name__)
LOCAL = "local"


@dataclass(frozen=True)
class Outcome:
    """What one task gave: ``value`` or, if it failed with an AdmlopsError, ``error``."""

    item: Any
    value: Any = None
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _run_one(fn: Callable[[Any], Any], item: Any) -> Outcome:
    try:
        return Outcome(item, fn(item))
    except AdmlopsError as exc:
        return Outcome(item, error=" ".join(str(exc).split()))


def default_workers() -> int:
    """CPUs this process may use (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise UsageError(f"--ray needs the Ray package ({exc}); install it with "
                         f"'.venv/bin/pip install ray' or leave --ray out for a process "
                         f"pool") from exc
    return ray


def _map_ray(fn: Callable[[Any], Any], items: Sequence[Any], address: str,
             workers: int) -> List[Outcome]:
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        if address == LOCAL:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                     _node_ip_address="127.0.0.1")
        else:
            try:
                ray.init(address=address, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise UsageError(f"--ray {address}: cannot join the Ray cluster ({exc}); start "
                                 f"it with 'ray start --head --node-ip-address IP' or pass "
                                 f"--ray local") from exc
    try:
        remote = ray.remote(_run_one)
        return list(ray.get([remote.remote(fn, item) for item in items]))
    finally:
        if started:
            ray.shutdown()


def map_tasks(fn: Callable[[Any], Any], items: Sequence[Any], *,
              ray_address: Optional[str] = None,
              workers: Optional[int] = None) -> List[Outcome]:
    """``fn`` on every item (``fn`` and items picklable); outcomes in the order of ``items``.

    Args:
        fn: a module-level function of one item.
        items: one per task (typically a bag path and the options).
        ray_address: None (this machine), "local" (a Ray started for the run), or a cluster
            address ("auto", "HOST:PORT").
        workers: processes (None: the CPUs of this machine); for "local" Ray, its CPUs.
    """
    items = list(items)
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    if ray_address:
        return _map_ray(fn, items, ray_address, workers)
    if workers == 1 or len(items) <= 1:
        return [_run_one(fn, item) for item in items]
    with ProcessPoolExecutor(max_workers=min(workers, len(items))) as pool:
        futures = [pool.submit(_run_one, fn, item) for item in items]
        return [f.result() for f in futures]


def add_parallel_arguments(parser: Any) -> None:
    """``--ray ADDRESS`` and ``--workers N`` on a subcommand (read them with :func:`from_args`)."""
    parser.add_argument("--ray", default=None, metavar="ADDRESS",
                        help="run one task per bag on Ray: 'local' starts a Ray instance for "
                             "this run, 'auto' or HOST:PORT joins a cluster (README: Ray)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes on this machine (default: its CPUs; 1 = serial)")


def from_args(args: Any) -> dict:
    """The keyword arguments of :func:`map_tasks` from ``--ray``/``--workers``."""
    return {"ray_address": getattr(args, "ray", None), "workers": getattr(args, "workers", None)}
