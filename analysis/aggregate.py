"""Seed aggregation: mean, sample std (n-1), n and a 95% Student-t interval, per configuration.

Pure functions on the tidy frame of :mod:`analysis.mlflow_io` (one row per trial): final values sit in
``metric.<name>`` columns, best-epoch values in ``best.<name>`` columns.

Config keys come in two forms. The trials' params are the flattened config (``method.gamma``), where one
column holds focal's gamma on focal's rows and CB's gamma on CB's rows. Tables, plots and importance name a
knob after its method instead (``focal.gamma``, ``cb.gamma``; :func:`scope_knobs`), so a knob never mixes
methods; keys shared by every trial (``dataset.imbalance``, ``train.lr``) keep their dotted names.
:func:`key_values` reads either form from either frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import pandas as pd
from scipy import stats

ID_COLUMNS = ("run_id", "status", "trial_key", "config_id", "seed", "method", "label", "phase", "stop_reason",
              "plan_index", "epochs_run")
VALUE_PREFIXES = ("metric.", "best.", "selected.")
# final: the last epoch; best: the peak over epochs (an oracle for test metrics); selected: at the epoch of the
# best validation score (what model selection on validation would report)
KINDS = {"final": "metric.", "best": "best.", "selected": "selected."}
METHOD_ROOT = "method"  # the config section of a trial's method: ``method.name`` and its knobs
SHARED_ROOTS = ("dataset", "model", "train")  # config sections every trial has, whatever its method
# A method named like one of these would make ``<method>.<knob>`` ambiguous with a config key or a value column.
RESERVED_NAMES = (METHOD_ROOT,) + SHARED_ROOTS + ("metric", "best", "axis", "curve", "config", "seed")


@dataclass
class Cell:
    """Seed statistics of one group of trials."""

    mean: float
    std: float  # sample standard deviation (n-1); NaN when n = 1
    n: int
    early_stopped: int = 0  # trials in the group stopped by the scheduler before the last epoch
    ci95: float = math.nan  # half-width of the 95% Student-t interval of the mean; NaN when n = 1
    stopped_at: int | None = None  # every trial of the cell was stopped early at this epoch; None: they finished
    left_out: int = 0  # trials of the group not pooled: stopped at another epoch than the cell's
    flags: tuple[str, ...] = ()  # degenerate-run flags of the cell's trials (analysis.health)


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


def methods_of(df: pd.DataFrame) -> list[str]:
    """The methods of the frame's trials, in order of first appearance."""
    if "method" not in df.columns:
        return []
    return [str(m) for m in dict.fromkeys(df["method"]) if not _missing(m)]


def scope_knobs(df: pd.DataFrame) -> pd.DataFrame:
    """The frame with each method knob under its method's name: ``method.gamma`` becomes ``focal.gamma``
    (focal's rows, missing elsewhere), ``cb.gamma`` (CB's rows), ... ``method.name`` stays; so do shared keys.

    Idempotent. Works on any frame with a ``method`` column (trials, or one row per configuration).
    """
    knobs = [c for c in df.columns if c.startswith(METHOD_ROOT + ".") and c != "method.name"]
    if not knobs:
        return df
    methods = methods_of(df)
    clash = sorted(set(methods) & set(RESERVED_NAMES))
    if clash:
        raise ValueError(f"method name {clash[0]!r} clashes with a config section; rename the method")
    scoped: dict[str, pd.Series] = {}
    for column in knobs:
        knob = column[len(METHOD_ROOT) + 1:]
        for method in methods:
            values = df[column].where(df["method"] == method)
            if not values.map(_missing).all():
                scoped[f"{method}.{knob}"] = values
    return pd.concat([df.drop(columns=knobs), pd.DataFrame(scoped, index=df.index)], axis=1)


def knob_scope(df: pd.DataFrame, key: str) -> str | None:
    """The method a method-scoped key (``focal.gamma``) belongs to; None for shared and other keys."""
    root = key.split(".", 1)[0]
    return root if "." in key and root in methods_of(df) else None


def key_values(df: pd.DataFrame, key: str) -> pd.Series | None:
    """The values of ``key`` per trial, or None when the frame has no such key.

    ``key`` may be a column, a config key (``method.gamma``: every method's gamma, read from the scoped
    columns if the frame was scoped) or a method-scoped key (``focal.gamma``: missing on other methods'
    rows, read from ``method.gamma`` if the frame was not scoped).
    """
    if key in df.columns:
        return df[key]
    root, _, knob = key.partition(".")
    if not knob:
        return None
    if root == METHOD_ROOT:
        parts = [df[f"{m}.{knob}"] for m in methods_of(df) if f"{m}.{knob}" in df.columns]
        if not parts:
            return None
        merged = parts[0]
        for part in parts[1:]:
            merged = merged.where(~merged.map(_missing), part)
        return merged.rename(key)
    if root in methods_of(df) and f"{METHOD_ROOT}.{knob}" in df.columns:
        values = df[f"{METHOD_ROOT}.{knob}"].where(df["method"] == root)
        return None if values.map(_missing).all() else values.rename(key)  # the method has no such knob
    return None


def known_keys(df: pd.DataFrame) -> list[str]:
    """The keys tables accept, method knobs in their scoped form (``method.<knob>`` is accepted too)."""
    return [k for k in config_columns(scope_knobs(df)) if k != "seed"]


def is_early_stopped(df: pd.DataFrame) -> pd.Series:
    """Whether each trial was stopped by the scheduler before its last epoch."""
    if "stop_reason" not in df:
        return pd.Series(False, df.index)
    return df["stop_reason"].astype(str).str.startswith("stopped")


def aggregate_configs(df: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per config_id: label, method, the config keys, n, and per metric and kind mean/std/ci95.

    Columns are ``<m>`` (mean of the final values), ``<m>_std``, ``<m>_ci95``, and ``best_<m>``,
    ``best_<m>_std``, ``best_<m>_ci95`` for best-epoch values; ``metrics`` defaults to every metric present.
    ``epochs_run`` is the mean number of epochs the configuration's trials ran (when the frame has it).
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
        if "epochs_run" in group:
            record["epochs_run"] = float(group["epochs_run"].mean())
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


def rank_configs(configs: pd.DataFrame, metric: str, higher: bool) -> pd.DataFrame:
    """The rows of :func:`aggregate_configs` that have ``metric``, best first.

    Configurations whose trials ran more epochs come first (under early stopping they are the survivors,
    as in the runner's phase-2 selection), then the seed mean of ``metric``; ties keep the frame's order.
    """
    if metric not in configs.columns:
        raise KeyError(f"metric: unknown {metric!r}; the configurations have no such mean")
    data = configs[configs[metric].notna()].reset_index(drop=True)
    epochs = data["epochs_run"] if "epochs_run" in data else pd.Series(0.0, data.index)
    key = pd.DataFrame({"epochs": -epochs, "value": -data[metric] if higher else data[metric],
                        "order": range(len(data))})
    return data.loc[key.sort_values(["epochs", "value", "order"]).index]
