"""Seed-averaged sensitivity tables: rows x columns of mean +- std (n) with the best cell per column marked."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

HIGHER_IS_BETTER_SUFFIXES = ("acc",)


@dataclass
class Cell:
    mean: float
    std: float  # sample standard deviation (n-1); NaN when n = 1
    n: int
    early_stopped: int = 0  # trials in the cell stopped by the scheduler before the last epoch


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

    def value(self, x: float) -> float:
        return 100.0 * x if self.percent else x


def row_values(df: pd.DataFrame, rows: str, cols: str | None, axes: list[str]) -> pd.Series:
    """The row label of each trial. ``config`` = the method's label plus any axis not used as columns."""
    if rows == "config":
        extra = [a for a in axes if a != cols]
        return df.apply(lambda r: " ".join([str(r["label"])] + [f"{a.split('.')[-1]}={r.get(a)}" for a in extra]), axis=1)
    if rows not in df.columns:
        raise KeyError(f"rows: unknown key {rows!r}; allowed: config, method, " + ", ".join(_config_keys(df)))
    return df[rows]


def _config_keys(df: pd.DataFrame) -> list[str]:
    return sorted(c for c in df.columns if "." in c and not c.startswith(("metric.", "axis.")))


def seed_table(df: pd.DataFrame, metric: str, rows: str = "config", cols: str | None = None,
               axes: list[str] | None = None, direction: str | None = None) -> SensitivityTable:
    """Average ``metric`` (its final value per trial) over seeds, arranged rows x cols.

    Cells hold mean, sample std (n-1) and n. Accuracy metrics are shown in percent and higher is better;
    ``direction`` overrides which end is best.
    """
    column = f"metric.{metric}"
    if column not in df.columns:
        known = sorted(c[len("metric."):] for c in df.columns if c.startswith("metric."))
        raise KeyError(f"metric: unknown {metric!r}; allowed: {', '.join(known)}")
    if cols is not None and cols not in df.columns:
        raise KeyError(f"cols: unknown key {cols!r}; allowed: method, " + ", ".join(_config_keys(df)))
    data = df.assign(_row=row_values(df, rows, cols, axes or []),
                     _col=df[cols] if cols else metric).dropna(subset=[column])
    data = data.assign(_early=data["stop_reason"].astype(str).str.startswith("stopped"))
    cells = {}
    for (r, c), group in data.groupby(["_row", "_col"], sort=False):
        values = group[column].astype(float)
        cells[(r, c)] = Cell(float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                             len(values), int(group["_early"].sum()))
    higher = (direction or ("max" if metric.endswith(HIGHER_IS_BETTER_SUFFIXES) else "min")) == "max"
    row_order = list(dict.fromkeys(data["_row"]))
    col_order = sorted(dict.fromkeys(data["_col"]), key=_sort_key)
    best = {}
    for c in col_order:
        present = [(cells[(r, c)].mean, r) for r in row_order if (r, c) in cells]
        if present:
            best[c] = (max if higher else min)(present, key=lambda t: t[0])[1]
    return SensitivityTable(metric, rows, cols, row_order, col_order, cells, best, metric.endswith("acc"))


def _sort_key(value):
    return (0, float(value), "") if isinstance(value, (int, float)) else (1, 0.0, str(value))


def format_cell(table: SensitivityTable, cell: Cell | None, best: bool, bold: str = "**") -> str:
    if cell is None:
        return "-"
    text = f"{table.value(cell.mean):.2f}"
    if not math.isnan(cell.std):
        text += f" ± {table.value(cell.std):.2f}"
    text += f" (n={cell.n}{', ' + str(cell.early_stopped) + ' early-stopped' if cell.early_stopped else ''})"
    return f"{bold}{text}{bold}" if best else text


def to_markdown(table: SensitivityTable) -> str:
    """A GitHub-flavoured Markdown table; the best cell of each column in bold."""
    unit = " (%)" if table.percent else ""
    head = [table.rows_key] + [f"{table.cols_key}={c}" if table.cols_key else f"{table.metric}{unit}" for c in table.cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.rows:
        cells = [format_cell(table, table.cells.get((r, c)), table.best.get(c) == r) for c in table.cols]
        lines.append("| " + " | ".join([str(r)] + cells) + " |")
    note = f"\nMetric: {table.metric}{unit}, final value per trial, mean ± sample std over seeds (n trials); best per column in bold."
    return "\n".join(lines) + note


def to_frame(table: SensitivityTable) -> pd.DataFrame:
    """Long form (row, col, mean, std, n, early_stopped, best) for CSV."""
    records = [{"row": r, "col": c, "mean": table.value(cell.mean), "std": table.value(cell.std), "n": cell.n,
                "early_stopped": cell.early_stopped, "best": table.best.get(c) == r}
               for (r, c), cell in table.cells.items()]
    return pd.DataFrame(records)
