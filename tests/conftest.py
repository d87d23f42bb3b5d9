"""Shared pytest set-up: the repository on sys.path and ADMLOPS_REPO_ROOT for subprocesses."""
from __future__ import annotations

import os
import sys

from tests.paths import REPO_ROOT

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("ADMLOPS_REPO_ROOT", str(REPO_ROOT))
