"""Shared pytest fixtures and paths."""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_KITTI = REPO_ROOT.parent / "shared" / "data" / "kitti"
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("ADMLOPS_REPO_ROOT", str(REPO_ROOT))
