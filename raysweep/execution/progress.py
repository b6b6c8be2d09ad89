"""One progress display for a running sweep, in place of Ray Tune's "== Status ==" table printed again and again.

:class:`SweepProgress` is a Ray Tune ``ProgressReporter`` (Tune's legacy output path, ``RAY_AIR_NEW_OUTPUT=0``,
which calls ``should_report`` / ``report`` after every controller step when ``verbose >= 1``). It shows how
many trials of the total have finished, stopped early or errored, how many run and wait, the best
configuration so far with its search metric, the elapsed time and an estimate of the time left. On a
terminal that is a live display drawn with rich; elsewhere (CI, a log file) it prints one plain line at
most every ``interval_s`` seconds and a final line when the sweep ends.

The accounting (:func:`tally`), the estimate (:func:`eta_seconds`) and the plain line (:func:`status_line`)
are plain functions of the trials, so they are tested with stand-in trial objects.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import IO, Any, Callable, Iterable

from ray.tune import ProgressReporter

from raysweep.text import format_duration
from trainables.planned import ENVELOPE, Envelope

ERROR, RUNNING, TERMINATED = "ERROR", "RUNNING", "TERMINATED"  # Ray's Trial.status values (PENDING, PAUSED wait)
INTERVAL_S = 30.0  # plain output: at most one line this often
REFRESH_S = 1.0  # live display: redraw at most this often


def trial_label(trial: Any) -> str:
    """The Tune trial's label (``focal gamma=0.5 s0``) from its envelope (see trainables.planned.Envelope)."""
    if ENVELOPE not in (trial.config or {}):
        return str(getattr(trial, "trial_id", "?"))
    return Envelope.from_config(trial.config).label


def trial_planned_epochs(trial: Any) -> int | None:
    """The epochs the trial is planned to run (its longest member's), or None when its config does not say."""
    if ENVELOPE not in (trial.config or {}):
        return None
    return max(m.epochs for m in Envelope.from_config(trial.config).members)


def epochs_reported(trial: Any) -> int:
    """The last epoch the trial reported (raysweep reports ``epoch``; Tune counts ``training_iteration``)."""
    result = trial.last_result or {}
    value = result.get("epoch", result.get("training_iteration", 0))
    return int(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0


@dataclass(frozen=True)
class Best:
    label: str
    value: float
    epoch: int


@dataclass(frozen=True)
class Tally:
    """Where the sweep stands. ``stopped`` trials ended before their last planned epoch (the scheduler, or a
    non-finite loss); ``epochs_left`` counts the epochs still planned for trials not ended (an upper bound
    under early stopping), the trials not created yet included at the mean planned length."""

    total: int
    finished: int
    stopped: int
    errored: int
    running: int
    waiting: int
    epochs_done: int
    epochs_left: float
    best: Best | None = None

    @property
    def ended(self) -> int:
        return self.finished + self.stopped + self.errored


def tally(trials: Iterable[Any], total: int | None, metric: str | None, mode: str | None, *,
          label: Callable[[Any], str] = trial_label,
          planned_epochs: Callable[[Any], int | None] = trial_planned_epochs) -> Tally:
    """Count ``trials`` (objects with ``status``, ``last_result``, ``config``) by state; pick the best so far.

    ``total`` is the number of trials the sweep will run (at least the ones given). The best trial is the
    one whose last reported ``metric`` is highest (``mode='max'``) or lowest (``'min'``); ties go to the first.
    """
    if mode not in (None, "max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    trials = list(trials)
    counts = {"finished": 0, "stopped": 0, "errored": 0, "running": 0, "waiting": 0}
    done = 0
    left = 0.0
    planned_known: list[int] = []
    best: Best | None = None
    for trial in trials:
        epochs = epochs_reported(trial)
        planned = planned_epochs(trial)
        done += epochs
        if planned is not None:
            planned_known.append(planned)
        if trial.status == ERROR:
            counts["errored"] += 1
        elif trial.status == TERMINATED:
            counts["finished" if planned is None or epochs >= planned else "stopped"] += 1
        else:
            counts["running" if trial.status == RUNNING else "waiting"] += 1
            left += max(0, (planned or epochs) - epochs)
        value = (trial.last_result or {}).get(metric) if metric else None
        if isinstance(value, (int, float)) and math.isfinite(value):
            better = best is None or (value < best.value if mode == "min" else value > best.value)
            if better:
                best = Best(label(trial), float(value), epochs)
    total = max(total or 0, len(trials))
    if total > len(trials) and planned_known:
        left += (total - len(trials)) * sum(planned_known) / len(planned_known)
    return Tally(total, epochs_done=done, epochs_left=left, best=best, **counts)


def eta_seconds(elapsed_s: float, epochs_done: int, epochs_left: float) -> float | None:
    """Time left at the sweep's throughput so far (epochs per second, start-up costs included); None
    before the first epoch."""
    if epochs_done <= 0 or elapsed_s <= 0:
        return None
    return elapsed_s * epochs_left / epochs_done


def _ended(t: Tally) -> str:
    return f"{t.ended}/{t.total} trials ended"


def _states(t: Tally) -> str:
    return f"{t.finished} finished, {t.stopped} stopped early, {t.errored} errored"


def _activity(t: Tally) -> str:
    return f"{t.running} running, {t.waiting} waiting"


def _counts(t: Tally) -> str:
    return f"{_ended(t)} ({_states(t)}), {_activity(t)}"


def _best(t: Tally, metric: str | None) -> str:
    if t.best is None:
        return "best: none yet"
    return f"best: {t.best.label} {metric}={t.best.value:.4f} (epoch {t.best.epoch})"


def _times(t: Tally, elapsed_s: float, done: bool) -> str:
    text = f"elapsed {format_duration(elapsed_s)}"
    eta = None if done else eta_seconds(elapsed_s, t.epochs_done, t.epochs_left)
    return text + (f", about {format_duration(eta)} left" if eta is not None else "")


def status_line(t: Tally, metric: str | None, elapsed_s: float, done: bool = False) -> str:
    """The plain one-line form: counts; best so far; elapsed and time left."""
    return f"{'sweep done' if done else 'sweep'}: {_counts(t)}; {_best(t, metric)}; {_times(t, elapsed_s, done)}"


class SweepProgress(ProgressReporter):
    """Ray Tune progress reporter: a live rich display on a terminal, periodic plain lines elsewhere.

    Pass it as ``tune.RunConfig(progress_reporter=SweepProgress(metric, mode, total), verbose=1)`` with
    ``RAY_AIR_NEW_OUTPUT=0`` (Tune's new output engine ignores progress reporters). ``live=None`` picks the
    live display when ``file`` is a terminal. ``label`` and ``planned_epochs`` read a Tune trial's config;
    they must be module-level functions, since Tune pickles the run config with the experiment.
    """

    def __init__(self, metric: str | None = None, mode: str | None = None, total: int | None = None, *,
                 interval_s: float = INTERVAL_S, refresh_s: float = REFRESH_S, live: bool | None = None,
                 file: IO[str] | None = None, label: Callable[[Any], str] = trial_label,
                 planned_epochs: Callable[[Any], int | None] = trial_planned_epochs,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if interval_s <= 0 or refresh_s <= 0:
            raise ValueError("interval_s and refresh_s must be positive")
        self.metric, self.mode, self.total = metric, mode, total
        self.interval_s, self.refresh_s, self.live = interval_s, refresh_s, live
        self.file, self.label, self.planned_epochs, self.clock = file, label, planned_epochs, clock
        self._reset()

    def _reset(self) -> None:
        self._started: float | None = None
        self._last: float | None = None  # when the last line or frame was shown
        self._live_display: Any = None  # rich.live.Live while a live display is on screen
        self._live_on: bool | None = None  # decided once, at the first report
        self._finished = False

    def __getstate__(self) -> dict[str, Any]:
        """Settings only: a restored sweep draws afresh on stdout (streams and live displays do not pickle)."""
        return {**{k: v for k, v in self.__dict__.items() if not k.startswith("_")}, "file": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    @property
    def stream(self) -> IO[str]:
        return self.file if self.file is not None else sys.stdout

    def _is_live(self) -> bool:
        if self._live_on is None:
            if self.live is not None:
                self._live_on = self.live
            else:
                from rich.console import Console

                self._live_on = Console(file=self.stream).is_terminal
        return self._live_on

    # ---- Tune's interface ----------------------------------------------------------------------------------
    def setup(self, start_time: float | None = None, total_samples: int | None = None, metric: str | None = None,
              mode: str | None = None, **kwargs: Any) -> None:
        """Called by Tune before the first report; fills what the constructor left unset."""
        self.metric = self.metric or metric
        self.mode = self.mode or mode
        self.total = self.total or total_samples
        self._started = self.clock()
        self._last = None

    def should_report(self, trials: list, done: bool = False) -> bool:
        if done:
            return not self._finished
        now = self.clock()
        every = self.refresh_s if self._is_live() else self.interval_s
        return self._last is None or now - self._last >= every

    def report(self, trials: list, done: bool, *sys_info: str) -> None:
        now = self.clock()
        if self._started is None:
            self._started = now
        self._last = now
        t = tally(trials, self.total, self.metric, self.mode, label=self.label, planned_epochs=self.planned_epochs)
        elapsed = now - self._started
        if self._is_live():
            self._draw(t, elapsed, done)
        else:
            print(status_line(t, self.metric, elapsed, done), file=self.stream, flush=True)
        self._finished = done

    # ---- the live display ------------------------------------------------------------------------------------
    def _draw(self, t: Tally, elapsed_s: float, done: bool) -> None:
        from rich.console import Console, Group
        from rich.live import Live
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        # Three short lines, so that an 80-column terminal does not wrap them.
        head = Table.grid(padding=(0, 1))
        head.add_row(ProgressBar(total=max(t.total, 1), completed=t.ended, width=24),
                     f"{_ended(t)}; {_times(t, elapsed_s, done)}")
        frame = Group(head, Text(f"{_states(t)}; {_activity(t)}"), Text(_best(t, self.metric)))
        if self._live_display is None:
            self._live_display = Live(frame, console=Console(file=self.stream), auto_refresh=False)
            self._live_display.start()
        self._live_display.update(frame, refresh=True)
        if done:
            self._live_display.stop()
            self._live_display = None


__all__ = ["SweepProgress", "Tally", "Best", "tally", "eta_seconds", "status_line", "format_duration",
           "trial_label", "trial_planned_epochs"]
