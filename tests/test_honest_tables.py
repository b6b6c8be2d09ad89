"""Tables a paper can use (issue 21): marks against a baseline, the tied best, no pooled early stops or data
axes, flagged degenerate runs, merged duplicates; on hand-built frames and a hand-written MLflow store."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.marks import COMPARISON_COLUMNS, MarkOptions, comparison_rows, mark_table
from analysis.stats import holm, sign_flip_pvalue
from analysis.tables import knob_tables, seed_table, select, to_frame, to_html, to_latex, to_markdown
from raysweep.cli import main
from raysweep.reporting.report import build_report
from raysweep.spec.loading import apply_overrides

import _multi


def run_cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err

SEEDS = range(5)
NOISE = [0.011, -0.007, 0.004, -0.012, 0.009]  # seed effects shared by every configuration (what pairing removes)


def _rows(method, label, imbalance, values, *, knobs=None, stopped_at=None, epochs=10, classes=None):
    out = []
    for seed, value in zip(SEEDS, values, strict=False):
        row = {"method": method, "label": label, "config_id": f"{label} {imbalance}", "seed": seed,
               "dataset.data_seed": 0, "dataset.imbalance": imbalance, "method.name": method,
               "train.epochs": epochs, "epochs_run": stopped_at or epochs,
               "stop_reason": f"stopped by the scheduler at epoch {stopped_at}" if stopped_at else "completed",
               "metric.test_acc": value, "metric.val_balanced_acc": value + 0.01,
               **{f"method.{k}": v for k, v in (knobs or {}).items()}}
        if classes is not None:
            row.update({f"metric.test_acc_class{c}": a for c, a in enumerate(classes)})
        out.append(row)
    return out


def _sweep():
    """CE, Balanced Softmax (truly better by ~6 points) and focal (CE plus small noise) at imbalance 100."""
    ce = [0.40 + n for n in NOISE]
    bs = [0.46 + n + d for n, d in zip(NOISE, [0.003, -0.002, 0.001, 0.0, -0.004], strict=True)]
    focal = [c + d for c, d in zip(ce, [0.004, -0.006, 0.002, 0.005, -0.003], strict=True)]
    return pd.DataFrame(_rows("ce", "ce", 100, ce) + _rows("balanced_softmax", "balanced_softmax", 100, bs)
                        + _rows("focal", "focal gamma=1", 100, focal, knobs={"gamma": 1})), ce, bs, focal


def test_better_same_and_p_values_equal_scipy_paired_t_with_holm_over_the_table():
    df, ce, bs, focal = _sweep()
    t = seed_table(df, "test_acc", rows="config", cols="dataset.imbalance")
    mark_table(t, df, MarkOptions())
    assert t.marks.baseline == "ce"
    better, same = t.marks.compared[("balanced_softmax", 100)], t.marks.compared[("focal gamma=1", 100)]
    p_bs, p_focal = stats.ttest_rel(bs, ce).pvalue, stats.ttest_rel(focal, ce).pvalue
    assert better.comparison.p_value == pytest.approx(p_bs, rel=1e-12) and better.verdict == "better"
    assert same.comparison.p_value == pytest.approx(p_focal, rel=1e-12) and same.verdict == "same"
    assert [better.p_adjusted, same.p_adjusted] == pytest.approx(holm([p_bs, p_focal]).tolist())
    assert ("ce", 100) not in t.marks.compared and t.marks.untested[("ce", 100)] == "the baseline itself"
    lines = to_markdown(t).splitlines()
    by_row = {line.split(" | ")[0][2:]: line for line in lines[2:-1]}
    assert by_row["balanced_softmax"].endswith("▲ |") and "▲" not in by_row["focal gamma=1"]
    assert "▼" not in "\n".join(lines[:-1])
    note = lines[-1]
    assert "paired t-test" in note and "n = 5 pairs" in note and "Holm" in note and "alpha 0.05" in note
    rows = pd.DataFrame(comparison_rows("main", t), columns=COMPARISON_COLUMNS)
    bs_row = rows[rows["row"] == "balanced_softmax"].iloc[0]
    d = 100 * (np.array(bs) - np.array(ce))
    assert bs_row["mean_diff"] == pytest.approx(d.mean()) and bs_row["n_pairs"] == 5
    half = stats.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5)
    assert (bs_row["ci_low"], bs_row["ci_high"]) == (pytest.approx(d.mean() - half), pytest.approx(d.mean() + half))
    assert bool(bs_row["significant"]) and bs_row["test"] == "paired_t" and bs_row["correction"] == "holm"
    frame = to_frame(t).set_index("row")
    assert frame.loc["balanced_softmax", "vs_baseline"] == "better"
    assert frame.loc["focal gamma=1", "vs_baseline"] == "same"
    assert frame.loc["balanced_softmax", "tied_best"] and not frame.loc["ce", "tied_best"]
    assert r"$^{\blacktriangle}$" in to_latex(t) and "▲" in to_html(t)


def test_permutation_option_bh_and_no_baseline():
    df, ce, bs, _ = _sweep()
    t = seed_table(df, "test_acc", rows="config", cols="dataset.imbalance")
    mark_table(t, df, MarkOptions(test="permutation", correction="bh"))
    got = t.marks.compared[("balanced_softmax", 100)].comparison
    assert got.test == "permutation" and got.p_value == pytest.approx(sign_flip_pvalue(np.subtract(bs, ce)))
    assert got.p_value == pytest.approx(2 / 32)  # every difference positive: 2 of the 32 sign patterns
    off = seed_table(df, "test_acc", rows="config", cols="dataset.imbalance")
    mark_table(off, df, MarkOptions(baseline=None))
    assert off.marks.compared == {} and "No baseline comparison" in to_markdown(off)
    with pytest.raises(ValueError, match="table.correction must be one of holm, bh, none"):
        MarkOptions(correction="bonferroni")
    with pytest.raises(KeyError, match="baseline: unknown method 'mwnet'"):
        mark_table(off, df, MarkOptions(baseline="mwnet"))


def test_fewer_than_three_pairs_no_marks_and_the_note_says_why():
    df, *_ = _sweep()
    two = df[df["seed"] < 2]
    t = seed_table(two, "test_acc", rows="config")
    mark_table(t, two, MarkOptions())
    assert all(x.verdict == "" for x in t.marks.compared.values())
    assert t.marks.tied == {"test_acc": set()}
    md = to_markdown(t)
    table_lines = "\n".join(md.splitlines()[:-1])
    assert "**" not in table_lines and "▲" not in table_lines and "▼" not in table_lines
    assert "2 pairs: a test needs at least 3" in md.splitlines()[-1]


def test_early_stopped_trials_are_never_pooled_compared_or_best():
    df, ce, bs, _ = _sweep()
    stopped = pd.DataFrame(_rows("dm", "dm", 100, [0.9] * 5, stopped_at=5))  # looks best, stopped at epoch 5
    mixed = pd.DataFrame(_rows("cb", "cb", 100, [0.41, 0.42, 0.40, 0.95, 0.96]))
    mixed.loc[mixed["seed"] >= 3, ["stop_reason", "epochs_run"]] = ["stopped by the scheduler at epoch 2", 2]
    data = pd.concat([df, stopped, mixed], ignore_index=True)
    t = seed_table(data, "test_acc", rows="config", cols="dataset.imbalance")
    mark_table(t, data, MarkOptions())
    dm, cb = t.cells[("dm", 100)], t.cells[("cb", 100)]
    assert dm.stopped_at == 5 and dm.n == 5
    assert cb.stopped_at is None and cb.n == 3 and cb.left_out == 2 and cb.mean == pytest.approx(0.41)
    assert t.best[100] == "balanced_softmax" and ("dm", 100) not in t.marks.compared
    assert not t.marks.is_tied("dm", 100)
    md = to_markdown(t)
    assert "| dm | † 90.00 ± 0.00 (n=5, stopped at epoch 5) |" in md
    assert "2 stopped earlier left out" in md and "never pooled with finished trials" in md
    assert 'style="color:#888"' in to_html(t) and r"$^\dagger$" in to_latex(t)
    frame = to_frame(t).set_index("row")
    assert frame.loc["dm", "stopped_at_epoch"] == 5 and pd.isna(frame.loc["ce", "stopped_at_epoch"])


def test_a_constant_predictor_is_flagged_and_identical_configurations_merge():
    df, ce, *_ = _sweep()
    collapsed = [1.0] + [0.0] * 9  # every example predicted as class 0: balanced accuracy 1/C
    dead = pd.DataFrame(_rows("ldam_drw", "ldam_drw", 100, [0.1] * 5, classes=collapsed))
    twin_a = pd.DataFrame(_rows("cdb_s", "cdb_s tau=5", 100, ce, knobs={"tau": "5"}))
    twin_b = pd.DataFrame(_rows("cdb_s", "cdb_s tau=sigmoid", 100, ce, knobs={"tau": "sigmoid"}))
    for twin, tau in ((twin_a, 5.0), (twin_b, 5.0)):
        twin["metric.cdb_tau"] = tau
    data = pd.concat([df, dead, twin_a.assign(**{"metric.test_acc": [x + 0.01 for x in ce]}),
                      twin_b.assign(**{"metric.test_acc": [x + 0.01 for x in ce]})], ignore_index=True)
    t = seed_table(data, "test_acc", rows="config", cols="dataset.imbalance")
    assert t.cells[("ldam_drw", 100)].flags == ("collapsed", "chance")
    assert "cdb_s tau=5 = cdb_s tau=sigmoid" in t.rows and t.cells[("cdb_s tau=5 = cdb_s tau=sigmoid", 100)].n == 5
    assert "cdb_s tau=sigmoid" not in t.rows
    md = to_markdown(t)
    assert "collapsed, chance)" in md and "test accuracy 0 on at least half the classes" in md
    assert "identical results on every seed" in md and "cdb_tau = 5 in every trial" in md
    assert to_frame(t).set_index("row").loc["ldam_drw", "flags"] == "collapsed;chance"


def test_two_imbalance_levels_are_never_pooled_and_where_keeps_one():
    df = _multi.tidy_frame()
    for rows in ("method", "focal.gamma", "config"):
        t = seed_table(df, "test_acc", rows=rows)
        for key, members in t.members.items():
            assert t.data.loc[members, "dataset.imbalance"].nunique() == 1, (rows, key)
    for name, t in knob_tables(df, "test_acc").items():
        for key, members in t.members.items():
            assert t.data.loc[members, "dataset.imbalance"].nunique() == 1, (name, key)
    only = select(df, ["dataset.imbalance=100"])
    assert set(only["dataset.imbalance"]) == {100} and len(only) == len(df) // 2
    assert set(select(df, ["focal.gamma=2", "dataset.imbalance=10"])["method"]) == {"focal"}
    with pytest.raises(KeyError, match="where: dataset.imbalance is never '7'; its values: 10, 100"):
        select(df, ["dataset.imbalance=7"])
    with pytest.raises(KeyError, match="where: unknown key 'dataset.nope'"):
        select(df, ["dataset.nope=1"])


def test_report_with_where_has_one_level_and_writes_comparisons(tmp_path):
    uri, parent = _multi.write_store(tmp_path)
    report = build_report(uri, parent, tmp_path / "out", where=("dataset.imbalance=100",), log=False)
    for name, table in report.tables.items():
        assert set(table.data["dataset.imbalance"]) == {100}, name
    comparisons = pd.read_csv(tmp_path / "out" / "tables" / "comparisons.csv")
    assert list(comparisons.columns) == COMPARISON_COLUMNS
    # 2 seeds; DM beta=0.5's stopped seed is not pooled with its finished one, so that cell has 1 pair
    assert set(comparisons["baseline"]) == {"ce"} and set(comparisons["n_pairs"]) == {1, 2}
    assert set(comparisons["test"]) == {"none"} and not comparisons["significant"].any()  # 2 seeds: no test
    main = pd.read_csv(tmp_path / "out" / "tables" / "main.csv")
    assert {"tied_best", "vs_baseline", "stopped_at_epoch", "flags"} <= set(main.columns)
    assert "Trials restricted to dataset.imbalance=100." in (tmp_path / "out" / "report.md").read_text()
    assert "at the epoch of best validation" in (tmp_path / "out" / "report.md").read_text()
    assert "oracle" in report.tables["main_best_epoch"].title


def test_cli_bad_where_and_baseline_exit_2(tmp_path, capsys):
    uri, _ = _multi.write_store(tmp_path)
    code, _, err = run_cli(["table", "--experiment", "multi", "--tracking-uri", uri, "--where", "nope=1"], capsys)
    assert code == 2 and "where: unknown key 'nope'" in err
    code, _, err = run_cli(["table", "--experiment", "multi", "--tracking-uri", uri, "--baseline", "mwnet"], capsys)
    assert code == 2 and "baseline: unknown method 'mwnet'" in err
    code, out, _ = run_cli(["table", "--experiment", "multi", "--tracking-uri", uri, "--metric", "best_test_acc",
                            "--where", "dataset.imbalance=10"], capsys)
    assert code == 0 and "best-epoch value" in out and "imbalance = 10" in out and "imbalance = 100" not in out


def test_set_one_axis_and_a_bad_table_baseline(capsys):
    spec = {"axes": {"dataset.imbalance": [10, 20]}, "table": {}}
    assert apply_overrides(spec, ["axes.dataset.imbalance=[10, 100]"])["axes"] == {"dataset.imbalance": [10, 100]}
    code, _, err = run_cli(["plan", "raysweep/specs/quickstart.yaml", "--set", "table.baseline=mwnett"], capsys)
    assert code == 2 and "table.baseline: must be auto, null or one of the spec's methods" in err


def test_budget_curves_and_method_scores_are_per_setting_and_selected_on_validation():
    from analysis.ranking import budget_frame, budget_markdown, method_scores, ranks_if_enough
    from analysis.stats import expected_max

    df = _multi.tidy_frame()
    frame = budget_frame(df, "val_balanced_acc")
    cb10 = frame[(frame["method"] == "cb") & (frame["setting"] == "imbalance = 10")]
    means = df[(df["method"] == "cb") & (df["dataset.imbalance"] == 10)].groupby("config_id")[
        "metric.val_balanced_acc"].mean()
    assert cb10["n"].tolist() == [1, 2, 3, 4] and set(cb10["configs"]) == {4}
    assert cb10["expected_max"].tolist() == pytest.approx([expected_max(means, n)[0] for n in range(1, 5)])
    assert "i.i.d." in budget_markdown(frame, percent=True) and "**imbalance = 100**" in budget_markdown(frame, True)
    scores = method_scores(df, "test_acc", "val_balanced_acc")
    assert list(scores.index) == ["imbalance = 10", "imbalance = 100"]
    best_cb = max(_multi.acc("cb", {"gamma": g, "beta": b}, 10, s) for g in (0.5, 2.0) for b in (0.9, 0.99)
                  for s in (0,))  # validation = test + 0.01 here, so the validation pick is the test-best config
    assert scores.loc["imbalance = 10", "cb"] == pytest.approx(best_cb + 0.0005)
    assert ranks_if_enough(scores) is None  # 2 settings: no critical-difference diagram


def test_an_empty_group_column_is_kept_and_explained():
    df, *_ = _sweep()
    low = df.assign(**{"dataset.imbalance": 10, "config_id": df["config_id"] + " low", "metric.test_few_acc": math.nan})
    data = pd.concat([df.assign(**{"metric.test_few_acc": df["metric.test_acc"] / 2}), low], ignore_index=True)
    t = seed_table(data, "test_few_acc", rows="config", cols="dataset.imbalance")
    assert t.cols == [10, 100] and not any(c == 10 for _, c in t.cells)
    md = to_markdown(t)
    assert md.splitlines()[0] == "| config | imbalance = 10 | imbalance = 100 |"
    assert "Empty columns (imbalance = 10): no trial there has a value of test_few_acc" in md


def test_a_random_sweep_report_has_budget_curves_a_grid_or_early_stopped_one_none(tmp_path):
    from mlflow import MlflowClient

    uri, parent = _multi.write_store(tmp_path / "a", methods=("ce", "focal", "cb"))
    build_report(uri, parent, tmp_path / "grid", log=False)
    assert not (tmp_path / "grid" / "tables" / "budget.csv").exists()  # a grid: no i.i.d. draws
    MlflowClient(uri).set_tag(parent, "raysweep.mode", "random")
    build_report(uri, parent, tmp_path / "random", log=False)
    budget = pd.read_csv(tmp_path / "random" / "tables" / "budget.csv")
    assert set(budget["setting"]) == {"imbalance = 10", "imbalance = 100"} and set(budget["method"]) == {
        "ce", "focal", "cb"}
    assert budget.groupby(["setting", "method"])["n"].max().to_dict()[("imbalance = 10", "cb")] == 4
    assert (tmp_path / "random" / "plots" / "budget.png").read_bytes()[:4] == b"\x89PNG"
    assert "i.i.d." in (tmp_path / "random" / "report.md").read_text()
    uri, parent = _multi.write_store(tmp_path / "b")  # DM beta=0.5 has a seed stopped by the scheduler
    MlflowClient(uri).set_tag(parent, "raysweep.mode", "random")
    build_report(uri, parent, tmp_path / "stopped", log=False)
    assert not (tmp_path / "stopped" / "tables" / "budget.csv").exists()
