"""`raysweep report`: importance from a tidy table, and a real sweep reported from MLflow alone."""

import math
import re
import shutil
from html import escape as html_escape

import pandas as pd
import pytest
from mlflow import MlflowClient
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from analysis.importance import build_study, importance_markdown, importances, infer_distribution
from analysis.page import Section, render_page
from raysweep.reporting.report import _slug, build_report
from raysweep.reporting.summaries import summarize_sweep

import _multi
from _cli import raysweep, run_spec


def test_distributions_are_inferred_from_the_values():
    assert infer_distribution(pd.Series([0.5, 1.0, 2.0])) == FloatDistribution(0.5, 2.0)
    assert infer_distribution(pd.Series([1e-4, 1e-2, 1e-1])) == FloatDistribution(1e-4, 1e-1, log=True)
    assert infer_distribution(pd.Series([32, 64, 128])) == IntDistribution(32, 128)
    assert infer_distribution(pd.Series(["cosine", "step"])) == CategoricalDistribution(("cosine", "step"))
    assert infer_distribution(pd.Series([True, False])) == CategoricalDistribution((True, False))
    with pytest.raises(ValueError, match="no values"):
        infer_distribution(pd.Series([None]))


def _tidy(n_seeds=3):
    """beta decides the metric (0.3 per step), gamma barely (0.001), the schedule not at all."""
    rows = []
    for beta in (0.0, 1.0, 2.0):
        for gamma in (0.5, 1.0, 2.0):
            for schedule in ("cosine", "step"):
                for seed in range(n_seeds):
                    rows.append({"method": "dm", "seed": seed, "config_id": f"{beta}-{gamma}-{schedule}",
                                 "method.name": "dm", "method.beta": beta, "method.gamma": gamma,
                                 "train.schedule": schedule, "train.epochs": 5,
                                 "metric.test_acc": 0.3 + 0.3 * beta / 2 + 0.001 * gamma + 0.002 * seed})
    rows.append({"method": "ce", "seed": 0, "config_id": "ce", "method.name": "ce", "train.schedule": "cosine",
                 "train.epochs": 5, "metric.test_acc": 0.4})
    return pd.DataFrame(rows)


def test_importance_ranks_the_factor_that_decides_the_metric_first():
    df = _tidy()
    study = build_study(df[df["method"] == "dm"], "test_acc")
    assert len(study.trials) == 54 and study.direction.name == "MAXIMIZE"
    assert set(study.trials[0].distributions) == {"method.beta", "method.gamma", "train.schedule"}
    frame = importances(df, "test_acc", resamples=0)
    assert set(frame["method"]) == {"dm"}, "ce has one trial: too few for importance"
    assert set(frame["param"]) == {"dm.beta", "dm.gamma", "train.schedule"}, "knobs are named after their method"
    for evaluator in ("fanova", "ped_anova"):
        part = frame[frame["evaluator"] == evaluator].set_index("param")["importance"]
        assert part.idxmax() == "dm.beta" and part["dm.beta"] > 0.8
        assert math.isclose(part.sum(), 1.0, rel_tol=1e-6)


def test_importance_is_per_setting_of_the_data_axes_with_spread_and_disagreement():
    """imbalance moves every accuracy by 0.3 (it would swamp the knobs); within a level beta decides."""
    df = _tidy(n_seeds=3)
    df = pd.concat([df.assign(**{"dataset.imbalance": 10}),
                    df.assign(**{"dataset.imbalance": 100, "metric.test_acc": df["metric.test_acc"] - 0.3})],
                   ignore_index=True)
    frame = importances(df, "test_acc", resamples=4)
    assert list(frame.columns) == ["method", "setting", "evaluator", "param", "importance", "spread", "n_trials",
                                   "n_resamples"]
    groups = set(zip(frame["method"], frame["setting"], strict=True))
    assert groups == {("dm", "imbalance = 10"), ("dm", "imbalance = 100")}
    assert "dataset.imbalance" not in set(frame["param"]), "a data axis is not a method's knob"
    assert set(frame["n_trials"]) == {54} and set(frame["n_resamples"]) == {4}
    for (_, _), part in frame.groupby(["setting", "evaluator"]):
        assert part.set_index("param")["importance"].idxmax() == "dm.beta"
        assert math.isclose(part["importance"].sum(), 1.0, rel_tol=1e-6)
        assert (part["spread"] >= 0).all() and part["spread"].notna().all()
    text = importance_markdown(frame)
    assert "**dm** at imbalance = 10 (54 trials; ± = std over 4 bootstrap resamples of seeds)" in text
    row = frame[(frame["setting"] == "imbalance = 10") & (frame["param"] == "dm.gamma")].set_index("evaluator")
    gap = abs(row.loc["fanova", "importance"] - row.loc["ped_anova", "importance"])
    assert f"| dm.gamma | {row.loc['fanova', 'importance']:.3f} ± {row.loc['fanova', 'spread']:.3f} |" in text
    assert text.split("| dm.gamma |")[1].splitlines()[0].endswith(f"| {gap:.3f} |")
    # One seed: nothing to resample, no spread.
    single = importances(df[df["seed"] == 0], "test_acc", resamples=4)
    assert single["spread"].isna().all() and set(single["n_resamples"]) == {0}


def test_many_medium_few_plot_grows_down_with_the_rows_not_sideways(tmp_path):
    from PIL import Image

    from analysis.plots import breakdown_bars, table_plot
    from analysis.tables import breakdown_table

    df = _multi.tidy_frame()  # 10 configurations x 2 imbalance levels: 20 rows
    df = df.assign(**{"metric.test_many_acc": df["metric.test_acc"] + 0.1,
                      "metric.test_medium_acc": df["metric.test_acc"] - 0.1, "metric.test_few_acc": math.nan})
    table = breakdown_table(df, "config", axes=["dataset.imbalance"])
    # The empty few-shot group keeps its column (and gets a panel that says so).
    assert len(table.rows) == 20 and table.cols == ["test_many_acc", "test_medium_acc", "test_few_acc", "test_acc"]
    width, height = Image.open(table_plot(table, tmp_path / "mmf.png")).size
    assert width <= 1400 and 20 * 30 <= height <= 20 * 45, (width, height)
    assert Image.open(breakdown_bars(table, tmp_path / "again.png")).size == (width, height)


def test_html_page_inlines_its_images(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    fig.savefig(tmp_path / "p.png")
    page = render_page("t", "intro", [Section("s", "<table></table>", [tmp_path / "p.png"])])
    assert page.count('src="data:image/png;base64,iVBORw0KGgo') == 1
    assert "p.png" not in page.replace('alt="p"', "")


SPEC = {
    "name": "rep",
    "dataset": {"name": "gaussian", "imbalance": 10, "samples_per_class": 120},
    "model": {"name": "mlp", "width": 32},
    "train": {"epochs": 3, "batch_size": 64},
    "methods": {"ce": {}, "focal": {"gamma": [0.5, 2.0]}},
    "seeds": 2,
    "search": {"mode": "grid", "metric": "val_balanced_acc"},
    "scheduler": {"name": "asha", "grace_period": 1},
    "resources": {"cpu": 0.5},
    "table": {"rows": "config", "metric": "test_acc"},
}



@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """One real sweep (3 configs x 2 seeds, ASHA), then `raysweep report` on it."""
    root = tmp_path_factory.mktemp("report")
    run_spec(root, SPEC)
    rep = raysweep("report", "rep", "--out", "out", "--format", "md", cwd=root)
    assert rep.returncode == 0, rep.stdout[-3000:] + rep.stderr[-3000:]
    return root, rep.stdout


def _uri(root):
    return f"sqlite:///{root / 'mlflow.db'}"


@pytest.mark.slow
@pytest.mark.ray
def test_report_writes_tables_plots_importance_and_a_self_contained_page(reported):
    root, out = reported
    assert out.splitlines()[0] == "| config | test_acc (%) |"
    tables = {p.name for p in (root / "out" / "tables").iterdir()}
    for stem in ("main", "main_best_epoch", "many_medium_few", "oneway_focal.gamma"):
        assert {f"{stem}.{fmt}" for fmt in ("md", "csv", "tex", "html")} <= tables
    assert {"configs.csv", "trials.csv"} <= tables
    pngs = {p.name for p in (root / "out" / "plots").iterdir()}
    assert {"main.png", "oneway_focal.gamma.png", "learning_curves_test_acc.png", "rung_survival.png",
            "importance_focal.png"} <= pngs, "one setting: the plot is named after the method"
    assert all((root / "out" / "plots" / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
    page = (root / "out" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(pngs)
    assert not re.search(r'src="(?!data:)', page)
    configs = pd.read_csv(root / "out" / "tables" / "configs.csv")
    assert len(configs) == 3 and set(configs["n"]) == {2}
    imp = pd.read_csv(root / "out" / "importance.csv")
    assert set(imp["method"]) == {"focal"} and set(imp["evaluator"]) == {"fanova", "ped_anova"}


@pytest.mark.slow
@pytest.mark.ray
def test_parent_run_holds_the_report_and_one_summary_run_per_configuration(reported):
    root, _ = reported
    client = MlflowClient(_uri(root))
    exp = client.get_experiment_by_name("rep")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parent = next(r for r in runs if r.data.tags.get("raysweep.role") == "sweep")
    trials = [r for r in runs if r.data.tags.get("raysweep.role") == "trial"]
    summaries = [r for r in runs if r.data.tags.get("raysweep.role") == "summary"]
    assert len(trials) == 6 and len(summaries) == 3
    names = {a.path for a in client.list_artifacts(parent.info.run_id, "report/tables")}
    assert {"report/tables/main.md", "report/tables/main.tex", "report/tables/configs.csv"} <= names
    assert "report/report.html" in {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    for summary in summaries:
        assert summary.data.tags["mlflow.parentRunId"] == parent.info.run_id
        mine = [t for t in trials if t.data.tags["raysweep.config_id"] == summary.data.tags["raysweep.config_id"]]
        finals = [t.data.metrics["test_acc"] for t in mine]
        mean = sum(finals) / 2
        assert summary.data.metrics["test_acc"] == pytest.approx(100 * mean)
        assert summary.data.metrics["test_acc_std"] == pytest.approx(100 * abs(finals[0] - finals[1]) / math.sqrt(2))
        assert summary.data.params["n_seeds"] == "2" and "n_seeds" not in summary.data.metrics
        assert summary.data.params["method.name"] == mine[0].data.params["method.name"]
        bests = [max(m.value for m in client.get_metric_history(t.info.run_id, "test_acc")) for t in mine]
        assert summary.data.metrics["best_test_acc"] == pytest.approx(100 * sum(bests) / 2)
        curve = client.get_metric_history(summary.info.run_id, "curve.val_balanced_acc")
        assert len(curve) >= 1 and min(m.step for m in curve) == 1


@pytest.mark.slow
@pytest.mark.ray
def test_report_twice_and_after_deleting_ray_results_reproduces_tables_without_new_runs(reported):
    root, _ = reported
    client = MlflowClient(_uri(root))
    exp = client.get_experiment_by_name("rep")
    before = {r.info.run_id for r in client.search_runs([exp.experiment_id], max_results=1000)}
    shutil.rmtree(root / "raysweep_results")
    again = build_report(_uri(root), "rep", root / "again")
    assert again.summary_created == 0
    after = {r.info.run_id for r in client.search_runs([exp.experiment_id], max_results=1000)}
    assert after == before
    for name in ("main.md", "main.csv", "many_medium_few.md", "oneway_focal.gamma.tex", "configs.csv"):
        assert (root / "again" / "tables" / name).read_text() == (root / "out" / "tables" / name).read_text(), name


def test_two_phase_sweeps_tabulate_phase_two_and_explore_phase_one():
    from analysis.mlflow_io import final_phase, search_phase

    df = pd.DataFrame({"phase": ["search", "search", "confirm"], "run_id": ["a", "b", "c"]})
    assert final_phase(df)["run_id"].tolist() == ["c"] and search_phase(df)["run_id"].tolist() == ["a", "b"]
    one = df[df["phase"] == "search"]
    assert final_phase(one)["run_id"].tolist() == ["a", "b"] == search_phase(one)["run_id"].tolist()


def test_report_of_a_missing_sweep_exits_2_and_ui_points_at_a_server(tmp_path, capsys):
    from raysweep.cli import main

    assert main(["report", "nope", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--out", str(tmp_path)]) == 2
    assert "no experiment 'nope'" in capsys.readouterr().err
    assert main(["ui", "--tracking-uri", "http://127.0.0.1:5999"]) == 0
    assert "its UI is already there, open http://127.0.0.1:5999" in capsys.readouterr().out
    assert main(["ui", str(tmp_path)]) == 2
    assert "no manifest.json in" in capsys.readouterr().err
    sweep = tmp_path / "sweep-1"
    sweep.mkdir()
    (sweep / "manifest.json").write_text('{"version": 1, "tracking_uri": "http://127.0.0.1:5998"}')
    assert main(["ui", str(sweep)]) == 0
    assert "open http://127.0.0.1:5998" in capsys.readouterr().out


# ---- several methods with same-named knobs, in a real sqlite MLflow store (no Ray) ---------------------------------


@pytest.fixture(scope="module")
def multi_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi")
    uri, parent = _multi.write_store(root)
    return root, uri, parent


def _children(client, parent_id, role):
    exp = client.get_run(parent_id).info.experiment_id
    return client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent_id}' and tags.`raysweep.role` = '{role}'",
                              max_results=1000)


def _sample_std(xs):
    mean = sum(xs) / len(xs)
    return math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


def test_summarize_sweep_logs_summary_runs_and_the_headline_by_hand(multi_store):
    root, uri, parent_id = multi_store
    client = MlflowClient(uri)
    headline = summarize_sweep(uri, parent_id)
    trials = _children(client, parent_id, "trial")
    summaries = _children(client, parent_id, "summary")
    configs = {t.data.tags["raysweep.config_id"] for t in trials}
    assert len(trials) == 36 and len(summaries) == len(configs) == 18 == headline.summary_created
    names = {s.info.run_name for s in summaries}
    assert {"summary ce imbalance=10", "summary focal gamma=0.5 imbalance=100",
            "summary cb gamma=2.0 beta=0.99 imbalance=10"} <= names and len(names) == 18
    for summary in summaries:
        mine = [t for t in trials if t.data.tags["raysweep.config_id"] == summary.data.tags["raysweep.config_id"]]
        finals = [t.data.metrics["test_acc"] for t in mine]
        bests = [max(m.value for m in client.get_metric_history(t.info.run_id, "test_acc")) for t in mine]
        got = summary.data.metrics
        # Accuracies in percent, as the tables show them; the interval is mean -/+ t_{0.975, 1} std / sqrt(2).
        half = 12.706204736174698 * _sample_std(finals) / math.sqrt(2)
        assert got["test_acc"] == pytest.approx(100 * sum(finals) / 2)
        assert got["test_acc_std"] == pytest.approx(100 * _sample_std(finals))
        assert got["test_acc_lo"] == pytest.approx(100 * (sum(finals) / 2 - half))
        assert got["test_acc_hi"] == pytest.approx(100 * (sum(finals) / 2 + half))
        assert got["best_test_acc"] == pytest.approx(100 * sum(bests) / 2)
        assert got["best_test_acc_std"] == pytest.approx(100 * _sample_std(bests))
        assert got["train_loss"] == pytest.approx(sum(t.data.metrics["train_loss"] for t in mine) / 2), "not an acc"
        # Bookkeeping is a param: no chart leads with it.
        assert not {"n_seeds", "early_stopped", "epochs_run", "test_acc_ci95"} & set(got)
        params = summary.data.params
        assert params["n_seeds"] == str(len(mine)) == "2"
        assert float(params["epochs_run"]) == pytest.approx(
            sum(int(t.data.tags["raysweep.epochs_run"]) for t in mine) / 2)
        assert params["method.name"] == mine[0].data.params["method.name"] and "nan" not in params.values()
        assert {k for k in params if k.startswith("method.")} == {k for k in mine[0].data.params
                                                                  if k.startswith("method.")}
    stopped = next(s for s in summaries if s.info.run_name == "summary dm beta=0.5 imbalance=100")
    assert stopped.data.params["early_stopped"] == "1" and stopped.data.params["epochs_run"] == "2"

    # The headline: one best per imbalance level (a data axis), never one across them. CB gamma=2 beta=0.99
    # has the best seed-mean validation accuracy at both levels.
    assert [b.setting for b in headline.bests] == [{"dataset.imbalance": 10}, {"dataset.imbalance": 100}]
    assert [b.label for b in headline.bests] == ["cb gamma=2.0 beta=0.99 imbalance=10",
                                                 "cb gamma=2.0 beta=0.99 imbalance=100"]
    assert headline.config_id is None and all(b.n_seeds == 2 for b in headline.bests)
    parent = client.get_run(parent_id)
    for imbalance in (10, 100):
        best_val = [_multi.acc("cb", {"gamma": 2.0, "beta": 0.99}, imbalance, s) + 0.01 for s in _multi.SEEDS]
        prefix = f"best.imbalance_{imbalance}."
        assert parent.data.metrics[prefix + "val_balanced_acc_mean"] == pytest.approx(100 * sum(best_val) / 2)
        assert parent.data.metrics[prefix + "val_balanced_acc_std"] == pytest.approx(100 * _sample_std(best_val))
        assert parent.data.metrics[prefix + "test_acc_mean"] == pytest.approx(100 * (sum(best_val) / 2 - 0.01))
        # 2 seeds: the comparison against ce is made but not tested (a test on 2 pairs decides nothing).
        assert parent.data.metrics[prefix + "test_acc_vs_ce"] == pytest.approx(100 * (0.70 + 0.02 + 0.0198 - 0.50))
        assert prefix + "test_acc_vs_ce_p_adj" not in parent.data.metrics
    bests = [next(s for s in summaries if s.info.run_name == "summary " + b.label) for b in headline.bests]
    assert parent.data.tags["raysweep.best_config"] == "; ".join(
        f"imbalance = {i}: {b.label} [{b.config_id}]" for i, b in zip((10, 100), headline.bests, strict=True))
    assert parent.data.tags["raysweep.best_config_id"] == ",".join(s.data.tags["raysweep.config_id"] for s in bests)
    assert parent.data.tags["raysweep.best_summary_run"] == ",".join(s.info.run_id for s in bests)
    assert parent.data.tags["raysweep.best_n_seeds"] == "2,2"
    text = headline.describe()
    assert text.startswith("best configuration by val_balanced_acc (max, seed means) per setting of the data axes:")
    assert "\n  imbalance = 10: cb gamma=2.0 beta=0.99 imbalance=10" in text and "not tested (2 pairs" in text

    # Idempotent: again, nothing new (no run, no second point in the parent's metric history).
    runs_before = {r.info.run_id for r in client.search_runs([parent.info.experiment_id], max_results=1000)}
    again = summarize_sweep(uri, parent_id)
    assert again.summary_created == 0 and again.summary_runs == headline.summary_runs
    assert {r.info.run_id for r in client.search_runs([parent.info.experiment_id], max_results=1000)} == runs_before
    assert len(client.get_metric_history(parent_id, "best.imbalance_10.test_acc_mean")) == 1


def test_report_of_several_methods_never_mixes_them_and_adds_no_runs_after_summarize(multi_store):
    root, uri, parent_id = multi_store
    client = MlflowClient(uri)
    summarize_sweep(uri, parent_id)
    exp = client.get_run(parent_id).info.experiment_id
    before = {r.info.run_id for r in client.search_runs([exp], max_results=1000)}
    report = build_report(uri, parent_id, root / "out")
    assert report.summary_created == 0
    assert {r.info.run_id for r in client.search_runs([exp], max_results=1000)} == before

    knob_tables = {n for n in report.tables if n.startswith(("oneway_", "twoway_"))}
    # issue 21: tables that do not show the imbalance are made per level instead of pooling the two
    per_level = {f"{name}@imbalance={i}" for name in ("oneway_focal.gamma", "oneway_cb.beta", "oneway_cb.gamma",
                                                     "oneway_dm.beta", "twoway_cb.beta_x_cb.gamma") for i in (10, 100)}
    assert knob_tables == {"oneway_dataset.imbalance", "twoway_focal.gamma_x_dataset.imbalance",
                           "twoway_dm.beta_x_dataset.imbalance"} | per_level
    methods = {"ce", "focal", "cb", "dm"}
    for name, table in report.tables.items():
        assert "nan" not in [str(x) for x in table.rows + table.cols], name
        assert table.filled >= 2, name
        if name in knob_tables:
            knobs = [k for k in (table.rows_key, table.cols_key) if k.split(".")[0] in methods]
            if knobs:  # a method's own table
                assert {k.split(".")[0] for k in knobs} == {table.scope}, name
            else:  # a shared axis, one column per method
                assert table.rows_key == "dataset.imbalance" and set(table.cols) == methods, name
    tables_dir, plots_dir = root / "out" / "tables", root / "out" / "plots"
    for name in report.tables:
        stem = _slug(name)
        assert (plots_dir / f"{stem}.png").read_bytes()[:4] == b"\x89PNG", "one plot per table, named like it"
        for fmt in ("md", "csv"):
            text = (tables_dir / f"{stem}.{fmt}").read_text()
            assert not re.search(r"(^|[|,= ])nan([|,\n ]|$)", text, re.M), f"{name}.{fmt}"
    assert not any("method.gamma" in p.name or "method.beta" in p.name for p in tables_dir.iterdir())
    configs = pd.read_csv(tables_dir / "configs.csv")
    assert {"focal.gamma", "cb.gamma", "cb.beta", "dm.beta"} <= set(configs.columns)
    assert "method.gamma" not in configs.columns and len(configs) == 18
    assert set(configs.loc[configs["method"] == "dm", "focal.gamma"].isna()) == {True}
    importance = pd.read_csv(root / "out" / "importance.csv")
    for method, part in importance.groupby("method"):
        assert all(p.split(".")[0] in (method, "dataset") for p in part["param"]), method
    for page in ("report.md", "report.html"):
        text = (root / "out" / page).read_text()
        assert _multi.SELECTION in text and "Warning:" in text, page
        assert "best configuration by val_balanced_acc" in text, page
    assert _multi.SELECTION_WARNING in (root / "out" / "report.md").read_text()
    assert html_escape(_multi.SELECTION_WARNING) in (root / "out" / "report.html").read_text()
