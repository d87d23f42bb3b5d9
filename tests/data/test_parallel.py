"""map_tasks: serial == process pool == a real local Ray cluster (head + worker on 127.0.0.1)."""
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from admlops_ros import parallel
from admlops_ros.errors import AdmlopsError


def square_or_fail(x):
    if x == 3:
        raise AdmlopsError("bag 3: topic /points_raw missing")
    return x * x


def test_serial_and_pool_agree_and_keep_partial_results():
    serial = parallel.map_tasks(square_or_fail, range(6), workers=1)
    pool = parallel.map_tasks(square_or_fail, range(6), workers=2)
    assert serial == pool
    assert [o.value for o in serial if o.ok] == [0, 1, 4, 16, 25]
    assert serial[3].error == "bag 3: topic /points_raw missing"


def test_bad_workers_is_a_usage_error():
    with pytest.raises(AdmlopsError, match="--workers"):
        parallel.map_tasks(square_or_fail, [1], workers=0)


# Ray 2.6x authenticates cluster members: one token for every head, worker and driver of this
# module (the driver caches the token it first read, so the tests must not use different ones)
TOKEN = secrets.token_hex(32)


@pytest.fixture
def ray_token(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", TOKEN)


def _ray_bin():
    ray = Path(sys.executable).parent / "ray"
    return str(ray) if ray.exists() else shutil.which("ray")


@pytest.mark.skipif(_ray_bin() is None, reason="Ray is not installed (pip install ray)")
def test_real_local_ray_cluster_equals_serial(ray_token):
    ray = _ray_bin()
    # a short temp dir: Ray's unix sockets live under it (108-byte path limit)
    env_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    address = f"127.0.0.1:{_free_port()}"
    start = [ray, "start", "--head", "--node-ip-address", "127.0.0.1",
             "--port", address.split(":")[1], "--num-cpus", "1", "--include-dashboard", "false",
             "--temp-dir", env_dir, "--disable-usage-stats"]
    out = subprocess.run(start, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    try:
        worker = subprocess.run([ray, "start", "--address", address, "--num-cpus", "1",
                                 "--node-ip-address", "127.0.0.1", "--disable-usage-stats"],
                                capture_output=True, text=True, timeout=120)
        assert worker.returncode == 0, worker.stderr[-2000:]
        on_ray = parallel.map_tasks(square_or_fail, range(6), ray_address=address)
        assert on_ray == parallel.map_tasks(square_or_fail, range(6), workers=1)
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=120)
        shutil.rmtree(env_dir, ignore_errors=True)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(_ray_bin() is None, reason="Ray is not installed (pip install ray)")
def test_ray_local_started_for_the_run_equals_serial(ray_token):
    on_ray = parallel.map_tasks(square_or_fail, range(4), ray_address=parallel.LOCAL, workers=2)
    assert on_ray == parallel.map_tasks(square_or_fail, range(4), workers=1)
