"""Tables, plots and importance of a finished sweep, rebuilt from MLflow alone and logged back to it.

``summarize_sweep`` is what a sweep's end calls: one summary child run per configuration (tag
``raysweep.role=summary``) whose metrics are the seed-averaged ones, so MLflow's runs table, charts and
parallel-coordinates view compare tens of configurations instead of hundreds of trials, and the sweep's
headline on the parent run (the best configuration by the search metric, its seed-mean metrics).
``build_report`` does the same and writes everything else into a folder (Markdown, CSV, LaTeX, a
self-contained HTML page, PNGs), logged as artifacts of the parent run (under ``report/``). Both are
idempotent: a summary run is replaced only when the trials it summarises changed, and the headline is
logged only when it changed.
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
from mlflow.entities import Metric, RunTag

from analysis import importance as imp
from analysis import plots
from analysis.aggregate import aggregate_configs, rank_configs, scope_knobs
from analysis.mlflow_io import (
    Sweep,
    child_runs,
    final_phase,
    find_sweep,
    load_sweep,
    resolve_sweep,
    search_phase,
    sweep_axes,
    trials_frame,
)
from analysis.page import Section, render_page
from analysis.tables import (
    FORMATS,
    GROUP_METRICS,
    SensitivityTable,
    breakdown_table,
    higher_is_better,
    knob_tables,
    render,
    row_values,
    seed_table,
    to_html,
    to_markdown,
)
from raysweep.mlflow_store import MAX_BATCH_METRICS, log_params
from raysweep.schedulers import resolve_scheduler
from trainables.params import ConfigError

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
HISTORY_METRICS = ("val_balanced_acc", "test_acc") + GROUP_METRICS + ("train_clean_acc", "train_loss")
TOP_CONFIGS = 5
ARTIFACT_DIR = "report"
DEFAULT_SEARCH_METRIC = "val_balanced_acc"
# Parent-run tags: read (written by the runner) and written (the headline).
SELECTION_TAG = "raysweep.selection"  # one sentence: which split selected configurations
SELECTION_WARNING_TAG = "raysweep.selection_warning"
BEST_CONFIG_TAG = "raysweep.best_config"  # "<label> [<config_id>]"
BEST_CONFIG_ID_TAG = "raysweep.best_config_id"
BEST_SUMMARY_TAG = "raysweep.best_summary_run"
HEADLINE_PREFIX = "best."  # parent metrics best.<metric>_mean, best.<metric>_std, best.n_seeds
PER_CLASS = re.compile(r"_class\d+$")


def sweep_table(tracking_uri: str, *, experiment: str | None = None, parent_run_id: str | None = None,
                rows: str | None = None, cols: str | None = None, metric: str | None = None) -> SensitivityTable:
    """The seed-averaged table of a sweep; unset rows/cols/metric fall back to the spec's ``table`` section."""
    client = MlflowClient(tracking_uri)
    parent = find_sweep(client, experiment, parent_run_id)
    defaults = json.loads(parent.data.tags.get("raysweep.table", "{}"))
    df = trials_frame(client, parent)
    if df.empty:
        raise KeyError("the sweep has no trial runs")
    return seed_table(scope_knobs(final_phase(df)), metric or defaults.get("metric", "test_acc"),
                      rows or defaults.get("rows", "config"), cols if cols is not None else defaults.get("cols"),
                      sweep_axes(parent))


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
        out = {f"{HEADLINE_PREFIX}n_seeds": float(self.n_seeds)}
        for name, (mean, std) in self.values.items():
            out[f"{HEADLINE_PREFIX}{name}_mean"] = mean
            if math.isfinite(std):
                out[f"{HEADLINE_PREFIX}{name}_std"] = std
        return out

    def parent_tags(self) -> dict[str, str]:
        if self.config_id is None:
            return {}
        tags = {BEST_CONFIG_TAG: f"{self.label} [{self.config_id}]", BEST_CONFIG_ID_TAG: self.config_id}
        if self.config_id in self.summary_runs:
            tags[BEST_SUMMARY_TAG] = self.summary_runs[self.config_id]
        return tags

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
    headline: Headline | None = None


def write_table(table: SensitivityTable, stem: Path, formats=FORMATS) -> list[Path]:
    """``stem``.md/.csv/.tex/.html for the requested formats."""
    out = []
    for fmt in formats:
        path = stem.parent / f"{stem.name}.{fmt}"
        path.write_text(render(table, fmt) + "\n")
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


def search_metric(parent) -> tuple[str, str]:
    """The sweep's search metric and direction, from the parent run's tags."""
    metric = parent.data.tags.get("raysweep.metric") or DEFAULT_SEARCH_METRIC
    direction = parent.data.tags.get("raysweep.direction")
    if direction not in ("max", "min"):
        direction = "max" if higher_is_better(metric) else "min"
    return metric, direction


def summary_history_metrics(parent, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The metrics whose per-epoch histories a summary needs (best-epoch values, mean curves)."""
    table_metric = json.loads(parent.data.tags.get("raysweep.table", "{}")).get("metric", "test_acc")
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


def _summarize(client: MlflowClient, sweep: Sweep, configs: pd.DataFrame) -> Headline:
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
    headline = _summarize(client, sweep, aggregate_configs(final_phase(sweep.trials)))
    headline.seconds = time.perf_counter() - tick
    return headline


def _intro_notes(parent, headline: Headline) -> tuple[list[str], list[str]]:
    """(notes, warnings) for the report's header: which split selected configurations, and the headline."""
    notes = [parent.data.tags[SELECTION_TAG]] if parent.data.tags.get(SELECTION_TAG) else []
    warnings = [parent.data.tags[SELECTION_WARNING_TAG]] if parent.data.tags.get(SELECTION_WARNING_TAG) else []
    return notes + [headline.describe()], warnings


def _markdown_page(title: str, intro: str, notes: list[str], warnings: list[str],
                   tables: dict[str, SensitivityTable], importance_md: str) -> str:
    lines = [f"# {title}", "", intro, ""]
    lines += [f"- {n}" for n in notes] + [f"- **Warning:** {w}" for w in warnings] + [""]
    for name, table in tables.items():
        lines += [f"## {table.title or name}", "", to_markdown(table), ""]
    lines += ["## hyperparameter importance (fANOVA, PED-ANOVA)", "", importance_md, ""]
    return "\n".join(lines)


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
    selection_metric, selection_direction = search_metric(parent)
    direction = selection_direction if metric == selection_metric else None
    sweep = load_sweep(client, parent, summary_history_metrics(parent, (metric,)))
    raw = sweep.trials
    if raw.empty:
        raise KeyError("the sweep has no trial runs")
    df = scope_knobs(raw)  # tables, plots, importance and the CSVs name knobs after their method
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
        tables["main_best_epoch"].title += " (best epoch of each trial)"
    if any(f"metric.{m}" in df for m in GROUP_METRICS):
        tables["many_medium_few"] = breakdown_table(final, rows if rows != cols else "config", axes=axes, error=error)
    tables.update(knob_tables(search, metric, axes=axes, others=others, direction=direction, error=error,
                              skip=[(rows, cols)]))
    files: list[Path] = []
    for name, table in tables.items():
        files += write_table(table, out / "tables" / _slug(name))
    configs = aggregate_configs(final_phase(raw))  # config keys as the trials' params, for the summary runs
    files.append(out / "tables" / "configs.csv")
    scope_knobs(configs).to_csv(files[-1], index=False)
    files.append(out / "tables" / "trials.csv")
    df.to_csv(files[-1], index=False)
    seconds["tables"] = time.perf_counter() - tick

    tick = time.perf_counter()
    pictures: dict[str, list[Path]] = {}
    for name, table in tables.items():
        pictures[name] = [plots.table_plot(table, out / "plots" / f"{_slug(name)}.png")]
    higher = higher_is_better(metric, direction)
    ranked = configs.dropna(subset=[metric]).sort_values(metric, ascending=not higher)["config_id"].tolist()
    config_label = config_labels(final, axes)
    top = {cid: config_label[cid] for cid in ranked[:TOP_CONFIGS]}
    curves = []
    for m in dict.fromkeys((metric, selection_metric)):
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
    importance_md = imp.importance_markdown(importance)
    files.append(out / "importance.md")
    files[-1].write_text(importance_md + "\n")
    importance_pngs = [plots.importance_bars(importance, m, out / "plots" / f"importance_{_slug(m)}.png")
                       for m in importance["method"].unique()]
    seconds["importance"] = time.perf_counter() - tick

    summary_runs, created, headline = {}, 0, None
    if log:
        tick = time.perf_counter()
        headline = _summarize(client, sweep, configs)
        summary_runs, created = headline.summary_runs, headline.summary_created
        seconds["summary_runs"] = time.perf_counter() - tick
    else:
        headline = headline_of(configs, selection_metric, selection_direction, config_label, parent.info.run_id)

    title = f"raysweep report: {sweep_id}"
    intro = (f"Sweep {sweep_id}: {len(df)} trials, {df['config_id'].nunique()} configurations, "
             f"seeds {sorted(df['seed'].unique().tolist())}; parent run {parent.info.run_id}. "
             f"Read from MLflow alone.")
    notes, warnings = _intro_notes(parent, headline)
    sections = [Section(t.title or name, to_html(t), pictures[name]) for name, t in tables.items()]
    sections.append(Section("learning curves and survival", images=curves))
    sections.append(Section("hyperparameter importance (fANOVA, PED-ANOVA)", text=importance_md,
                            images=importance_pngs))
    files.append(out / "report.html")
    files[-1].write_text(render_page(title, intro, sections, notes=notes, warnings=warnings))
    files.append(out / "report.md")
    files[-1].write_text(_markdown_page(title, intro, notes, warnings, tables, importance_md))
    files += [p for group in pictures.values() for p in group] + curves + importance_pngs

    if log:
        tick = time.perf_counter()
        client.log_artifacts(parent.info.run_id, str(out), ARTIFACT_DIR)
        seconds["mlflow_log"] = time.perf_counter() - tick
    return Report(out, parent.info.run_id, tables["main"], tables, files, summary_runs, created, seconds, len(df),
                  headline)


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
    for run in child_runs(client, parent, "summary"):
        cid = run.data.tags.get("raysweep.config_id")
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
        if old is not None and old.data.tags.get("raysweep.summary_of") == fingerprint:
            if old.info.run_name != name:
                client.update_run(old.info.run_id, name=name)
            ids[cid] = old.info.run_id
            continue
        if old is not None:
            client.delete_run(old.info.run_id)
        run = client.create_run(parent.info.experiment_id, run_name=name, tags={
            "mlflow.parentRunId": parent.info.run_id, "raysweep.role": "summary", "raysweep.config_id": cid,
            "raysweep.label": labels.get(cid, str(row["label"])), "raysweep.method": str(row["method"]),
            "raysweep.n_seeds": str(int(row["n"])), "raysweep.summary_of": fingerprint,
            "raysweep.trial_runs": ",".join(trials["run_id"])[:5000]})
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


__all__ = ["sweep_table", "build_report", "summarize_sweep", "write_table", "sync_summary_runs", "summary_metrics",
           "headline_of", "log_headline", "Headline", "Report", "FORMATS"]
