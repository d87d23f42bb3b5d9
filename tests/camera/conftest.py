"""Camera test bundles, built once per session in a temporary directory."""
from __future__ import annotations

import pytest

from tests.camera.fixtures import PIPELINES, make_bundle


@pytest.fixture(scope="session")
def camera_bundles(tmp_path_factory):
    """pipeline name -> bundle directory (exported from the tiny net)."""
    root = tmp_path_factory.mktemp("camera_bundles")
    return {name: make_bundle(root / name, name) for name in PIPELINES}
