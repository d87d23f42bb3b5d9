"""Shared pytest set-up: the repository on sys.path and ADMLOPS_REPO_ROOT for subprocesses."""
from __future__ import annotations

import os
import sys

from tests.paths import REPO_ROOT

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("ADMLOPS_REPO_ROOT", str(REPO_ROOT))


import pytest  # noqa: E402


@pytest.fixture
def bag_messages():
    """The generated admlops_ros messages (bags need them); the test is skipped without them."""
    from admlops_ros.evaluation import bags
    from admlops_ros.evaluation.rosbag_io import BagError
    try:
        return bags.messages()
    except BagError as exc:
        pytest.skip(f"admlops_ros messages not built: {exc}")
