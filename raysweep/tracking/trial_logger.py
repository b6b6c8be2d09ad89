"""Per-trial MLflow logging from the driver: one nested child run per planned trial, metrics per epoch.

:class:`TrialLogger` is idempotent against the store: a trial already logged under the parent (same
trial key) reuses its run, and an epoch already logged there is skipped, so a restored sweep or
``raysweep sync`` never duplicates a run or a metric step. While the store is unreachable, results wait
in memory and are sent when it answers again (Ray's storage keeps them too, for ``raysweep sync``).
A running trial's epochs are sent at most every ``send_interval_s``, together, and a node's ip once: Tune
runs the callbacks inside its result processing, and one request per member-epoch (with the host tags
re-sent each time) made a 16-member group's result take 0.5-0.9 s there (Ray warned of a bottleneck) and
took 40 s of driver time in a 64-trial sweep. The sweep's wall time did not move measurably (its trials
were not waiting on the driver), but the store gets fewer requests: a trial's epochs at most once a
second, its host tags once instead of with every epoch.
:class:`TuneCallback` feeds it from Ray Tune's hooks.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

from ray.tune import Callback
from ray.tune.result import AUTO_RESULT_KEYS, DONE, EXPERIMENT_TAG, SHOULD_CHECKPOINT, TRIAL_ID

from analysis import mlflow_tags as tags
from raysweep.tracking.mlflow_store import (
    SweepRun,
    TrackingUnavailable,
    epoch_batches,
    flatten,
    log_epochs,
    log_params,
    log_tags,
)
from raysweep.trials import PlannedTrial
from trainables.planned import MEMBERS, UNREADABLE, Envelope

PER_CLASS_ARTIFACT = "per_class_test_acc.csv"  # final per-class accuracy when there are too many classes for metrics
# Keys Ray adds to every result (its public AUTO_RESULT_KEYS and the per-trial ones it adds beside them);
# everything else numeric that a trial reports is a metric.
RAY_RESULT_KEYS = frozenset(AUTO_RESULT_KEYS) | {DONE, TRIAL_ID, EXPERIMENT_TAG, SHOULD_CHECKPOINT, "node_id"}


def trial_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The numeric metrics a trial reported, without Ray's bookkeeping keys."""
    return {k: float(v) for k, v in result.items()
            if k not in RAY_RESULT_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)}


def error_reason(path: str | Path | None) -> str:
    """The last line of a trial's error file that names an error or exception, at most 500 characters."""
    try:
        text = Path(path).read_text() if path else ""
    except OSError:
        text = ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for line in reversed(lines):
        if "Error" in line or "Exception" in line:
            return line[:500]
    return (lines[-1] if lines else "error")[:500]


@dataclass
class TrialLog:
    """What the logger knows of one trial: its run, the epochs logged there, what still waits to be sent."""

    planned: PlannedTrial
    ray_trial_id: str = ""
    group: str | None = None  # the key of the group (Ray trial) it trains in, if it has company
    run_id: str | None = None
    status: str = "RUNNING"  # the run's status in MLflow
    logged: set[int] | None = None  # epochs already in MLflow; None until looked up
    pending: list[tuple[int, dict[str, float], int]] = field(default_factory=list)  # (epoch, metrics, ms)
    node_tags: dict[str, str] = field(default_factory=dict)  # waiting to be sent
    host_tagged: bool = False  # its node's ip and hostname were queued once
    nodes: list[str] = field(default_factory=list)
    sent_at: float | None = None  # time.monotonic() of the last send of its epochs (None: never sent)
    seen: int = 0  # highest epoch reported
    stop_reason: str | None = None  # set by a non-finite loss (kept over 'completed')
    final: tuple[str, str | None] | None = None  # (run status, error reason) once the trial ended
    closed: bool = False
    class_acc: list[float] | None = None  # last per-class test accuracy of a many-class dataset

    @property
    def waiting(self) -> bool:
        """Something of this trial is not in MLflow yet."""
        ended_unsent = self.final is not None and not self.closed
        return self.run_id is None or bool(self.pending or self.node_tags) or ended_unsent


class TrialLogger:
    """The child runs of one sweep's trials; see the module docstring. Counters say what it sent."""

    SEND_INTERVAL_S = 1.0

    def __init__(self, sweep: SweepRun, send_interval_s: float = SEND_INTERVAL_S) -> None:
        self.sweep = sweep
        self.send_interval_s = send_interval_s
        self.trials: dict[str, TrialLog] = {}
        self._children: dict[str, tuple[str, str]] | None = None
        self.runs_created = self.epochs_logged = self.runs_closed = 0

    def track(self, planned: PlannedTrial, ray_trial_id: str = "", group: str | None = None) -> TrialLog:
        """The log of ``planned`` (created on first sight)."""
        key = planned.key
        if key not in self.trials:
            self.trials[key] = TrialLog(planned, ray_trial_id, group)
        elif ray_trial_id:
            self.trials[key].ray_trial_id = ray_trial_id
        return self.trials[key]

    def track_envelope(self, env: Envelope, ray_trial_id: str = "") -> list[TrialLog]:
        """The logs of every member of one Tune trial."""
        group = env.key if env.grouped else None
        return [self.track(member, ray_trial_id, group) for member in env.members]

    def add_trial_result(self, logs: list[TrialLog], result: Mapping[str, Any]) -> None:
        """Queue one result of a Tune trial: a group reports each member's metrics under ``members``."""
        if len(logs) == 1:
            self.add_result(logs[0], result)
            return
        shared = {k: v for k, v in result.items() if k in RAY_RESULT_KEYS}
        members = result.get(MEMBERS) or {}
        for log in logs:
            metrics = members.get(log.planned.key)
            if metrics is not None:
                self.add_result(log, {**shared, **metrics})

    def add_result(self, log: TrialLog, result: Mapping[str, Any]) -> None:
        """Queue one reported result (a repeated epoch is dropped when sent)."""
        epoch = int(result.get("epoch", result.get("training_iteration", 0)))
        metrics = trial_metrics(result)
        log.pending.append((epoch, metrics, int(result.get("timestamp", 0) or time.time()) * 1000))
        log.seen = max(log.seen, epoch)
        if result.get("non_finite_loss"):
            log.stop_reason = f"non-finite loss at epoch {epoch}"
        if isinstance(result.get("test_class_acc"), list):
            log.class_acc = [float(a) for a in result["test_class_acc"]]
        node = result.get("node_id")
        if node and (not log.nodes or log.nodes[-1] != node):
            log.nodes.append(str(node))
            log.node_tags = {tags.NODE_ID: str(node), tags.NODE_IDS: ",".join(dict.fromkeys(log.nodes)),
                             tags.NODE_IP: str(result.get("node_ip", "")),
                             tags.HOSTNAME: str(result.get("hostname", ""))}
            log.host_tagged = True
        elif result.get("node_ip") and not log.host_tagged:
            log.node_tags = {tags.NODE_IP: str(result["node_ip"]), tags.HOSTNAME: str(result.get("hostname", ""))}
            log.host_tagged = True

    @staticmethod
    def end(log: TrialLog, status: str, error: str | None = None) -> None:
        """Mark the trial ended with MLflow run ``status`` (FINISHED or FAILED) and an error reason."""
        log.final = (status, error)

    def waiting(self) -> int:
        """How many trials have something not yet in MLflow (no store call)."""
        return sum(t.waiting for t in self.trials.values())

    def due(self, log: TrialLog) -> bool:
        """Whether a running trial's waiting epochs should go now: it has no run yet, it ended, or its last
        send is ``send_interval_s`` old."""
        return (log.run_id is None or log.final is not None or log.sent_at is None
                or time.monotonic() - log.sent_at >= self.send_interval_s)

    def flush(self, log: TrialLog, force: bool = True) -> None:
        """Send what waits for one trial (unless ``force`` is off and it is not :meth:`due`); an unreachable
        store leaves it waiting."""
        if not force and not self.due(log):
            return
        try:
            self._send(log)
        except TrackingUnavailable:
            pass

    def flush_all(self, force: bool = True) -> int:
        """Send everything waiting (only what is :meth:`due` unless ``force``); the number of trials still
        waiting (0 = all in MLflow)."""
        for log in self.trials.values():
            if log.waiting:
                self.flush(log, force)
        return self.waiting()

    def _send(self, log: TrialLog) -> None:
        sweep = self.sweep
        client = sweep.client
        if log.run_id is None:
            parent = sweep.parent()
            if self._children is None:
                self._children = sweep.child_runs()
            key = log.planned.key
            if key in self._children:
                log.run_id, log.status = self._children[key]
            else:
                log.run_id, log.logged = self._create_run(log, parent), set()
                self.runs_created += 1
            self._children[key] = (log.run_id, log.status)
        if log.logged is None:
            history = sweep.call(client.get_metric_history, log.run_id, "epoch")
            log.logged = {int(m.step) for m in history}
        if log.node_tags:
            sweep.call(log_tags, client, log.run_id, log.node_tags)
            log.node_tags = {}
        fresh, known = [], set(log.logged)
        for entry in log.pending:  # an epoch reported twice (a restored trial) goes once, its first report
            if entry[0] not in known:
                known.add(entry[0])
                fresh.append(entry)
        for epochs, metrics in epoch_batches(fresh):
            sweep.call(log_epochs, client, log.run_id, metrics)
            log.logged.update(epochs)
            self.epochs_logged += len(epochs)
        log.pending.clear()
        if fresh:
            log.sent_at = time.monotonic()
        if log.final is not None and not log.closed:
            self._close(log)

    def _close(self, log: TrialLog) -> None:
        sweep, client = self.sweep, self.sweep.client
        status, error = log.final
        if log.status == status:  # ended before (an earlier driver or sync): leave it as it is
            log.closed = True
            return
        done = max([log.seen, *log.logged])
        epochs = log.planned.epochs
        reason = error or log.stop_reason or (
            "completed" if done >= epochs else f"stopped by the scheduler at epoch {done}")
        sweep.call(log_tags, client, log.run_id, {tags.STOP_REASON: reason, tags.EPOCHS_RUN: done})
        if log.class_acc is not None:  # many classes: one artifact instead of hundreds of metric keys
            rows = "\n".join(f"{c},{a!r}" for c, a in enumerate(log.class_acc))
            sweep.call(client.log_text, log.run_id, f"class,test_acc\n{rows}\n", PER_CLASS_ARTIFACT)
        sweep.call(client.set_terminated, log.run_id, status)
        log.closed, log.status = True, status
        self.runs_closed += 1

    def _create_run(self, log: TrialLog, parent: str) -> str:
        planned = log.planned
        cfg, key = planned.config, planned.key
        run_tags = {
            tags.PARENT: parent, tags.ROLE: tags.TRIAL, tags.PHASE: planned.phase, tags.TRIAL_KEY: key,
            tags.CONFIG_ID: planned.config_id, tags.SEED: planned.seed, tags.METHOD: cfg["method"]["name"],
            tags.DATASET: cfg["dataset"]["name"], tags.LABEL: planned.label, tags.RAY_TRIAL_ID: log.ray_trial_id,
            tags.PLAN_INDEX: planned.index, **({tags.GROUP: log.group} if log.group else {}),
        }
        sweep, client = self.sweep, self.sweep.client
        run = sweep.call(client.create_run, sweep.experiment_id, run_name=f"{planned.label} s{planned.seed}",
                         tags={k: str(v) for k, v in run_tags.items()})
        run_id = run.info.run_id
        # Found again by its trial key from now on, even if the params below fail half-way (they are
        # re-sent on the next attempt only for a new run, so log them before anything else can fail).
        sweep.call(log_params, client, run_id, {**flatten(cfg), **{f"axis.{k}": v for k, v in planned.axes.items()}})
        sweep.call(client.log_dict, run_id, cfg, "config.json")
        return run_id


class TuneCallback(Callback):
    """Ray Tune's trial hooks -> the sweep's :class:`TrialLogger`.

    Tune pickles its callbacks with the experiment state and unpickles them when a sweep is restored; this
    one pickles as its sweep id only, and a restored copy logs through the logger that the restoring
    session attached with :meth:`attach` (so every process talks to the store through its own connection).
    """

    _live: ClassVar[dict[str, TrialLogger]] = {}

    def __init__(self, logger: TrialLogger) -> None:
        self.sweep_id = logger.sweep.sweep_id
        self.attach(logger)

    @classmethod
    def attach(cls, logger: TrialLogger) -> None:
        """Make ``logger`` the one every callback of its sweep in this process logs through."""
        cls._live[logger.sweep.sweep_id] = logger

    @classmethod
    def detach(cls, sweep_id: str) -> None:
        cls._live.pop(sweep_id, None)

    def __getstate__(self) -> dict[str, Any]:
        return {"sweep_id": self.sweep_id}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.sweep_id = state["sweep_id"]

    @property
    def logger(self) -> TrialLogger:
        try:
            return self._live[self.sweep_id]
        except KeyError:
            raise RuntimeError(f"no trial logger attached for sweep {self.sweep_id} in this process") from None

    def _logs(self, trial) -> list[TrialLog]:
        return self.logger.track_envelope(Envelope.from_config(trial.config), trial.trial_id)

    def _flush(self, logs: list[TrialLog], force: bool = True) -> None:
        for log in logs:
            self.logger.flush(log, force)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._flush(self._logs(trial))

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if result.get(UNREADABLE):  # the trial resumed past checkpoints it could not read: say which
            epoch = result.get("epoch")
            print(f"warning: trial {Envelope.from_config(trial.config).key}: unreadable checkpoints skipped "
                  f"({result[UNREADABLE]}); it resumed from the newest readable one and reached epoch {epoch}",
                  file=sys.stderr, flush=True)
        logs = self._logs(trial)
        self.logger.add_trial_result(logs, result)
        self._flush(logs, force=False)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        logs = self._logs(trial)
        for log in logs:
            self.logger.end(log, "FINISHED")
        self._flush(logs)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        logs = self._logs(trial)
        reason = error_reason(getattr(trial, "error_file", None))
        for log in logs:
            self.logger.end(log, "FAILED", reason)
        self._flush(logs)

    def on_step_end(self, iteration, trials, **info) -> None:
        if not self.logger.sweep.down and self.logger.waiting():
            self.logger.flush_all(force=False)

    def on_experiment_end(self, trials, **info) -> None:
        self.logger.flush_all()
