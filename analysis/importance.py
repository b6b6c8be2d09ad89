"""Hyperparameter importance per method and setting of the data axes, with Optuna's fANOVA and PED-ANOVA
evaluators, their disagreement, and their spread over bootstrap resamples of seeds.

Works for sweeps of any mode (grid or random): the tidy table is turned into finished Optuna trials with
``optuna.trial.create_trial``, one per trial run, each with distributions inferred from the config columns
that vary within the method. Each seed is its own trial, so seed noise lowers every importance alike.
A method's knobs are named after it (``focal.gamma``), shared keys keep their names (``train.lr``).

Data axes (``dataset.*``: imbalance, noise, dataset, data seed) are not a method's knobs: an imbalance level
moves every accuracy and would swamp the knobs (CE's ``dataset.imbalance`` came out at 1.000), so importance is
computed per setting of the data axes, over the knobs only. The two evaluators measure different things
(fANOVA: share of variance over the whole space; PED-ANOVA: how the top quantile's knob values differ from
the rest) and often disagree; how much an importance can be trusted shows in its spread when the seeds are
resampled with replacement (:data:`BOOTSTRAP` resamples), which the tables and plots show beside it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from analysis.aggregate import scope_knobs, swept_factors, value_column
from analysis.tables import data_axes, higher_is_better, level_text

EVALUATORS = ("fanova", "ped_anova")
EVALUATOR_NAMES = {"fanova": "fANOVA", "ped_anova": "PED-ANOVA"}
MIN_TRIALS = 4  # fewer finished trials than this carry no usable importance
BOOTSTRAP = 10  # resamples of seeds for the spread: each refits fANOVA's forest, so they cost report time
COLUMNS = ["method", "setting", "evaluator", "param", "importance", "spread", "n_trials", "n_resamples"]


def infer_distribution(values: pd.Series):
    """An Optuna distribution covering ``values``: Int/Float (log when positive and spanning >= 100x),
    Categorical for strings, booleans and anything else."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    clean = [v for v in values if not _missing(v)]
    if not clean:
        raise ValueError("infer_distribution: no values")
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in clean)
    if numeric and len(set(clean)) > 1:
        low, high = min(clean), max(clean)
        log = low > 0 and high / low >= 100
        if all(isinstance(v, int) or float(v).is_integer() for v in clean) and not log:
            return IntDistribution(int(low), int(high))
        return FloatDistribution(float(low), float(high), log=log)
    choices = tuple(dict.fromkeys(_hashable(v) for v in clean))
    return CategoricalDistribution(choices)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _hashable(v: Any):
    return v if isinstance(v, (bool, int, float, str)) else str(v)


def build_study(df: pd.DataFrame, metric: str, kind: str = "final", direction: str | None = None,
                params: list[str] | None = None):
    """An in-memory Optuna study holding one COMPLETE trial per row of ``df`` that has ``metric``."""
    import optuna

    column = value_column(metric, kind)
    if column not in df.columns:
        raise KeyError(f"importance: metric {metric!r} ({kind}) is not in the table")
    data = df[df[column].notna()]
    params = params if params is not None else [p for p in swept_factors(data) if data[p].notna().all()]
    if not params:
        raise ValueError("importance: no config key varies among these trials")
    dists = {p: infer_distribution(data[p]) for p in params}
    trials = []
    for _, row in data.iterrows():
        values = {p: _to_param(row[p], dists[p]) for p in params}
        trials.append(optuna.trial.create_trial(params=values, distributions=dists, value=float(row[column])))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if higher_is_better(metric, direction) else "minimize")
    study.add_trials(trials)
    return study


def _to_param(value: Any, dist):
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return _hashable(value)
    return int(value) if isinstance(dist, IntDistribution) else float(value)


def _scores(group: pd.DataFrame, metric: str, kind: str, direction: str | None, params: list[str],
            seed: int) -> dict[str, dict[str, float]]:
    """evaluator -> param -> normalised importance on the trials of ``group``."""
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator, get_param_importances

    study = build_study(group, metric, kind, direction, params)
    n = len(study.trials)
    evaluators = {"fanova": FanovaImportanceEvaluator(seed=seed),
                  "ped_anova": PedAnovaImportanceEvaluator(target_quantile=min(0.5, max(0.1, 2.0 / n)))}
    return {name: {p: float(v) for p, v in get_param_importances(study, evaluator=e).items()}
            for name, e in evaluators.items()}


def seed_resample(group: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """The trials of ``len(seeds)`` seeds drawn with replacement (a seed drawn twice brings its trials twice)."""
    seeds = list(dict.fromkeys(group["seed"]))
    drawn = rng.choice(len(seeds), size=len(seeds), replace=True)
    return pd.concat([group[group["seed"] == seeds[i]] for i in drawn], ignore_index=True)


def importances(df: pd.DataFrame, metric: str, *, kind: str = "final", direction: str | None = None,
                seed: int = 0, resamples: int = BOOTSTRAP) -> pd.DataFrame:
    """Per method and setting of the data axes: the importance of every varying knob (data axes excluded) by
    fANOVA and PED-ANOVA (normalised to sum 1), and its spread: the standard deviation over ``resamples``
    bootstrap resamples of the seeds (NaN with one seed or ``resamples`` 0).

    Returns long form (:data:`COLUMNS`); ``setting`` reads ``imbalance = 10`` (empty when no data axis varies).
    Groups with fewer than ``MIN_TRIALS`` trials or no varying knob are left out. PED-ANOVA compares the top
    quantile of trials with all of them; its quantile is raised so that the top holds at least two trials.
    """
    scoped = scope_knobs(df)
    axes = data_axes(scoped)
    records = []
    rng = np.random.default_rng(seed)
    for method, by_method in scoped.groupby("method", sort=False):
        parts = by_method.groupby(axes, sort=True, dropna=False) if axes else [((), by_method)]
        for values, group in parts:
            values = values if isinstance(values, tuple) else (values,)
            setting = ", ".join(level_text(k, v) for k, v in zip(axes, values, strict=True))
            column = value_column(metric, kind)
            data = group[group[column].notna()] if column in group else group.iloc[:0]
            params = [p for p in swept_factors(data) if p not in axes and p != "seed" and data[p].notna().all()]
            if len(data) < MIN_TRIALS or not params:
                continue
            scores = _scores(data, metric, kind, direction, params, seed)
            boot: dict[str, dict[str, list[float]]] = {e: {p: [] for p in params} for e in scores}
            n_boot = resamples if "seed" in data and data["seed"].nunique() > 1 else 0
            for _ in range(n_boot):
                sample = seed_resample(data, rng)
                try:
                    drawn = _scores(sample, metric, kind, direction, params, seed)
                except (ValueError, RuntimeError):  # a resample in which a knob no longer varies
                    drawn = {e: {p: 0.0 for p in params} for e in scores}
                for e, values_ in drawn.items():
                    for p in params:
                        boot[e][p].append(values_.get(p, 0.0))
            for e, values_ in scores.items():
                for p, v in values_.items():
                    spread = float(np.std(boot[e][p], ddof=1)) if len(boot[e][p]) > 1 else math.nan
                    records.append({"method": method, "setting": setting, "evaluator": e, "param": p,
                                    "importance": v, "spread": spread, "n_trials": len(data),
                                    "n_resamples": n_boot})
    return pd.DataFrame(records, columns=COLUMNS)


def _groups(frame: pd.DataFrame):
    return frame.groupby(["method", "setting"], sort=False)


def importance_markdown(frame: pd.DataFrame) -> str:
    """One Markdown table per method and setting: param | fANOVA ± spread | PED-ANOVA ± spread | disagreement
    (|fANOVA - PED-ANOVA|), sorted by fANOVA, under a line naming the trials and resamples."""
    if frame.empty:
        return "(no importance: every method has fewer than 4 trials per setting or no knob varies)"
    out = []
    for (method, setting), group in _groups(frame):
        wide = group.pivot_table(index="param", columns="evaluator", values="importance").reindex(
            columns=list(EVALUATORS))
        spread = group.pivot_table(index="param", columns="evaluator", values="spread", dropna=False).reindex(
            index=wide.index, columns=list(EVALUATORS))
        wide = wide.sort_values("fanova", ascending=False)
        n_boot = int(group["n_resamples"].iloc[0])
        where = f" at {setting}" if setting else ""
        resampled = (f"± = std over {n_boot} bootstrap resamples of seeds" if n_boot
                     else "one seed: no spread")
        out.append(f"**{method}**{where} ({int(group['n_trials'].iloc[0])} trials; {resampled})\n")
        out.append("| param | fANOVA | PED-ANOVA | disagreement |\n|---|---|---|---|")
        for p, r in wide.iterrows():
            cells = [f"{r[e]:.3f}" + (f" ± {spread.loc[p, e]:.3f}" if math.isfinite(spread.loc[p, e]) else "")
                     for e in EVALUATORS]
            out.append(f"| {p} | {cells[0]} | {cells[1]} | {abs(r['fanova'] - r['ped_anova']):.3f} |")
        if len(wide) == 1:
            out.append("\n(one knob varies: its normalised importance is 1 by construction, not a finding)")
        out.append("")
    out.append("Data axes are held fixed (one table per setting): they are not a method's knobs. fANOVA measures a "
               "knob's share of the metric's variance over the whole space, PED-ANOVA how the top trials' values "
               "differ from the rest; where they disagree by more than their spreads, neither ranking is settled.")
    return "\n".join(out).rstrip()
