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

__all__ = ["Cell", "SensitivityTable", "seed_table", "one_way", "breakdown_table", "knob_tables", "render", "FORMATS",
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


def _build(data: pd.DataFrame, metric: str, rows_key: str, cols_key: str | None, higher: bool,
           percent: bool, error: bool, kind: str) -> SensitivityTable:
    """Cells from a frame with ``_row``, ``_col``, ``_value`` and ``_early`` columns (and ``method``)."""
    data = data.dropna(subset=["_value", "_row", "_col"])
    cells = {}
    for (r, c), group in data.groupby(["_row", "_col"], sort=False):
        cells[(r, c)] = cell_stats(group["_value"], int(group["_early"].sum()))
    row_order = list(dict.fromkeys(data["_row"]))
    if rows_key != "config":
        row_order.sort(key=_sort_key)
    col_order = list(dict.fromkeys(data["_col"]))
    if cols_key != "metric":
        col_order.sort(key=_sort_key)
    best = {}
    for c in col_order:
        present = [(cells[(r, c)].mean, r) for r in row_order if (r, c) in cells]
        if present:
            best[c] = (max if higher else min)(present, key=lambda t: t[0])[1]
    methods = methods_of(data)
    return SensitivityTable(metric, rows_key, cols_key, row_order, col_order, cells, best, percent, error, kind,
                            scope=methods[0] if len(methods) == 1 else None)


def seed_table(df: pd.DataFrame, metric: str, rows: str = "config", cols: str | None = None,
               axes: list[str] | None = None, direction: str | None = None, kind: str = "final",
               error: bool = False) -> SensitivityTable:
    """Average ``metric`` over seeds (and anything not in rows/cols), arranged rows x cols.

    Cells hold mean, sample std (n-1), n and the 95% interval. Accuracy metrics are shown in percent (or
    error % with ``error``) and higher is better; ``direction`` overrides which end is best. ``kind``
    picks the final-epoch or the best-epoch value of each trial.
    """
    column = _metric_column(df, metric, kind)
    notes: list[str] = []
    if cols in (None, "method"):
        col_values = df["method"] if cols else metric
    else:
        col_values, notes = _labels(df, cols, "cols")
    if rows not in ("config", "method"):
        notes = list(dict.fromkeys(notes + _labels(df, rows, "rows")[1]))
    data = df.assign(_row=row_values(df, rows, cols, axes or []), _col=col_values,
                     _value=df[column].astype(float), _early=is_early_stopped(df))
    percent = metric.endswith("acc")
    table = _build(data, metric, rows, cols, higher_is_better(metric, direction), percent, error and percent, kind)
    table.title = f"{metric} by {rows}" + (f" x {cols}" if cols else "")
    table.notes = notes
    return table


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
    data = data.assign(_row=data["_factor"], _col=data[group], _value=data[column].astype(float),
                       _early=is_early_stopped(data))
    percent = metric.endswith("acc")
    table = _build(data, metric, factor, group, higher, percent, error and percent, kind)
    held = "others averaged" if others == "average" else "others at the best configuration"
    table.title = f"{metric} against {factor} ({held})"
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
    labels = row_values(df, rows, None, axes or [])
    parts = [df.assign(_row=labels, _col=m, _value=df[value_column(m, kind)].astype(float),
                       _early=is_early_stopped(df)) for m in present]
    table = _build(pd.concat(parts), present[-1], rows, "metric", True, True, error, kind)
    table.title = "many / medium / few-shot accuracy by " + rows
    return table


def knob_tables(df: pd.DataFrame, metric: str, *, axes: list[str] | None = None, others: str = "average",
                direction: str | None = None, kind: str = "final", error: bool = False,
                skip: Sequence[tuple[str, str | None]] = ()) -> dict[str, SensitivityTable]:
    """The sensitivity tables of a sweep, named for their file, each about one method or about shared axes.

    Per factor shared by all trials (``dataset.imbalance``, ``train.lr``) that the sweep varied: a one-way
    table with one column per method (``oneway_dataset.imbalance``). Per method, in the frame's order: a
    one-way table per knob it swept (``oneway_focal.gamma``), and a two-way table of its first two swept
    factors, its own knobs before shared ones, on its own trials only (``twoway_focal.gamma_x_focal.alpha``;
    ``twoway_ce_dataset.imbalance_x_train.lr`` when neither is its knob). Tables with fewer than
    ``MIN_FILLED_CELLS`` filled cells are left out, and so is a two-way table whose (rows, cols) is in ``skip``.
    """
    scoped = scope_knobs(df)
    options = {"direction": direction, "kind": kind, "error": error}
    shared = [f for f in swept_factors(scoped) if knob_scope(scoped, f) is None]
    candidates: dict[str, SensitivityTable] = {}
    for factor in shared:
        candidates[f"oneway_{factor}"] = one_way(scoped, factor, metric, others=others, **options)
    shown = [set(pair) for pair in skip]
    for method in methods_of(scoped):
        mine = scoped[scoped["method"] == method]
        factors = swept_factors(mine)
        knobs = [f for f in factors if knob_scope(scoped, f) == method]
        for knob in knobs:
            candidates[f"oneway_{knob}"] = one_way(scoped, knob, metric, others=others, **options)
        pair = (knobs + [f for f in factors if f in shared])[:2]
        if len(pair) < 2 or set(pair) in shown:
            continue
        a, b = pair
        both = mine[mine[a].notna() & mine[b].notna()]  # a conditional knob exists on some configurations only
        table = seed_table(both, metric, a, b, axes, **options)
        table.title += f" ({method}; others averaged)"
        own = method in (knob_scope(scoped, a), knob_scope(scoped, b))
        candidates[f"twoway_{a}_x_{b}" if own else f"twoway_{method}_{a}_x_{b}"] = table
    return {name: t for name, t in candidates.items() if t.filled >= MIN_FILLED_CELLS}


def _sort_key(value):
    if isinstance(value, bool):
        return (1, 0.0, str(value))
    return (0, float(value), "") if isinstance(value, (int, float)) else (1, 0.0, str(value))


def format_cell(table: SensitivityTable, cell: Cell | None, best: bool, bold: str = "**") -> str:
    if cell is None:
        return "-"
    text = f"{table.value(cell.mean):.2f}"
    if not math.isnan(cell.std):
        text += f" ± {table.spread(cell.std):.2f}"
    text += f" (n={cell.n}{', ' + str(cell.early_stopped) + ' early-stopped' if cell.early_stopped else ''})"
    return f"{bold}{text}{bold}" if best else text


def _header(table: SensitivityTable) -> list[str]:
    if table.cols_key == "metric":
        return [str(table.rows_key)] + [str(c) for c in table.cols]
    return [str(table.rows_key)] + [f"{table.cols_key}={c}" if table.cols_key else f"{table.metric}{table.unit}"
                                    for c in table.cols]


def _note(table: SensitivityTable) -> str:
    what = "best-epoch" if table.kind == "best" else "final"
    metric = "Metrics: the columns" if table.cols_key == "metric" else f"Metric: {table.metric}"
    return " ".join([f"{metric}{table.unit}, {what} value per trial, mean ± sample std over seeds (n trials); "
                     "best per column in bold."] + list(table.notes))


def to_markdown(table: SensitivityTable) -> str:
    """A GitHub-flavoured Markdown table; the best cell of each column in bold."""
    head = _header(table)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.rows:
        cells = [format_cell(table, table.cells.get((r, c)), table.best.get(c) == r) for c in table.cols]
        lines.append("| " + " | ".join([str(r)] + cells) + " |")
    return "\n".join(lines) + "\n" + _note(table)


def to_frame(table: SensitivityTable) -> pd.DataFrame:
    """Long form (row, col, mean, std, ci95, n, early_stopped, best) for CSV, in display units."""
    records = [{"row": r, "col": c, "mean": table.value(cell.mean), "std": table.spread(cell.std),
                "ci95": table.spread(cell.ci95), "n": cell.n, "early_stopped": cell.early_stopped,
                "best": table.best.get(c) == r}
               for (r, c), cell in table.cells.items()]
    return pd.DataFrame(records, columns=["row", "col", "mean", "std", "ci95", "n", "early_stopped", "best"])


def _latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
                 ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\^{}")):
        text = text.replace(a, b) if a != "\\" else text.replace(a, "\x00")
    return text.replace("\x00", r"\textbackslash{}")


def to_latex(table: SensitivityTable) -> str:
    """A booktabs ``tabular``: mean$\\pm$std with n as a subscript, the best of each column in bold."""
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
            if table.best.get(c) == r:
                text = rf"\textbf{{{text}}}"
            cells.append(text + rf"\textsubscript{{{cell.n}}}")
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", "% " + _note(table)]
    return "\n".join(lines)


def to_html(table: SensitivityTable) -> str:
    """An HTML ``<table>`` with the best cell of each column in ``<b>``; the note as a caption."""
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in _header(table))
    body = []
    for r in table.rows:
        tds = [f"<th>{esc(str(r))}</th>"]
        for c in table.cols:
            best = table.best.get(c) == r
            text = esc(format_cell(table, table.cells.get((r, c)), False))
            tds.append(f'<td class="best"><b>{text}</b></td>' if best else f"<td>{text}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return (f"<table><caption>{esc(_note(table))}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


_RENDERERS = {"md": to_markdown, "csv": lambda t: to_frame(t).to_csv(index=False), "tex": to_latex, "html": to_html}


def render(table: SensitivityTable, fmt: str) -> str:
    """``table`` as text in one of ``FORMATS``: md (Markdown), csv (long form), tex (LaTeX), html."""
    if fmt not in _RENDERERS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return _RENDERERS[fmt](table)
