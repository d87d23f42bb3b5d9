#!/usr/bin/env python3
"""Train the PointPillars model on simulated lidar (CPU); see `--help` and README."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from admlops_ros.training.cli import train_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(train_main())
