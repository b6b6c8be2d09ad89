"""Seed-averaged summary runs and the sweep's headline, written to MLflow when a sweep ends.

:func:`summarize_sweep` is what a sweep's end calls: one summary child run per configuration (role
``summary``) whose metrics are the seed statistics (mean, ``_std``, the 95 % t interval as ``_lo``/``_hi``,
per-epoch mean curves with their band, and the paired difference to the baseline), so MLflow's runs table,
charts and parallel-coordinates view compare tens of configurations instead of hundreds of trials; the
sweep's headline on the parent run (the best configuration by the search metric per setting of the data
axes, each against the baseline); and the experiment's saved comparison view (the swept keys and the
table's metric as columns, sorted by it, charts led by that metric's mean and band). ``raysweep report``
calls the same code. All of it is idempotent: a summary run is replaced only when what it holds changed.

Units: accuracies (metrics whose name ends in ``acc``) are in percent on summary runs and in the headline,
as in the tables; trial runs keep the fractions the trainables log. Bookkeeping (``n_seeds``,
``early_stopped``, ``epochs_run``) is a param, so no chart leads with it.
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
from analysis.aggregate import aggregate_configs, cell_stats, is_early_stopped, rank_configs, swept_factors
from analysis.marks import MarkOptions, _fixed, setting_keys
from analysis.mlflow_io import Sweep, child_runs, final_phase, load_sweep
from analysis.stats import PAIR_KEYS, Comparison, adjust, compare, verdict
from analysis.tables import GROUP_METRICS, data_axes, higher_is_better, level_text, row_values
from raysweep.tracking.mlflow_store import MAX_BATCH_METRICS, comparison_view, log_params

HISTORY_METRICS = ("val_balanced_acc", "test_acc") + GROUP_METRICS + ("train_clean_acc", "train_loss")
DEFAULT_SEARCH_METRIC = "val_balanced_acc"
PER_CLASS = re.compile(r"_class\d+$")
BOOKKEEPING = ("n_seeds", "early_stopped", "epochs_run")  # summary params, never metrics (charts)
SUMMARY_FORMAT = "2"  # bumped when what a summary run holds changes: older ones are written again


def display_scale(metric: str) -> float:
    """100 for accuracies (``test_acc``, ``best_test_many_acc``, ``test_acc_class3``): percent, as the tables show
    them; 1 for anything else (losses, ECE)."""
    return 100.0 if PER_CLASS.sub("", metric).endswith("acc") else 1.0


def versus_name(metric: str, baseline: str) -> str:
    """The summary metric holding ``metric``'s paired difference to ``baseline``: ``test_acc_vs_ce``."""
    return f"{metric}_vs_{baseline}"


@dataclass
class Versus:
    """A configuration against the baseline at the same setting (display units: percent points for accuracies)."""

    baseline: str
    comparison: Comparison
    p_adjusted: float
    verdict: str  # better / worse / same / "" (not tested)

    def metrics(self, metric: str) -> dict[str, float]:
        """``<m>_vs_<b>`` (mean difference), ``_lo``/``_hi`` (its 95 % interval), ``_p_adj``: the finite ones."""
        name, scale, c = versus_name(metric, self.baseline), display_scale(metric), self.comparison
        out = {name: scale * c.mean_diff, f"{name}_lo": scale * c.ci_low, f"{name}_hi": scale * c.ci_high,
               f"{name}_p_adj": self.p_adjusted}
        return {k: float(v) for k, v in out.items() if math.isfinite(v)}

    def describe(self, metric: str) -> str:
        c, scale = self.comparison, display_scale(metric)
        unit = " points" if scale == 100.0 else ""
        if not c.tested:
            return f"vs {self.baseline}: {scale * c.mean_diff:+.2f}{unit}, not tested ({c.reason})"
        # "same" is the verdict's stored value; a reader must not take it for "shown equal". The interval is
        # the comparison's own, the p value is corrected over the sweep's comparisons: say which is which.
        said = {"same": "no significant difference"}.get(self.verdict, self.verdict or "not tested")
        return (f"vs {self.baseline}: {scale * c.mean_diff:+.2f}{unit} [{scale * c.ci_low:+.2f}, "
                f"{scale * c.ci_high:+.2f}] (95 % interval, uncorrected), {c.test} n={c.n_pairs or min(c.n_a, c.n_b)}, "
                f"p corrected for multiple comparisons = {self.p_adjusted:.3g}: {said}")


@dataclass
class SettingBest:
    """The best configuration at one setting of the data axes (``setting``: axis -> value; empty when the
    sweep varies no data axis) by the search metric's seed mean, its seed statistics and its comparison."""

    setting: dict[str, Any]
    config_id: str
    label: str
    n_seeds: int
    values: dict[str, tuple[float, float]]  # metric -> (seed mean, sample std), the trials' units
    versus: Versus | None = None
    is_baseline: bool = False

    @property
    def setting_text(self) -> str:
        return ", ".join(level_text(k, v) for k, v in self.setting.items())

    @property
    def slug(self) -> str:
        """The setting in a metric name: ``imbalance_10`` (MLflow allows no ``=`` there)."""
        return ".".join(level_text(k, v).replace(" = ", "_") for k, v in self.setting.items())


@dataclass
class Headline:
    """The sweep's best configuration per setting of the data axes by its search metric (seed means of the
    final phase), as logged; never one best across levels of a data axis (that names a dataset setting)."""

    parent_run_id: str
    metric: str  # the search metric that chose the configurations
    direction: str  # max or min
    bests: list[SettingBest] = field(default_factory=list)  # one per setting; empty when nothing finished
    table_metric: str = "test_acc"  # what the comparison against the baseline is on
    baseline: str | None = None
    summary_runs: dict[str, str] = field(default_factory=dict)  # config_id -> summary run id
    summary_created: int = 0  # summary runs created or replaced by this call
    seconds: float = 0.0

    @property
    def config_id(self) -> str | None:
        """The best configuration when the sweep has one setting; None otherwise (or when nothing finished)."""
        return self.bests[0].config_id if len(self.bests) == 1 else None

    def parent_metrics(self) -> dict[str, float]:
        """``best.<m>_mean``, ``best.<m>_std`` (n > 1) and ``best.<m>_vs_<b>`` per setting, accuracies in percent;
        with several settings each name carries its setting: ``best.imbalance_10.test_acc_mean``."""
        out: dict[str, float] = {}
        for best in self.bests:
            prefix = tags.HEADLINE_PREFIX + (f"{best.slug}." if best.setting else "")
            for name, (mean, std) in best.values.items():
                scale = display_scale(name)
                out[f"{prefix}{name}_mean"] = scale * mean
                if math.isfinite(std):
                    out[f"{prefix}{name}_std"] = scale * std
            if best.versus is not None:
                out.update({prefix + k: v for k, v in best.versus.metrics(self.table_metric).items()})
        return out

    def parent_tags(self) -> dict[str, str]:
        if not self.bests:
            return {}
        named = [(f"{b.setting_text}: " if b.setting else "") + f"{b.label} [{b.config_id}]" for b in self.bests]
        out = {tags.BEST_CONFIG: "; ".join(named), tags.BEST_CONFIG_ID: ",".join(b.config_id for b in self.bests),
               tags.BEST_N_SEEDS: ",".join(str(b.n_seeds) for b in self.bests)}
        runs = [self.summary_runs[b.config_id] for b in self.bests if b.config_id in self.summary_runs]
        if runs:
            out[tags.BEST_SUMMARY_RUN] = ",".join(runs)
        return out

    def describe(self) -> str:
        """For a terminal: per setting, the best configuration, its seed-mean metrics (accuracies in %) and its
        comparison against the baseline."""
        if not self.bests:
            return f"no configuration has a {self.metric} to rank by"
        lines = []
        for best in self.bests:
            shown = [self.metric] + [m for m in ("val_balanced_acc", self.table_metric)
                                     if m != self.metric and m in best.values]
            parts = []
            for name in dict.fromkeys(shown):
                mean, std = best.values[name]
                scale = display_scale(name)
                unit = " %" if scale == 100.0 else ""
                spread = f" ± {scale * std:.2f}" if math.isfinite(std) else ""
                parts.append(f"{name} {scale * mean:.2f}{spread}{unit}")
            if best.is_baseline:
                parts.append(f"it is the baseline ({self.baseline})")
            elif best.versus is not None:
                parts.append(f"{self.table_metric} {best.versus.describe(self.table_metric)}")
            where = f"{best.setting_text}: " if best.setting else ""
            lines.append(f"{where}{best.label} [{best.config_id}] (n={best.n_seeds}): " + ", ".join(parts))
        what = (f"best configuration by {self.metric} ({self.direction}, seed means)"
                + (" per setting of the data axes" if len(self.bests) > 1 or self.bests[0].setting else ""))
        return what + (":\n  " + "\n  ".join(lines) if len(lines) > 1 else ": " + lines[0])


def search_metric(parent) -> tuple[str, str]:
    """The sweep's search metric and direction, from the parent run's tags."""
    metric = parent.data.tags.get(tags.METRIC) or DEFAULT_SEARCH_METRIC
    direction = parent.data.tags.get(tags.DIRECTION)
    if direction not in ("max", "min"):
        direction = "max" if higher_is_better(metric) else "min"
    return metric, direction


def table_metric(parent) -> str:
    """The metric of the sweep's table (the spec's ``table.metric``): what summaries compare and sort by."""
    return json.loads(parent.data.tags.get(tags.TABLE, "{}")).get("metric", "test_acc")


def summary_history_metrics(parent, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The metrics whose per-epoch histories a summary needs (best-epoch values, mean curves)."""
    return tuple(dict.fromkeys(extra + (table_metric(parent), search_metric(parent)[0]) + HISTORY_METRICS))


def config_labels(trials: pd.DataFrame, axes: list[str]) -> dict[str, str]:
    """config_id -> a readable name: the plan's label plus the configuration's axis values."""
    if trials.empty:
        return {}
    return dict(zip(trials["config_id"], row_values(trials, "config", None, axes), strict=True))


def baseline_comparisons(trials: pd.DataFrame, metric: str, options: MarkOptions | None,
                         higher: bool) -> dict[str, Versus]:
    """config_id -> its trials against the baseline's finished trials at the same setting (equal values of the
    swept ``dataset.*``/``train.*``/``model.*`` keys), on the final ``metric``, paired on seed and data seed
    (:func:`analysis.stats.compare`), ``options.correction`` over all of the sweep's comparisons.

    Configurations with an early-stopped trial, and the baseline's own, are not compared; so is everything
    when the sweep has no baseline (``options.baseline`` null, or ``auto`` without ce)."""
    column = f"metric.{metric}"
    options = options or MarkOptions()
    try:
        baseline = options.resolve(trials)
    except KeyError:
        baseline = None
    if baseline is None or column not in trials or trials.empty:
        return {}
    keys = setting_keys(trials)
    on = tuple(k for k in PAIR_KEYS if k in trials.columns) + tuple(keys)
    stopped = is_early_stopped(trials)
    base_all = trials[(trials["method"] == baseline) & ~stopped]
    results: dict[str, Comparison] = {}
    for cid, group in trials.groupby("config_id", sort=False):
        if (group["method"] == baseline).all() or stopped[group.index].any():
            continue
        mask = pd.Series(True, base_all.index)
        for key, value in _fixed(group, keys).items():
            mask &= base_all[key] == value
        if mask.any():
            results[str(cid)] = compare(group, base_all[mask], column, on=on, test=options.test)
    ids = list(results)
    adjusted = adjust([results[c].p_value for c in ids], options.correction)
    return {c: Versus(baseline, results[c], float(p), verdict(results[c], float(p), higher, options.alpha))
            for c, p in zip(ids, adjusted, strict=True)}


def _values(best: pd.Series, configs: pd.DataFrame, metric: str) -> dict[str, tuple[float, float]]:
    names = [metric] + [c for c in configs.columns if c.startswith(("val_", "test_")) and c != metric
                        and not c.endswith(("_std", "_ci95")) and not PER_CLASS.search(c)]
    values = {}
    for name in names:
        mean = best.get(name)
        if mean is not None and math.isfinite(float(mean)):
            std = best.get(f"{name}_std")
            values[name] = (float(mean), float(std) if std is not None else math.nan)
    return values


def headline_of(configs: pd.DataFrame, metric: str, direction: str, labels: dict[str, str],
                parent_run_id: str = "", versus: dict[str, Versus] | None = None,
                table_metric: str = "test_acc", baseline: str | None = None) -> Headline:
    """Per setting of the data axes (:func:`analysis.tables.data_axes`), the best row of
    :func:`aggregate_configs` by ``metric`` (see :func:`rank_configs`) with its seed-mean search, validation and
    test metrics (per-class accuracies left out) and its comparison from ``versus``."""
    headline = Headline(parent_run_id, metric, direction, table_metric=table_metric, baseline=baseline)
    if configs.empty or metric not in configs.columns:
        return headline
    axes = data_axes(configs)
    parts = configs.groupby(axes, sort=True, dropna=False) if axes else [((), configs)]
    for values, part in parts:
        ranked = rank_configs(part, metric, direction == "max")
        if ranked.empty:
            continue
        best = ranked.iloc[0]
        values = values if isinstance(values, tuple) else (values,)
        cid = str(best["config_id"])
        setting = dict(zip(axes, values, strict=True))
        headline.bests.append(SettingBest(setting, cid, labels.get(cid, str(best["label"])), int(best["n"]),
                                          _values(best, configs, metric), (versus or {}).get(cid),
                                          baseline is not None and best.get("method") == baseline))
    return headline


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


BASELINE_DEFAULT = "auto"  # ce when the sweep has it
NO_BASELINE = ("none", "null")  # --baseline none switches the comparison off


def mark_options(defaults: dict, baseline: str | None = None) -> MarkOptions:
    """The significance options: the spec's ``table`` section (as the parent run's tag holds it), with
    ``baseline`` from ``--baseline`` when given (``none`` = off)."""
    chosen = defaults.get("baseline", BASELINE_DEFAULT) if baseline is None else baseline
    try:
        return MarkOptions(None if chosen in NO_BASELINE else chosen, defaults.get("test", "paired_t"),
                           defaults.get("correction", "holm"), float(defaults.get("alpha", 0.05)))
    except ValueError as err:
        raise KeyError(str(err)) from None


def sweep_options(parent) -> MarkOptions:
    """The baseline, test, correction and alpha of the sweep's ``table`` section, as the report's tables use
    them, so summary runs and tables compare alike; the defaults for a tag another version wrote."""
    try:
        return mark_options(json.loads(parent.data.tags.get(tags.TABLE, "{}")))
    except KeyError:
        return MarkOptions()


def sweep_comparisons(parent, final: pd.DataFrame) -> tuple[str, dict[str, Versus], str | None]:
    """(the table's metric, config_id -> its comparison with the baseline, the baseline or None) of a sweep's
    final-phase trials, with the options of its ``table`` section."""
    shown = table_metric(parent)
    versus = baseline_comparisons(final, shown, sweep_options(parent), higher_is_better(shown))
    return shown, versus, (next(iter(versus.values())).baseline if versus else None)


def summarize_loaded(client: MlflowClient, sweep: Sweep, configs: pd.DataFrame) -> Headline:
    """Summary runs, the parent's headline and the experiment's comparison view for a loaded sweep
    (``configs``: its final phase, aggregated)."""
    tick = time.perf_counter()
    metric, direction = search_metric(sweep.parent)
    final = final_phase(sweep.trials)
    shown, versus, baseline = sweep_comparisons(sweep.parent, final)
    ids, created = sync_summary_runs(client, sweep, configs, versus)
    labels = config_labels(final, sweep.axes)
    headline = headline_of(configs, metric, direction, labels, sweep.parent.info.run_id, versus, shown, baseline)
    headline.summary_runs, headline.summary_created = ids, created
    log_headline(client, sweep.parent, headline)
    save_comparison_view(client, sweep.parent, final, shown, baseline)
    headline.seconds = time.perf_counter() - tick
    return headline


def summarize_sweep(tracking_uri: str, parent_run_id: str) -> Headline:
    """What a sweep's end calls: seed-averaged summary runs (one per configuration) and the headline.

    Reads the trials from MLflow (one search per 1000 runs, one history request per trial and summary
    metric), creates the summary runs that are missing or out of date (:func:`sync_summary_runs`), logs
    the headline on the parent run (:func:`log_headline`) and saves the comparison view. Running it again,
    or ``raysweep report`` after it, creates nothing. Raises what MLflow raises when the store does not answer.
    """
    tick = time.perf_counter()
    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_run_id)
    sweep = load_sweep(client, parent, summary_history_metrics(parent))
    if sweep.trials.empty:
        metric, direction = search_metric(parent)
        return Headline(parent_run_id, metric, direction, seconds=time.perf_counter() - tick)
    headline = summarize_loaded(client, sweep, aggregate_configs(final_phase(sweep.trials)))
    headline.seconds = time.perf_counter() - tick
    return headline


def _fingerprint(trials: pd.DataFrame, versus: Versus | None) -> str:
    """What a summary run summarises: its trials' run ids, epochs and final metrics, its comparison against
    the baseline (which changes with the baseline's trials) and the summary format."""
    cols = ["run_id", "epochs_run"] + sorted(c for c in trials.columns if c.startswith("metric."))
    body = trials[cols].sort_values("run_id").to_json(orient="values", double_precision=10)
    extra = json.dumps([SUMMARY_FORMAT, None if versus is None else
                        [versus.baseline, repr(versus.comparison), versus.p_adjusted, versus.verdict]])
    return hashlib.sha1((body + extra).encode()).hexdigest()[:16]


def summary_metrics(row: pd.Series) -> dict[str, float]:
    """The finite seed statistics of one row of :func:`aggregate_configs` in display units (accuracies in %):
    ``<m>`` (mean), ``<m>_std``, and ``<m>_lo`` / ``<m>_hi``, the 95 % Student-t interval of the mean
    (mean -/+ t_{0.975, n-1} std / sqrt(n)); the same for best-epoch (``best_<m>``) and selected values."""
    skip = {"config_id", "label", "method", "n"} | set(BOOKKEEPING)
    out = {}
    for key, value in row.items():
        if key in skip or "." in key or key.endswith(("_std", "_ci95")) or not _number(value):
            continue
        if not math.isfinite(float(value)):
            continue
        scale = display_scale(key)
        out[key] = scale * float(value)
        std, half = row.get(f"{key}_std"), row.get(f"{key}_ci95")
        if _number(std) and math.isfinite(float(std)):
            out[f"{key}_std"] = scale * float(std)
        if _number(half) and math.isfinite(float(half)):
            out[f"{key}_lo"] = scale * (float(value) - float(half))
            out[f"{key}_hi"] = scale * (float(value) + float(half))
    return out


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def summary_params(row: pd.Series) -> dict[str, Any]:
    """The configuration's params as its trials have them (dotted config keys), without missing values, and
    its bookkeeping: ``n_seeds``, ``early_stopped`` (trials stopped by the scheduler), ``epochs_run`` (mean)."""
    out = {k: v for k, v in row.items() if "." in k and not (v is None or (isinstance(v, float) and math.isnan(v)))}
    out["n_seeds"] = int(row["n"])
    out["early_stopped"] = int(row.get("early_stopped", 0))
    if _number(row.get("epochs_run")) and math.isfinite(float(row["epochs_run"])):
        out["epochs_run"] = f"{float(row['epochs_run']):g}"
    return out


def band_curves(histories: pd.DataFrame) -> list[tuple[str, int, float]]:
    """(name, step, value) of the seed-mean curves and their 95 % band: per metric ``m`` and epoch, the trials'
    mean as ``curve.<m>`` and the t interval of that mean as ``curve.<m>_lo`` / ``curve.<m>_hi`` (where at least
    two trials reached the epoch), in display units; ``histories`` is (metric, step, value), one row per trial."""
    out = []
    for (metric, step), values in histories.groupby(["metric", "step"])["value"]:
        cell, scale = cell_stats(values), display_scale(metric)
        out.append((f"curve.{metric}", int(step), scale * cell.mean))
        if math.isfinite(cell.ci95):
            out.append((f"curve.{metric}_lo", int(step), scale * (cell.mean - cell.ci95)))
            out.append((f"curve.{metric}_hi", int(step), scale * (cell.mean + cell.ci95)))
    return out


def sync_summary_runs(client: MlflowClient, sweep: Sweep, configs: pd.DataFrame,
                      versus: dict[str, Versus] | None = None) -> tuple[dict[str, str], int]:
    """One summary child run per configuration; returns (config_id -> run id, how many were (re)created).

    An existing summary whose fingerprint matches is kept as it is (renamed if its name is out of date);
    one whose trials or comparison changed is deleted and written again, so neither a second run nor a mixed
    metric history ever appears. Runs are named ``summary <label and axis values>``, e.g. ``summary focal
    gamma=0.5``. ``versus`` (config_id -> comparison) adds ``<table metric>_vs_<baseline>`` metrics and the
    verdict tag.
    """
    parent = sweep.parent
    versus = versus or {}
    shown = table_metric(parent)
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
        against = versus.get(str(cid))
        fingerprint = _fingerprint(trials, against)
        name = f"summary {labels.get(cid, row['label'])}"
        old = existing.pop(cid, None)
        if old is not None and old.data.tags.get(tags.SUMMARY_OF) == fingerprint:
            if old.info.run_name != name:
                client.update_run(old.info.run_id, name=name)
            ids[cid] = old.info.run_id
            continue
        if old is not None:
            client.delete_run(old.info.run_id)
        run_tags = {tags.PARENT: parent.info.run_id, tags.ROLE: tags.SUMMARY, tags.CONFIG_ID: cid,
                    tags.LABEL: labels.get(cid, str(row["label"])), tags.METHOD: str(row["method"]),
                    tags.N_SEEDS: str(int(row["n"])), tags.SUMMARY_OF: fingerprint,
                    tags.UNITS: "accuracies in percent", tags.TRIAL_RUNS: ",".join(trials["run_id"])[:5000]}
        if against is not None:
            run_tags[tags.VS_BASELINE] = against.verdict or "not tested"
        run = client.create_run(parent.info.experiment_id, run_name=name, tags=run_tags)
        run_id = run.info.run_id
        log_params(client, run_id, summary_params(row))
        values = summary_metrics(row) | (against.metrics(shown) if against is not None else {})
        entries = [Metric(k, v, now, 0) for k, v in values.items()]
        entries += [Metric(k, v, now, step) for k, step, v in band_curves(curves[curves["config_id"] == cid])]
        for i in range(0, len(entries), MAX_BATCH_METRICS):
            client.log_batch(run_id, metrics=entries[i : i + MAX_BATCH_METRICS])
        client.set_terminated(run_id, "FINISHED")
        ids[cid] = run_id
        created += 1
    for stale in existing.values():  # configurations no longer in the sweep
        client.delete_run(stale.info.run_id)
    return ids, created


def view_columns(trials: pd.DataFrame, metric: str, baseline: str | None) -> tuple[list[str], list[str]]:
    """(params, metrics) the comparison view shows as columns: the swept keys (data axes first, the method when
    several, then the knobs) and ``n_seeds``; ``metric``'s mean, std, interval and difference to the baseline."""
    swept = [k for k in swept_factors(trials) if k != "seed"]
    axes = [k for k in swept if k in data_axes(trials)]
    methods = ["method.name"] if "method.name" in trials and trials["method.name"].nunique() > 1 else []
    params = axes + methods + [k for k in swept if k not in axes] + ["n_seeds"]
    metrics = [metric, f"{metric}_std", f"{metric}_lo", f"{metric}_hi"]
    if baseline is not None:
        name = versus_name(metric, baseline)
        metrics += [name, f"{name}_lo", f"{name}_hi", f"{name}_p_adj"]
    return params, metrics


def view_charts(params: list[str], metric: str, baseline: str | None) -> tuple[list[dict], list[dict]]:
    """(charts, sections) of the view's chart tab, in MLflow 3.17's saved-state shape: first ``metric``'s
    per-epoch mean with its 95 % band (one line chart of ``curve.<m>``, ``_lo``, ``_hi``), then its final mean,
    its difference to the baseline, and parallel coordinates of the knobs against it; MLflow adds a chart per
    other metric below, in its own section."""
    main, rest = "raysweep-main", "raysweep-other"

    def card(uuid: str, kind: str, **fields) -> dict:
        return {"uuid": uuid, "type": kind, "runsCountToCompare": 100, "metricSectionId": main, "deleted": False,
                "isGenerated": False, **fields}

    line = {"lineSmoothness": 0, "xAxisScaleType": "linear", "scaleType": "linear", "xAxisKey": "step",
            "selectedXAxisMetricKey": "", "yAxisKey": "metric", "yAxisExpressions": [], "ignoreOutliers": False,
            "useGlobalXaxisKey": False, "useGlobalLineSmoothing": False,
            "range": {"xMin": None, "xMax": None, "yMin": None, "yMax": None}}
    curve = f"curve.{metric}"
    charts = [card("raysweep-band", "LINE", metricKey=curve, selectedMetricKeys=[curve, f"{curve}_lo", f"{curve}_hi"],
                   displayName=f"{metric} per epoch: seed mean and 95 % band", **line),
              card("raysweep-mean", "BAR", metricKey=metric, displayName=f"{metric}: seed mean")]
    if baseline is not None:
        name = versus_name(metric, baseline)
        charts.append(card("raysweep-versus", "BAR", metricKey=name,
                           displayName=f"{metric} minus {baseline} (paired, same setting)"))
    knobs = [p for p in params if p != "n_seeds"]
    if knobs:
        charts.append(card("raysweep-parallel", "PARALLEL", selectedParams=knobs, selectedMetrics=[metric],
                           showAllRuns=False))
    sections = [{"uuid": main, "name": f"{metric} (raysweep)", "display": True, "isReordered": False,
                 "deleted": False, "isGenerated": False},
                {"uuid": rest, "name": "Model metrics", "display": True, "isReordered": False, "deleted": False,
                 "isGenerated": True}]
    return charts, sections


def save_comparison_view(client: MlflowClient, parent, trials: pd.DataFrame, metric: str,
                         baseline: str | None) -> bool:
    """Set the experiment's saved comparison view for this sweep (the latest sweep's columns win); False when
    it already held exactly that."""
    params, metrics = view_columns(trials, metric, baseline)
    charts, sections = view_charts(params, metric, baseline)
    state = comparison_view(columns=[f"params.`{p}`" for p in params] + [f"metrics.`{m}`" for m in metrics],
                            order_by=f"metrics.`{metric}`", ascending=not higher_is_better(metric),
                            charts=charts, sections=sections)
    key = tags.SHARED_VIEW_PREFIX + tags.COMPARISON_VIEW
    experiment = client.get_experiment(parent.info.experiment_id)
    if experiment.tags.get(key) == state:
        return False
    client.set_experiment_tag(parent.info.experiment_id, key, state)
    return True
