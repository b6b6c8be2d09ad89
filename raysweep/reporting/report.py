"""Tables, plots and importance of a finished sweep, rebuilt from MLflow alone and logged back to it.

``build_report`` writes everything into a folder (Markdown, CSV, LaTeX, a self-contained HTML page, PNGs),
logs it as artifacts of the parent run (under ``report/``) and brings the summary runs and the headline up
to date (:mod:`raysweep.reporting.summaries`, which a sweep's end also calls). Running it twice creates nothing new.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml
from mlflow import MlflowClient

from analysis import importance as imp
from analysis import mlflow_tags as tags
from analysis import plots
from analysis.aggregate import aggregate_configs, scope_knobs
from analysis.mlflow_io import (
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
    seed_table,
    to_html,
    to_markdown,
)
from raysweep.reporting.summaries import (
    Headline,
    config_labels,
    headline_of,
    search_metric,
    summarize_loaded,
    summary_history_metrics,
)
from raysweep.search.schedulers import resolve_scheduler
from trainables.params import ConfigError

TOP_CONFIGS = 5
ARTIFACT_DIR = "report"
# Parent-run tags: read (written by the runner) and written (the headline).


def sweep_table(tracking_uri: str, *, experiment: str | None = None, parent_run_id: str | None = None,
                rows: str | None = None, cols: str | None = None, metric: str | None = None) -> SensitivityTable:
    """The seed-averaged table of a sweep; unset rows/cols/metric fall back to the spec's ``table`` section."""
    client = MlflowClient(tracking_uri)
    parent = find_sweep(client, experiment, parent_run_id)
    defaults = json.loads(parent.data.tags.get(tags.TABLE, "{}"))
    df = trials_frame(client, parent)
    if df.empty:
        raise KeyError("the sweep has no trial runs")
    return seed_table(scope_knobs(final_phase(df)), metric or defaults.get("metric", "test_acc"),
                      rows or defaults.get("rows", "config"), cols if cols is not None else defaults.get("cols"),
                      sweep_axes(parent))


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


def _intro_notes(parent, headline: Headline) -> tuple[list[str], list[str]]:
    """(notes, warnings) for the report's header: which split selected configurations, and the headline."""
    notes = [parent.data.tags[tags.SELECTION]] if parent.data.tags.get(tags.SELECTION) else []
    warnings = [parent.data.tags[tags.SELECTION_WARNING]] if parent.data.tags.get(tags.SELECTION_WARNING) else []
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
    defaults = json.loads(parent.data.tags.get(tags.TABLE, "{}"))
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
    sweep_id = parent.data.tags.get(tags.SWEEP_ID, parent.info.run_id)
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
        headline = summarize_loaded(client, sweep, configs)
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


__all__ = ["sweep_table", "build_report", "write_table", "Report"]
