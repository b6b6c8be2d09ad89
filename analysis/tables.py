"""Seed-averaged sensitivity tables: rows x columns of mean ± std (n) with the best cell per column marked.

One builder (:func:`_build`) arranges any (row, column, value) triples; the public tables differ only in
what they use as rows and columns: :func:`seed_table` (two-way, e.g. tau x imbalance), :func:`one_way`
(the metric against one swept factor, the others averaged or held at the best configuration) and
:func:`breakdown_table` (many / medium / few). :func:`knob_tables` lays out the sensitivity tables of a
sweep: per method for its own knobs, and for the axes shared by all trials. Rows and columns are config
keys in either form (``method.gamma`` or method-scoped ``focal.gamma``, see :mod:`analysis.aggregate`);
no row or column is ever labelled ``nan``. One renderer, :func:`render`, for every format in ``FORMATS``:
Markdown, CSV (long form), LaTeX, HTML.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Sequence

import pandas as pd

from analysis import health
from analysis.aggregate import (
    METHOD_ROOT,
    Cell,
    cell_stats,
    is_early_stopped,
    key_values,
    knob_scope,
    known_keys,
    methods_of,
    scope_knobs,
    swept_factors,
    value_column,
)

HIGHER_IS_BETTER_SUFFIXES = ("acc",)
OTHERS = ("average", "best")
GROUP_METRICS = ("test_many_acc", "test_medium_acc", "test_few_acc")
FORMATS = ("md", "csv", "tex", "html")
MIN_FILLED_CELLS = 2  # a sensitivity table with fewer filled cells compares nothing
DATA_ROOT = "dataset"  # swept keys under it are data axes: no table pools over them
SHORT_ROOTS = ("dataset", "train", "model")  # headers read "imbalance = 10", not "dataset.imbalance=10.0"
DAGGER = "†"

__all__ = ["Cell", "SensitivityTable", "seed_table", "one_way", "breakdown_table", "knob_tables", "render", "FORMATS",
           "select", "data_axes", "split_levels", "level_text", "short_key",
           "to_markdown", "to_frame", "to_latex", "to_html", "format_cell", "row_values", "higher_is_better"]


@dataclass
class SensitivityTable:
    metric: str
    rows_key: str
    cols_key: str | None
    rows: list
    cols: list
    cells: dict  # (row, col) -> Cell
    best: dict  # col -> row of the best mean
    percent: bool
    error: bool = False  # shown as error % (100 - accuracy %) instead of accuracy
    kind: str = "final"  # final-epoch or best-epoch values
    title: str = ""
    notes: list = field(default_factory=list)  # extra sentences shown under the table
    scope: str | None = None  # the one method whose trials fill every cell; None when several methods appear
    higher: bool = True  # larger values are better
    data: pd.DataFrame | None = None  # the trials the cells were built from (``_row``, ``_col``, ``_value``)
    members: dict = field(default_factory=dict)  # (row, col) -> index into ``data`` of the cell's pooled trials
    columns: dict = field(default_factory=dict)  # col -> the trials' value column, when columns differ in metric
    marks: object = None  # analysis.marks.Marks once :func:`analysis.marks.mark_table` ran

    def source_column(self, col) -> str:
        """The tidy-frame column the cells of ``col`` average."""
        return self.columns.get(col) or value_column(self.metric, self.kind)

    def bold(self, row, col) -> bool:
        """Marked tables: the tied-best set; unmarked ones: the highest mean (the note says which)."""
        if self.marks is not None:
            return self.marks.is_tied(row, col)
        return self.best.get(col) == row

    @property
    def filled(self) -> int:
        """How many cells hold a value."""
        return len(self.cells)

    def value(self, x: float) -> float:
        """A mean as displayed: accuracy in %, or error % = 100 - accuracy %."""
        if not self.percent:
            return x
        return 100.0 * (1.0 - x) if self.error else 100.0 * x

    def spread(self, x: float) -> float:
        """A std or interval half-width as displayed (scaled, never shifted)."""
        return 100.0 * x if self.percent else x

    @property
    def unit(self) -> str:
        if not self.percent:
            return ""
        return " (error %)" if self.error else " (%)"


def higher_is_better(metric: str, direction: str | None = None) -> bool:
    """``direction`` ('max'/'min') if given, else accuracies are maximised and everything else minimised."""
    if direction not in (None, "max", "min"):
        raise ValueError(f"direction must be 'max' or 'min', got {direction!r}")
    return (direction or ("max" if metric.endswith(HIGHER_IS_BETTER_SUFFIXES) else "min")) == "max"


def _key(df: pd.DataFrame, key: str, what: str) -> pd.Series:
    """The values of a table key (see :func:`analysis.aggregate.key_values`), or a KeyError naming the allowed."""
    values = key_values(df, key)
    if values is None:
        raise KeyError(f"{what}: unknown key {key!r}; allowed: " + ", ".join(["config", "method"] + known_keys(df))
                       + " (a method's knob also as method.<knob>)")
    return values


def _labels(df: pd.DataFrame, key: str, what: str) -> tuple[pd.Series, list[str]]:
    """The values of ``key`` as row or column labels: a trial without the key (e.g. CE in a table by
    ``method.gamma``) is labelled by its method, never ``nan``. Also the note that says so, if any."""
    values = _key(df, key, what)
    missing = values.isna()
    if not missing.any():
        return values, []
    others = ", ".join(dict.fromkeys(str(m) for m in df.loc[missing, "method"]))
    return values.astype(object).where(~missing, df["method"]), [f"Rows or columns of methods without {key} "
                                                                 f"are labelled by the method ({others})."]


def row_values(df: pd.DataFrame, rows: str, cols: str | None, axes: list[str]) -> pd.Series:
    """The row label of each trial. ``config`` = the method's label plus any axis not used as columns."""
    if rows == "config":
        extra = [a for a in axes if a != cols]
        return df.apply(lambda r: " ".join([str(r["label"])] + [f"{a.split('.')[-1]}={r.get(a)}" for a in extra]),
                        axis=1)
    if rows == "method":
        return df["method"]
    return _labels(df, rows, "rows")[0]


def _metric_column(df: pd.DataFrame, metric: str, kind: str) -> str:
    column = value_column(metric, kind)
    if column not in df.columns:
        prefix = value_column("", kind)
        known = sorted(c[len(prefix):] for c in df.columns if c.startswith(prefix))
        raise KeyError(f"metric: unknown {metric!r}; allowed: {', '.join(known)}")
    return column


def _prepare(df: pd.DataFrame) -> pd.DataFrame:
    """``_early`` (stopped by the scheduler), ``_epoch`` (epochs run) and ``_flags`` (analysis.health) per trial."""
    epochs = df["epochs_run"] if "epochs_run" in df else pd.Series(math.nan, df.index)
    if "stop_reason" in df:  # "stopped by the scheduler at epoch 5" names the epoch where epochs_run is missing
        named = pd.to_numeric(df["stop_reason"].astype(str).str.extract(r"at epoch (\d+)")[0], errors="coerce")
        epochs = epochs.where(epochs.notna() & (epochs > 0), named)
    return df.assign(_early=is_early_stopped(df), _epoch=epochs, _flags=health.trial_flags(df))


def _comparable(group: pd.DataFrame) -> tuple[pd.Index, int | None, int]:
    """The trials of a group that may be pooled: the finished ones, else those stopped at the latest epoch.

    Returns (their index, the epoch they stopped at or None, how many trials of the group are left out).
    """
    finished = group[~group["_early"].astype(bool)]
    if len(finished):
        return finished.index, None, len(group) - len(finished)
    last = group["_epoch"].max()
    kept = group[group["_epoch"] == last] if not pd.isna(last) else group
    return kept.index, None if pd.isna(last) else int(last), len(group) - len(kept)


def _build(data: pd.DataFrame, metric: str, rows_key: str, cols_key: str | None, higher: bool,
           percent: bool, error: bool, kind: str) -> SensitivityTable:
    """Cells from a frame with ``_row``, ``_col``, ``_value`` (and :func:`_prepare`'s columns, ``method``).

    Early-stopped trials are never pooled with finished ones (:func:`_comparable`); the best mean of a
    column is taken over finished cells only.
    """
    if "_flags" not in data:
        data = _prepare(data)
    data = data.dropna(subset=["_value", "_row", "_col"])
    cells, members = {}, {}
    for (r, c), group in data.groupby(["_row", "_col"], sort=False):
        kept, stopped_at, left_out = _comparable(group)
        part = data.loc[kept]
        base = cell_stats(part["_value"], int(part["_early"].sum()))
        flags = tuple(dict.fromkeys(f for fs in part["_flags"] for f in fs))
        cells[(r, c)] = Cell(base.mean, base.std, base.n, base.early_stopped, base.ci95, stopped_at, left_out, flags)
        members[(r, c)] = kept
    if "_rowsort" in data:
        first = data.drop_duplicates("_row")
        row_order = [r for _, r in sorted(zip(first["_rowsort"], first["_row"], strict=True), key=lambda t: t[0])]
    else:
        row_order = list(dict.fromkeys(data["_row"]))
        if rows_key != "config":
            row_order.sort(key=_sort_key)
    col_order = list(dict.fromkeys(data["_col"]))
    if cols_key != "metric":
        col_order.sort(key=_sort_key)
    best = {}
    for c in col_order:
        present = [(cells[(r, c)].mean, r) for r in row_order if (r, c) in cells and cells[(r, c)].stopped_at is None]
        if present:
            best[c] = (max if higher else min)(present, key=lambda t: t[0])[1]
    methods = methods_of(data)
    return SensitivityTable(metric, rows_key, cols_key, row_order, col_order, cells, best, percent, error, kind,
                            scope=methods[0] if len(methods) == 1 else None, higher=higher, data=data,
                            members=members)


def data_axes(df: pd.DataFrame) -> list[str]:
    """The data axes the frame varies (dataset, imbalance, noise type and rate, data seed): never pooled."""
    return [k for k in swept_factors(df) if k.split(".", 1)[0] == DATA_ROOT]


def short_key(key: str) -> str:
    """``dataset.imbalance`` -> ``imbalance``; method knobs (``focal.gamma``) keep their method."""
    root, _, rest = key.partition(".")
    return rest if root in SHORT_ROOTS and rest else key


def level_text(key: str, value) -> str:
    """``imbalance = 10`` (numbers without a trailing .0)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{short_key(key)} = {value}"


def _merge_identical(data: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Configurations whose trials are identical on every seed in every setting become one row named
    ``a = b = c``; the duplicates' trials are dropped (they would count one result several times)."""
    if "config_id" not in data or data["_row"].nunique() < 2:
        return data
    signatures: dict[tuple, list] = {}
    for row, part in data.groupby("_row", sort=False):
        by_col = tuple((repr(c), health.signature(g)) for c, g in part.groupby("_col", sort=True))
        signatures.setdefault(by_col, []).append(row)
    groups = [rows for rows in signatures.values() if len(rows) > 1]
    if not groups:
        return data
    rename, drop = {}, []
    for rows in groups:
        name = " = ".join(str(r) for r in rows)
        rename[rows[0]] = name
        drop += rows[1:]
        explained = health.shared_diagnostics(data[data["_row"].isin(rows)])
        why = f" ({', '.join(explained)} in every trial)" if explained else ""
        notes.append(f"{name}: identical results on every seed (every metric to the last digit){why}; shown once.")
    data = data[~data["_row"].isin(drop)]
    return data.assign(_row=data["_row"].map(lambda r: rename.get(r, r)))


def seed_table(df: pd.DataFrame, metric: str, rows: str = "config", cols: str | None = None,
               axes: list[str] | None = None, direction: str | None = None, kind: str = "final",
               error: bool = False) -> SensitivityTable:
    """Average ``metric`` over seeds (and the method knobs not in rows/cols), arranged rows x cols.

    Cells hold mean, sample std (n-1), n and the 95% interval. Accuracy metrics are shown in percent (or
    error % with ``error``) and higher is better; ``direction`` overrides which end is best. ``kind``
    picks the final-epoch or the best-epoch value of each trial. No cell pools a data axis: the data axes
    that vary and are neither rows nor columns join the row label (``ce imbalance=10``). With
    ``rows='config'``, configurations identical on every seed share one row.
    """
    column = _metric_column(df, metric, kind)
    notes: list[str] = []
    if cols in (None, "method"):
        col_values = df["method"] if cols else metric
    else:
        col_values, notes = _labels(df, cols, "cols")
    if rows not in ("config", "method"):
        notes = list(dict.fromkeys(notes + _labels(df, rows, "rows")[1]))
    data = _with_rows(_prepare(df), rows, cols, axes).assign(_col=col_values, _value=df[column].astype(float))
    if rows == "config":
        data = _merge_identical(data, notes)
    percent = metric.endswith("acc")
    table = _build(data, metric, rows, cols, higher_is_better(metric, direction), percent, error and percent, kind)
    table.title = f"{metric} by {rows}" + (f" x {cols}" if cols else "")
    table.notes = [_averages(table, df, rows, cols)] + notes
    if cols not in (None, "metric"):  # a column where no trial has the metric stays, empty and explained
        empty = [c for c in dict.fromkeys(data["_col"].dropna()) if c not in table.cols]
        if empty:
            table.cols = sorted(table.cols + empty, key=_sort_key)
            table.notes.append(f"Empty columns ({', '.join(level_text(cols, c) for c in empty)}): no trial there has "
                               f"a value of {metric} (a class group with no class there, e.g. few-shot at a low "
                               "imbalance, or trials that failed before reporting).")
    return table


def _with_rows(df: pd.DataFrame, rows: str, cols: str | None, axes: list[str] | None) -> pd.DataFrame:
    """``df`` with ``_row``: :func:`row_values`, plus the data axes that vary and are neither rows nor
    columns (``ce imbalance=10``), so that no row pools a data axis; ``_rowsort`` orders such labels."""
    held = [a for a in data_axes(df) if a not in (rows, cols)]
    if rows == "config":
        return df.assign(_row=row_values(df, rows, cols, list(dict.fromkeys((axes or []) + held))))
    base = row_values(df, rows, cols, [])
    if not held:
        return df.assign(_row=base)
    suffix = df.apply(lambda r: " ".join(f"{a.split('.')[-1]}={_plain(r.get(a))}" for a in held), axis=1)
    order = [(_sort_key(b), tuple(_sort_key(r.get(a)) for a in held)) for b, (_, r) in zip(base, df.iterrows(),
                                                                                           strict=True)]
    return df.assign(_row=base.astype(str) + " " + suffix, _rowsort=order)


def _plain(value):
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _averages(table: SensitivityTable, df: pd.DataFrame, rows: str, cols: str | None) -> str:
    """The caption's sentence on exactly what one cell averages."""
    pooled = sorted({k for key in table.members for k in swept_factors(table.data.loc[table.members[key]])
                     if k not in ("seed",)} - {rows, cols})
    seeds = sorted(df["seed"].dropna().unique().tolist()) if "seed" in df else []
    what = f"over seeds {', '.join(str(s) for s in seeds)}" if seeds else "over trials"
    if pooled:
        return f"A cell averages {what} and over the values of {', '.join(pooled)} (pooled within the row)."
    return f"A cell averages one configuration {what} at one setting of every swept axis."


def one_way(df: pd.DataFrame, factor: str, metric: str, *, group: str = "method", others: str = "average",
            direction: str | None = None, kind: str = "final", error: bool = False) -> SensitivityTable:
    """``metric`` against one swept ``factor`` (rows), one column per ``group`` value (e.g. per method).

    ``others='average'`` pools every other swept factor; ``others='best'`` holds them at the best
    configuration of each group (the config with the best seed-averaged ``metric``), the usual
    "vary one knob, keep the rest at the tuned values" sensitivity plot. A method-scoped ``factor``
    (``focal.gamma``) takes only that method's trials.
    """
    if others not in OTHERS:
        raise ValueError(f"others must be one of {', '.join(OTHERS)}, got {others!r}")
    df = scope_knobs(df)
    values = key_values(df, factor)
    if values is None:
        raise KeyError(f"factor: unknown key {factor!r}; allowed: " + ", ".join(swept_factors(df)))
    column = _metric_column(df, metric, kind)
    df = df.assign(_factor=values)
    data = df[values.notna()]
    higher = higher_is_better(metric, direction)
    if others == "best":
        rest = [f for f in swept_factors(df) if not _same_knob(df, f, factor)]
        keep = []
        for _, g in data.groupby(group, sort=False):
            means = g.groupby("config_id")[column].mean().dropna()
            if means.empty:
                continue
            best_cfg = g[g["config_id"] == (means.idxmax() if higher else means.idxmin())].iloc[0]
            mask = pd.Series(True, g.index)
            for f in rest:  # equal values, or missing in both (a knob of another method, a conditional knob)
                mask &= (g[f] == best_cfg[f]) | (g[f].isna() & pd.isna(best_cfg[f]))
            keep.append(g[mask])
        data = pd.concat(keep) if keep else data.iloc[:0]
    data = _prepare(data).assign(_row=data["_factor"], _col=data[group], _value=data[column].astype(float))
    percent = metric.endswith("acc")
    table = _build(data, metric, factor, group, higher, percent, error and percent, kind)
    held = "others averaged" if others == "average" else "others at the best configuration"
    table.title = f"{metric} against {factor} ({held})"
    table.notes = [_averages(table, data, factor, group)]
    return table


def _same_knob(df: pd.DataFrame, key: str, factor: str) -> bool:
    """Whether ``key`` is ``factor`` itself or, for a method knob, the same knob of some method."""
    if key == factor:
        return True
    root, _, knob = factor.partition(".")
    is_knob = root == METHOD_ROOT or knob_scope(df, factor) is not None
    return is_knob and knob_scope(df, key) is not None and key.split(".", 1)[1] == knob


def breakdown_table(df: pd.DataFrame, rows: str = "config", metrics: Sequence[str] = GROUP_METRICS + ("test_acc",),
                    axes: list[str] | None = None, kind: str = "final", error: bool = False) -> SensitivityTable:
    """Rows x metrics (many / medium / few / all classes); the metrics missing from the sweep are left out."""
    present = [m for m in metrics if value_column(m, kind) in df.columns]
    if not present:
        raise KeyError(f"breakdown: none of {', '.join(metrics)} was logged")
    prepared = _with_rows(_prepare(df), rows, None, axes)
    parts = [prepared.assign(_col=m, _value=df[value_column(m, kind)].astype(float)) for m in present]
    data = pd.concat(parts)
    data.index = range(len(data))  # one trial appears once per metric: members need distinct labels
    table = _build(data, present[-1], rows, "metric", True, True, error, kind)
    table.title = "many / medium / few-shot accuracy by " + rows
    table.cols = list(present)  # a column with no value stays, shown empty and explained below
    table.columns = {m: value_column(m, kind) for m in present}
    empty = [m for m in metrics if m in present and not any((r, m) in table.cells for r in table.rows)]
    missing = [m for m in metrics if m not in present]
    table.notes = [_averages(table, df, rows, None)]
    if empty or missing:
        table.notes.append("Empty columns: " + ", ".join(empty + missing) + " (no class of the split falls in "
                           "that group, e.g. no few-shot class at a low imbalance, or the metric was not logged).")
    return table


def split_levels(df: pd.DataFrame, keys: Sequence[str]) -> list[tuple[str, pd.DataFrame]]:
    """``df`` per combination of the values of ``keys`` (data axes), with a suffix naming the level
    (``@imbalance=10``); one part with an empty suffix when ``keys`` is empty."""
    if not keys:
        return [("", df)]
    out = []
    for values, part in df.groupby(list(keys), sort=True, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        out.append(("@" + ",".join(level_text(k, v).replace(" ", "") for k, v in zip(keys, values, strict=True)),
                    part))
    return out


def knob_tables(df: pd.DataFrame, metric: str, *, axes: list[str] | None = None, others: str = "average",
                direction: str | None = None, kind: str = "final", error: bool = False,
                skip: Sequence[tuple[str, str | None]] = ()) -> dict[str, SensitivityTable]:
    """The sensitivity tables of a sweep, named for their file, each about one method or about shared axes.

    Per factor shared by all trials (``dataset.imbalance``, ``train.lr``) that the sweep varied: a one-way
    table with one column per method (``oneway_dataset.imbalance``). Per method, in the frame's order: a
    one-way table per knob it swept (``oneway_focal.gamma``), and a two-way table of its first two swept
    factors, its own knobs before shared ones, on its own trials only (``twoway_focal.gamma_x_focal.alpha``;
    ``twoway_ce_dataset.imbalance_x_train.lr`` when neither is its knob). A table never pools a data axis
    (:func:`data_axes`) it does not show: it is made once per level of the others, its name suffixed
    (``oneway_focal.gamma@imbalance=10``). Tables with fewer than ``MIN_FILLED_CELLS`` filled cells are left
    out, and so is a two-way table whose (rows, cols) is in ``skip``.
    """
    scoped = scope_knobs(df)
    options = {"direction": direction, "kind": kind, "error": error}
    shared = [f for f in swept_factors(scoped) if knob_scope(scoped, f) is None]
    held_axes = data_axes(scoped)
    candidates: dict[str, SensitivityTable] = {}

    def add(name: str, shown: Sequence[str], make) -> None:
        for suffix, part in split_levels(scoped, [a for a in held_axes if a not in shown]):
            table = make(part)
            if suffix:
                table.title += " at " + suffix[1:].replace("=", " = ").replace(",", ", ")
            candidates[name + suffix] = table

    for factor in shared:
        add(f"oneway_{factor}", [factor], lambda part, f=factor: one_way(part, f, metric, others=others, **options))
    shown = [set(pair) for pair in skip]
    for method in methods_of(scoped):
        mine = scoped[scoped["method"] == method]
        factors = swept_factors(mine)
        knobs = [f for f in factors if knob_scope(scoped, f) == method]
        for knob in knobs:
            add(f"oneway_{knob}", [knob], lambda part, k=knob: one_way(part, k, metric, others=others, **options))
        pair = (knobs + [f for f in factors if f in shared])[:2]
        if len(pair) < 2 or set(pair) in shown:
            continue
        a, b = pair

        def two_way(part, a=a, b=b, method=method):
            mine = part[part["method"] == method]
            both = mine[mine[a].notna() & mine[b].notna()]  # a conditional knob exists on some configurations
            table = seed_table(both, metric, a, b, axes, **options)
            table.title += f" ({method}; others averaged)"
            return table

        own = method in (knob_scope(scoped, a), knob_scope(scoped, b))
        add(f"twoway_{a}_x_{b}" if own else f"twoway_{method}_{a}_x_{b}", [a, b], two_way)
    return {name: t for name, t in candidates.items() if t.filled >= MIN_FILLED_CELLS}


def _same_value(value, target: str) -> bool:
    """Whether a config value equals the text of ``--where key=value`` (numbers compared as numbers)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    try:
        return float(value) == float(target)
    except (TypeError, ValueError):
        return str(value) == target


def select(df: pd.DataFrame, where: Sequence[str] = ()) -> pd.DataFrame:
    """The trials whose config matches every ``key=value`` of ``where`` (``dataset.imbalance=100``,
    ``focal.gamma=2``): holds an axis fixed. A KeyError names an unknown key or the values a key has."""
    for item in where:
        key, sep, text = item.partition("=")
        key, text = key.strip(), text.strip()
        if not sep or not key:
            raise KeyError(f"where: expected key=value, got {item!r}")
        values = _key(df, key, "where")
        mask = values.map(lambda v, t=text: _same_value(v, t))
        if not mask.any():
            present = sorted({str(_plain(v)) for v in values.dropna()}, key=str)
            raise KeyError(f"where: {key} is never {text!r}; its values: {', '.join(present)}")
        df = df[mask]
    return df


def _sort_key(value):
    if isinstance(value, bool):
        return (1, 0.0, str(value))
    return (0, float(value), "") if isinstance(value, (int, float)) else (1, 0.0, str(value))


def _cell_text(table: SensitivityTable, cell: Cell) -> str:
    """``mean ± std (n=…)`` with the stopping epoch of early-stopped cells and trials left out."""
    text = f"{table.value(cell.mean):.2f}"
    if not math.isnan(cell.std):
        text += f" ± {table.spread(cell.std):.2f}"
    extra = [f"n={cell.n}"]
    if cell.stopped_at is not None:
        extra.append(f"stopped at epoch {cell.stopped_at}")
    if cell.left_out:
        extra.append(f"{cell.left_out} stopped earlier left out")
    if cell.flags:
        extra.append(", ".join(cell.flags))
    return f"{text} ({', '.join(extra)})"


def _symbol(table: SensitivityTable, row, col) -> str:
    return table.marks.symbol(row, col) if table.marks is not None else ""


def format_cell(table: SensitivityTable, cell: Cell | None, best: bool, bold: str = "**", row=None,
                col=None) -> str:
    """A Markdown cell: bold when ``best``, a dagger on early-stopped cells, ▲/▼ against the baseline."""
    if cell is None:
        return "-"
    text = _cell_text(table, cell)
    text = f"{bold}{text}{bold}" if best else text
    if cell.stopped_at is not None:
        text = f"{DAGGER} {text}"
    symbol = _symbol(table, row, col)
    return f"{text} {symbol}" if symbol else text


def _header(table: SensitivityTable) -> list[str]:
    if table.cols_key == "metric":
        return [str(table.rows_key)] + [str(c) for c in table.cols]
    return [str(table.rows_key)] + [level_text(table.cols_key, c) if table.cols_key and table.cols_key != "method"
                                    else (str(c) if table.cols_key else f"{table.metric}{table.unit}")
                                    for c in table.cols]


def _note(table: SensitivityTable) -> str:
    from analysis.marks import describe

    what = {"best": "best-epoch value per trial (the peak over epochs: an oracle when the metric is a test metric)",
            "selected": "value per trial at the epoch of its best validation score"}.get(table.kind,
                                                                                       "final value per trial")
    metric = "Metrics: the columns" if table.cols_key == "metric" else f"Metric: {table.metric}"
    parts = [f"{metric}{table.unit}, {what}, mean ± sample std over seeds (n trials)."]
    if table.marks is not None:
        parts += describe(table.marks, table)
        for col, why in table.marks.tie_reasons.items():
            parts.append(f"Nothing bold in {col}: {why}.")
    else:
        parts.append("Highest mean per column in bold (no test made).")
    stopped = [c for c in table.cells.values() if c.stopped_at is not None]
    if stopped:
        parts.append(f"{DAGGER} (grey in HTML): trials stopped early by the scheduler, shown at the epoch they "
                     "reached; never pooled with finished trials, left out of the best and the comparisons.")
    flags = [f for c in table.cells.values() for f in c.flags]
    if flags:
        parts.append("Flagged trials: " + health.describe_flags(flags) + ".")
    return " ".join(parts + list(table.notes))


def to_markdown(table: SensitivityTable) -> str:
    """A GitHub-flavoured Markdown table: bold = the tied best, ▲/▼ against the baseline, † stopped early."""
    head = _header(table)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.rows:
        cells = [format_cell(table, table.cells.get((r, c)), table.bold(r, c), row=r, col=c) for c in table.cols]
        lines.append("| " + " | ".join([str(r)] + cells) + " |")
    return "\n".join(lines) + "\n" + _note(table)


FRAME_COLUMNS = ["row", "col", "mean", "std", "ci95", "n", "early_stopped", "best", "tied_best", "vs_baseline",
                 "stopped_at_epoch", "flags"]


def to_frame(table: SensitivityTable) -> pd.DataFrame:
    """Long form for CSV, in display units: row, col, mean, std, ci95, n, early_stopped, best (highest mean),
    tied_best, vs_baseline (better / worse / same / empty), stopped_at_epoch (empty when finished), flags."""
    records = [{"row": r, "col": c, "mean": table.value(cell.mean), "std": table.spread(cell.std),
                "ci95": table.spread(cell.ci95), "n": cell.n, "early_stopped": cell.early_stopped,
                "best": table.best.get(c) == r, "tied_best": table.marks is not None and table.marks.is_tied(r, c),
                "vs_baseline": table.marks.verdict(r, c) if table.marks is not None else "",
                "stopped_at_epoch": cell.stopped_at if cell.stopped_at is not None else None,
                "flags": ";".join(cell.flags)}
               for (r, c), cell in table.cells.items()]
    frame = pd.DataFrame(records, columns=FRAME_COLUMNS)
    frame["stopped_at_epoch"] = frame["stopped_at_epoch"].astype("Int64")
    return frame


def _latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
                 ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\^{}")):
        text = text.replace(a, b) if a != "\\" else text.replace(a, "\x00")
    return text.replace("\x00", r"\textbackslash{}")


LATEX_SYMBOLS = {"better": r"$^{\blacktriangle}$", "worse": r"$^{\blacktriangledown}$"}  # amssymb


def to_latex(table: SensitivityTable) -> str:
    """A booktabs ``tabular``: mean$\\pm$std with n as a subscript, the tied best in bold, a dagger on
    early-stopped cells and $\\blacktriangle$/$\\blacktriangledown$ (amssymb) against the baseline."""
    head = _header(table)
    lines = [r"\begin{tabular}{l" + "c" * len(table.cols) + "}", r"\toprule",
             " & ".join(_latex_escape(h) for h in head) + r" \\", r"\midrule"]
    for r in table.rows:
        cells = [_latex_escape(str(r))]
        for c in table.cols:
            cell = table.cells.get((r, c))
            if cell is None:
                cells.append("--")
                continue
            text = f"{table.value(cell.mean):.2f}"
            if not math.isnan(cell.std):
                text += rf"$\pm${table.spread(cell.std):.2f}"
            if table.bold(r, c):
                text = rf"\textbf{{{text}}}"
            text += rf"\textsubscript{{{cell.n}}}"
            if cell.stopped_at is not None:
                text = rf"$^\dagger${text}\textsubscript{{ep {cell.stopped_at}}}"
            if cell.flags:
                text += r"$^\ast$"
            verdict = table.marks.verdict(r, c) if table.marks is not None else ""
            cells.append(text + LATEX_SYMBOLS.get(verdict, ""))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", "% " + _note(table)]
    return "\n".join(lines)


def to_html(table: SensitivityTable) -> str:
    """An HTML ``<table>``: the tied best in ``<b>``, early-stopped cells grey, ▲/▼ against the baseline."""
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in _header(table))
    body = []
    for r in table.rows:
        tds = [f"<th>{esc(str(r))}</th>"]
        for c in table.cols:
            cell = table.cells.get((r, c))
            text = esc(format_cell(table, cell, False, row=r, col=c))
            classes = (["best"] if table.bold(r, c) else []) + (["stopped"] if cell and cell.stopped_at else [])
            attr = f' class="{" ".join(classes)}"' if classes else ""
            style = ' style="color:#888"' if cell is not None and cell.stopped_at is not None else ""
            tds.append(f"<td{attr}{style}><b>{text}</b></td>" if table.bold(r, c) else f"<td{attr}{style}>{text}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return (f"<table><caption>{esc(_note(table))}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


_RENDERERS = {"md": to_markdown, "csv": lambda t: to_frame(t).to_csv(index=False), "tex": to_latex, "html": to_html}


def render(table: SensitivityTable, fmt: str) -> str:
    """``table`` as text in one of ``FORMATS``: md (Markdown), csv (long form), tex (LaTeX), html."""
    if fmt not in _RENDERERS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return _RENDERERS[fmt](table)
