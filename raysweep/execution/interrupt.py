"""Stop signals (SIGINT, SIGTERM, SIGHUP) end a sweep as *interrupted*, never as finished.

Ray Tune 2.60 stops ``Tuner.fit()`` gracefully on SIGINT (its handler sets an event, the loop saves the
experiment state and ``fit()`` returns as if done), so the driver could not tell an interrupted phase from
a finished one; ``ray.init`` meanwhile leaves SIGTERM to Ray's core worker, which dumps a stack and aborts.
:class:`StopSignals` takes all three signals once Ray is up: the first one is recorded and, while a
``fit()`` runs, handed to Tune's own graceful stop (its handler, which ``ray.tune`` also installs on
SIGUSR1; Tune's SIGINT handler is switched off with ``TUNE_DISABLE_SIGINT_HANDLER`` so ours sees the
signal first); outside ``fit()`` it raises :class:`Interrupted` at once. A second signal raises
:class:`Interrupted` at once, wherever the driver is. The session raises it after a ``fit()`` that a signal
cut short, so the phase is never recorded as finished.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from typing import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(BaseException):
    """The sweep was stopped by a signal; ``exit_code`` is the shell's 128 + signal number.

    A BaseException, like KeyboardInterrupt: no ``except Exception`` on the way (Tune's, MLflow's) may turn
    a stop into an error or swallow it.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopSignals:
    """The driver's handler of stop signals while a sweep runs (see the module's docstring)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.fitting = False
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        """Take SIGINT, SIGTERM and SIGHUP (main thread only; elsewhere signals cannot be handled)."""
        if threading.current_thread() is not threading.main_thread():
            return
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # Tune reads it in each fit(); ours delegates instead
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None:  # the second signal: stop now
            raise Interrupted(signum)
        self.received = signum
        tune_stop = signal.getsignal(signal.SIGUSR1) if self.fitting else None
        if not callable(tune_stop):
            raise Interrupted(signum)
        print(f"\nraysweep: {signal.Signals(signum).name}: stopping the trials and saving their state "
              "(a second signal stops at once)", flush=True)
        # Tune's own notes on the stop name its Python API (Tuner.restore); ours names `raysweep resume`.
        logging.getLogger("ray.tune.tune").setLevel(logging.CRITICAL)
        tune_stop(signal.SIGINT, frame)

    @contextlib.contextmanager
    def fit(self) -> Iterator[None]:
        """Around one ``Tuner.fit()``: a first signal stops it gracefully; once it returns, raise
        :class:`Interrupted` if a signal cut it short."""
        self.check()
        # Tune installs its handler on SIGUSR1 inside fit(): until then one from an earlier fit() may be there,
        # whose event no loop reads, so start from the default and let check() below catch a signal then.
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        self.fitting = True
        try:
            yield
        finally:
            self.fitting = False
        self.check()

    def check(self) -> None:
        """Raise :class:`Interrupted` if a stop signal was received."""
        if self.received is not None:
            raise Interrupted(self.received)

    @contextlib.contextmanager
    def installed(self) -> Iterator["StopSignals"]:
        self.install()
        try:
            yield self
        finally:
            self.restore()
