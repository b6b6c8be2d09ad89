"""Shared benchmark plumbing: where results go and the provenance every result carries."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from raysweep.tracking.provenance import git_commit, package_versions

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "load_average_1m": os.getloadavg()[0]}


def save(name: str, payload: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<name>.json`` with the machine, versions and git commit."""
    RESULTS_DIR.mkdir(exist_ok=True)
    record = {"benchmark": name, "time": time.strftime("%Y-%m-%d %H:%M:%S"), "git_commit": git_commit(),
              "versions": package_versions(), "machine": machine(), **payload}
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(record, indent=1, default=str))
    return path


def trial_runs(result) -> tuple[Any, list]:
    """The MLflow client and the trial runs of a finished sweep (a ``raysweep.execution.runner.SweepResult``)."""
    from mlflow import MlflowClient

    client = MlflowClient(result.tracking_uri)
    experiment = client.get_experiment_by_name(result.experiment)
    return client, client.search_runs([experiment.experiment_id], "tags.`raysweep.role` = 'trial'", max_results=1000)
