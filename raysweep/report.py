"""Tables, plots and importance of a finished sweep, rebuilt from MLflow alone and logged back to it.

``build_report`` writes everything into a folder (Markdown, CSV, LaTeX, a self-contained HTML page, PNGs),
logs the folder as artifacts of the sweep's parent run (under ``report/``) and keeps one summary child run
per configuration (tag ``raysweep.role=summary``) whose metrics are the seed-averaged ones, so MLflow's
compare view works on tens of rows instead of hundreds. Running it twice creates nothing new: a summary
run is replaced only when the trials it summarises changed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric

from analysis import importance as imp
from analysis import plots
from analysis.aggregate import aggregate_configs, swept_factors
from analysis.mlflow_io import (Sweep, child_runs, final_phase, find_sweep, load_sweep, resolve_sweep, search_phase,
                                sweep_axes, trials_frame)
from analysis.page import Section, render_page
from analysis.tables import (GROUP_METRICS, SensitivityTable, breakdown_table, higher_is_better, one_way, row_values,
                             seed_table, to_frame, to_html, to_latex, to_markdown)
from raysweep.mlflow_store import MAX_BATCH_METRICS, log_params
from raysweep.schedulers import resolve_scheduler
from trainables.params import ConfigError

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
FORMATS = ("md", "csv", "tex", "html")
HISTORY_METRICS = ("val_balanced_acc", "test_acc") + GROUP_METRICS + ("train_clean_acc", "train_loss")
TOP_CONFIGS = 5
ARTIFACT_DIR = "report"


def sweep_table(tracking_uri: str, *, experiment: str | None = None, parent_run_id: str | None = None,
                rows: str | None = None, cols: str | None = None, metric: str | None = None) -> SensitivityTable:
    """The seed-averaged table of a sweep; unset rows/cols/metric fall back to the spec's ``table`` section."""
    client = MlflowClient(tracking_uri)
    parent = find_sweep(client, experiment, parent_run_id)
    defaults = json.loads(parent.data.tags.get("raysweep.table", "{}"))
    df = trials_frame(client, parent)
    if df.empty:
        raise KeyError("the sweep has no trial runs")
    return seed_table(final_phase(df), metric or defaults.get("metric", "test_acc"), rows or defaults.get("rows", "config"),
                      cols if cols is not None else defaults.get("cols"), sweep_axes(parent))


@dataclass
class Report:
    out_dir: Path
    parent_run_id: str
    main: SensitivityTable
    tables: dict[str, SensitivityTable]
    files: list[Path]
    summary_runs: dict[str, str]  # config_id -> summary run id
    summary_created: int
    seconds: dict[str, float] = field(default_factory=dict)
    num_trials: int = 0


def write_table(table: SensitivityTable, stem: Path, formats=FORMATS) -> list[Path]:
    """``stem``.md/.csv/.tex/.html for the requested formats."""
    render = {"md": to_markdown, "csv": lambda t: to_frame(t).to_csv(index=False), "tex": to_latex, "html": to_html}
    out = []
    for fmt in formats:
        path = stem.parent / f"{stem.name}.{fmt}"
        path.write_text(render[fmt](table) + "\n")
        out.append(path)
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def _spec(client: MlflowClient, parent) -> dict:
    """The spec the sweep ran (its spec.yaml artifact); empty when it cannot be read."""
    try:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(parent.info.run_id, "spec.yaml", tmp)
            return yaml.safe_load(Path(path).read_text()) or {}
    except Exception:  # noqa: BLE001 - a missing artifact only costs the rung marks
        return {}


def _rungs(spec: dict, max_epoch: int) -> list[float] | None:
    """Where the sweep's scheduler could stop trials (the spec.yaml artifact holds it resolved); None: never."""
    try:
        scheduler = resolve_scheduler(spec.get("scheduler"), max_epoch)
    except ConfigError:  # a sweep written by another version: no rung marks
        return None
    return scheduler.rungs(max_epoch) if scheduler.stops_early else None


def build_report(tracking_uri: str, ref: str, out_dir: str | Path | None = None, *, rows: str | None = None,
                 cols: str | None = None, metric: str | None = None, others: str = "average",
                 error: bool = False, log: bool = True, echo: Callable[[str], None] = lambda s: None) -> Report:
    """Everything about the sweep ``ref`` (experiment name or parent run id) into ``out_dir``; see module doc."""
    seconds: dict[str, float] = {}
    tick = time.perf_counter()
    client = MlflowClient(tracking_uri)
    parent = resolve_sweep(client, ref)
    defaults = json.loads(parent.data.tags.get("raysweep.table", "{}"))
    metric = metric or defaults.get("metric", "test_acc")
    search_metric = parent.data.tags.get("raysweep.metric", "val_balanced_acc")
    direction = parent.data.tags.get("raysweep.direction") if metric == search_metric else None
    sweep = load_sweep(client, parent, (metric, search_metric) + HISTORY_METRICS)
    df = sweep.trials
    if df.empty:
        raise KeyError("the sweep has no trial runs")
    seconds["read"] = time.perf_counter() - tick

    tick = time.perf_counter()
    sweep_id = parent.data.tags.get("raysweep.sweep_id", parent.info.run_id)
    out = Path(out_dir) if out_dir else Path("raysweep_reports") / _slug(sweep_id)
    for sub in ("tables", "plots"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rows = rows or defaults.get("rows", "config")
    cols = cols if cols is not None else defaults.get("cols")
    axes = sweep.axes
    tables: dict[str, SensitivityTable] = {}
    # Headline tables summarise phase 2 when there was one; sensitivity and importance use phase 1.
    final, search = final_phase(df), search_phase(df)
    tables["main"] = seed_table(final, metric, rows, cols, axes, direction, error=error)
    if f"best.{metric}" in df:
        tables["main_best_epoch"] = seed_table(final, metric, rows, cols, axes, direction, kind="best", error=error)
    if any(f"metric.{m}" in df for m in GROUP_METRICS):
        tables["many_medium_few"] = breakdown_table(final, rows if rows != cols else "config", axes=axes, error=error)
    factors = swept_factors(search)
    for factor in factors:
        tables[f"oneway_{factor}"] = one_way(search, factor, metric, others=others, direction=direction, error=error)
    if len(factors) >= 2 and {rows, cols} != set(factors[:2]):
        a, b = factors[:2]
        tables[f"twoway_{a}_x_{b}"] = seed_table(search, metric, a, b, axes, direction, error=error)
        tables[f"twoway_{a}_x_{b}"].title += " (others averaged)"
    files: list[Path] = []
    for name, table in tables.items():
        files += write_table(table, out / "tables" / _slug(name))
    configs = aggregate_configs(final)
    files.append(out / "tables" / "configs.csv")
    configs.to_csv(files[-1], index=False)
    files.append(out / "tables" / "trials.csv")
    df.to_csv(files[-1], index=False)
    seconds["tables"] = time.perf_counter() - tick

    tick = time.perf_counter()
    pictures: dict[str, list[Path]] = {}
    for name, table in tables.items():
        pictures[name] = [plots.table_plot(table, out / "plots" / f"{_slug(name)}.png")]
    higher = higher_is_better(metric, direction)
    ranked = configs.dropna(subset=[metric]).sort_values(metric, ascending=not higher)["config_id"].tolist()
    config_label = dict(zip(final["config_id"], row_values(final, "config", None, axes)))
    top = {cid: config_label[cid] for cid in ranked[:TOP_CONFIGS]}
    curves = []
    for m in dict.fromkeys((metric, search_metric)):
        if m in set(sweep.histories["metric"]):
            curves.append(plots.learning_curves(sweep.histories, final, m, top,
                                                out / "plots" / f"learning_curves_{_slug(m)}.png", m.endswith("acc")))
    rungs = _rungs(_spec(client, parent), int(search["epochs_run"].max()))
    if rungs is not None or search["epochs_run"].nunique() > 1:
        curves.append(plots.rung_survival(search, out / "plots" / "rung_survival.png", rungs))
    seconds["plots"] = time.perf_counter() - tick

    tick = time.perf_counter()
    importance = imp.importances(search, metric, direction=direction)
    files.append(out / "importance.csv")
    importance.to_csv(files[-1], index=False)
    files.append(out / "importance.md")
    files[-1].write_text(imp.importance_markdown(importance) + "\n")
    importance_pngs = [plots.importance_bars(importance, m, out / "plots" / f"importance_{_slug(m)}.png")
                       for m in importance["method"].unique()]
    seconds["importance"] = time.perf_counter() - tick

    sections = [Section(t.title or name, to_html(t), pictures[name]) for name, t in tables.items()]
    sections.append(Section("learning curves and survival", images=curves))
    sections.append(Section("hyperparameter importance (fANOVA, PED-ANOVA)", text=imp.importance_markdown(importance),
                            images=importance_pngs))
    intro = (f"Sweep {sweep_id}: {len(df)} trials, {df['config_id'].nunique()} configurations, "
             f"seeds {sorted(df['seed'].unique().tolist())}; parent run {parent.info.run_id}. "
             f"Read from MLflow alone.")
    files.append(out / "report.html")
    files[-1].write_text(render_page(f"raysweep report: {sweep_id}", intro, sections))
    files += [p for group in pictures.values() for p in group] + curves + importance_pngs

    summary_runs, created = {}, 0
    if log:
        tick = time.perf_counter()
        client.log_artifacts(parent.info.run_id, str(out), ARTIFACT_DIR)
        summary_runs, created = sync_summary_runs(client, sweep, configs)
        seconds["mlflow_log"] = time.perf_counter() - tick
    return Report(out, parent.info.run_id, tables["main"], tables, files, summary_runs, created, seconds, len(df))


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


def sync_summary_runs(client: MlflowClient, sweep: Sweep, configs: pd.DataFrame) -> tuple[dict[str, str], int]:
    """One summary child run per configuration; returns (config_id -> run id, how many were (re)created).

    An existing summary whose fingerprint matches is kept as it is; one whose trials changed is deleted
    and written again, so neither a second run nor a mixed metric history ever appears.
    """
    parent = sweep.parent
    existing: dict[str, Any] = {}
    for run in child_runs(client, parent, "summary"):
        cid = run.data.tags.get("raysweep.config_id")
        if cid in existing:  # a leftover duplicate (e.g. two reports raced): keep one
            client.delete_run(run.info.run_id)
        else:
            existing[cid] = run
    df = final_phase(sweep.trials)
    curves = sweep.histories.merge(df[["run_id", "config_id"]], on="run_id")
    ids, created = {}, 0
    now = int(time.time() * 1000)
    for _, row in configs.iterrows():
        cid = row["config_id"]
        trials = df[df["config_id"] == cid]
        fingerprint = _fingerprint(trials)
        old = existing.pop(cid, None)
        if old is not None and old.data.tags.get("raysweep.summary_of") == fingerprint:
            ids[cid] = old.info.run_id
            continue
        if old is not None:
            client.delete_run(old.info.run_id)
        run = client.create_run(parent.info.experiment_id, run_name=f"summary {row['label']}", tags={
            "mlflow.parentRunId": parent.info.run_id, "raysweep.role": "summary", "raysweep.config_id": cid,
            "raysweep.label": str(row["label"]), "raysweep.method": str(row["method"]),
            "raysweep.n_seeds": str(int(row["n"])), "raysweep.summary_of": fingerprint,
            "raysweep.trial_runs": ",".join(trials["run_id"])[:5000]})
        run_id = run.info.run_id
        log_params(client, run_id, {k: v for k, v in row.items() if "." in k})
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


__all__ = ["sweep_table", "build_report", "write_table", "sync_summary_runs", "summary_metrics", "Report",
           "FORMATS"]
