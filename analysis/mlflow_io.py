"""Read a sweep back from MLflow alone: one tidy row per trial (config columns, ids, final metrics).

Nothing here reads Ray's results folder, so tables can be rebuilt after it is gone.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
from mlflow import MlflowClient


class SweepNotFound(LookupError):
    """No sweep matches the experiment / parent run given; the message says what exists."""


def find_sweep(client: MlflowClient, experiment: str | None = None, parent_run_id: str | None = None):
    """The parent run of a sweep: ``parent_run_id`` if given, else the newest sweep of ``experiment``."""
    if parent_run_id:
        return client.get_run(parent_run_id)
    exp = client.get_experiment_by_name(experiment) if experiment else None
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise SweepNotFound(f"no experiment {experiment!r}; experiments here: {', '.join(names) or '(none)'}")
    runs = client.search_runs([exp.experiment_id], "tags.`raysweep.role` = 'sweep'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise SweepNotFound(f"experiment {experiment!r} holds no raysweep sweep")
    return runs[0]


def _parse(value: str) -> Any:
    """MLflow params are strings; give numbers back as numbers for sorting and grouping."""
    try:
        parsed = json.loads(value)
    except (json.JSONDecodeError, TypeError):
        return value
    return parsed if isinstance(parsed, (int, float)) and not isinstance(parsed, bool) else value


def trials_frame(client: MlflowClient, parent) -> pd.DataFrame:
    """One row per trial run under ``parent``: tags (ids), params (dotted config keys), final metrics."""
    runs = client.search_runs(
        [parent.info.experiment_id],
        f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.`raysweep.role` = 'trial'",
        order_by=["attributes.start_time ASC"], max_results=50000)
    rows = []
    for run in runs:
        tags = run.data.tags
        row = {
            "run_id": run.info.run_id, "status": run.info.status,
            "trial_key": tags.get("raysweep.trial_key"), "config_id": tags.get("raysweep.config_id"),
            "seed": int(tags.get("raysweep.seed", 0)), "method": tags.get("raysweep.method"),
            "label": tags.get("raysweep.label"), "phase": tags.get("raysweep.phase", "search"),
            "stop_reason": tags.get("raysweep.stop_reason", ""),
            "plan_index": int(tags.get("raysweep.plan_index", len(rows))),
        }
        row.update({k: _parse(v) for k, v in run.data.params.items()})
        row.update({f"metric.{k}": v for k, v in run.data.metrics.items()})
        rows.append(row)
    frame = pd.DataFrame(rows)
    return frame.sort_values("plan_index", kind="stable").reset_index(drop=True) if rows else frame


def sweep_axes(parent) -> list[str]:
    """The dotted keys the sweep's spec swept as axes (stored on the parent run)."""
    return json.loads(parent.data.tags.get("raysweep.axes", "[]"))
