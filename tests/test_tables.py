"""Seed aggregation and table layout on a hand-made tidy table."""

import math

import pandas as pd
import pytest

from analysis.aggregate import aggregate_configs, cell_stats, ci95_halfwidth, swept_factors
from analysis.tables import breakdown_table, one_way, seed_table, to_frame, to_html, to_latex, to_markdown

T_0975_DF1 = 12.706204736174698  # Student t quantile, from statistical tables
T_0975_DF2 = 4.302652729749464


def _frame():
    rows = []
    for label, imb, seed, acc in [
        ("ce", 10, 0, 0.60), ("ce", 10, 1, 0.64), ("ce", 100, 0, 0.30), ("ce", 100, 1, 0.34),
        ("focal gamma=1", 10, 0, 0.62), ("focal gamma=1", 10, 1, 0.70), ("focal gamma=1", 100, 0, 0.28),
    ]:
        rows.append({"label": label, "method": label.split()[0], "seed": seed, "dataset.imbalance": imb,
                     "config_id": f"{label}-{imb}", "metric.test_acc": acc, "stop_reason": "completed"})
    rows[-1]["stop_reason"] = "stopped by the scheduler at epoch 2"
    return pd.DataFrame(rows)


def test_mean_sample_std_n_and_best_per_column():
    t = seed_table(_frame(), "test_acc", rows="config", cols="dataset.imbalance", axes=["dataset.imbalance"])
    assert t.rows == ["ce", "focal gamma=1"] and t.cols == [10, 100]
    ce10 = t.cells[("ce", 10)]
    assert ce10.mean == pytest.approx(0.62) and ce10.n == 2
    assert ce10.std == pytest.approx(math.sqrt(((0.60 - 0.62) ** 2 + (0.64 - 0.62) ** 2) / 1))
    assert ce10.ci95 == pytest.approx(T_0975_DF1 * ce10.std / math.sqrt(2))
    f100 = t.cells[("focal gamma=1", 100)]
    assert f100.n == 1 and math.isnan(f100.std) and math.isnan(f100.ci95) and f100.early_stopped == 1
    assert t.best == {10: "focal gamma=1", 100: "ce"}


def test_cell_stats_three_values_by_hand():
    cell = cell_stats([0.5, 0.7, 0.9, float("nan")])
    assert cell.n == 3 and cell.mean == pytest.approx(0.7)
    assert cell.std == pytest.approx(0.2)  # sqrt((0.04 + 0 + 0.04) / 2)
    assert cell.ci95 == pytest.approx(T_0975_DF2 * 0.2 / math.sqrt(3))
    assert math.isnan(ci95_halfwidth(0.1, 1))
    with pytest.raises(ValueError, match="at least one finite value"):
        cell_stats([float("nan")])
    with pytest.raises(ValueError, match="n must be at least 1"):
        ci95_halfwidth(0.1, 0)


def test_markdown_marks_best_in_bold_and_shows_n():
    md = to_markdown(seed_table(_frame(), "test_acc", rows="config", cols="dataset.imbalance", axes=["dataset.imbalance"]))
    lines = md.splitlines()
    assert lines[0] == "| config | dataset.imbalance=10 | dataset.imbalance=100 |"
    assert lines[2] == "| ce | 62.00 ± 2.83 (n=2) | **32.00 ± 2.83 (n=2)** |"
    assert lines[3] == "| focal gamma=1 | **66.00 ± 5.66 (n=2)** | 28.00 (n=1, 1 early-stopped) |"


def test_error_percent_shifts_means_scales_stds_and_keeps_the_best():
    t = seed_table(_frame(), "test_acc", rows="config", cols="dataset.imbalance", axes=["dataset.imbalance"], error=True)
    lines = to_markdown(t).splitlines()
    assert lines[2] == "| ce | 38.00 ± 2.83 (n=2) | **68.00 ± 2.83 (n=2)** |"
    assert "error %" in lines[-1]
    csv = to_frame(t)
    row = csv[(csv["row"] == "ce") & (csv["col"] == 10)].iloc[0]
    assert row["mean"] == pytest.approx(38.0) and row["std"] == pytest.approx(2.8284271)
    assert row["ci95"] == pytest.approx(100 * T_0975_DF1 * 0.0282842712 / math.sqrt(2))


def test_latex_and_html_mark_the_best_cell():
    t = seed_table(_frame(), "test_acc", rows="config", cols="dataset.imbalance", axes=["dataset.imbalance"])
    tex = to_latex(t).splitlines()
    assert tex[0] == r"\begin{tabular}{lcc}"
    assert tex[2] == r"config & dataset.imbalance=10 & dataset.imbalance=100 \\"
    assert tex[4] == r"ce & 62.00$\pm$2.83\textsubscript{2} & \textbf{32.00$\pm$2.83}\textsubscript{2} \\"
    assert tex[5] == r"focal gamma=1 & \textbf{66.00$\pm$5.66}\textsubscript{2} & 28.00\textsubscript{1} \\"
    page = to_html(t)
    assert page.count('<td class="best">') == 2
    assert '<td class="best"><b>66.00 ± 5.66 (n=2)</b></td>' in page


def test_lower_is_better_for_losses_and_csv_long_form():
    df = _frame().assign(**{"metric.train_loss": [1.0, 1.2, 2.0, 2.2, 0.9, 1.1, 1.0]})
    t = seed_table(df, "train_loss", rows="method")
    assert t.best == {"train_loss": "focal"} and not t.percent
    csv = to_frame(t)
    assert list(csv.columns) == ["row", "col", "mean", "std", "ci95", "n", "early_stopped", "best"]
    assert csv.loc[csv["best"], "row"].tolist() == ["focal"]


def test_best_epoch_kind_reads_the_best_columns():
    df = _frame().assign(**{"best.test_acc": [0.7, 0.8, 0.4, 0.4, 0.7, 0.7, 0.3]})
    t = seed_table(df, "test_acc", rows="method", kind="best")
    assert t.cells[("ce", "test_acc")].mean == pytest.approx(0.575)
    assert "best-epoch value" in to_markdown(t)
    with pytest.raises(KeyError, match="metric: unknown 'val_acc'; allowed: test_acc"):
        seed_table(df, "val_acc", kind="best")


def _grid():
    """focal: gamma in {1, 2} x lr in {0.1, 0.2}, 2 seeds; acc = 0.5 + 0.1*gamma + lr + seed/100."""
    rows = []
    for gamma in (1, 2):
        for lr in (0.1, 0.2):
            for seed in (0, 1):
                rows.append({"method": "focal", "label": f"focal gamma={gamma}", "seed": seed,
                             "config_id": f"g{gamma}-lr{lr}", "method.name": "focal", "method.gamma": gamma,
                             "train.lr": lr, "train.epochs": 4, "stop_reason": "completed",
                             "metric.test_acc": 0.5 + 0.1 * gamma + lr + seed / 100})
    return pd.DataFrame(rows)


def test_one_way_averages_or_holds_the_others_at_the_best_configuration():
    df = _grid()
    assert swept_factors(df) == ["method.gamma", "train.lr"]
    avg = one_way(df, "method.gamma", "test_acc")
    assert avg.rows == [1, 2] and avg.cols == ["focal"]
    assert avg.cells[(1, "focal")].mean == pytest.approx(0.755) and avg.cells[(1, "focal")].n == 4
    best = one_way(df, "method.gamma", "test_acc", others="best")  # best config: gamma=2, lr=0.2
    assert best.cells[(1, "focal")].mean == pytest.approx(0.805) and best.cells[(1, "focal")].n == 2
    assert best.cells[(2, "focal")].mean == pytest.approx(0.905) and best.best == {"focal": 2}
    with pytest.raises(ValueError, match="others must be one of average, best"):
        one_way(df, "method.gamma", "test_acc", others="base")


def test_breakdown_has_one_column_per_shot_group():
    df = _frame().assign(**{"metric.test_many_acc": 0.9, "metric.test_few_acc": [0.1, 0.2, 0.0, 0.1, 0.3, 0.3, 0.2]})
    t = breakdown_table(df, rows="method")
    assert t.cols == ["test_many_acc", "test_few_acc", "test_acc"]
    assert t.cells[("focal", "test_few_acc")].mean == pytest.approx(0.8 / 3) and t.best["test_few_acc"] == "focal"
    assert to_markdown(t).splitlines()[0] == "| method | test_many_acc | test_few_acc | test_acc |"


def test_aggregate_configs_one_row_per_config():
    df = _grid().assign(**{"best.test_acc": lambda d: d["metric.test_acc"] + 0.05})
    agg = aggregate_configs(df).set_index("config_id")
    assert len(agg) == 4 and agg.loc["g1-lr0.1", "n"] == 2
    assert agg.loc["g1-lr0.1", "test_acc"] == pytest.approx(0.705)
    assert agg.loc["g1-lr0.1", "test_acc_std"] == pytest.approx(math.sqrt(2 * 0.005 ** 2))
    assert agg.loc["g1-lr0.1", "best_test_acc"] == pytest.approx(0.755)
    assert agg.loc["g2-lr0.2", "method.gamma"] == 2 and agg.loc["g2-lr0.2", "train.lr"] == 0.2


def test_unknown_keys_name_the_allowed_ones():
    with pytest.raises(KeyError, match="metric: unknown 'nope'; allowed: test_acc"):
        seed_table(_frame(), "nope")
    with pytest.raises(KeyError, match="cols: unknown key 'dataset.rho'"):
        seed_table(_frame(), "test_acc", cols="dataset.rho")
    with pytest.raises(ValueError, match="direction must be"):
        seed_table(_frame(), "test_acc", direction="up")
