"""Comparing methods across a sweep, not cell by cell: the expected best score under a trial budget
(Dodge et al., 2019) and average ranks over the data settings (Friedman, Nemenyi, critical difference).

Both work per method on its configurations' seed means; neither pools data settings into one score:
budgets are per setting of the data axes, and ranks are taken within each setting.
"""

from __future__ import annotations

import pandas as pd

from analysis.aggregate import value_column
from analysis.stats import CD_MIN_METHODS, CD_MIN_SETTINGS, CriticalDifference, critical_difference, expected_max
from analysis.tables import data_axes, level_text

BUDGET_MODES = ("random", "optuna")  # i.i.d. draws (Optuna's are not quite: the note says so)
IID_NOTE = ("Expected best validation score of n configurations drawn at random from the ones this sweep tried "
            "(Dodge et al., 2019, 'Show your work': E[max of n draws] from the sorted seed means, ± its standard "
            "deviation). It assumes the trials are i.i.d. draws from the search space: true for random search, "
            "an approximation for Optuna, wrong for grids and early-stopped searches, where it is left out.")


def _settings(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    axes = data_axes(df)
    if not axes:
        return [("all", df)]
    out = []
    for values, part in df.groupby(axes, sort=True):
        values = values if isinstance(values, tuple) else (values,)
        out.append((", ".join(level_text(a, v) for a, v in zip(axes, values, strict=True)), part))
    return out


def budget_frame(df: pd.DataFrame, metric: str, higher: bool = True) -> pd.DataFrame:
    """Per data setting and method: the expected best seed-mean ``metric`` of n configurations, n = 1 .. the
    method's number of configurations there. Columns: setting, method, n, expected_max, std, configs."""
    column = value_column(metric)
    rows = []
    for setting, part in _settings(df):
        for method, trials in part.groupby("method", sort=False):
            means = trials.groupby("config_id")[column].mean().dropna()
            for n in range(1, len(means) + 1):
                mean, std = expected_max(means.to_numpy(), n, higher)
                rows.append({"setting": setting, "method": method, "n": n, "expected_max": mean, "std": std,
                             "configs": len(means)})
    return pd.DataFrame(rows, columns=["setting", "method", "n", "expected_max", "std", "configs"])


def budget_markdown(frame: pd.DataFrame, percent: bool) -> str:
    """One Markdown table per setting: rows n, one column per method, cells ``E[max] ± std``."""
    scale = 100.0 if percent else 1.0
    out = []
    for setting, part in frame.groupby("setting", sort=False):
        methods = list(dict.fromkeys(part["method"]))
        lines = [f"**{setting}**", "", "| n | " + " | ".join(methods) + " |", "|" + "---|" * (len(methods) + 1)]
        for n in sorted(part["n"].unique()):
            cells = []
            for m in methods:
                hit = part[(part["method"] == m) & (part["n"] == n)]
                cells.append("-" if hit.empty else
                             f"{scale * hit['expected_max'].iloc[0]:.2f} ± {scale * hit['std'].iloc[0]:.2f}")
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n\n" + IID_NOTE


def method_scores(final: pd.DataFrame, metric: str, select: str, select_higher: bool = True) -> pd.DataFrame:
    """Settings x methods: each method's score at each data setting, that of its configuration with the best
    seed-mean ``select`` (validation) there: the method as a user would tune it, never chosen on test."""
    metric_col, select_col = value_column(metric), value_column(select)
    scores: dict[str, dict[str, float]] = {}
    for setting, part in _settings(final):
        for method, trials in part.groupby("method", sort=False):
            means = trials.groupby("config_id")[[metric_col, select_col]].mean().dropna()
            if means.empty:
                continue
            best = means[select_col].idxmax() if select_higher else means[select_col].idxmin()
            scores.setdefault(setting, {})[method] = float(means.loc[best, metric_col])
    return pd.DataFrame.from_dict(scores, orient="index")


def ranks_if_enough(scores: pd.DataFrame, higher: bool = True) -> CriticalDifference | None:
    """Friedman + Nemenyi on ``scores`` when there are at least 3 methods over 5 complete settings."""
    complete = scores.dropna(axis=0, how="any")
    if complete.shape[1] < CD_MIN_METHODS or complete.shape[0] < CD_MIN_SETTINGS:
        return None
    return critical_difference(complete, higher)


def cd_markdown(result: CriticalDifference, percent_metric: str) -> str:
    ranks = ", ".join(f"{m} {r:.2f}" for m, r in result.ranks.items())
    return (f"Average ranks of each method's validation-selected configuration by {percent_metric} over "
            f"{result.n_settings} settings (1 = best): {ranks}. Friedman chi-square = {result.statistic:.2f}, "
            f"p = {result.p_value:.3g}; Nemenyi critical difference at alpha {result.alpha:g}: {result.cd:.2f} ranks "
            "(methods joined by a bar in the diagram are not significantly different).")


__all__ = ["budget_frame", "budget_markdown", "method_scores", "ranks_if_enough", "cd_markdown", "IID_NOTE",
           "BUDGET_MODES"]
