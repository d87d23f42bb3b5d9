#!/usr/bin/env python3
"""Train the PointPillars model on simulated lidar (CPU): `admlops train`; see `--help`."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from admlops_ros.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train"] + sys.argv[1:]))
