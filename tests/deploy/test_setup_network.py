"""scripts/setup_network.sh against a stub docker client (no engine here) and the real client."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.paths import REPO_ROOT as REPO

SCRIPT = REPO / "scripts" / "setup_network.sh"

# A docker client stub: state in $STUB_DIR/net (driver subnet gateway), calls logged.
STUB = r"""#!/usr/bin/env bash
echo "$*" >> "$STUB_DIR/calls"
case "$1" in
  info) [ -f "$STUB_DIR/down" ] && { echo "Cannot connect to the Docker daemon" >&2; exit 1; }
        echo 27.0.0; exit 0 ;;
  network)
    case "$2" in
      inspect) [ -f "$STUB_DIR/net" ] || { echo "[]"; echo "no such network" >&2; exit 1; }
               cat "$STUB_DIR/net"; exit 0 ;;
      create)  [ -f "$STUB_DIR/overlap" ] && { echo "Error response from daemon: Pool overlaps with other one on this address space" >&2; exit 1; }
               shift 2; subnet=""; gw=""
               while [ $# -gt 1 ]; do case "$1" in --subnet) subnet=$2; shift;; --gateway) gw=$2; shift;; esac; shift; done
               echo "bridge $subnet $gw " > "$STUB_DIR/net"; echo 0123456789abcdef0123; exit 0 ;;
    esac ;;
esac
exit 9
"""


@pytest.fixture()
def stub(tmp_path):
    exe = tmp_path / "docker"
    exe.write_text(STUB)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return tmp_path


def run(stub_dir: Path, **env_extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, STUB_DIR=str(stub_dir), DOCKER=str(stub_dir / "docker"))
    env.update(env_extra)
    return subprocess.run(["bash", str(SCRIPT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, env=env, timeout=30)


def test_creates_then_is_idempotent(stub):
    res = run(stub)
    assert res.returncode == 0, res.stderr
    assert "created network 'admlops'" in res.stdout and "gateway 172.28.0.1" in res.stdout
    create = [c for c in (stub / "calls").read_text().splitlines() if "create" in c][0]
    assert create == ("network create --driver bridge --subnet 172.28.0.0/16 --gateway "
                      "172.28.0.1 --opt com.docker.network.bridge.name=br-admlops admlops")
    res = run(stub)
    assert res.returncode == 0 and "exists with the same config" in res.stdout
    assert sum("create" in c for c in (stub / "calls").read_text().splitlines()) == 1


def test_other_subnet_is_an_error_with_the_fix(stub):
    (stub / "net").write_text("bridge 172.18.0.0/16 172.18.0.1 \n")
    res = run(stub)
    assert res.returncode == 1
    assert "DIFFERENT config" in res.stderr and "subnet 172.18.0.0/16" in res.stderr
    assert "network rm admlops" in res.stderr and "ADMLOPS_SUBNET=172.18.0.0/16" in res.stderr
    assert "create" not in (stub / "calls").read_text()


def test_overlap_reported(stub):
    (stub / "overlap").write_text("")
    res = run(stub)
    assert res.returncode == 3 and "Pool overlaps" in res.stderr and "ADMLOPS_SUBNET" in res.stderr


def test_engine_down(stub):
    (stub / "down").write_text("")
    res = run(stub)
    assert res.returncode == 2 and "no Docker engine reachable" in res.stderr
    assert "systemctl start docker" in res.stderr


def test_real_client_without_engine(tmp_path):
    if not shutil.which("docker"):
        pytest.skip("no docker client installed")
    env = dict(os.environ, DOCKER_HOST="unix://%s/no-engine.sock" % tmp_path)
    env.pop("DOCKER", None)
    res = subprocess.run(["bash", str(SCRIPT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, env=env, timeout=30)
    assert res.returncode == 2, res.stderr
    assert "no Docker engine reachable (DOCKER_HOST=unix://%s/no-engine.sock)" % tmp_path \
        in res.stderr


def test_missing_client(tmp_path):
    res = run(tmp_path, DOCKER=str(tmp_path / "nope"))
    assert res.returncode == 2 and "not installed" in res.stderr
