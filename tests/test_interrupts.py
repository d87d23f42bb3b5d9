"""Ctrl-C during numba-compiled code: a KeyboardInterrupt, never a SystemError or a segfault."""
import signal
import subprocess
import sys
import textwrap

import pytest

from admlops_ros import interrupts
from tests.paths import REPO_ROOT

pytest.importorskip("numba")

# A compiled call that computes for a while, then returns a tuple of arrays: boxing them calls
# back into Python, where an unguarded SIGINT handler raises into numba's compiled code.
SCRIPT = textwrap.dedent("""
    import os, signal, sys, threading, time
    import numba, numpy as np
    from admlops_ros import interrupts

    @numba.njit(cache=False)
    def compute(n):
        out = np.zeros(n)
        for i in range(400_000_000):
            out[i % n] += 1.0
        return out, out.copy()

    compute(3)
    {install}
    threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)).start()
    try:
        result = compute(3)
        print("computed", int(result[1].sum()))
        time.sleep(30)  # the interrupt is delivered again here, in plain Python
        print("finished")
    except KeyboardInterrupt:
        print("KeyboardInterrupt")
    except BaseException as exc:
        print(type(exc).__name__)
""")


def test_sigint_inside_a_compiled_call_is_a_keyboard_interrupt_after_it():
    res = subprocess.run([sys.executable, "-c", SCRIPT.format(install="interrupts.install()")],
                         capture_output=True, text=True, timeout=300, cwd=str(REPO_ROOT))
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["computed", "400000000", "KeyboardInterrupt"], res.stderr


def test_frames_of_numba_are_recognised():
    import numba.core.serialize as serialize
    assert interrupts.in_numba(_frame_of(serialize))
    assert not interrupts.in_numba(sys._getframe())
    assert not interrupts.in_numba(None)


def _frame_of(module):
    """A frame whose code lives in ``module`` (a generator's frame, never run)."""
    namespace = {}
    exec(compile("def g():\n    yield\n", module.__file__, "exec"), namespace)
    return namespace["g"]().gi_frame


def test_install_and_restore_the_previous_handler():
    before = signal.getsignal(signal.SIGINT)
    previous = interrupts.install()
    assert signal.getsignal(signal.SIGINT) is interrupts.raise_keyboard_interrupt
    interrupts.restore(previous)
    assert signal.getsignal(signal.SIGINT) is before


RETRY_SCRIPT = textwrap.dedent("""
    import os, signal, threading, time
    from admlops_ros import interrupts

    interrupts.install()
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
    try:
        time.sleep(5)
    except KeyboardInterrupt:
        print("swallowed")  # what a finalizer or a bare except in a library does
    try:
        time.sleep(10)  # the command goes on: the retry interrupts it again
        print("lost")
    except KeyboardInterrupt:
        print("retried")
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            time.sleep(5)  # cleanup of a handled interrupt is not interrupted by the retry
            print("cleaned up")
""")


def test_a_swallowed_interrupt_comes_again_but_never_during_its_cleanup():
    res = subprocess.run([sys.executable, "-c", RETRY_SCRIPT], capture_output=True, text=True,
                         timeout=120, cwd=str(REPO_ROOT))
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["swallowed", "retried", "cleaned", "up"], res.stderr
