"""MLflow from the driver: one parent run per sweep, one nested child run per trial.

Everything is logged from the driver (a Tune callback), so worker nodes never need the tracking store.
Batches respect MLflow's limits (100 params/tags, 1000 metrics per request); a trial already logged under
the parent (same ``raysweep.trial_key``) is reused, never duplicated, and an epoch already logged is not
logged again. An unreachable store never stops or stalls the sweep: see :class:`SweepRun`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from ray.tune import Callback

from raysweep.plan import PlannedTrial

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

MAX_BATCH_PARAMS = 100
MAX_BATCH_METRICS = 1000
PER_CLASS_ARTIFACT = "per_class_test_acc.csv"  # final per-class accuracy when there are too many classes for metrics
MAX_PARAM_LENGTH = 500  # longer values are shortened in params; the full config is a JSON artifact
DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"
# Keys Ray adds to every result; everything else numeric that a trial reports is a metric.
RAY_RESULT_KEYS = {"timestamp", "done", "training_iteration", "time_this_iter_s", "time_total_s", "pid",
                   "time_since_restore", "iterations_since_restore", "checkpoint_dir_name", "date", "hostname",
                   "node_ip", "trial_id", "experiment_tag", "config", "should_checkpoint", "node_id"}


def default_tracking_uri(directory: str | Path = ".") -> str:
    return f"sqlite:///{(Path(directory) / DEFAULT_DB).resolve()}"


def resolve_tracking_uri(uri: str | None) -> str:
    """The spec's ``tracking.uri``, MLFLOW_TRACKING_URI, or the sqlite file in the working directory."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def get_or_create_experiment(client: MlflowClient, name: str, tracking_uri: str) -> str:
    """The experiment's id; a new one on the default sqlite store keeps artifacts in ./mlartifacts."""
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        location = (db.parent / DEFAULT_ARTIFACTS / name).resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> dotted keys (``{"method": {"gamma": 1}}`` -> ``{"method.gamma": 1}``)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    entries = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
    for chunk in _chunks(entries, MAX_BATCH_PARAMS):
        client.log_batch(run_id, params=chunk)


def log_tags(client: MlflowClient, run_id: str, tags: Mapping[str, Any]) -> None:
    entries = [RunTag(k, str(v)) for k, v in tags.items()]
    for chunk in _chunks(entries, MAX_BATCH_PARAMS):
        client.log_batch(run_id, tags=chunk)


def log_metrics(client: MlflowClient, run_id: str, metrics: Mapping[str, float], step: int, timestamp_ms: int) -> None:
    entries = [Metric(k, float(v), timestamp_ms, step) for k, v in metrics.items()]
    for chunk in _chunks(entries, MAX_BATCH_METRICS):
        client.log_batch(run_id, metrics=chunk)


def trial_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The numeric metrics a trial reported, without Ray's bookkeeping keys."""
    return {k: float(v) for k, v in result.items()
            if k not in RAY_RESULT_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)}


class TrackingUnavailable(RuntimeError):
    """The MLflow store did not answer (or is in its back-off period after a failure)."""


def limit_http_retries() -> None:
    """Short timeouts and few retries for a remote store, for this (driver) process only.

    MLflow's defaults (120 s timeout, 7 retries with exponential back-off) would stall a sweep for many
    minutes per call while a tracking server is down. The user's own settings win.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")


class SweepRun:
    """The parent MLflow run of one sweep, the lookup of its trial children, and outage handling.

    Every MLflow call goes through :meth:`call`: a failure prints a one-line warning (once per outage),
    and for ``retry_after_s`` seconds further calls fail at once instead of waiting on a dead server, so
    the sweep never stalls on tracking. The parent run is created on first use if it does not exist yet
    (found again by its ``raysweep.sweep_id`` tag, so it is never duplicated); texts for it and its final
    status wait in memory until the store answers. Pickles as its settings only (Tune saves callbacks with
    the experiment state, and a restored sweep must look up the store afresh).
    """

    retry_after_s = 20.0

    def __init__(self, tracking_uri: str, experiment: str, sweep_id: str, tags: Mapping[str, Any] | None = None,
                 run_id: str | None = None) -> None:
        self.tracking_uri, self.experiment, self.sweep_id = tracking_uri, experiment, sweep_id
        self.tags = {k: str(v) for k, v in (tags or {}).items()}
        self.run_id = run_id
        self._reset()

    def _reset(self) -> None:
        self._client: MlflowClient | None = None
        self.experiment_id: str | None = None
        self._down_since: float | None = None
        self._warned = False
        self.failures = 0
        self._pending_texts: list[tuple[str, str]] = []
        self._pending_status: str | None = None
        # Called with the parent run id once it exists (the runner records it in the sweep manifest).
        self.on_parent: Callable[[str], None] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("tracking_uri", "experiment", "sweep_id", "tags", "run_id")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    @classmethod
    def create(cls, tracking_uri: str, experiment: str, sweep_id: str, tags: Mapping[str, Any]) -> "SweepRun":
        """Create the parent run now; an unreachable store raises (see :meth:`open` for the tolerant way)."""
        sweep = cls(tracking_uri, experiment, sweep_id, tags)
        sweep._ensure_parent()
        return sweep

    @classmethod
    def open(cls, tracking_uri: str, experiment: str, sweep_id: str, tags: Mapping[str, Any],
             run_id: str | None = None) -> "SweepRun":
        """The parent run (created or found) if the store answers; otherwise one to create later."""
        sweep = cls(tracking_uri, experiment, sweep_id, tags, run_id)
        try:
            sweep.parent()
        except TrackingUnavailable:
            pass
        return sweep

    # ---- the store, guarded ----------------------------------------------------------------------
    @property
    def client(self) -> MlflowClient:
        """The store's client; creating it can fail too (a sqlite store migrates its schema on first use)."""
        if self._client is None:
            self._client = self.call(MlflowClient, self.tracking_uri)
        return self._client

    @property
    def down(self) -> bool:
        """True while the store failed within the last ``retry_after_s`` seconds."""
        return self._down_since is not None and time.monotonic() - self._down_since < self.retry_after_s

    @property
    def healthy(self) -> bool:
        """The last call succeeded (or none failed yet)."""
        return self._down_since is None

    def call(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)``; any failure (or a recent one) raises TrackingUnavailable, warned once."""
        if self.down:
            raise TrackingUnavailable(self.tracking_uri)
        try:
            out = fn(*args, **kwargs)
        except Exception as err:  # connection refused, timeouts, a 5xx: tracking must never end the sweep
            self.failures += 1
            self._down_since = time.monotonic()
            if not self._warned:
                self._warned = True
                first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
                print(f"warning: MLflow at {self.tracking_uri} failed ({first}); the sweep goes on, results stay "
                      f"in Ray's storage and logging is retried (or run: raysweep sync)", file=sys.stderr, flush=True)
            raise TrackingUnavailable(self.tracking_uri) from err
        if self._down_since is not None:
            self._down_since = None
            if self._warned:
                print(f"notice: MLflow at {self.tracking_uri} answers again; catching up", file=sys.stderr, flush=True)
            self._warned = False
        return out

    def parent(self) -> str:
        """The parent run id, creating the run (and pending texts/status) once the store answers."""
        if self.run_id is None or self.experiment_id is None:
            self.call(self._ensure_parent)
        if self._pending_texts or self._pending_status:
            while self._pending_texts:
                text, name = self._pending_texts[0]
                self.call(self.client.log_text, self.run_id, text, name)
                self._pending_texts.pop(0)
            if self._pending_status:
                self.call(self.client.set_terminated, self.run_id, self._pending_status)
                self._pending_status = None
        return self.run_id

    def _ensure_parent(self) -> None:
        self.experiment_id = get_or_create_experiment(self.client, self.experiment, self.tracking_uri)
        if self.run_id is None:
            found = self.client.search_runs(
                [self.experiment_id], f"tags.`raysweep.sweep_id` = '{self.sweep_id}' and tags.`raysweep.role` = 'sweep'",
                max_results=1)
            if found:
                self.run_id = found[0].info.run_id
            else:
                run = self.client.create_run(self.experiment_id, run_name=self.sweep_id,
                                             tags={"raysweep.role": "sweep", "raysweep.sweep_id": self.sweep_id,
                                                   **self.tags})
                self.run_id = run.info.run_id
            if self.on_parent is not None:
                self.on_parent(self.run_id)

    def log_text(self, text: str, name: str) -> None:
        """Log a text artifact on the parent run now, or as soon as the store answers."""
        self._pending_texts.append((text, name))
        try:
            self.parent()
        except TrackingUnavailable:
            pass

    def children(self) -> dict[str, str]:
        """trial_key -> run id of the trial runs already under this parent."""
        return {key: run_id for key, (run_id, _) in self.child_runs().items()}

    def child_runs(self) -> dict[str, tuple[str, str]]:
        """trial_key -> (run id, status) of the trial runs already under this parent."""
        parent = self.parent()
        runs = self.call(self.client.search_runs, [self.experiment_id],
                         f"tags.mlflow.parentRunId = '{parent}' and tags.`raysweep.role` = 'trial'", max_results=50000)
        return {r.data.tags["raysweep.trial_key"]: (r.info.run_id, r.info.status) for r in runs}

    def finish(self, status: str = "FINISHED") -> bool:
        """End the parent run; False if the store is unreachable (it is ended when it answers again)."""
        self._pending_status = status
        try:
            self.parent()
            return True
        except TrackingUnavailable:
            return False


@dataclass
class TrialLog:
    """What the logger knows of one trial: its run, the epochs logged there, what still waits to be sent."""

    config: dict[str, Any]  # the Tune config's "trial" entry (a planned trial)
    ray_trial_id: str = ""
    run_id: str | None = None
    status: str = "RUNNING"  # the run's status in MLflow
    logged: set[int] | None = None  # epochs already in MLflow; None until looked up
    pending: list[tuple[int, dict[str, float], int]] = field(default_factory=list)  # (epoch, metrics, ms)
    node_tags: dict[str, str] = field(default_factory=dict)
    nodes: list[str] = field(default_factory=list)
    seen: int = 0  # highest epoch reported
    stop_reason: str | None = None  # set by a non-finite loss (kept over 'completed')
    final: tuple[str, str | None] | None = None  # (run status, error reason) once the trial ended
    closed: bool = False
    class_acc: list[float] | None = None  # last per-class test accuracy of a many-class dataset


class MlflowTrialLogger(Callback):
    """Tune callback: a nested child run per planned trial, per-epoch metrics with step = epoch.

    Idempotent against the store: a trial already logged under the parent (same ``raysweep.trial_key``)
    reuses its run, and an epoch already logged there is skipped, so a restored sweep or ``raysweep sync``
    never duplicates a run or a metric step. While the store is unreachable results wait in memory and
    are sent when it answers again (Ray's storage keeps them too, for ``raysweep sync``).
    """

    def __init__(self, sweep: SweepRun) -> None:
        self.sweep = sweep
        self.trials: dict[str, TrialLog] = {}
        self._children: dict[str, str] | None = None
        self.runs_created = self.epochs_logged = self.runs_closed = 0

    def __getstate__(self) -> dict[str, Any]:
        return {"sweep": self.sweep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["sweep"])

    @property
    def run_ids(self) -> dict[str, str]:
        return {k: t.run_id for k, t in self.trials.items() if t.run_id}

    # ---- Tune's hooks ----------------------------------------------------------------------------
    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._flush(self._track(trial.config["trial"], trial.trial_id))

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        log = self._track(trial.config["trial"], trial.trial_id)
        self.add_result(log, result)
        self._flush(log)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        log = self._track(trial.config["trial"], trial.trial_id)
        log.final = ("FINISHED", None)
        self._flush(log)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        log = self._track(trial.config["trial"], trial.trial_id)
        log.final = ("FAILED", _error_reason(trial))
        self._flush(log)

    def on_step_end(self, iteration, trials, **info) -> None:
        if not self.sweep.down and any(self._waiting(t) for t in self.trials.values()):
            self.flush_all()

    def on_experiment_end(self, trials, **info) -> None:
        self.flush_all()

    # ---- bookkeeping shared with `raysweep sync` -------------------------------------------------
    def _track(self, config: Mapping[str, Any], ray_trial_id: str = "") -> TrialLog:
        key = config["trial_key"]
        if key not in self.trials:
            self.trials[key] = TrialLog(dict(config), ray_trial_id)
        elif ray_trial_id:
            self.trials[key].ray_trial_id = ray_trial_id
        return self.trials[key]

    def add_result(self, log: TrialLog, result: Mapping[str, Any]) -> None:
        """Queue one reported result (a repeated epoch is dropped when sent)."""
        epoch = int(result.get("epoch", result.get("training_iteration", 0)))
        metrics = trial_metrics(result)
        metrics.pop("node_id", None)
        log.pending.append((epoch, metrics, int(result.get("timestamp", 0) or time.time()) * 1000))
        log.seen = max(log.seen, epoch)
        if result.get("non_finite_loss"):
            log.stop_reason = f"non-finite loss at epoch {epoch}"
        if isinstance(result.get("test_class_acc"), list):
            log.class_acc = [float(a) for a in result["test_class_acc"]]
        node = result.get("node_id")
        if node and (not log.nodes or log.nodes[-1] != node):
            log.nodes.append(str(node))
            log.node_tags = {"raysweep.node_id": str(node), "raysweep.node_ids": ",".join(dict.fromkeys(log.nodes)),
                             "raysweep.node_ip": str(result.get("node_ip", "")),
                             "raysweep.hostname": str(result.get("hostname", ""))}
        elif result.get("node_ip") and not log.node_tags:
            log.node_tags = {"raysweep.node_ip": str(result["node_ip"]), "raysweep.hostname": str(result.get("hostname", ""))}

    @staticmethod
    def _waiting(log: TrialLog) -> bool:
        return log.run_id is None or bool(log.pending or log.node_tags) or (log.final is not None and not log.closed)

    def flush_all(self) -> int:
        """Send everything waiting; the number of trials still waiting (0 = all in MLflow)."""
        for log in self.trials.values():
            if self._waiting(log):
                self._flush(log)
        return sum(self._waiting(t) for t in self.trials.values())

    def _flush(self, log: TrialLog) -> None:
        try:
            self._send(log)
        except TrackingUnavailable:
            pass

    def _send(self, log: TrialLog) -> None:
        sweep = self.sweep
        client = sweep.client
        if log.run_id is None:
            parent = sweep.parent()
            if self._children is None:
                self._children = sweep.child_runs()
            key = log.config["trial_key"]
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
        while log.pending:
            epoch, metrics, ms = log.pending[0]
            if epoch not in log.logged:
                sweep.call(log_metrics, client, log.run_id, metrics, epoch, ms)
                log.logged.add(epoch)
                self.epochs_logged += 1
            log.pending.pop(0)
        if log.final is not None and not log.closed:
            status, error = log.final
            if log.status == status:  # ended before (an earlier driver or sync): leave it as it is
                log.closed = True
                return
            done = max([log.seen, *log.logged])
            epochs = log.config["train"]["epochs"]
            reason = error or log.stop_reason or (
                "completed" if done >= epochs else f"stopped by the scheduler at epoch {done}")
            sweep.call(log_tags, client, log.run_id, {"raysweep.stop_reason": reason, "raysweep.epochs_run": done})
            if log.class_acc is not None:  # many classes: one artifact instead of hundreds of metric keys
                rows = "\n".join(f"{c},{a!r}" for c, a in enumerate(log.class_acc))
                sweep.call(client.log_text, log.run_id, f"class,test_acc\n{rows}\n", PER_CLASS_ARTIFACT)
            sweep.call(client.set_terminated, log.run_id, status)
            log.closed, log.status = True, status
            self.runs_closed += 1

    def _create_run(self, log: TrialLog, parent: str) -> str:
        planned = PlannedTrial.from_tune_config(log.config)
        cfg, key = planned.config, planned.key
        tags = {
            "mlflow.parentRunId": parent, "raysweep.role": "trial", "raysweep.phase": planned.phase,
            "raysweep.trial_key": key, "raysweep.config_id": planned.config_id, "raysweep.seed": planned.seed,
            "raysweep.method": cfg["method"]["name"], "raysweep.dataset": cfg["dataset"]["name"],
            "raysweep.label": planned.label, "raysweep.ray_trial_id": log.ray_trial_id,
            "raysweep.plan_index": planned.index,
        }
        sweep, client = self.sweep, self.sweep.client
        run = sweep.call(client.create_run, sweep.experiment_id, run_name=f"{planned.label} s{planned.seed}",
                         tags={k: str(v) for k, v in tags.items()})
        run_id = run.info.run_id
        # Found again by its trial_key from now on, even if the params below fail half-way (they are
        # re-sent on the next attempt only for a new run, so log them before anything else can fail).
        sweep.call(log_params, client, run_id, {**flatten(cfg), **{f"axis.{k}": v for k, v in planned.axes.items()}})
        sweep.call(client.log_dict, run_id, cfg, "config.json")
        return run_id


def _error_reason(trial) -> str:
    """The last error line of a failed trial's error file (see :func:`error_reason`)."""
    return error_reason(getattr(trial, "error_file", None))


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


def log_json_artifact(client: MlflowClient, run_id: str, obj: Any, name: str) -> None:
    client.log_text(run_id, json.dumps(obj, indent=2, sort_keys=True, default=str), name)
