"""Seed aggregation and table layout on a hand-made tidy table."""

import math

import pandas as pd
import pytest

from analysis.aggregate import (
    aggregate_configs,
    cell_stats,
    ci95_halfwidth,
    key_values,
    knob_scope,
    rank_configs,
    scope_knobs,
    swept_factors,
)
from analysis.tables import (
    FORMATS,
    breakdown_table,
    knob_tables,
    one_way,
    render,
    seed_table,
    to_frame,
    to_html,
    to_latex,
    to_markdown,
)

from _multi import BASE, tidy_frame
from _multi import acc as _acc

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
    md = to_markdown(seed_table(_frame(), "test_acc", rows="config", cols="dataset.imbalance",
                                axes=["dataset.imbalance"]))
    lines = md.splitlines()
    assert lines[0] == "| config | imbalance = 10 | imbalance = 100 |"  # issue 21: readable headers
    assert lines[2] == "| ce | 62.00 ± 2.83 (n=2) | **32.00 ± 2.83 (n=2)** |"
    # issue 21: an early-stopped cell shows the epoch it reached, with a dagger, and is never the best
    assert lines[3] == "| focal gamma=1 | **66.00 ± 5.66 (n=2)** | † 28.00 (n=1, stopped at epoch 2) |"


def test_error_percent_shifts_means_scales_stds_and_keeps_the_best():
    t = seed_table(_frame(), "test_acc", rows="config", cols="dataset.imbalance", axes=["dataset.imbalance"],
                   error=True)
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
    assert tex[2] == r"config & imbalance = 10 & imbalance = 100 \\"
    assert tex[4] == r"ce & 62.00$\pm$2.83\textsubscript{2} & \textbf{32.00$\pm$2.83}\textsubscript{2} \\"
    assert tex[5] == (r"focal gamma=1 & \textbf{66.00$\pm$5.66}\textsubscript{2} & "
                      r"$^\dagger$28.00\textsubscript{1}\textsubscript{ep 2} \\")
    page = to_html(t)
    assert page.count('<td class="best">') == 2
    assert '<td class="best"><b>66.00 ± 5.66 (n=2)</b></td>' in page


def test_lower_is_better_for_losses_and_csv_long_form():
    df = _frame().assign(**{"metric.train_loss": [1.0, 1.2, 2.0, 2.2, 0.9, 1.1, 1.0]})
    t = seed_table(df, "train_loss", rows="method")
    # issue 21: rows by method never pool the two imbalance levels; focal's stopped trial is not the best
    assert t.rows == ["ce imbalance=10", "ce imbalance=100", "focal imbalance=10", "focal imbalance=100"]
    assert t.best == {"train_loss": "focal imbalance=10"} and not t.percent
    csv = to_frame(t)
    assert list(csv.columns) == ["row", "col", "mean", "std", "ci95", "n", "early_stopped", "best", "tied_best",
                                 "vs_baseline", "stopped_at_epoch", "flags"]
    assert csv.loc[csv["best"], "row"].tolist() == ["focal imbalance=10"]
    assert csv.loc[csv["row"] == "focal imbalance=100", "stopped_at_epoch"].tolist() == [2]


def test_best_epoch_kind_reads_the_best_columns():
    df = _frame().assign(**{"best.test_acc": [0.7, 0.8, 0.4, 0.4, 0.7, 0.7, 0.3]})
    t = seed_table(df, "test_acc", rows="method", kind="best")
    assert t.cells[("ce imbalance=10", "test_acc")].mean == pytest.approx(0.75)
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
    # issue 21: per imbalance level, and focal's early-stopped trial at 100 is not pooled with finished ones
    few = t.cells[("focal imbalance=10", "test_few_acc")]
    assert few.mean == pytest.approx(0.3) and t.best["test_few_acc"] == "focal imbalance=10"
    assert t.cells[("focal imbalance=100", "test_few_acc")].stopped_at == 2
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


# ---- method-scoped knobs ------------------------------------------------------------------------------------------

def _labels(table):
    return [str(x) for x in table.rows + table.cols]


def test_scope_knobs_names_each_knob_after_its_method():
    df = tidy_frame()
    scoped = scope_knobs(df)
    assert {c for c in scoped.columns if c.endswith((".gamma", ".beta"))} == {
        "focal.gamma", "cb.gamma", "ids.gamma", "cb.beta", "dm.beta"}
    assert "method.gamma" not in scoped and scoped["method.name"].equals(df["method.name"])
    focal = scoped["method"] == "focal"
    assert scoped.loc[focal, "focal.gamma"].tolist() == df.loc[focal, "method.gamma"].tolist()
    assert scoped.loc[~focal, "focal.gamma"].isna().all()
    assert scope_knobs(scoped).equals(scoped), "idempotent"
    # Either form of a key reads from either frame.
    for frame in (df, scoped):
        assert key_values(frame, "cb.beta").dropna().tolist() == df.loc[df["method"] == "cb", "method.beta"].tolist()
        pd.testing.assert_series_equal(key_values(frame, "method.gamma"), df["method.gamma"], check_names=False)
        assert key_values(frame, "dataset.imbalance").tolist() == df["dataset.imbalance"].tolist()
        assert key_values(frame, "focal.beta") is None and key_values(frame, "train.nope") is None
    assert knob_scope(scoped, "cb.beta") == "cb" and knob_scope(scoped, "dataset.imbalance") is None
    with pytest.raises(ValueError, match="method name 'train' clashes with a config section"):
        scope_knobs(df.assign(method="train"))


def test_knob_tables_never_mix_methods_nor_label_anything_nan():
    df = tidy_frame()
    tables = knob_tables(df, "test_acc", axes=["dataset.imbalance"])
    # issue 21: a table that does not show the imbalance is made once per level instead of pooling it
    per_level = {f"{name}@imbalance={i}" for name in ("oneway_focal.gamma", "oneway_cb.beta", "oneway_cb.gamma",
                                                     "twoway_cb.beta_x_cb.gamma", "oneway_dm.beta")
                 for i in (10, 100)}
    assert set(tables) == {"oneway_dataset.imbalance", "twoway_focal.gamma_x_dataset.imbalance",
                           "twoway_dm.beta_x_dataset.imbalance", "twoway_ids.gamma_x_dataset.imbalance"} | per_level
    assert "oneway_ids.gamma@imbalance=10" not in tables, "one filled cell (gamma=0.2 errored): skipped"
    scoped = scope_knobs(df)
    for name, table in tables.items():
        assert "nan" not in _labels(table) and table.filled >= 2, name
        for key in (table.rows_key, table.cols_key):
            method = knob_scope(scoped, key)
            if method is not None:  # a method's knob: the table holds that method's trials only
                assert table.scope == method, name
            else:  # a shared axis, or one column per method
                assert key in ("method", "dataset.imbalance"), name
        if table.scope is None:
            assert table.cols_key == "method" and set(table.cols) == set(BASE), name
    # Cells are the method's own trials: focal's gamma=0.5 is not pooled with CB's gamma=0.5.
    cell = tables["oneway_focal.gamma@imbalance=10"].cells[(0.5, "focal")]
    assert cell.n == 2 and cell.mean == pytest.approx(sum(_acc("focal", {"gamma": 0.5}, 10, s) for s in (0, 1)) / 2)
    assert tables["oneway_focal.gamma@imbalance=10"].cols == ["focal"]
    assert tables["oneway_focal.gamma@imbalance=10"].title.endswith("at imbalance = 10")
    cb = tables["twoway_cb.beta_x_cb.gamma@imbalance=100"]
    assert cb.rows == [0.9, 0.99] and cb.cols == [0.5, 2.0] and cb.scope == "cb"
    assert cb.cells[(0.99, 2.0)].mean == pytest.approx(sum(_acc("cb", {"gamma": 2.0, "beta": 0.99}, 100, s)
                                                           for s in (0, 1)) / 2)
    shared = tables["oneway_dataset.imbalance"]
    assert shared.rows == [10, 100] and shared.cells[(10, "dm")].n == 4
    assert shared.cells[(10, "dm")].mean == pytest.approx(sum(_acc("dm", {"beta": b}, 10, s)
                                                              for b in (0.5, 2.0) for s in (0, 1)) / 4)
    assert "twoway_focal.gamma_x_dataset.imbalance" not in knob_tables(
        df, "test_acc", skip=[("dataset.imbalance", "focal.gamma")]), "already the main table"


def test_config_keys_and_method_scoped_keys_both_work_as_rows_and_cols():
    df = tidy_frame()
    one_level = df[df["dataset.imbalance"] == 10]  # two levels would split every row (issue 21)
    # The old failure: method.beta x method.gamma was a grid of nan rows and columns.
    t = seed_table(one_level, "test_acc", rows="method.beta", cols="method.gamma")
    assert "nan" not in _labels(t)
    # issue 21: IDS gamma=0.2 errored before reporting; its column stays, empty and explained
    assert t.rows == [0.5, 0.9, 0.99, 2.0, "ce", "focal", "ids"] and t.cols == [0.1, 0.2, 0.5, 2.0, "ce", "dm"]
    assert "Empty columns (method.gamma = 0.2)" in to_markdown(t)
    assert t.cells[("ce", "ce")].n == 2 and t.cells[(0.5, "dm")].n == 2
    assert "labelled by the method (ce, focal, ids)" in to_markdown(t).splitlines()[-1]
    scoped = seed_table(scope_knobs(one_level), "test_acc", rows="method.beta", cols="method.gamma")
    assert scoped.rows == t.rows and scoped.cols == t.cols and scoped.cells == t.cells
    focal = seed_table(df, "test_acc", rows="focal.gamma", cols="dataset.imbalance")
    assert focal.rows == [0.5, 2.0, "cb", "ce", "dm", "ids"] and focal.cells[(2.0, 100)].n == 2
    assert one_way(df, "cb.gamma", "test_acc").cols == ["cb"]
    assert one_way(df, "method.gamma", "test_acc").cols == ["cb", "focal", "ids"]
    best = one_way(df, "cb.gamma", "test_acc", others="best")  # beta held at CB's best (0.99), imbalance at 10
    assert best.cells[(0.5, "cb")].n == 2
    assert best.cells[(0.5, "cb")].mean == pytest.approx(_acc("cb", {"gamma": 0.5, "beta": 0.99}, 10, 0.5))
    with pytest.raises(KeyError, match=r"rows: unknown key 'focal.beta'; allowed: config, method, cb.beta"):
        seed_table(df, "test_acc", rows="focal.beta")


def test_render_knows_every_format_and_nothing_else():
    t = seed_table(_frame(), "test_acc", rows="config", cols="dataset.imbalance", axes=["dataset.imbalance"])
    assert FORMATS == ("md", "csv", "tex", "html")
    assert render(t, "md") == to_markdown(t) and render(t, "tex") == to_latex(t) and render(t, "html") == to_html(t)
    assert render(t, "csv") == to_frame(t).to_csv(index=False)
    with pytest.raises(ValueError, match="format must be one of md, csv, tex, html, got 'pdf'"):
        render(t, "pdf")


def test_rank_configs_puts_survivors_first_then_the_metric():
    configs = pd.DataFrame({"config_id": ["a", "b", "c", "d"], "epochs_run": [5.0, 10.0, 10.0, 10.0],
                            "val": [0.9, 0.7, 0.8, math.nan]})
    assert rank_configs(configs, "val", higher=True)["config_id"].tolist() == ["c", "b", "a"]
    assert rank_configs(configs, "val", higher=False)["config_id"].tolist() == ["b", "c", "a"]
    assert rank_configs(configs.drop(columns="epochs_run"), "val", higher=True)["config_id"].tolist() == ["a", "c", "b"]
