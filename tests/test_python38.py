"""Python 3.8 gate: the vehicle runs ROS Noetic (Ubuntu 20.04, Python 3.8), dev/CI run 3.11.

Runs scripts/check_py38.sh: vermin -t=3.8- (static), then a real python3.8 compiles the trees and
imports every pure-Python module of admlops_ros (plus a ModelSpec.from_dict smoke check).

The first run builds build/py38-venv from python3.8 with numpy/pyyaml/jsonschema (~30 s, needs
PyPI); with that venv cached a run takes a few seconds. Without a python3.8 on the machine the
script still runs the static vermin check and passes on it; test_python38_interpreter_ran is then
skipped, so the summary (-ra) says that the interpreter check did not run.
"""
import subprocess

import pytest

from tests.paths import REPO_ROOT as REPO

SCRIPT = REPO / "scripts" / "check_py38.sh"
NOT_FOUND = "python3.8 not found"


@pytest.fixture(scope="module")
def check_output():
    try:
        proc = subprocess.run(["bash", str(SCRIPT)], cwd=str(REPO), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=600)
    except subprocess.TimeoutExpired as exc:
        out = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else exc.output
        pytest.fail("scripts/check_py38.sh timed out after 600 s:\n%s" % (out or ""))
    return proc.returncode, proc.stdout


def test_python38_compatible(check_output):
    rc, out = check_output
    assert rc == 0, "scripts/check_py38.sh exited %d:\n%s" % (rc, out)


def test_python38_interpreter_ran(check_output):
    _, out = check_output
    if NOT_FOUND in out:
        pytest.skip("python3.8 not found: only the static vermin check ran (no compile/import "
                    "under 3.8); install one (pyenv install 3.8) or set PY38=")
    # pass/fail is test_python38_compatible's; this one only proves that 3.8 itself ran
    assert "py38 import: imported" in out, out
