"""AdmlopsError: the one base class of every error the project raises on purpose."""
from __future__ import annotations


class AdmlopsError(Exception):
    """A problem with the user's input, files or machine, with a message that says how to fix it.

    Every module's error class derives from it (with ValueError, RuntimeError, ... as a mixin
    where callers catch those). The ``admlops`` CLI prints it as one line and exits 1; any other
    exception is a bug and keeps its traceback.
    """


class UsageError(AdmlopsError):
    """A command line that cannot work as given (the CLI exits 2, as argparse does)."""
