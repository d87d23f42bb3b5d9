"""ROS subcommands of `admlops`: ros-env (master/slave environment of the admlops network)."""
from __future__ import annotations

import argparse
from typing import Any


def _ros_env(args: argparse.Namespace) -> int:
    from admlops_ros.ros import netenv

    argv = ([args.master_uri] if args.master_uri else []) + \
        (["--no-check"] if args.no_check else [])
    return netenv.main(argv)


def add_commands(subparsers: Any) -> None:
    """Register ros-env on the `admlops` parser."""
    p = subparsers.add_parser("ros-env", help="print ROS_MASTER_URI/ROS_IP exports and check "
                                              "the master (scripts/ros_env.sh sources this)")
    p.add_argument("master_uri", nargs="?", default=None)
    p.add_argument("--no-check", action="store_true")
    p.set_defaults(func=_ros_env)
