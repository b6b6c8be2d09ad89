"""PNG pictures of the tables: sensitivity curves with error bars, two-way heatmaps, grouped bars,
learning curves of the top configurations, ASHA rung survival and importance bars (matplotlib, Agg)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from analysis.tables import SensitivityTable  # noqa: E402

DPI = 110


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _numeric(values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _ylabel(table: SensitivityTable) -> str:
    what = "best-epoch " if table.kind == "best" else ""
    return f"{what}{table.metric}{table.unit}"


def sensitivity_curve(table: SensitivityTable, path: Path) -> Path:
    """One line per column of ``table`` over its rows (a swept factor), error bars = sample std."""
    fig, ax = plt.subplots(figsize=(6, 4))
    numeric = _numeric(table.rows)
    xs = [float(r) for r in table.rows] if numeric else list(range(len(table.rows)))
    for c in table.cols:
        points = [(x, table.cells[(r, c)]) for x, r in zip(xs, table.rows, strict=True) if (r, c) in table.cells]
        if not points:
            continue
        err = [0.0 if math.isnan(cell.std) else table.spread(cell.std) for _, cell in points]
        line = ax.errorbar([p[0] for p in points], [table.value(cell.mean) for _, cell in points], yerr=err,
                           marker="o", capsize=3, label=str(c))
        stopped = [(x, cell) for x, cell in points if cell.stopped_at is not None]
        if stopped:  # early-stopped points: hollow, labelled with the epoch they reached
            ax.scatter([x for x, _ in stopped], [table.value(cell.mean) for _, cell in stopped], s=80,
                       facecolors="white", edgecolors=line[0].get_color(), zorder=3)
            for x, cell in stopped:
                ax.annotate(f"† ep {cell.stopped_at}", (x, table.value(cell.mean)), fontsize=6)
    if numeric and min(xs) > 0 and max(xs) / min(xs) >= 20:
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks(xs, [str(r) for r in table.rows], rotation=30, ha="right")
    ax.set_xlabel(str(table.rows_key))
    ax.set_ylabel(_ylabel(table))
    ax.set_title(table.title, fontsize=9)
    ax.grid(alpha=0.3)
    if len(table.cols) > 1 or table.cols_key:
        ax.legend(title=str(table.cols_key) if table.cols_key else None, fontsize=8)
    return _save(fig, path)


def heatmap(table: SensitivityTable, path: Path) -> Path:
    """Rows x columns of seed means, each cell annotated with mean ± std (n) and ▲/▼; bold (outlined) cells are
    those the table shows bold; early-stopped cells carry their epoch."""
    grid = np.full((len(table.rows), len(table.cols)), np.nan)
    for i, r in enumerate(table.rows):
        for j, c in enumerate(table.cols):
            if (r, c) in table.cells:
                grid[i, j] = table.value(table.cells[(r, c)].mean)
    # The row labels (``a = b = c`` for merged configurations) take their own width: the cells keep 1.6 in each.
    label_width = 0.07 * max((len(str(r)) for r in table.rows), default=0)
    fig, ax = plt.subplots(figsize=(2.6 + label_width + 1.6 * len(table.cols), 1.2 + 0.6 * len(table.rows)))
    image = ax.imshow(grid, cmap="viridis_r" if table.error else "viridis", aspect="auto")
    fig.colorbar(image, ax=ax, label=_ylabel(table))
    finite = grid[np.isfinite(grid)]
    mid = float(finite.mean()) if finite.size else 0.0
    for i, r in enumerate(table.rows):
        for j, c in enumerate(table.cols):
            cell = table.cells.get((r, c))
            if cell is None:
                continue
            spread = "" if math.isnan(cell.std) else f"\n±{table.spread(cell.std):.1f}"
            text = f"{table.value(cell.mean):.1f}" + spread
            dark = (grid[i, j] < mid) != table.error
            if cell.stopped_at is not None:
                text = f"† ep {cell.stopped_at}\n" + text
            symbol = table.marks.symbol(r, c) if table.marks is not None else ""
            ax.text(j, i, text + f"\nn={cell.n}{symbol}", ha="center", va="center", fontsize=7,
                    color="white" if dark else "black", fontweight="bold" if table.bold(r, c) else "normal")
            if table.bold(r, c):
                # inset: a neighbour's outline must not make an unmarked cell look outlined too
                ax.add_patch(plt.Rectangle((j - 0.44, i - 0.4), 0.88, 0.8, fill=False, edgecolor="red", linewidth=1.5))
    col_names = [str(c) for c in table.cols]
    ax.set_xticks(range(len(table.cols)), col_names, rotation=30 if max(map(len, col_names)) > 8 else 0, ha="right")
    ax.set_yticks(range(len(table.rows)), [str(r) for r in table.rows])
    ax.set_xlabel(str(table.cols_key))
    ax.set_ylabel(str(table.rows_key))
    ax.set_title(table.title, fontsize=9)
    return _save(fig, path)


def grouped_bars(table: SensitivityTable, path: Path) -> Path:
    """Bars of seed means with std error bars: one group per row, one bar per column."""
    width = 0.8 / max(len(table.cols), 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.0 + 0.9 * len(table.rows) * max(1, len(table.cols)) * 0.5), 4))
    stopped_any = False
    for j, c in enumerate(table.cols):
        xs, ys, err, stopped = [], [], [], []
        for i, r in enumerate(table.rows):
            cell = table.cells.get((r, c))
            if cell is not None:
                xs.append(i + (j - (len(table.cols) - 1) / 2) * width)
                ys.append(table.value(cell.mean))
                err.append(0.0 if math.isnan(cell.std) else table.spread(cell.std))
                stopped.append(cell.stopped_at)
        bars = ax.bar(xs, ys, width=width, yerr=err, capsize=3, label=str(c))
        for bar, epoch in zip(bars, stopped, strict=True):
            if epoch is not None:  # early-stopped: hatched, pale, labelled with the epoch it reached
                stopped_any = True
                bar.set_hatch("//")
                bar.set_alpha(0.4)
                ax.annotate(f"† ep {epoch}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=6, rotation=90)
    if stopped_any:
        ax.text(0.99, 0.99, "† hatched: stopped early (not comparable)", transform=ax.transAxes, ha="right",
                va="top", fontsize=7)
    ax.set_xticks(range(len(table.rows)), [str(r) for r in table.rows], rotation=30, ha="right")
    ax.set_ylabel(_ylabel(table) if table.cols_key != "metric" else "accuracy" + table.unit)
    ax.set_title(table.title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    if len(table.cols) > 1:
        ax.legend(fontsize=8)
    return _save(fig, path)


GROUP_TITLES = {"test_many_acc": "many-shot", "test_medium_acc": "medium-shot", "test_few_acc": "few-shot",
                "test_acc": "all classes"}


def breakdown_bars(table: SensitivityTable, path: Path) -> Path:
    """The many / medium / few-shot table as one panel per class group, side by side, each a horizontal bar per
    row (seed mean, std error bar) on a shared axis: the labels stay readable and the figure grows downwards
    with the rows, not sideways (one wide bar chart of 27 configurations x 4 groups was 5258 px wide). A group
    without values (no class of the split in it, e.g. few-shot at a low imbalance) says so in its panel."""
    rows = list(table.rows)
    fig, axes = plt.subplots(1, len(table.cols), sharey=True, squeeze=False,
                             figsize=(2.2 + 2.3 * len(table.cols), 1.3 + 0.3 * len(rows)))
    ys = np.arange(len(rows))
    top = 1.0
    for ax, col in zip(axes[0], table.cols, strict=True):
        cells = [table.cells.get((r, col)) for r in rows]
        present = [i for i, c in enumerate(cells) if c is not None]
        means = [table.value(cells[i].mean) for i in present]
        err = [0.0 if math.isnan(cells[i].std) else table.spread(cells[i].std) for i in present]
        stopped = [getattr(cells[i], "stopped_at", None) is not None for i in present]
        ax.barh([ys[i] for i in present], means, xerr=err, capsize=2, height=0.7,
                color=["#b0b0b0" if s else "C0" for s in stopped])
        for i, mean, e in zip(present, means, err, strict=True):
            ax.text(mean + e, ys[i], f" {mean:.1f}", va="center", fontsize=7)
        for i in (i for i, c in enumerate(cells) if c is None and present):
            ax.text(0, ys[i], " no class in this group", va="center", fontsize=6, color="#777777")
        if not present:
            ax.text(0.5, 0.5, "no class of the split\nin this group", transform=ax.transAxes, ha="center",
                    va="center", fontsize=8, color="#555555")
        ax.set_title(GROUP_TITLES.get(str(col), str(col)), fontsize=9)
        ax.set_xlabel(("error" if table.error else "accuracy") + table.unit, fontsize=8)
        ax.grid(axis="x", alpha=0.3)
        top = max(top, max([m + e for m, e in zip(means, err, strict=True)], default=1.0))
    for ax in axes[0]:
        ax.set_xlim(0, top * 1.2)  # one scale for every group, room for the value labels
    axes[0][0].set_yticks(ys, [str(r) for r in rows], fontsize=8)
    axes[0][0].invert_yaxis()  # the table's first row on top
    fig.suptitle(table.title + ("; grey: stopped early" if any(getattr(c, "stopped_at", None) is not None
                                                              for c in table.cells.values()) else ""), fontsize=9)
    return _save(fig, path)


def table_plot(table: SensitivityTable, path: Path) -> Path:
    """The picture that fits the table: panels per class group for the many / medium / few breakdown, heatmap for
    two-way, curve for a numeric factor, bars otherwise."""
    if table.cols_key == "metric":  # the many / medium / few breakdown
        return breakdown_bars(table, path)
    numeric_rows = table.rows_key not in ("config", "method", "label") and _numeric(table.rows)
    if numeric_rows and len(table.rows) > 1:
        return sensitivity_curve(table, path)
    if table.cols_key not in (None, "metric") and len(table.cols) > 1 and len(table.rows) > 1:
        return heatmap(table, path)
    return grouped_bars(table, path)


def learning_curves(histories: pd.DataFrame, trials: pd.DataFrame, metric: str, labels: dict[str, str],
                    path: Path, percent: bool = True) -> Path:
    """Seed-mean ``metric`` per epoch of each configuration in ``labels`` (config_id -> legend), band = ± std."""
    config_ids = list(labels)
    data = histories[histories["metric"] == metric].merge(trials[["run_id", "config_id"]], on="run_id")
    scale = 100.0 if percent else 1.0
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for cid in config_ids:
        part = data[data["config_id"] == cid]
        if part.empty:
            continue
        stats = part.groupby("step")["value"].agg(["mean", "std", "count"]).sort_index()
        std = stats["std"].fillna(0.0)
        label = f"{labels[cid]} (n={part['run_id'].nunique()})"
        line, = ax.plot(stats.index, scale * stats["mean"], marker=".", label=label)
        ax.fill_between(stats.index, scale * (stats["mean"] - std), scale * (stats["mean"] + std),
                        color=line.get_color(), alpha=0.15)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(metric + (" (%)" if percent else ""))
    ax.set_title(f"learning curves of the top {len(config_ids)} configurations (seed mean ± std)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def rung_survival(trials: pd.DataFrame, path: Path, rungs: list[int] | None = None) -> Path:
    """Trials still running at each epoch (ASHA stops the weak ones at its rungs), with rungs marked."""
    epochs = trials["epochs_run"].astype(int)
    top = int(epochs.max()) if len(epochs) else 0
    xs = list(range(1, top + 1))
    alive = [int((epochs >= e).sum()) for e in xs]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.step(xs, alive, where="post", marker="o")
    for r in rungs or []:
        ax.axvline(r, color="grey", linestyle=":", linewidth=1)
        ax.text(r, max(alive) if alive else 0, f" rung {r}", fontsize=7, va="top")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("trials still running")
    ax.set_ylim(0, (max(alive) if alive else 1) * 1.1)
    ax.set_title(f"rung survival: {len(trials)} trials, {int((epochs >= top).sum())} reached epoch {top}", fontsize=9)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def importance_bars(frame: pd.DataFrame, method: str, path: Path, setting: str = "") -> Path:
    """Horizontal bars of fANOVA and PED-ANOVA importance of one method's knobs at one setting of the data
    axes, with the spread over bootstrap resamples of seeds as error bars."""
    part = frame[(frame["method"] == method) & (frame["setting"] == setting)]
    wide = part.pivot_table(index="param", columns="evaluator", values="importance").fillna(0.0)
    wide = wide.sort_values(wide.columns[0])
    spread = part.pivot_table(index="param", columns="evaluator", values="spread", dropna=False).reindex(
        index=wide.index, columns=wide.columns)
    fig, ax = plt.subplots(figsize=(6, 1.2 + 0.45 * len(wide)))
    height = 0.8 / max(len(wide.columns), 1)
    for j, evaluator in enumerate(wide.columns):
        err = spread[evaluator].fillna(0.0).to_numpy()
        ax.barh(np.arange(len(wide)) + j * height, wide[evaluator], height=height, xerr=err, capsize=2,
                label={"fanova": "fANOVA", "ped_anova": "PED-ANOVA"}.get(evaluator, evaluator))
    ax.set_yticks(np.arange(len(wide)) + height * (len(wide.columns) - 1) / 2, list(wide.index))
    n_boot = int(part["n_resamples"].iloc[0])
    ax.set_xlabel("importance (normalised)" + (f"; error bar: std over {n_boot} seed resamples" if n_boot else ""))
    where = f" at {setting}" if setting else ""
    ax.set_title(f"hyperparameter importance: {method}{where} ({int(part['n_trials'].iloc[0])} trials)", fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)


def budget_curves(frame: pd.DataFrame, path: Path, metric: str, percent: bool = True) -> Path:
    """Expected best ``metric`` against the number of configurations tried, one line per method, band = ± std;
    one panel per data setting (:func:`analysis.ranking.budget_frame`)."""
    settings = list(dict.fromkeys(frame["setting"]))
    scale = 100.0 if percent else 1.0
    fig, axes = plt.subplots(1, len(settings), figsize=(4.2 * len(settings), 3.6), squeeze=False)
    for ax, setting in zip(axes[0], settings, strict=True):
        part = frame[frame["setting"] == setting]
        for method, rows in part.groupby("method", sort=False):
            line, = ax.plot(rows["n"], scale * rows["expected_max"], marker=".", label=method)
            ax.fill_between(rows["n"], scale * (rows["expected_max"] - rows["std"]),
                            scale * (rows["expected_max"] + rows["std"]), color=line.get_color(), alpha=0.15)
        ax.set_xlabel("configurations tried (n)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(setting, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"expected best {metric}" + (" (%)" if percent else ""))
    axes[0][-1].legend(fontsize=7)
    return _save(fig, path)


def cd_diagram(result, path: Path) -> Path:
    """scikit-posthocs' critical-difference diagram of :class:`analysis.stats.CriticalDifference`."""
    import scikit_posthocs as sp

    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.3 * len(result.ranks)))
    sp.critical_difference_diagram(result.ranks, result.pairwise, alpha=result.alpha, ax=ax)
    ax.set_title(f"average ranks over {result.n_settings} settings (Friedman p = {result.p_value:.3g}, "
                 f"Nemenyi CD = {result.cd:.2f})", fontsize=9)
    return _save(fig, path)
