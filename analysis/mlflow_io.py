"""Read a sweep back from MLflow alone: one tidy row per trial (config columns, ids, final and best metrics).

Nothing here reads Ray's results folder, so tables can be rebuilt after it is gone. Metric histories (for
best-epoch values and learning curves) cost one request per run and metric; they are fetched in parallel
and only for the metrics asked for.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import pandas as pd
from mlflow import MlflowClient

from analysis import mlflow_tags
from analysis.tables import higher_is_better

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
SELECTION_METRIC = "val_balanced_acc"  # the validation score that picks a trial's epoch for ``selected.*``
HISTORY_WORKERS = 8


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
    runs = client.search_runs([exp.experiment_id], mlflow_tags.role_filter(mlflow_tags.SWEEP),
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise SweepNotFound(f"experiment {experiment!r} holds no raysweep sweep")
    return runs[0]


def resolve_sweep(client: MlflowClient, ref: str):
    """The parent run named by ``ref``: a parent run id (32 hex digits) or an experiment name."""
    if RUN_ID.match(ref):
        try:
            run = client.get_run(ref)
        except Exception:  # noqa: BLE001 - MLflow raises MlflowException or a REST error; fall back to a name
            run = None
        if run is not None:
            if run.data.tags.get(mlflow_tags.ROLE) != mlflow_tags.SWEEP:
                role = run.data.tags.get(mlflow_tags.ROLE)
                raise SweepNotFound(f"run {ref} is not a raysweep sweep (its role: {role})")
            return run
    return find_sweep(client, experiment=ref)


def _parse(value: str) -> Any:
    """MLflow params are strings; give numbers back as numbers for sorting and grouping."""
    try:
        parsed = json.loads(value)
    except (json.JSONDecodeError, TypeError):
        return value
    return parsed if isinstance(parsed, (int, float)) and not isinstance(parsed, bool) else value


def child_runs(client: MlflowClient, parent, role: str) -> list:
    """Every run under ``parent`` with tag ``raysweep.role`` = ``role``, paged (no 1000-run cap)."""
    query = mlflow_tags.children_filter(parent.info.run_id, role)
    runs, token = [], None
    while True:
        page = client.search_runs([parent.info.experiment_id], query, order_by=["attributes.start_time ASC"],
                                  max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def trials_frame(client: MlflowClient, parent) -> pd.DataFrame:
    """One row per trial run under ``parent``: tags (ids), params (dotted config keys), final metrics."""
    rows = []
    for run in child_runs(client, parent, mlflow_tags.TRIAL):
        tags = run.data.tags
        row = {
            "run_id": run.info.run_id, "status": run.info.status,
            "trial_key": tags.get(mlflow_tags.TRIAL_KEY), "config_id": tags.get(mlflow_tags.CONFIG_ID),
            "seed": int(tags.get(mlflow_tags.SEED, 0)), "method": tags.get(mlflow_tags.METHOD),
            "label": tags.get(mlflow_tags.LABEL), "phase": tags.get(mlflow_tags.PHASE, "search"),
            "stop_reason": tags.get(mlflow_tags.STOP_REASON, ""),
            "plan_index": int(tags.get(mlflow_tags.PLAN_INDEX, len(rows))),
            "epochs_run": int(tags.get(mlflow_tags.EPOCHS_RUN, 0) or 0),
        }
        row.update({k: _parse(v) for k, v in run.data.params.items()})
        row.update({f"metric.{k}": v for k, v in run.data.metrics.items()})
        rows.append(row)
    frame = pd.DataFrame(rows)
    return frame.sort_values("plan_index", kind="stable").reset_index(drop=True) if rows else frame


def final_phase(df: pd.DataFrame) -> pd.DataFrame:
    """The trials that the headline tables summarise: phase 2 ('confirm', every seed of the top
    configurations) when the sweep had one, else all of them."""
    if "phase" in df and (df["phase"] == "confirm").any():
        return df[df["phase"] == "confirm"]
    return df


def search_phase(df: pd.DataFrame) -> pd.DataFrame:
    """The trials that explored the space (sensitivity, importance): phase 1 when there were two."""
    if "phase" in df and (df["phase"] == "confirm").any():
        return df[df["phase"] != "confirm"]
    return df


def metric_histories(client: MlflowClient, run_ids: Iterable[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Long frame (run_id, metric, step, value) of every (run, metric) history, fetched in parallel."""
    jobs = [(r, m) for r in run_ids for m in metrics]

    def fetch(job):
        run_id, metric = job
        return [(run_id, metric, h.step, h.value) for h in client.get_metric_history(run_id, metric)]

    with ThreadPoolExecutor(max_workers=HISTORY_WORKERS) as pool:
        rows = [row for part in pool.map(fetch, jobs) for row in part]
    frame = pd.DataFrame(rows, columns=["run_id", "metric", "step", "value"])
    # A metric logged twice at one step (a retried epoch) keeps its last value.
    return frame.drop_duplicates(["run_id", "metric", "step"], keep="last").reset_index(drop=True)


def add_best(df: pd.DataFrame, histories: pd.DataFrame) -> pd.DataFrame:
    """``best.<m>`` columns: each trial's best value of ``<m>`` over its epochs (max for accuracies)."""
    if histories.empty:
        return df
    out = df.copy()
    for metric, part in histories.groupby("metric"):
        by_run = part.groupby("run_id")["value"]
        best = by_run.max() if higher_is_better(metric) else by_run.min()
        out[f"best.{metric}"] = out["run_id"].map(best)
    return out


def add_selected(df: pd.DataFrame, histories: pd.DataFrame, select: str) -> pd.DataFrame:
    """``selected.<m>`` columns: each trial's ``<m>`` at the epoch where ``select`` (a validation metric) was
    best, the first such epoch on ties; what a paper selecting on validation reports."""
    if histories.empty or select not in set(histories["metric"]):
        return df
    sel = histories[histories["metric"] == select].sort_values(["run_id", "step"])
    higher = higher_is_better(select)
    picked = sel.loc[(sel.groupby("run_id")["value"].idxmax() if higher else sel.groupby("run_id")["value"].idxmin())]
    epoch = picked.set_index("run_id")["step"]
    out = df.copy()
    for metric, part in histories.groupby("metric"):
        at = part.merge(epoch.rename("at").reset_index(), on="run_id")
        values = at[at["step"] == at["at"]].set_index("run_id")["value"]
        out[f"selected.{metric}"] = out["run_id"].map(values)
    return out


@dataclass
class Sweep:
    """A sweep read from MLflow: its parent run, the tidy trial frame and the fetched metric histories."""

    parent: Any
    trials: pd.DataFrame
    histories: pd.DataFrame

    @property
    def axes(self) -> list[str]:
        return sweep_axes(self.parent)

    @property
    def table_defaults(self) -> dict:
        return json.loads(self.parent.data.tags.get(mlflow_tags.TABLE, "{}"))


def load_sweep(client: MlflowClient, parent, history_metrics: Sequence[str] = ()) -> Sweep:
    """The tidy frame with best-epoch columns for ``history_metrics`` (those the trials logged)."""
    df = trials_frame(client, parent)
    present = [m for m in dict.fromkeys(history_metrics) if f"metric.{m}" in df.columns]
    histories = metric_histories(client, df["run_id"], present) if present else \
        pd.DataFrame(columns=["run_id", "metric", "step", "value"])
    return Sweep(parent, add_selected(add_best(df, histories), histories, SELECTION_METRIC), histories)


def sweep_axes(parent) -> list[str]:
    """The dotted keys the sweep's spec swept as axes (stored on the parent run)."""
    return json.loads(parent.data.tags.get(mlflow_tags.AXES, "[]"))
