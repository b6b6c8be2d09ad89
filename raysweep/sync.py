"""``raysweep sync``: backfill MLflow from Ray's storage after a tracking outage (or a lost store).

Ray keeps every reported result of a trial in ``<storage>/<experiment>/<trial_key>/result.json`` and each
trial's status in the experiment state, whatever happened to MLflow. Sync replays those results through
the same logger the sweep uses, which reuses child runs found by ``raysweep.trial_key`` and skips epochs
already logged, so it creates only what is missing, and running it twice changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from analysis import mlflow_tags as tags
from raysweep.manifest import Manifest
from raysweep.mlflow_store import SweepRun, TrackingUnavailable, get_or_create_experiment, limit_http_retries
from raysweep.trial_logger import TrialLogger, error_reason
from trainables.params import ConfigError
from trainables.tune import ENVELOPE, read_envelope


@dataclass
class SyncReport:
    sweep_id: str
    tracking_uri: str
    parent_run_id: str | None
    parent_created: bool
    trials: int
    runs_created: int
    epochs_logged: int
    runs_closed: int
    waiting: int  # trials still incomplete in MLflow (the store stopped answering during the sync)


def trial_statuses(experiment_dir: Path) -> dict[str, str]:
    """Ray trial id -> status (TERMINATED, ERROR, RUNNING, ...) from the newest experiment state file."""
    states = sorted(experiment_dir.glob("experiment_state-*.json"))
    if not states:
        return {}
    data = json.loads(states[-1].read_text())
    out = {}
    for entry in data.get("trial_data", []):
        state = json.loads(entry[0]) if isinstance(entry, list) else entry
        out[state["trial_id"]] = state["status"]
    return out


def read_results(trial_dir: Path) -> list[dict[str, Any]]:
    """The results a trial reported, in order (one JSON object per line of result.json)."""
    path = trial_dir / "result.json"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except ValueError:  # a line cut short by a crash
                continue
    return out


def sync_sweep(manifest: Manifest, tracking_uri: str | None = None) -> SyncReport:
    """Log every trial of the sweep's phases that MLflow lacks; see the module docstring."""
    data = manifest.data
    limit_http_retries()
    uri = tracking_uri or data["tracking_uri"]
    sweep = SweepRun(uri, data["experiment"], data["sweep_id"], data["parent_tags"], run_id=data["parent_run_id"])
    parent_created = False
    try:
        if sweep.run_id is not None and not _run_exists(sweep):
            sweep.run_id = None  # recorded, but not in this store: find it by its sweep id or create it
        if sweep.run_id is None:
            before = _parent_exists(sweep)
            sweep.parent()
            parent_created = not before
    except TrackingUnavailable:
        raise ConfigError("tracking.uri", f"MLflow at {uri} does not answer; start it (or give --tracking-uri) "
                                          "and run sync again") from None
    if parent_created:
        sweep.log_text(yaml.safe_dump(data["spec"], sort_keys=False), "spec.yaml")
        for plan_file in sorted(manifest.sweep_dir.glob("plan-*.json")):
            sweep.log_text(plan_file.read_text(), plan_file.name)
    if data["parent_run_id"] != sweep.run_id and tracking_uri in (None, data["tracking_uri"]):
        manifest.update(parent_run_id=sweep.run_id)

    logger = TrialLogger(sweep)
    trials = 0
    for phase in data["phases"].values():
        experiment_dir = manifest.storage_root / phase["experiment"]
        statuses = trial_statuses(experiment_dir)
        for params in sorted(experiment_dir.glob("*/params.json")):
            saved = json.loads(params.read_text())
            if not isinstance(saved, dict) or ENVELOPE not in saved:
                continue
            results = read_results(params.parent)
            ray_id = results[-1].get("trial_id", "") if results else ""
            logs = logger.track_envelope(read_envelope(saved), ray_id)
            trials += len(logs)
            for result in results:
                logger.add_trial_result(logs, result)
            status = statuses.get(ray_id)
            for log in logs:
                if status == "TERMINATED":
                    logger.end(log, "FINISHED")
                elif status == "ERROR":
                    logger.end(log, "FAILED", error_reason(params.parent / "error.txt"))
    waiting = logger.flush_all()
    if data["status"] in ("finished", "failed"):
        sweep.finish("FINISHED" if data["status"] == "finished" else "FAILED")
    return SyncReport(data["sweep_id"], uri, sweep.run_id, parent_created, trials, logger.runs_created,
                      logger.epochs_logged, logger.runs_closed, waiting)


def _run_exists(sweep: SweepRun) -> bool:
    """Whether the recorded parent run is in this store (a 'does not exist' answer is not an outage)."""
    from mlflow.exceptions import MlflowException

    try:
        sweep.client.get_run(sweep.run_id)
        return True
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise TrackingUnavailable(sweep.tracking_uri) from err
    except Exception as err:
        raise TrackingUnavailable(sweep.tracking_uri) from err


def _parent_exists(sweep: SweepRun) -> bool:
    exp = sweep.call(get_or_create_experiment, sweep.client, sweep.experiment, sweep.tracking_uri)
    found = sweep.call(sweep.client.search_runs, [exp], tags.sweep_filter(sweep.sweep_id), max_results=1)
    return bool(found)
