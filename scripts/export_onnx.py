#!/usr/bin/env python3
"""Export a trained PointPillars checkpoint to ONNX / an engine bundle: `admlops export-engine`."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from admlops_ros.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["export-engine"] + sys.argv[1:]))
