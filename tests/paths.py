"""Paths the tests share: the repository root and the KITTI frames in ../shared (read-only)."""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_KITTI = REPO_ROOT.parent / "shared" / "data" / "kitti"
FIXTURES = REPO_ROOT / "tests" / "fixtures"
