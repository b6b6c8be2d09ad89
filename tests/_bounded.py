"""A bound on a test's own wall time around an in-process call that once hung (``raysweep.cli.main`` on a
spec Ray would wait on forever): when it expires the test fails, wherever the call is stuck in Python."""

from __future__ import annotations

import contextlib
import signal
from typing import Iterator

import pytest


@contextlib.contextmanager
def bounded(seconds: float, what: str) -> Iterator[None]:
    """Fail the test if the block runs longer than ``seconds`` (SIGALRM; the main thread only).

    The failure is pytest's own outcome exception, a BaseException, so no ``except Exception`` or
    ``except OSError`` in the code under test can swallow it and turn it into a passing answer.
    """
    def expired(signum, frame):
        pytest.fail(f"{what} did not return within {seconds:g} s: it hangs", pytrace=False)

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
