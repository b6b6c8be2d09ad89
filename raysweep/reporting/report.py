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

import pandas as pd
import yaml
from mlflow import MlflowClient

from analysis import importance as imp
from analysis import mlflow_tags as tags
from analysis import plots, ranking
from analysis.aggregate import aggregate_configs, is_early_stopped, scope_knobs
from analysis.marks import COMPARISON_COLUMNS, best_per_setting, comparison_rows, mark_table
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
from analysis.ranking import BUDGET_MODES
from analysis.tables import (
    FORMATS,
    GROUP_METRICS,
    SensitivityTable,
    breakdown_table,
    higher_is_better,
    knob_tables,
    render,
    seed_table,
    select,
    to_html,
    to_markdown,
)
from raysweep.reporting.summaries import (
    Headline,
    config_labels,
    headline_of,
    mark_options,
    search_metric,
    summarize_loaded,
    summary_history_metrics,
    sweep_comparisons,
)
from raysweep.search.schedulers import resolve_scheduler
from trainables.params import ConfigError

TOP_CONFIGS = 5
ARTIFACT_DIR = "report"
# Parent-run tags: read (written by the runner) and written (the headline).


def _kind_of(metric: str) -> tuple[str, str]:
    """``best_test_acc`` -> (test_acc, best) and ``selected_test_acc`` -> (test_acc, selected): every metric a
    report tables is accepted by ``table --metric``."""
    for kind in ("best", "selected"):
        if metric.startswith(kind + "_"):
            return metric[len(kind) + 1:], kind
    return metric, "final"


def sweep_table(tracking_uri: str, *, experiment: str | None = None, parent_run_id: str | None = None,
                rows: str | None = None, cols: str | None = None, metric: str | None = None,
                where: tuple[str, ...] = (), baseline: str | None = None) -> SensitivityTable:
    """The seed-averaged table of a sweep, marked against the baseline; unset rows/cols/metric fall back to the
    spec's ``table`` section. ``where`` holds axes fixed (``dataset.imbalance=100``)."""
    client = MlflowClient(tracking_uri)
    parent = find_sweep(client, experiment, parent_run_id)
    defaults = json.loads(parent.data.tags.get(tags.TABLE, "{}"))
    metric, kind = _kind_of(metric or defaults.get("metric", "test_acc"))
    options = mark_options(defaults, baseline)
    history = (metric, "val_balanced_acc") if kind != "final" else ()
    df = load_sweep(client, parent, history).trials if history else trials_frame(client, parent)
    if df.empty:
        raise KeyError("the sweep has no trial runs")
    final = select(scope_knobs(final_phase(df)), where)
    table = seed_table(final, metric, rows or defaults.get("rows", "config"),
                       cols if cols is not None else defaults.get("cols"), sweep_axes(parent), kind=kind)
    mark_table(table, final, options)
    return table


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


def _selection_differs(tables: dict[str, SensitivityTable]) -> list[str]:
    """Where the configuration validation selects (best at the epoch of best validation) and the one the
    test-set oracle (peak test over epochs) puts first differ, per column: the report says so."""
    selected, oracle = tables.get("main_selected"), tables.get("main_best_epoch")
    if selected is None or oracle is None:
        return []
    by_validation, by_test = best_per_setting(selected), best_per_setting(oracle)
    out = []
    for (col, setting), row in by_validation.items():
        other = by_test.get((col, setting))
        if other is not None and other != row:
            where = ", ".join(x for x in (setting, "" if selected.cols_key is None else f"column {col}") if x)
            out.append(f"Selection on test would mislead{' at ' + where if where else ''}: the best by validation "
                       f"is {row}, the peak-test oracle's best is {other}.")
    return out


def _method_comparisons(parent, search, final, metric: str, selection_metric: str, selection_direction: str,
                        direction: str | None, rungs, out: Path) -> list[Section]:
    """The budget curves (random and Optuna sweeps without early stopping) and the critical-difference
    diagram (at least 3 methods over 5 data settings), as report sections; files go under ``out``."""
    sections = []
    early = rungs is not None or bool(is_early_stopped(search).any())
    if parent.data.tags.get(tags.MODE) in BUDGET_MODES and not early:
        frame = ranking.budget_frame(search, selection_metric, selection_direction == "max")
        if not frame.empty:
            percent = selection_metric.endswith("acc")
            frame.assign(**{c: frame[c] * (100.0 if percent else 1.0) for c in ("expected_max", "std")}).to_csv(
                out / "tables" / "budget.csv", index=False)
            picture = plots.budget_curves(frame, out / "plots" / "budget.png", selection_metric, percent)
            sections.append(Section(f"expected best {selection_metric} against the number of configurations tried",
                                    text=ranking.budget_markdown(frame, percent), images=[picture]))
    scores = ranking.method_scores(final, metric, selection_metric, selection_direction == "max")
    result = ranking.ranks_if_enough(scores, higher_is_better(metric, direction))
    if result is not None:
        scores.to_csv(out / "tables" / "cd_scores.csv")
        picture = plots.cd_diagram(result, out / "plots" / "critical_difference.png")
        sections.append(Section("critical-difference diagram (Friedman, Nemenyi)",
                                text=ranking.cd_markdown(result, metric), images=[picture]))
    return sections


def _markdown_page(title: str, intro: str, notes: list[str], warnings: list[str],
                   tables: dict[str, SensitivityTable], importance_md: str, extra: list[Section] = ()) -> str:
    lines = [f"# {title}", "", intro, ""]
    lines += [f"- {n}" for n in notes] + [f"- **Warning:** {w}" for w in warnings] + [""]
    for name, table in tables.items():
        lines += [f"## {table.title or name}", "", to_markdown(table), ""]
    for section in extra:
        lines += [f"## {section.title}", "", section.text, ""]
    lines += ["## hyperparameter importance per setting (fANOVA, PED-ANOVA)", "", importance_md, ""]
    return "\n".join(lines)


def build_report(tracking_uri: str, ref: str, out_dir: str | Path | None = None, *, rows: str | None = None,
                 cols: str | None = None, metric: str | None = None, others: str = "average",
                 error: bool = False, log: bool = True, echo: Callable[[str], None] = lambda s: None,
                 where: tuple[str, ...] = (), baseline: str | None = None) -> Report:
    """Everything about the sweep ``ref`` (experiment name or parent run id) into ``out_dir``; see module doc.

    ``where`` (``key=value``) restricts the tables, plots and importance to those trials (the summary runs
    still cover the whole sweep); ``baseline`` overrides the spec's ``table.baseline`` (``none`` = off).
    """
    seconds: dict[str, float] = {}
    tick = time.perf_counter()
    client = MlflowClient(tracking_uri)
    parent = resolve_sweep(client, ref)
    defaults = json.loads(parent.data.tags.get(tags.TABLE, "{}"))
    metric = metric or defaults.get("metric", "test_acc")
    options = mark_options(defaults, baseline)
    selection_metric, selection_direction = search_metric(parent)
    direction = selection_direction if metric == selection_metric else None
    sweep = load_sweep(client, parent, summary_history_metrics(parent, (metric,)))
    raw = sweep.trials
    if raw.empty:
        raise KeyError("the sweep has no trial runs")
    df = select(scope_knobs(raw), where)  # tables, plots, importance and the CSVs name knobs after their method
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
    if f"selected.{metric}" in df:
        tables["main_selected"] = seed_table(final, metric, rows, cols, axes, direction, kind="selected", error=error)
        tables["main_selected"].title += " at the epoch of best validation (selected on validation)"
    if f"best.{metric}" in df:
        tables["main_best_epoch"] = seed_table(final, metric, rows, cols, axes, direction, kind="best", error=error)
        tables["main_best_epoch"].title += " (oracle: each trial's peak over epochs, selected on test)"
    if any(f"metric.{m}" in df for m in GROUP_METRICS):
        tables["many_medium_few"] = breakdown_table(final, rows if rows != cols else "config", axes=axes, error=error)
    headline_tables = set(tables)
    tables.update(knob_tables(search, metric, axes=axes, others=others, direction=direction, error=error,
                              skip=[(rows, cols)]))
    for name, table in tables.items():
        mark_table(table, final if name in headline_tables else search, options)
    selection_notes = _selection_differs(tables)
    files: list[Path] = []
    for name, table in tables.items():
        files += write_table(table, out / "tables" / _slug(name))
    comparisons = pd.DataFrame([row for name, t in tables.items() for row in comparison_rows(name, t)],
                               columns=COMPARISON_COLUMNS)
    files.append(out / "tables" / "comparisons.csv")
    comparisons.to_csv(files[-1], index=False)
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
    top = {cid: config_label[cid] for cid in [c for c in ranked if c in config_label][:TOP_CONFIGS]}
    curves = []
    for m in dict.fromkeys((metric, selection_metric)):
        if m in set(sweep.histories["metric"]):
            curves.append(plots.learning_curves(sweep.histories, final, m, top,
                                                out / "plots" / f"learning_curves_{_slug(m)}.png", m.endswith("acc")))
    rungs = _rungs(_spec(client, parent), int(search["epochs_run"].max()))
    if rungs is not None or search["epochs_run"].nunique() > 1:
        curves.append(plots.rung_survival(search, out / "plots" / "rung_survival.png", rungs))
    extra = _method_comparisons(parent, search, final, metric, selection_metric, selection_direction, direction,
                                rungs, out)
    seconds["plots"] = time.perf_counter() - tick

    tick = time.perf_counter()
    importance = imp.importances(search, metric, direction=direction)
    files.append(out / "importance.csv")
    importance.to_csv(files[-1], index=False)
    importance_md = imp.importance_markdown(importance)
    files.append(out / "importance.md")
    files[-1].write_text(importance_md + "\n")
    importance_pngs = [plots.importance_bars(importance, m, out / "plots" / f"importance_{_slug(m + ' ' + s)}.png", s)
                       for m, s in dict.fromkeys(zip(importance["method"], importance["setting"], strict=True))]
    seconds["importance"] = time.perf_counter() - tick

    summary_runs, created, headline = {}, 0, None
    if log:
        tick = time.perf_counter()
        headline = summarize_loaded(client, sweep, configs)
        summary_runs, created = headline.summary_runs, headline.summary_created
        seconds["summary_runs"] = time.perf_counter() - tick
    else:
        shown, versus, baseline = sweep_comparisons(parent, final_phase(raw))  # as summarize_loaded compares
        headline = headline_of(configs, selection_metric, selection_direction, config_label, parent.info.run_id,
                               versus, shown, baseline)

    title = f"raysweep report: {sweep_id}"
    intro = (f"Sweep {sweep_id}: {len(df)} trials, {df['config_id'].nunique()} configurations, "
             f"seeds {sorted(df['seed'].unique().tolist())}; parent run {parent.info.run_id}. "
             f"Read from MLflow alone.")
    notes, warnings = _intro_notes(parent, headline)
    notes += selection_notes + ([f"Trials restricted to {', '.join(where)}."] if where else [])
    sections = [Section(t.title or name, to_html(t), pictures[name]) for name, t in tables.items()]
    sections += extra
    sections.append(Section("learning curves and survival", images=curves))
    sections.append(Section("hyperparameter importance per setting (fANOVA, PED-ANOVA)", text=importance_md,
                            images=importance_pngs))
    files.append(out / "report.html")
    files[-1].write_text(render_page(title, intro, sections, notes=notes, warnings=warnings))
    files.append(out / "report.md")
    files[-1].write_text(_markdown_page(title, intro, notes, warnings, tables, importance_md, extra))
    files += [p for section in extra for p in section.images]
    files += [p for group in pictures.values() for p in group] + curves + importance_pngs

    if log:
        tick = time.perf_counter()
        folder = ARTIFACT_DIR + (f"/where_{_slug('_'.join(where))}" if where else "")  # never over the full report
        client.log_artifacts(parent.info.run_id, str(out), folder)
        seconds["mlflow_log"] = time.perf_counter() - tick
    return Report(out, parent.info.run_id, tables["main"], tables, files, summary_runs, created, seconds, len(df),
                  headline)


__all__ = ["sweep_table", "build_report", "write_table", "Report"]
