"""MLflow from the driver: one parent run per sweep, one nested child run per trial.

Everything is logged from the driver (a Tune callback), so worker nodes never need the tracking store.
Batches respect MLflow's limits (100 params/tags, 1000 metrics per request); a trial already logged under
the parent (same ``raysweep.trial_key``) is reused, never duplicated.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from ray.tune import Callback

from raysweep.plan import PlannedTrial

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

MAX_BATCH_PARAMS = 100
MAX_BATCH_METRICS = 1000
MAX_PARAM_LENGTH = 500  # longer values are shortened in params; the full config is a JSON artifact
DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"
# Keys Ray adds to every result; everything else numeric that a trial reports is a metric.
RAY_RESULT_KEYS = {"timestamp", "done", "training_iteration", "time_this_iter_s", "time_total_s", "pid",
                   "time_since_restore", "iterations_since_restore", "checkpoint_dir_name", "date", "hostname",
                   "node_ip", "trial_id", "experiment_tag", "config", "should_checkpoint"}


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


class SweepRun:
    """The parent MLflow run of one sweep and the lookup of its trial children."""

    def __init__(self, client: MlflowClient, experiment_id: str, run_id: str) -> None:
        self.client, self.experiment_id, self.run_id = client, experiment_id, run_id

    @classmethod
    def create(cls, tracking_uri: str, experiment: str, sweep_id: str, tags: Mapping[str, Any]) -> "SweepRun":
        client = MlflowClient(tracking_uri)
        exp_id = get_or_create_experiment(client, experiment, tracking_uri)
        run = client.create_run(exp_id, run_name=sweep_id,
                                tags={"raysweep.role": "sweep", "raysweep.sweep_id": sweep_id, **tags})
        return cls(client, exp_id, run.info.run_id)

    def children(self) -> dict[str, str]:
        """trial_key -> run id of the trial runs already under this parent."""
        runs = self.client.search_runs(
            [self.experiment_id], f"tags.mlflow.parentRunId = '{self.run_id}' and tags.`raysweep.role` = 'trial'",
            max_results=50000)
        return {r.data.tags["raysweep.trial_key"]: r.info.run_id for r in runs}

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)


class MlflowTrialLogger(Callback):
    """Tune callback: a nested child run per planned trial, per-epoch metrics with step = epoch."""

    def __init__(self, sweep: SweepRun) -> None:
        self.sweep = sweep
        self.run_ids: dict[str, str] = sweep.children()
        self.last_epoch: dict[str, int] = {}

    def _run_for(self, trial) -> str:
        key = _trial_key(trial)
        if key in self.run_ids:
            return self.run_ids[key]
        planned = PlannedTrial.from_tune_config(trial.config["trial"])
        cfg = planned.config
        tags = {
            "mlflow.parentRunId": self.sweep.run_id, "raysweep.role": "trial", "raysweep.phase": planned.phase,
            "raysweep.trial_key": key, "raysweep.config_id": planned.config_id, "raysweep.seed": planned.seed,
            "raysweep.method": cfg["method"]["name"], "raysweep.dataset": cfg["dataset"]["name"],
            "raysweep.label": planned.label, "raysweep.ray_trial_id": trial.trial_id,
            "raysweep.plan_index": planned.index,
        }
        run = self.sweep.client.create_run(self.sweep.experiment_id, run_name=f"{planned.label} s{planned.seed}",
                                           tags={k: str(v) for k, v in tags.items()})
        run_id = run.info.run_id
        log_params(self.sweep.client, run_id, {**flatten(cfg), **{f"axis.{k}": v for k, v in planned.axes.items()}})
        self.sweep.client.log_dict(run_id, cfg, "config.json")
        self.run_ids[key] = run_id
        return run_id

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._run_for(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        run_id = self._run_for(trial)
        epoch = int(result.get("epoch", result.get("training_iteration", 0)))
        key = _trial_key(trial)
        if key not in self.last_epoch and result.get("node_ip"):
            log_tags(self.sweep.client, run_id, {"raysweep.node_ip": result["node_ip"],
                                                 "raysweep.hostname": result.get("hostname", "")})
        self.last_epoch[key] = epoch
        log_metrics(self.sweep.client, run_id, trial_metrics(result), epoch, int(result.get("timestamp", 0)) * 1000)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        key = _trial_key(trial)
        epochs = trial.config["trial"]["train"]["epochs"]
        done = self.last_epoch.get(key, 0)
        reason = "completed" if done >= epochs else f"stopped by the scheduler at epoch {done}"
        run_id = self._run_for(trial)
        log_tags(self.sweep.client, run_id, {"raysweep.stop_reason": reason, "raysweep.epochs_run": done})
        self.sweep.client.set_terminated(run_id, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        run_id = self._run_for(trial)
        log_tags(self.sweep.client, run_id, {"raysweep.stop_reason": _error_reason(trial),
                                             "raysweep.epochs_run": self.last_epoch.get(_trial_key(trial), 0)})
        self.sweep.client.set_terminated(run_id, "FAILED")


def _trial_key(trial) -> str:
    return trial.config["trial"]["trial_key"]


def _error_reason(trial) -> str:
    """The last line of the trial's error (e.g. 'NonFiniteLossError: non-finite loss at epoch 3')."""
    path = getattr(trial, "error_file", None)
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
