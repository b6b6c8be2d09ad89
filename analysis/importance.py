"""Hyperparameter importance per method with Optuna's fANOVA and PED-ANOVA evaluators.

Works for sweeps of any mode (grid or random): the tidy table is turned into finished Optuna trials with
``optuna.trial.create_trial``, one per trial run, each with distributions inferred from the config columns
that vary within the method. Each seed is its own trial, so seed noise lowers every importance alike.
A method's knobs are named after it (``focal.gamma``), shared keys keep their names (``train.lr``).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from analysis.aggregate import scope_knobs, swept_factors, value_column
from analysis.tables import higher_is_better

EVALUATORS = ("fanova", "ped_anova")
MIN_TRIALS = 4  # fewer finished trials than this carry no usable importance


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


def importances(df: pd.DataFrame, metric: str, *, kind: str = "final", direction: str | None = None,
                seed: int = 0) -> pd.DataFrame:
    """Per method: importance of every varying config key by fANOVA and PED-ANOVA (normalised to sum 1).

    Returns long form (method, evaluator, param, importance, n_trials). Methods with fewer than
    ``MIN_TRIALS`` trials or no varying key are left out. PED-ANOVA compares the top quantile of trials
    with all of them; its quantile is raised so that the top holds at least two trials.
    """
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator, get_param_importances

    records = []
    for method, group in scope_knobs(df).groupby("method", sort=False):
        if len(group) < MIN_TRIALS:
            continue
        try:
            study = build_study(group, metric, kind, direction)
        except ValueError:
            continue
        n = len(study.trials)
        evaluators = {"fanova": FanovaImportanceEvaluator(seed=seed),
                      "ped_anova": PedAnovaImportanceEvaluator(target_quantile=min(0.5, max(0.1, 2.0 / n)))}
        for name, evaluator in evaluators.items():
            scores = get_param_importances(study, evaluator=evaluator)
            records += [{"method": method, "evaluator": name, "param": p, "importance": float(v), "n_trials": n}
                        for p, v in scores.items()]
    return pd.DataFrame(records, columns=["method", "evaluator", "param", "importance", "n_trials"])


def importance_markdown(frame: pd.DataFrame) -> str:
    """One Markdown table per method: param | fANOVA | PED-ANOVA, sorted by fANOVA."""
    if frame.empty:
        return "(no importance: every method has fewer than 4 trials or nothing varies)"
    out = []
    for method, group in frame.groupby("method", sort=False):
        wide = group.pivot_table(index="param", columns="evaluator", values="importance")
        wide = wide.reindex(columns=list(EVALUATORS))
        wide = wide.sort_values("fanova", ascending=False)
        out.append(f"**{method}** ({int(group['n_trials'].iloc[0])} trials)\n")
        out.append("| param | fANOVA | PED-ANOVA |\n|---|---|---|")
        out += [f"| {p} | {r['fanova']:.3f} | {r['ped_anova']:.3f} |" for p, r in wide.iterrows()]
        out.append("")
    return "\n".join(out).rstrip()
