"""Seed aggregation: mean, sample std (n-1), n and a 95% Student-t interval, per configuration.

Pure functions on the tidy frame of :mod:`analysis.mlflow_io` (one row per trial): final values sit in
``metric.<name>`` columns, best-epoch values in ``best.<name>`` columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import pandas as pd
from scipy import stats

ID_COLUMNS = ("run_id", "status", "trial_key", "config_id", "seed", "method", "label", "phase", "stop_reason",
              "plan_index", "epochs_run")
VALUE_PREFIXES = ("metric.", "best.")
KINDS = {"final": "metric.", "best": "best."}


@dataclass
class Cell:
    """Seed statistics of one group of trials."""

    mean: float
    std: float  # sample standard deviation (n-1); NaN when n = 1
    n: int
    early_stopped: int = 0  # trials in the group stopped by the scheduler before the last epoch
    ci95: float = math.nan  # half-width of the 95% Student-t interval of the mean; NaN when n = 1


def ci95_halfwidth(std: float, n: int) -> float:
    """Half-width t_{0.975, n-1} * std / sqrt(n) of the 95% interval of a mean; NaN for n < 2."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if n < 2 or math.isnan(std):
        return math.nan
    return float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n))


def cell_stats(values: Iterable[float], early_stopped: int = 0) -> Cell:
    """Mean, sample std (ddof=1), n and 95% half-width of ``values`` (NaNs dropped)."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not xs:
        raise ValueError("cell_stats needs at least one finite value")
    n = len(xs)
    mean = math.fsum(xs) / n
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else math.nan
    return Cell(mean, std, n, early_stopped, ci95_halfwidth(std, n))


def value_column(metric: str, kind: str = "final") -> str:
    """The tidy-frame column of ``metric``: ``metric.<m>`` (final epoch) or ``best.<m>`` (best epoch)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return KINDS[kind] + metric


def config_columns(df: pd.DataFrame) -> list[str]:
    """The dotted config keys of the tidy frame (params), without values, axis copies and the seed."""
    return sorted(c for c in df.columns if "." in c and not c.startswith(VALUE_PREFIXES + ("axis.",)))


def swept_factors(df: pd.DataFrame, exclude: Sequence[str] = ("method.name",)) -> list[str]:
    """Config keys that take more than one value across the sweep (what the sweep varied)."""
    out = []
    for column in config_columns(df):
        if column in exclude:
            continue
        values = {repr(v) for v in df[column] if not _missing(v)}
        if len(values) > 1:
            out.append(column)
    return out


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def is_early_stopped(df: pd.DataFrame) -> pd.Series:
    return df["stop_reason"].astype(str).str.startswith("stopped") if "stop_reason" in df else pd.Series(False, df.index)


def aggregate_configs(df: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per config_id: label, method, the config keys, n, and per metric and kind mean/std/ci95.

    Columns are ``<m>`` (mean of the final values), ``<m>_std``, ``<m>_ci95``, and ``best_<m>``,
    ``best_<m>_std``, ``best_<m>_ci95`` for best-epoch values; ``metrics`` defaults to every metric present.
    """
    if df.empty:
        raise ValueError("aggregate_configs: the tidy frame has no trials")
    if metrics is None:
        metrics = sorted(c[len("metric."):] for c in df.columns if c.startswith("metric."))
    keys = config_columns(df)
    early = is_early_stopped(df)
    records = []
    for cid, group in df.groupby("config_id", sort=False):
        first = group.iloc[0]
        record = {"config_id": cid, "label": first.get("label"), "method": first.get("method"),
                  "n": len(group), "early_stopped": int(early[group.index].sum())}
        record.update({k: first[k] for k in keys if k != "seed"})
        for metric in metrics:
            for kind, prefix in (("final", ""), ("best", "best_")):
                column = value_column(metric, kind)
                if column not in group or group[column].isna().all():
                    continue
                cell = cell_stats(group[column])
                record[f"{prefix}{metric}"] = cell.mean
                record[f"{prefix}{metric}_std"] = cell.std
                record[f"{prefix}{metric}_ci95"] = cell.ci95
        records.append(record)
    return pd.DataFrame(records)
