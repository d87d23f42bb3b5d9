"""Moved to :mod:`admlops_ros.parallel` (evaluation uses it too); this name goes once every
caller imports it from there."""
from admlops_ros.parallel import (LOCAL, Outcome, add_parallel_arguments, default_workers,  # noqa: F401
                                  from_args, map_tasks)
