"""What a table's marks mean: each cell against the baseline at the same setting, and the tied-best set.

:func:`mark_table` fills ``table.marks`` of a :class:`analysis.tables.SensitivityTable` from its trials
(:mod:`analysis.stats` does the tests). The baseline's cell of a cell is the baseline method's finished
trials at the same setting: equal values of every shared swept key (``dataset.*``, ``train.*``, ``model.*``)
that the cell holds fixed. Trials pair on (seed, ``dataset.data_seed``) and the setting keys, so a pair never
crosses an axis. Cells of trials stopped early are neither compared nor candidates for the best.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Hashable

import pandas as pd

from analysis.aggregate import SHARED_ROOTS, is_early_stopped, methods_of, swept_factors
from analysis.stats import (
    ALPHA,
    CORRECTIONS,
    MIN_PAIRS,
    PAIR_KEYS,
    TESTS,
    Comparison,
    adjust,
    compare,
    tied_best,
    verdict,
)

AUTO_BASELINE = "ce"  # the default baseline when the sweep has it
SYMBOLS = {"better": "▲", "worse": "▼"}
TEST_NAMES = {"paired_t": "two-sided paired t-test", "permutation": "two-sided exact sign-flip permutation test",
              "welch": "Welch's t-test"}
CORRECTION_NAMES = {"holm": "Holm", "bh": "Benjamini-Hochberg", "none": "no"}


@dataclass(frozen=True)
class MarkOptions:
    """The spec's ``table`` significance keys: ``baseline`` ("auto" = ce when the sweep has it, None = off)."""

    baseline: str | None = "auto"
    test: str = "paired_t"
    correction: str = "holm"
    alpha: float = ALPHA

    def __post_init__(self):
        if self.test not in TESTS:
            raise ValueError(f"table.test must be one of {', '.join(TESTS)}, got {self.test!r}")
        if self.correction not in CORRECTIONS:
            raise ValueError(f"table.correction must be one of {', '.join(CORRECTIONS)}, got {self.correction!r}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"table.alpha must be in (0, 1), got {self.alpha!r}")

    def resolve(self, df: pd.DataFrame) -> str | None:
        """The baseline method of this frame: the named one, ce for "auto" when present, else None."""
        methods = methods_of(df)
        if self.baseline == "auto":
            return AUTO_BASELINE if AUTO_BASELINE in methods else None
        if self.baseline is not None and self.baseline not in methods:
            raise KeyError(f"baseline: unknown method {self.baseline!r}; the sweep has: {', '.join(methods)}")
        return self.baseline


@dataclass
class Compared:
    """One cell against its baseline cell."""

    comparison: Comparison
    p_adjusted: float
    verdict: str  # better / worse / same / "" (not tested)


@dataclass
class Marks:
    baseline: str | None
    options: MarkOptions
    higher: bool
    compared: dict = field(default_factory=dict)  # (row, col) -> Compared
    untested: dict = field(default_factory=dict)  # (row, col) -> why no comparison
    tied: dict = field(default_factory=dict)  # col -> set of rows (the tied best of each setting)
    tie_reasons: dict = field(default_factory=dict)  # col -> why no tied-best set

    def verdict(self, row: Hashable, col: Hashable) -> str:
        got = self.compared.get((row, col))
        return got.verdict if got else ""

    def symbol(self, row: Hashable, col: Hashable) -> str:
        return SYMBOLS.get(self.verdict(row, col), "")

    def is_tied(self, row: Hashable, col: Hashable) -> bool:
        return row in self.tied.get(col, set())


def setting_keys(df: pd.DataFrame) -> list[str]:
    """Swept keys shared by every method (``dataset.imbalance``, ``train.lr``): what a setting is."""
    return [k for k in swept_factors(df) if k.split(".", 1)[0] in SHARED_ROOTS]


def _fixed(trials: pd.DataFrame, keys: list[str]) -> dict:
    """The setting keys on which ``trials`` hold one value, with that value."""
    out = {}
    for k in keys:
        values = trials[k].dropna().unique() if k in trials else []
        if len(values) == 1:
            out[k] = values[0]
    return out


def _baseline_trials(source: pd.DataFrame, baseline: str, fixed: dict) -> pd.DataFrame:
    mask = (source["method"] == baseline) & ~is_early_stopped(source)
    for k, v in fixed.items():
        mask &= source[k] == v
    return source[mask]


def mark_table(table, source: pd.DataFrame, options: MarkOptions | None = None) -> None:
    """Compare every finished cell of ``table`` with the baseline's cell at the same setting (correction over
    the table's comparisons) and find each column's tied-best set per setting (correction within it).

    ``source`` is the frame the table was cut from with every method (the baseline may be no row of the
    table, e.g. in a method's knob table); it must carry the table's value column(s).
    """
    options = options or MarkOptions()
    baseline = options.resolve(source)
    keys = setting_keys(source)
    on = tuple(k for k in PAIR_KEYS if k in source.columns) + tuple(keys)
    marks = Marks(baseline, options, table.higher)
    data = table.data
    finished = [(r, c) for (r, c), cell in table.cells.items() if cell.stopped_at is None]

    if baseline is not None:
        results = {}
        for r, c in finished:
            trials = data.loc[table.members[(r, c)]]
            fixed = _fixed(trials, keys)
            base = _baseline_trials(source, baseline, fixed)
            if set(trials["method"]) == {baseline} and set(trials["config_id"]) <= set(base["config_id"]):
                marks.untested[(r, c)] = "the baseline itself"
                continue
            if base.empty:
                marks.untested[(r, c)] = f"no finished {baseline} trials at this setting"
                continue
            column = table.source_column(c)
            ref = base.assign(_value=pd.to_numeric(base[column], errors="coerce"))
            results[(r, c)] = compare(trials, ref, "_value", on=on, test=options.test)
        cells = list(results)
        adjusted = adjust([results[k].p_value for k in cells], options.correction)
        for k, p in zip(cells, adjusted, strict=True):
            marks.compared[k] = Compared(results[k], float(p), verdict(results[k], float(p), table.higher,
                                                                        options.alpha))

    for c in table.cols:
        groups: dict[tuple, dict] = {}
        for r in table.rows:
            if (r, c) not in finished:
                continue
            trials = data.loc[table.members[(r, c)]]
            groups.setdefault(tuple(sorted(_fixed(trials, keys).items(), key=str)), {})[r] = trials
        members, reasons = set(), []
        for cells in groups.values():
            tied = tied_best(cells, "_value", table.higher, on=on, test=options.test,
                             correction=options.correction, alpha=options.alpha)
            members |= tied.members
            if tied.reason and len(cells) > 1:
                reasons.append(tied.reason)
        marks.tied[c] = members
        if reasons:
            marks.tie_reasons[c] = "; ".join(dict.fromkeys(reasons))
    table.marks = marks


def best_per_setting(table) -> dict[tuple, Hashable]:
    """(column, setting) -> the row of the best finished mean, the setting being the shared swept keys the
    cell's trials hold fixed (a column of config rows may span imbalance levels)."""
    keys = setting_keys(table.data) if table.data is not None else []
    out: dict[tuple, tuple[float, Hashable]] = {}
    for (r, c), cell in table.cells.items():
        if cell.stopped_at is not None:
            continue
        fixed = _fixed(table.data.loc[table.members[(r, c)]], keys)
        key = (c, ", ".join(f"{k.split('.')[-1]} = {v}" for k, v in sorted(fixed.items())))
        better = key not in out or (cell.mean > out[key][0] if table.higher else cell.mean < out[key][0])
        if better:
            out[key] = (cell.mean, r)
    return {k: row for k, (_, row) in out.items()}


def describe(marks: Marks, table) -> list[str]:
    """The sentences of a table's note: what bold and the symbols mean, the test, pairing, n, correction, alpha."""
    o = marks.options
    test = TEST_NAMES[o.test]
    correction = CORRECTION_NAMES[o.correction]
    out = [f"Bold: not significantly worse than the best cell of its column at the same setting ({test} against "
           f"the best on per-seed pairs, {correction} correction within the column, alpha {o.alpha:g}); with fewer "
           f"than {MIN_PAIRS} pairs nothing is bold (a test on 2 pairs decides nothing)."]
    if marks.baseline is None:
        out.append("No baseline comparison (table.baseline is null or the sweep has no ce).")
        return out
    tested = [x for x in marks.compared.values() if x.comparison.tested]
    pairs = sorted({x.comparison.n_pairs for x in tested})
    n = ("n = " + ("-".join(str(p) for p in (pairs[0], pairs[-1])) if len(pairs) > 1 else str(pairs[0]))
         + " pairs") if pairs else "no cell had enough pairs"
    welch = any(x.comparison.test == "welch" for x in tested)
    counts = {v: sum(x.verdict == v for x in marks.compared.values()) for v in ("better", "worse", "same")}
    welch_note = "; Welch where no seed is shared" if welch else ""
    out.append(f"▲ / ▼: significantly better / worse than {marks.baseline} at the same setting ({test} on the "
               f"per-pair differences, trials paired on seed and data seed{welch_note}; {n}; {correction} "
               f"correction over the table's {len(marks.compared)} comparisons; alpha {o.alpha:g}): "
               f"{counts['better']} better, {counts['worse']} worse, {counts['same']} not different.")
    untested = [x for x in marks.compared.values() if not x.comparison.tested]
    if untested:
        reasons = "; ".join(dict.fromkeys(x.comparison.reason for x in untested if x.comparison.reason))
        out.append(f"{len(untested)} cells carry no mark: {reasons}.")
    return out


def display_diff(table, x: float) -> float:
    """A difference of values in the table's display units (percent points; sign flipped for error %)."""
    if math.isnan(x) or not table.percent:
        return x
    return -100.0 * x if table.error else 100.0 * x


def comparison_rows(name: str, table) -> list[dict]:
    """The rows of ``tables/comparisons.csv`` for one table (display units)."""
    marks = table.marks
    if marks is None or marks.baseline is None:
        return []
    rows = []
    for (r, c), x in marks.compared.items():
        cmp_ = x.comparison
        low, high = display_diff(table, cmp_.ci_low), display_diff(table, cmp_.ci_high)
        rows.append({"table": name, "row": r, "col": c, "baseline": marks.baseline, "n_pairs": cmp_.n_pairs,
                     "mean_diff": display_diff(table, cmp_.mean_diff), "ci_low": min(low, high),
                     "ci_high": max(low, high), "p_value": cmp_.p_value, "p_adjusted": x.p_adjusted,
                     "test": cmp_.test or "none", "correction": marks.options.correction,
                     "significant": x.verdict in ("better", "worse")})
    return rows


COMPARISON_COLUMNS = ["table", "row", "col", "baseline", "n_pairs", "mean_diff", "ci_low", "ci_high", "p_value",
                      "p_adjusted", "test", "correction", "significant"]

__all__ = ["best_per_setting", "MarkOptions", "Marks", "Compared", "mark_table", "describe", "comparison_rows",
           "COMPARISON_COLUMNS", "setting_keys", "SYMBOLS", "AUTO_BASELINE"]
