"""Ctrl-C (and SIGTERM) as KeyboardInterrupt, safely while numba-compiled code runs.

A numba function that returns arrays calls back into Python (``numba.core.serialize.
_numba_unpickle``) to box them. A signal that arrives while the compiled code computes runs its
Python handler inside that callback; a KeyboardInterrupt raised there is returned into compiled
code that does not expect it: ``SystemError ... returned a result with an exception set``, or a
segfault (numba issue #2324). The handler here raises only outside numba's own frames and
otherwise delivers the same signal again a moment later, when the compiled call has returned.
Once ``restore`` starts, a signal still on its way (a redelivery, or one CPython runs inside
``signal.signal`` itself, which handles pending signals first) is dropped: the command has
already ended and is exiting with its own code.
"""
from __future__ import annotations

import importlib.util
import os
import signal
import sys
import threading
from types import FrameType
from typing import Callable, Dict, Iterable, Optional

REDELIVER_AFTER_S = 0.05
#: A KeyboardInterrupt raised where Python swallows it (a finalizer, a weakref or GC callback:
#: "Exception ignored in ...") would be lost; the signal comes again after this long unless
#: the command has ended (restore() ran) by then. While the interrupt is still being handled
#: (cleanup in finally / __exit__ / except on its way out) the retry only checks again later.
RETRY_AFTER_S = 2.0
_INSTALLED = threading.Event()  # install() ran and restore() has not: retries are on
_RESTORED = threading.Event()   # restore() began: late signals are dropped
_RETRYING = threading.Event()   # the next signal is our own retry, not the user's
_LOCK = threading.Lock()        # a redelivery's check-and-send vs. stop_retries()


def _package_dir(name: str) -> Optional[str]:
    spec = importlib.util.find_spec(name)
    locations = spec.submodule_search_locations if spec else None
    return os.path.join(list(locations)[0], "") if locations else None


_NUMBA_DIR = _package_dir("numba")


def in_numba(frame: Optional[FrameType]) -> bool:
    """Whether ``frame`` (the Python frame a signal interrupted) is numba's own code."""
    return bool(_NUMBA_DIR and frame is not None
                and frame.f_code.co_filename.startswith(_NUMBA_DIR))


def raise_keyboard_interrupt(signum: int, frame: Optional[FrameType]) -> None:
    """Signal handler: KeyboardInterrupt, postponed while the signal landed in numba's code."""
    if _RESTORED.is_set():
        return  # restore() has begun: the command is exiting already
    if in_numba(frame):
        _redeliver_later(REDELIVER_AFTER_S, signum)
        return
    retry = _RETRYING.is_set()
    _RETRYING.clear()
    if _INSTALLED.is_set():  # retries only under install()/restore(), which end them
        if retry and isinstance(sys.exc_info()[1], KeyboardInterrupt):
            _redeliver_later(RETRY_AFTER_S, signum, retry=True)  # not lost: being handled
            return
        _redeliver_later(RETRY_AFTER_S, signum, retry=True)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise KeyboardInterrupt(f"signal {signum}")


def _redeliver(signum: int, retry: bool = False) -> None:
    # Under the lock, and raised in this thread (raise_signal trips CPython's flag before it
    # returns, unlike os.kill to the process): once stop_retries() holds the lock, every
    # redelivery sent is already pending, and the next signal.signal() runs it, dropped.
    with _LOCK:
        if _RESTORED.is_set() or (retry and not _INSTALLED.is_set()):
            return
        if retry:
            _RETRYING.set()
        signal.raise_signal(signum)


def _redeliver_later(delay_s: float, signum: int, retry: bool = False) -> None:
    timer = threading.Timer(delay_s, _redeliver, (signum, retry))
    timer.daemon = True
    timer.start()


def install(signals: Iterable[int] = (signal.SIGINT,)) -> Dict[int, Callable]:
    """Make ``signals`` raise KeyboardInterrupt; returns the previous handlers.

    Only the main thread can set handlers: elsewhere this does nothing and returns {}.
    """
    if threading.current_thread() is not threading.main_thread():
        return {}
    _RESTORED.clear()
    _INSTALLED.set()
    return {sig: signal.signal(sig, raise_keyboard_interrupt) for sig in signals}


def stop_retries() -> None:
    """The interrupt has been handled: drop redeliveries and signals still on their way."""
    with _LOCK:
        _INSTALLED.clear()
        _RESTORED.set()


def restore(previous: Dict[int, Callable]) -> None:
    """Put back the handlers `install` returned (those Python knows; C-installed ones stay)."""
    if previous:
        stop_retries()
    for sig, handler in previous.items():
        if handler is not None:
            signal.signal(sig, handler)
