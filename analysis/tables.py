"""Seed-averaged sensitivity tables: rows x columns of mean ± std (n) with the best cell per column marked.

One builder (:func:`_build`) arranges any (row, column, value) triples; the public tables differ only in
what they use as rows and columns: :func:`seed_table` (two-way, e.g. tau x imbalance), :func:`one_way`
(the metric against one swept factor, the others averaged or held at the best configuration) and
:func:`breakdown_table` (many / medium / few). Renderers: Markdown, CSV (long form), LaTeX, HTML.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Sequence

import pandas as pd

from analysis.aggregate import Cell, cell_stats, config_columns, is_early_stopped, swept_factors, value_column

HIGHER_IS_BETTER_SUFFIXES = ("acc",)
OTHERS = ("average", "best")
GROUP_METRICS = ("test_many_acc", "test_medium_acc", "test_few_acc")

__all__ = ["Cell", "SensitivityTable", "seed_table", "one_way", "breakdown_table", "to_markdown", "to_frame",
           "to_latex", "to_html", "format_cell", "row_values", "higher_is_better"]


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
    notes: list = field(default_factory=list)

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


def row_values(df: pd.DataFrame, rows: str, cols: str | None, axes: list[str]) -> pd.Series:
    """The row label of each trial. ``config`` = the method's label plus any axis not used as columns."""
    if rows == "config":
        extra = [a for a in axes if a != cols]
        return df.apply(lambda r: " ".join([str(r["label"])] + [f"{a.split('.')[-1]}={r.get(a)}" for a in extra]), axis=1)
    if rows not in df.columns:
        raise KeyError(f"rows: unknown key {rows!r}; allowed: config, method, " + ", ".join(config_columns(df)))
    return df[rows]


def _metric_column(df: pd.DataFrame, metric: str, kind: str) -> str:
    column = value_column(metric, kind)
    if column not in df.columns:
        prefix = value_column("", kind)
        known = sorted(c[len(prefix):] for c in df.columns if c.startswith(prefix))
        raise KeyError(f"metric: unknown {metric!r}; allowed: {', '.join(known)}")
    return column


def _build(data: pd.DataFrame, metric: str, rows_key: str, cols_key: str | None, higher: bool,
           percent: bool, error: bool, kind: str) -> SensitivityTable:
    """Cells from a frame with ``_row``, ``_col``, ``_value`` and ``_early`` columns."""
    data = data.dropna(subset=["_value"])
    cells = {}
    for (r, c), group in data.groupby(["_row", "_col"], sort=False):
        cells[(r, c)] = cell_stats(group["_value"], int(group["_early"].sum()))
    row_order = list(dict.fromkeys(data["_row"]))
    if rows_key != "config":
        row_order.sort(key=_sort_key)
    col_order = sorted(dict.fromkeys(data["_col"]), key=_sort_key) if cols_key != "metric" else list(dict.fromkeys(data["_col"]))
    best = {}
    for c in col_order:
        present = [(cells[(r, c)].mean, r) for r in row_order if (r, c) in cells]
        if present:
            best[c] = (max if higher else min)(present, key=lambda t: t[0])[1]
    return SensitivityTable(metric, rows_key, cols_key, row_order, col_order, cells, best, percent, error, kind)


def seed_table(df: pd.DataFrame, metric: str, rows: str = "config", cols: str | None = None,
               axes: list[str] | None = None, direction: str | None = None, kind: str = "final",
               error: bool = False) -> SensitivityTable:
    """Average ``metric`` over seeds (and anything not in rows/cols), arranged rows x cols.

    Cells hold mean, sample std (n-1), n and the 95% interval. Accuracy metrics are shown in percent (or
    error % with ``error``) and higher is better; ``direction`` overrides which end is best. ``kind``
    picks the final-epoch or the best-epoch value of each trial.
    """
    column = _metric_column(df, metric, kind)
    if cols is not None and cols not in df.columns:
        raise KeyError(f"cols: unknown key {cols!r}; allowed: method, " + ", ".join(config_columns(df)))
    data = df.assign(_row=row_values(df, rows, cols, axes or []), _col=df[cols] if cols else metric,
                     _value=df[column].astype(float), _early=is_early_stopped(df))
    percent = metric.endswith("acc")
    table = _build(data, metric, rows, cols, higher_is_better(metric, direction), percent, error and percent, kind)
    table.title = f"{metric} by {rows}" + (f" x {cols}" if cols else "")
    return table


def one_way(df: pd.DataFrame, factor: str, metric: str, *, group: str = "method", others: str = "average",
            direction: str | None = None, kind: str = "final", error: bool = False) -> SensitivityTable:
    """``metric`` against one swept ``factor`` (rows), one column per ``group`` value (e.g. per method).

    ``others='average'`` pools every other swept factor; ``others='best'`` holds them at the best
    configuration of each group (the config with the best seed-averaged ``metric``), the usual
    "vary one knob, keep the rest at the tuned values" sensitivity plot.
    """
    if others not in OTHERS:
        raise ValueError(f"others must be one of {', '.join(OTHERS)}, got {others!r}")
    if factor not in df.columns:
        raise KeyError(f"factor: unknown key {factor!r}; allowed: " + ", ".join(swept_factors(df)))
    column = _metric_column(df, metric, kind)
    data = df[df[factor].notna()]
    higher = higher_is_better(metric, direction)
    if others == "best":
        rest = [f for f in swept_factors(df) if f != factor]
        keep = []
        for _, g in data.groupby(group, sort=False):
            means = g.groupby("config_id")[column].mean().dropna()
            if means.empty:
                continue
            best_cfg = g[g["config_id"] == (means.idxmax() if higher else means.idxmin())].iloc[0]
            mask = pd.Series(True, g.index)
            for f in rest:
                mask &= g[f].astype(str) == str(best_cfg[f])
            keep.append(g[mask])
        data = pd.concat(keep) if keep else data.iloc[:0]
    data = data.assign(_row=data[factor], _col=data[group], _value=data[column].astype(float),
                       _early=is_early_stopped(data))
    percent = metric.endswith("acc")
    table = _build(data, metric, factor, group, higher, percent, error and percent, kind)
    table.title = f"{metric} against {factor} ({'others averaged' if others == 'average' else 'others at the best configuration'})"
    return table


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
    return (f"{metric}{table.unit}, {what} value per trial, mean ± sample std over seeds (n trials); "
            "best per column in bold.")


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
