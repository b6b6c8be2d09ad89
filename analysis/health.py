"""Results that look like results but are not: collapsed predictors, diverged losses, and configurations
that are one configuration under several names.

A trial is flagged when its test predictions collapse onto few classes (per-class test accuracy 0 on at
least half the classes, or balanced accuracy within 1/C of chance 1/C) or its loss turned non-finite.
Configurations whose trials are identical on every seed (every logged metric equal to the last digit)
are reported once, naming all of them, with the method's logged diagnostics that explain it (CDB's
``cdb_tau`` saturating at its maximum makes tau=5, sigmoid and linear one configuration).
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import pandas as pd

CLASS_COLUMN = re.compile(r"^metric\.test_acc_class(\d+)$")
COLLAPSED = "collapsed"  # per-class accuracy 0 on at least half the classes
CHANCE = "chance"  # balanced accuracy within 1/C of chance
NON_FINITE = "non-finite loss"
FLAG_MEANINGS = {
    COLLAPSED: "test accuracy 0 on at least half the classes (predictions collapsed onto a few classes)",
    CHANCE: "balanced test accuracy within 1/C of chance (1/C)",
    NON_FINITE: "the training loss turned non-finite",
}
# Metrics every trial logs; any other final metric is a method's own diagnostic (cdb_tau, dm_weight_mean...).
STANDARD_PREFIXES = ("val_", "test_", "train_", "clean_", "meta_")
BOOKKEEPING = ("lr", "epoch", "epoch_seconds")  # not results: timings differ between identical runs
STANDARD_METRICS = BOOKKEEPING + ("non_finite_loss",)


def class_columns(df: pd.DataFrame) -> list[str]:
    """The final per-class test accuracy columns (``metric.test_acc_class<c>``), by class index."""
    found = [(int(m.group(1)), c) for c in df.columns if (m := CLASS_COLUMN.match(c))]
    return [c for _, c in sorted(found)]


def trial_flags(df: pd.DataFrame) -> pd.Series:
    """Per trial, a tuple of flags (empty when healthy): ``collapsed``, ``chance``, ``non-finite loss``.

    ``collapsed`` and ``chance`` need the per-class test accuracies (logged when there are few classes);
    balanced accuracy is ``metric.test_acc`` (the runner's test accuracy is the class mean).
    """
    classes = class_columns(df)
    collapsed = pd.Series(False, df.index)
    chance = pd.Series(False, df.index)
    if classes:
        per_class = df[classes].astype(float)
        collapsed = per_class.notna().all(axis=1) & ((per_class == 0).sum(axis=1) * 2 >= len(classes))
        if "metric.test_acc" in df:
            balanced = pd.to_numeric(df["metric.test_acc"], errors="coerce")
            chance = (balanced - 1 / len(classes)).abs() <= 1 / len(classes)
    non_finite = pd.Series(False, df.index)
    if "stop_reason" in df:
        non_finite |= df["stop_reason"].astype(str).str.startswith("non-finite")
    if "metric.non_finite_loss" in df:
        non_finite |= pd.to_numeric(df["metric.non_finite_loss"], errors="coerce").fillna(0) > 0
    flags = [tuple(name for name, hit in ((COLLAPSED, c), (CHANCE, h), (NON_FINITE, n)) if hit)
             for c, h, n in zip(collapsed, chance, non_finite, strict=True)]
    return pd.Series(flags, index=df.index, dtype=object)


def diagnostic_columns(df: pd.DataFrame) -> list[str]:
    """Final-value columns of the methods' own diagnostics (``metric.cdb_tau``), not the standard metrics."""
    names = [c[len("metric."):] for c in df.columns if c.startswith("metric.")]
    return ["metric." + n for n in names if not n.startswith(STANDARD_PREFIXES) and n not in STANDARD_METRICS
            and not CLASS_COLUMN.match("metric." + n)]


def signature(trials: pd.DataFrame, pair_on: Sequence[str] = ("seed", "dataset.data_seed")) -> tuple:
    """What makes two groups of trials the same results: per pairing key, every final metric exactly.

    Method diagnostics and bookkeeping (timings, the learning rate) are left out: they may differ (a tau of
    5 versus 7 clipped to 5, a slower epoch) while every result agrees.
    """
    keys = [k for k in pair_on if k in trials.columns]
    skip = set(diagnostic_columns(trials)) | {f"metric.{m}" for m in BOOKKEEPING}
    metrics = sorted(c for c in trials.columns if c.startswith("metric.") and c not in skip)
    rows = []
    for record in trials[keys + metrics].itertuples(index=False, name=None):
        ids, values = record[:len(keys)], record[len(keys):]
        rows.append((tuple(repr(k) for k in ids), tuple(None if pd.isna(v) else repr(float(v)) for v in values)))
    return tuple(sorted(rows))


def shared_diagnostics(trials: pd.DataFrame) -> list[str]:
    """``name = value`` for each method diagnostic that is the same final value in every trial given."""
    out = []
    for column in diagnostic_columns(trials):
        values = trials[column].dropna().unique()
        if len(values) == 1 and len(trials[column].dropna()) == len(trials):
            value = float(values[0])
            out.append(f"{column[len('metric.'):]} = {value:g}" if math.isfinite(value) else column)
    return out


def describe_flags(flags: Sequence[str]) -> str:
    """One sentence naming what the flags found."""
    return "; ".join(f"{f}: {FLAG_MEANINGS[f]}" for f in dict.fromkeys(flags) if f in FLAG_MEANINGS)


__all__ = ["trial_flags", "class_columns", "diagnostic_columns", "signature", "shared_diagnostics",
           "describe_flags", "FLAG_MEANINGS", "COLLAPSED", "CHANCE", "NON_FINITE"]
