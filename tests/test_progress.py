"""The sweep's progress display: state accounting, the estimate, plain lines and the live display,
with stand-in trials (objects with Tune's status / last_result / config), no Ray cluster."""

import io
import pickle
from types import SimpleNamespace

import pytest
from ray.tune import ProgressReporter

from raysweep.execution.progress import SweepProgress, eta_seconds, format_duration, status_line, tally
from trainables.planned import Envelope, PlannedTrial


def _trial(status, label, epoch=None, planned=10, val=None):
    result = {} if epoch is None else {"epoch": float(epoch), **({} if val is None else {"val_balanced_acc": val})}
    member = PlannedTrial({"train": {"epochs": planned}}, "c0ffee0000", 0, label)
    envelope = Envelope(key=label, label=label, members=(member,))
    return SimpleNamespace(status=status, last_result=result, trial_id=label, config=envelope.to_config())


def _trials():
    return [_trial("TERMINATED", "focal gamma=0.5", 10, val=0.70),
            _trial("TERMINATED", "focal gamma=2", 3, val=0.50),  # stopped by the scheduler at its first rung
            _trial("ERROR", "dm beta=1", 1, val=0.90),
            _trial("RUNNING", "cb beta=0.9", 4, val=0.75),
            _trial("PENDING", "ce"),
            _trial("PAUSED", "ids c=0.1", 2, planned=6, val=0.10)]


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_tally_counts_each_state_and_the_epochs_left():
    t = tally(_trials(), total=9, metric="val_balanced_acc", mode="max")
    assert (t.finished, t.stopped, t.errored, t.running, t.waiting) == (1, 1, 1, 1, 2)
    assert t.total == 9 and t.ended == 3
    assert t.epochs_done == 10 + 3 + 1 + 4 + 0 + 2
    # running 10-4, pending 10-0, paused 6-2; three trials not created yet at the mean planned length (56/6)
    assert t.epochs_left == pytest.approx(6 + 10 + 4 + 3 * 56 / 6)
    assert t.best.label == "dm beta=1" and t.best.value == 0.90 and t.best.epoch == 1
    low = tally(_trials(), total=None, metric="val_balanced_acc", mode="min")
    assert low.best.label == "ids c=0.1" and low.total == 6 and low.epochs_left == 6 + 10 + 4
    assert tally([], 4, "val_balanced_acc", "max").best is None
    with pytest.raises(ValueError, match="mode must be 'max' or 'min'"):
        tally([], 1, "m", "up")


def test_eta_and_durations():
    assert eta_seconds(100.0, 20, 30.0) == pytest.approx(150.0)
    assert eta_seconds(100.0, 0, 30.0) is None and eta_seconds(0.0, 5, 30.0) is None
    assert [format_duration(s) for s in (0, 42.4, 185, 7620, 7659)] == ["0s", "42s", "3m05s", "2h07m", "2h07m"]


def test_status_line_reads_as_one_sentence():
    t = tally(_trials(), 9, "val_balanced_acc", "max")
    assert status_line(t, "val_balanced_acc", 185.0) == (
        "sweep: 3/9 trials ended (1 finished, 1 stopped early, 1 errored), 1 running, 2 waiting; "
        "best: dm beta=1 val_balanced_acc=0.9000 (epoch 1); elapsed 3m05s, about "
        f"{format_duration(185.0 * t.epochs_left / 20)} left")
    assert status_line(t, "val_balanced_acc", 185.0, done=True).startswith("sweep done: 3/9 trials ended")
    assert status_line(t, "val_balanced_acc", 185.0, done=True).endswith("; elapsed 3m05s")


def test_plain_output_prints_at_most_one_line_per_interval_and_a_final_line():
    out, clock = io.StringIO(), Clock()
    reporter = SweepProgress(interval_s=30, live=False, file=out, clock=clock)
    assert isinstance(reporter, ProgressReporter)
    reporter.setup(start_time=0.0, total_samples=9, metric="val_balanced_acc", mode="max")
    shown = 0
    for step in range(0, 95, 5):  # Tune asks after every controller step
        clock.now = 1000.0 + step
        if reporter.should_report(_trials()):
            reporter.report(_trials(), False, "scheduler", "resources")
            shown += 1
    assert shown == 4  # at 0, 30, 60 and 90 s
    clock.now = 1100.0
    assert reporter.should_report(_trials(), done=True)
    reporter.report(_trials(), True)
    assert not reporter.should_report(_trials(), done=True), "the final line once"
    lines = out.getvalue().splitlines()
    assert len(lines) == 5 and all(line.startswith("sweep: 3/9 trials ended") for line in lines[:4])
    assert "elapsed 30s" in lines[1] and lines[-1].startswith("sweep done: ") and "elapsed 1m40s" in lines[-1]


def test_constructor_settings_win_over_tunes_and_pickling_keeps_only_settings():
    reporter = SweepProgress("train_loss", "min", 12, interval_s=5, live=False, file=io.StringIO())
    reporter.setup(total_samples=3, metric="val_balanced_acc", mode="max")
    assert (reporter.metric, reporter.mode, reporter.total) == ("train_loss", "min", 12)
    reporter.report(_trials(), False)
    copy = pickle.loads(pickle.dumps(reporter))  # Tune pickles the run config with the experiment
    assert (copy.metric, copy.mode, copy.total, copy.interval_s) == ("train_loss", "min", 12, 5)
    assert copy.file is None and copy._started is None and copy.should_report([])
    with pytest.raises(ValueError, match="must be positive"):
        SweepProgress(interval_s=0)


def test_live_display_draws_the_counts_and_the_best_and_stops_when_done(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    out, clock = io.StringIO(), Clock()
    reporter = SweepProgress(refresh_s=1, live=True, file=out, clock=clock)
    reporter.setup(total_samples=9, metric="val_balanced_acc", mode="max")
    assert reporter.should_report(_trials())
    reporter.report(_trials(), False)
    clock.now += 0.5
    assert not reporter.should_report(_trials()), "redrawn at most once a second"
    clock.now += 1
    assert reporter.should_report(_trials())
    reporter.report(_trials(), True)
    text = out.getvalue()
    assert "3/9 trials ended; elapsed 2s" in text
    assert "1 finished, 1 stopped early, 1 errored; 1 running, 2 waiting" in text
    assert "best: dm beta=1 val_balanced_acc=0.9000 (epoch 1)" in text and reporter._live_display is None
