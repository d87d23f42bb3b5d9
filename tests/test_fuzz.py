"""Short CI run of the shipped fuzzer (scripts/fuzz.py, issue 18).

- the harness itself: a planted target (``planted_target`` below, run by the workers as
  ``tests.test_fuzz:planted_target``) segfaults, raises KeyError, hangs and blows up memory on
  some inputs; every kind must be caught, counted, saved and reproducible;
- the real targets (pointcloud, voxelize, spec, bag) run a fixed-seed batch each (~30 s on 2
  cores); their findings are listed but not yet asserted to be zero, see
  ``test_real_targets_have_no_findings``.
"""
from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from admlops_ros.errors import AdmlopsError
from tests.paths import REPO_ROOT

FUZZ = REPO_ROOT / "scripts" / "fuzz.py"
PLANTED = "tests.test_fuzz:planted_target"
# inputs per real target: a few seconds each on 2 cores (spec and bag parse pure-Python YAML /
# rosbag records: ~40 inputs/s per core; pointcloud and voxelize run thousands per second)
REAL_INPUTS = {"pointcloud": 3000, "voxelize": 2000, "spec": 800, "bag": 500}
# TODO(issue 18): set to True once the defects the fuzzer finds are fixed (see the report of
# test_real_targets_have_no_findings); until then that test xfails with the list of findings.
REAL_TARGETS_MUST_BE_CLEAN = True


class PlantedError(AdmlopsError):
    """The planted target's project error (allowed by the contract)."""


def planted_target(data: bytes) -> None:
    """Test-only fuzz target: each behaviour on a fixed share of the random inputs."""
    b = data[0] if data else 255
    if b < 8:
        ctypes.string_at(0)  # SIGSEGV
    elif b < 16:
        raise KeyError("planted")
    elif b < 19:
        time.sleep(3600)  # hang
    elif b < 22:
        bytearray(1 << 40)  # MemoryError under the worker's RLIMIT_AS
    elif b < 140:
        raise PlantedError("planted project error")


def planted_atheris(data: bytes) -> None:
    """Test-only atheris target: libFuzzer's comparison tracing finds the first bytes."""
    if data[:1] == b"S":
        ctypes.string_at(0)
    if data[:1] == b"K":
        raise KeyError("planted")
    if data[:1] == b"P":
        raise PlantedError("planted project error")


def run_fuzz(tmp_path, *args, timeout=300):
    cmd = [sys.executable, str(FUZZ), "--out", str(tmp_path / "fuzz"), "--quiet"] + list(args)
    proc = subprocess.run(cmd, cwd=str(REPO_ROOT), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=timeout)
    assert proc.returncode in (0, 1), "fuzz.py exited %d (harness failure):\n%s\n%s" % (
        proc.returncode, proc.stdout[-4000:], proc.stderr[-4000:])
    summary = json.loads((tmp_path / "fuzz" / "summary.json").read_text())
    return proc, summary


def load_fuzz_module():
    spec = importlib.util.spec_from_file_location("fuzz_under_test", str(FUZZ))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_harness_catches_crash_exception_timeout_and_memory(tmp_path):
    proc, summary = run_fuzz(tmp_path, "--targets", PLANTED, "--inputs", "200", "--seed", "3",
                             "--timeout", "2", "--jobs", "2", "--mem-limit", "2048")
    assert proc.returncode == 1, proc.stdout
    (name, stats), = summary["targets"].items()
    kinds = stats["findings"]
    assert stats["inputs"] == 200
    assert stats["ok"] + stats["project_errors"] + sum(kinds.values()) == 200
    assert stats["ok"] > 0 and stats["project_errors"] > 0
    for kind in ("crash", "exception", "timeout", "memory"):
        assert kinds[kind] >= 1, (kind, stats)
    assert kinds["result"] == 0
    unique = {(u["kind"], u["etype"]): u for u in stats["unique"]}
    crash, exc = unique[("crash", "SIGSEGV")], unique[("exception", "KeyError")]
    assert crash["where"].startswith("tests/test_fuzz.py:"), crash  # faulthandler's dump
    assert ("timeout", "Timeout") in unique and ("memory", "MemoryError") in unique
    out = tmp_path / "fuzz" / name
    assert (out / "crash-1.bin").is_file() and (out / "crash-1.txt").is_file()
    assert "repro:" in (out / "crash-1.txt").read_text()
    # the saved inputs reproduce, in a fresh process
    rep = subprocess.run([sys.executable, str(FUZZ), "--repro", str(REPO_ROOT / crash["file"])],
                         cwd=str(REPO_ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, timeout=60)
    assert rep.returncode == -signal.SIGSEGV, rep.stderr[-2000:]
    rep = subprocess.run([sys.executable, str(FUZZ), "--repro", str(REPO_ROOT / exc["file"])],
                         cwd=str(REPO_ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, timeout=60)
    assert rep.returncode == 1 and "KeyError: 'planted'" in rep.stderr, rep.stderr[-2000:]
    assert "exception" in proc.stdout and "crash" in proc.stdout  # the table


def test_inputs_are_deterministic_per_seed():
    fuzz = load_fuzz_module()
    target = fuzz.make_target("voxelize")
    import random
    target.setup(fuzz.REPO / "build", fuzz.Path("/tmp"))  # voxelize needs no seed files
    a = [target.describe(target.generate(fuzz.input_rng(7, "voxelize", i))) for i in range(20)]
    b = [target.describe(target.generate(fuzz.input_rng(7, "voxelize", i))) for i in range(20)]
    c = [target.describe(target.generate(fuzz.input_rng(8, "voxelize", i))) for i in range(20)]
    assert a == b and a != c
    # the atheris engine drives the same generators from bytes
    assert isinstance(fuzz.BytesRandom(b"\x01\x02").random(), float)
    assert fuzz.BytesRandom(b"").randrange(10) == 0
    assert isinstance(random.Random(), random.Random)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz_real")
    totals = {}
    started = time.monotonic()
    proc, summary = None, {"targets": {}}
    for name, n in REAL_INPUTS.items():
        proc, part = run_fuzz(tmp / name, "--targets", name, "--inputs", str(n), "--seed", "18",
                              "--timeout", "5", "--jobs", "2")
        summary["targets"].update(part["targets"])
        totals[name] = proc.stdout
    return summary, totals, time.monotonic() - started


def test_real_targets_run(real_run):
    summary, _, _ = real_run
    for name, n in REAL_INPUTS.items():
        stats = summary["targets"][name]
        assert stats["inputs"] == n, (name, stats)
        assert stats["ok"] > 0 and stats["project_errors"] > 0, (name, stats)
        assert stats["ok"] + stats["project_errors"] + sum(stats["findings"].values()) == n


def test_real_targets_have_no_findings(real_run):
    summary, outputs, _ = real_run
    found = ["%s %s-%d x%d: %s at %s: %s" % (name, u["kind"], u["n"], u["count"], u["etype"],
                                            u["where"], u["msg"][:120])
             for name, stats in summary["targets"].items() for u in stats["unique"]]
    if found and not REAL_TARGETS_MUST_BE_CLEAN:
        pytest.xfail("TODO(issue 18): the fuzzer still finds %d defect(s) in the package:\n  %s"
                     % (len(found), "\n  ".join(found)))
    assert not found, "\n".join(found)


def test_atheris_engine_catches_planted_findings(tmp_path):
    pytest.importorskip("atheris")
    corpus = tmp_path / "fuzz" / "tests.test_fuzz.planted_atheris" / "corpus"
    corpus.mkdir(parents=True)
    for k, seed in enumerate((b"S", b"K", b"x")):  # libFuzzer starts from these
        (corpus / ("seed%d" % k)).write_bytes(seed)
    proc, summary = run_fuzz(tmp_path, "--engine", "atheris", "--targets",
                             "tests.test_fuzz:planted_atheris", "--inputs", "1000", "--seed", "1",
                             "--timeout", "2", "--mem-limit", "2048")
    (_, stats), = summary["targets"].items()
    assert proc.returncode == 1
    assert stats["inputs"] >= 300
    assert stats["findings"]["exception"] >= 1 and stats["findings"]["crash"] >= 1, stats


if os.environ.get("FUZZ_TEST_DEBUG"):  # pragma: no cover - a hand check of planted_target
    planted_target(b"\x10")
