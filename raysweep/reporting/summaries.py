"""Seed-averaged summary runs and the sweep's headline, written to MLflow when a sweep ends.

:func:`summarize_sweep` is what a sweep's end calls: one summary child run per configuration (role
``summary``) whose metrics are the seed-averaged ones, so MLflow's runs table, charts and
parallel-coordinates view compare tens of configurations instead of hundreds of trials, and the sweep's
headline on the parent run (the best configuration by the search metric, its seed-mean metrics).
``raysweep report`` calls the same code. Both are idempotent: a summary run is replaced only when the
trials it summarises changed, and the headline is logged only when it changed.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag

from analysis import mlflow_tags as tags
from analysis.aggregate import aggregate_configs, rank_configs
from analysis.mlflow_io import Sweep, child_runs, final_phase, load_sweep
from analysis.tables import GROUP_METRICS, higher_is_better, row_values
from raysweep.tracking.mlflow_store import MAX_BATCH_METRICS, log_params

HISTORY_METRICS = ("val_balanced_acc", "test_acc") + GROUP_METRICS + ("train_clean_acc", "train_loss")
DEFAULT_SEARCH_METRIC = "val_balanced_acc"
PER_CLASS = re.compile(r"_class\d+$")


@dataclass
class Headline:
    """The sweep's best configuration by its search metric (seed means of the final phase), as logged."""

    parent_run_id: str
    metric: str  # the search metric that chose the configuration
    direction: str  # max or min
    config_id: str | None  # None when no configuration has the metric (nothing finished)
    label: str = ""
    n_seeds: int = 0
    values: dict[str, tuple[float, float]] = field(default_factory=dict)  # metric -> (seed mean, sample std)
    summary_runs: dict[str, str] = field(default_factory=dict)  # config_id -> summary run id
    summary_created: int = 0  # summary runs created or replaced by this call
    seconds: float = 0.0

    def parent_metrics(self) -> dict[str, float]:
        """What goes on the parent run: ``best.<m>_mean``, ``best.<m>_std`` (when n > 1), ``best.n_seeds``."""
        if self.config_id is None:
            return {}
        out = {f"{tags.HEADLINE_PREFIX}n_seeds": float(self.n_seeds)}
        for name, (mean, std) in self.values.items():
            out[f"{tags.HEADLINE_PREFIX}{name}_mean"] = mean
            if math.isfinite(std):
                out[f"{tags.HEADLINE_PREFIX}{name}_std"] = std
        return out

    def parent_tags(self) -> dict[str, str]:
        if self.config_id is None:
            return {}
        out = {tags.BEST_CONFIG: f"{self.label} [{self.config_id}]", tags.BEST_CONFIG_ID: self.config_id}
        if self.config_id in self.summary_runs:
            out[tags.BEST_SUMMARY_RUN] = self.summary_runs[self.config_id]
        return out

    def describe(self) -> str:
        """One line for a terminal: the best configuration and its seed-mean metrics (accuracies in %)."""
        if self.config_id is None:
            return f"no configuration has a {self.metric} to rank by"
        shown = [self.metric] + [m for m in ("val_balanced_acc", "test_acc") if m != self.metric and m in self.values]
        parts = []
        for name in shown:
            mean, std = self.values[name]
            scale, unit = (100.0, " %") if name.endswith("acc") else (1.0, "")
            spread = f" ± {scale * std:.2f}" if math.isfinite(std) else ""
            parts.append(f"{name} {scale * mean:.2f}{spread}{unit}")
        return (f"best configuration by {self.metric} ({self.direction}, mean of {self.n_seeds} seed"
                f"{'s' if self.n_seeds != 1 else ''}): {self.label} [{self.config_id}]: " + ", ".join(parts))


def search_metric(parent) -> tuple[str, str]:
    """The sweep's search metric and direction, from the parent run's tags."""
    metric = parent.data.tags.get(tags.METRIC) or DEFAULT_SEARCH_METRIC
    direction = parent.data.tags.get(tags.DIRECTION)
    if direction not in ("max", "min"):
        direction = "max" if higher_is_better(metric) else "min"
    return metric, direction


def summary_history_metrics(parent, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The metrics whose per-epoch histories a summary needs (best-epoch values, mean curves)."""
    table_metric = json.loads(parent.data.tags.get(tags.TABLE, "{}")).get("metric", "test_acc")
    return tuple(dict.fromkeys(extra + (table_metric, search_metric(parent)[0]) + HISTORY_METRICS))


def config_labels(trials: pd.DataFrame, axes: list[str]) -> dict[str, str]:
    """config_id -> a readable name: the plan's label plus the configuration's axis values."""
    if trials.empty:
        return {}
    return dict(zip(trials["config_id"], row_values(trials, "config", None, axes), strict=True))


def headline_of(configs: pd.DataFrame, metric: str, direction: str, labels: dict[str, str],
                parent_run_id: str = "") -> Headline:
    """The best row of :func:`aggregate_configs` by ``metric`` (see :func:`rank_configs`) and its seed-mean
    search, validation and test metrics (per-class accuracies left out)."""
    empty = Headline(parent_run_id, metric, direction, None)
    if configs.empty or metric not in configs.columns:
        return empty
    ranked = rank_configs(configs, metric, direction == "max")
    if ranked.empty:
        return empty
    best = ranked.iloc[0]
    names = [metric] + [c for c in configs.columns if c.startswith(("val_", "test_")) and c != metric
                        and not c.endswith(("_std", "_ci95")) and not PER_CLASS.search(c)]
    values = {}
    for name in names:
        mean = best.get(name)
        if mean is not None and math.isfinite(float(mean)):
            std = best.get(f"{name}_std")
            values[name] = (float(mean), float(std) if std is not None else math.nan)
    cid = str(best["config_id"])
    return Headline(parent_run_id, metric, direction, cid, labels.get(cid, str(best["label"])), int(best["n"]), values)


def log_headline(client: MlflowClient, parent, headline: Headline) -> bool:
    """Log the headline's metrics and tags on the parent run, unless it already holds exactly them."""
    metrics = {k: v for k, v in headline.parent_metrics().items() if parent.data.metrics.get(k) != v}
    tags = {k: v for k, v in headline.parent_tags().items() if parent.data.tags.get(k) != v}
    if not metrics and not tags:
        return False
    now = int(time.time() * 1000)
    client.log_batch(parent.info.run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                     tags=[RunTag(k, v) for k, v in tags.items()])
    return True


def summarize_loaded(client: MlflowClient, sweep: Sweep, configs: pd.DataFrame) -> Headline:
    """Summary runs and the parent's headline for a loaded sweep (``configs``: its final phase, aggregated)."""
    tick = time.perf_counter()
    ids, created = sync_summary_runs(client, sweep, configs)
    metric, direction = search_metric(sweep.parent)
    labels = config_labels(final_phase(sweep.trials), sweep.axes)
    headline = headline_of(configs, metric, direction, labels, sweep.parent.info.run_id)
    headline.summary_runs, headline.summary_created = ids, created
    log_headline(client, sweep.parent, headline)
    headline.seconds = time.perf_counter() - tick
    return headline


def summarize_sweep(tracking_uri: str, parent_run_id: str) -> Headline:
    """What a sweep's end calls: seed-averaged summary runs (one per configuration) and the headline.

    Reads the trials from MLflow (one search per 1000 runs, one history request per trial and summary
    metric), creates the summary runs that are missing or out of date (:func:`sync_summary_runs`) and logs
    the headline on the parent run (:func:`log_headline`). Running it again, or ``raysweep report`` after
    it, creates nothing. Raises what MLflow raises when the store does not answer.
    """
    tick = time.perf_counter()
    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_run_id)
    sweep = load_sweep(client, parent, summary_history_metrics(parent))
    if sweep.trials.empty:
        metric, direction = search_metric(parent)
        return Headline(parent_run_id, metric, direction, None, seconds=time.perf_counter() - tick)
    headline = summarize_loaded(client, sweep, aggregate_configs(final_phase(sweep.trials)))
    headline.seconds = time.perf_counter() - tick
    return headline


def _fingerprint(trials: pd.DataFrame) -> str:
    """What a summary run summarises: its trials' run ids, epochs and final metrics."""
    cols = ["run_id", "epochs_run"] + sorted(c for c in trials.columns if c.startswith("metric."))
    body = trials[cols].sort_values("run_id").to_json(orient="values", double_precision=10)
    return hashlib.sha1(body.encode()).hexdigest()[:16]


def summary_metrics(row: pd.Series) -> dict[str, float]:
    """The finite seed statistics of one row of :func:`aggregate_configs` (mean, _std, _ci95, best_...)."""
    skip = {"config_id", "label", "method", "n", "early_stopped"}
    out = {"n_seeds": float(row["n"]), "early_stopped": float(row["early_stopped"])}
    for key, value in row.items():
        if key in skip or "." in key or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if math.isfinite(float(value)):
            out[key] = float(value)
    return out


def summary_params(row: pd.Series) -> dict[str, Any]:
    """The configuration's params as its trials have them (dotted config keys), without missing values."""
    return {k: v for k, v in row.items() if "." in k and not (v is None or (isinstance(v, float) and math.isnan(v)))}


def sync_summary_runs(client: MlflowClient, sweep: Sweep, configs: pd.DataFrame) -> tuple[dict[str, str], int]:
    """One summary child run per configuration; returns (config_id -> run id, how many were (re)created).

    An existing summary whose fingerprint matches is kept as it is (renamed if its name is out of date);
    one whose trials changed is deleted and written again, so neither a second run nor a mixed metric
    history ever appears. Runs are named ``summary <label and axis values>``, e.g. ``summary focal gamma=0.5``.
    """
    parent = sweep.parent
    existing: dict[str, Any] = {}
    for run in child_runs(client, parent, tags.SUMMARY):
        cid = run.data.tags.get(tags.CONFIG_ID)
        if cid in existing:  # a leftover duplicate (e.g. two reports raced): keep one
            client.delete_run(run.info.run_id)
        else:
            existing[cid] = run
    df = final_phase(sweep.trials)
    labels = config_labels(df, sweep.axes)
    curves = sweep.histories.merge(df[["run_id", "config_id"]], on="run_id")
    ids, created = {}, 0
    now = int(time.time() * 1000)
    for _, row in configs.iterrows():
        cid = row["config_id"]
        trials = df[df["config_id"] == cid]
        fingerprint = _fingerprint(trials)
        name = f"summary {labels.get(cid, row['label'])}"
        old = existing.pop(cid, None)
        if old is not None and old.data.tags.get(tags.SUMMARY_OF) == fingerprint:
            if old.info.run_name != name:
                client.update_run(old.info.run_id, name=name)
            ids[cid] = old.info.run_id
            continue
        if old is not None:
            client.delete_run(old.info.run_id)
        run = client.create_run(parent.info.experiment_id, run_name=name, tags={
            tags.PARENT: parent.info.run_id, tags.ROLE: tags.SUMMARY, tags.CONFIG_ID: cid,
            tags.LABEL: labels.get(cid, str(row["label"])), tags.METHOD: str(row["method"]),
            tags.N_SEEDS: str(int(row["n"])), tags.SUMMARY_OF: fingerprint,
            tags.TRIAL_RUNS: ",".join(trials["run_id"])[:5000]})
        run_id = run.info.run_id
        log_params(client, run_id, summary_params(row))
        entries = [Metric(k, v, now, 0) for k, v in summary_metrics(row).items()]
        per_epoch = curves[curves["config_id"] == cid].groupby(["metric", "step"])["value"].mean()
        entries += [Metric(f"curve.{m}", float(v), now, int(step)) for (m, step), v in per_epoch.items()]
        for i in range(0, len(entries), MAX_BATCH_METRICS):
            client.log_batch(run_id, metrics=entries[i : i + MAX_BATCH_METRICS])
        client.set_terminated(run_id, "FINISHED")
        ids[cid] = run_id
        created += 1
    for stale in existing.values():  # configurations no longer in the sweep
        client.delete_run(stale.info.run_id)
    return ids, created
