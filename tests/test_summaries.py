"""Summary runs against a hand computation from their trials, read back through the MLflow API: the seed mean,
the 95 % t interval, the seed band of every curve, the paired difference to the baseline with Holm's adjusted
p-value, the headline per setting of the data axes, and the saved comparison view."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from mlflow import MlflowClient
from scipy import stats

from analysis.stats import holm
from raysweep.reporting.summaries import summarize_sweep

import _multi

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory):
    """The multi-method store with 3 seeds and a per-(method, seed) wobble: comparisons can be tested."""
    root = tmp_path_factory.mktemp("summaries")
    uri, parent = _multi.write_store(root, methods=("ce", "focal", "cb"), seeds=SEEDS, wobbly=True)
    return uri, parent, summarize_sweep(uri, parent)


def _runs(client, parent_id, role):
    exp = client.get_run(parent_id).info.experiment_id
    return client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent_id}' and tags.`raysweep.role` = '{role}'",
                              max_results=1000)


def _by_seed(runs, metric="test_acc"):
    return {int(r.data.tags["raysweep.seed"]): r.data.metrics[metric] for r in runs}


def test_summary_metrics_and_band_curves_equal_a_hand_computation(three_seeds):
    uri, parent_id, _ = three_seeds
    client = MlflowClient(uri)
    trials, summaries = _runs(client, parent_id, "trial"), _runs(client, parent_id, "summary")
    assert len(summaries) == 14 and len(trials) == 42
    t = stats.t.ppf(0.975, len(SEEDS) - 1)
    for summary in summaries:
        mine = [r for r in trials if r.data.tags["raysweep.config_id"] == summary.data.tags["raysweep.config_id"]]
        finals = np.array([r.data.metrics["test_acc"] for r in mine])
        mean, half = finals.mean(), t * finals.std(ddof=1) / math.sqrt(len(finals))
        got = summary.data.metrics
        assert got["test_acc"] == pytest.approx(100 * mean)
        assert got["test_acc_lo"] == pytest.approx(100 * (mean - half))
        assert got["test_acc_hi"] == pytest.approx(100 * (mean + half))
        assert summary.data.tags["raysweep.units"] == "accuracies in percent"
        for name in ("curve.test_acc", "curve.test_acc_lo", "curve.test_acc_hi"):
            history = client.get_metric_history(summary.info.run_id, name)
            assert sorted(m.step for m in history) == [1, 2, 3], name
            for point in history:
                at = np.array([m.value for r in mine for m in client.get_metric_history(r.info.run_id, "test_acc")
                               if m.step == point.step])
                centre, spread = at.mean(), t * at.std(ddof=1) / math.sqrt(len(at))
                want = {"curve.test_acc": centre, "curve.test_acc_lo": centre - spread,
                        "curve.test_acc_hi": centre + spread}[name]
                assert point.value == pytest.approx(100 * want), (name, point.step)


def test_summary_runs_carry_the_paired_difference_to_the_baseline_with_holm(three_seeds):
    uri, parent_id, _ = three_seeds
    client = MlflowClient(uri)
    trials, summaries = _runs(client, parent_id, "trial"), _runs(client, parent_id, "summary")
    by_config: dict[str, list] = {}
    for r in trials:
        by_config.setdefault(r.data.tags["raysweep.config_id"], []).append(r)

    def imbalance(cid):
        return by_config[cid][0].data.params["dataset.imbalance"]

    expected = {}
    for cid, runs in by_config.items():
        if runs[0].data.tags["raysweep.method"] == "ce":
            continue
        base = next(v for k, v in by_config.items() if v[0].data.tags["raysweep.method"] == "ce"
                    and imbalance(k) == imbalance(cid))  # the baseline at the same setting, never across
        a, b = _by_seed(runs), _by_seed(base)
        diffs = np.array([a[s] - b[s] for s in SEEDS])
        test = stats.ttest_rel([a[s] for s in SEEDS], [b[s] for s in SEEDS])
        ci = test.confidence_interval(0.95)
        expected[cid] = (diffs.mean(), ci.low, ci.high, test.pvalue)
    ids = sorted(expected)
    adjusted = dict(zip(ids, holm([expected[c][3] for c in ids]), strict=True))
    assert len(ids) == 12
    for summary in summaries:
        cid = summary.data.tags["raysweep.config_id"]
        got = summary.data.metrics
        if cid not in expected:  # ce itself: no comparison with itself
            assert "test_acc_vs_ce" not in got and "raysweep.vs_baseline" not in summary.data.tags
            continue
        mean, low, high, _ = expected[cid]
        assert got["test_acc_vs_ce"] == pytest.approx(100 * mean)
        assert got["test_acc_vs_ce_lo"] == pytest.approx(100 * low)
        assert got["test_acc_vs_ce_hi"] == pytest.approx(100 * high)
        assert got["test_acc_vs_ce_p_adj"] == pytest.approx(adjusted[cid])
        want = "same" if adjusted[cid] >= 0.05 else ("better" if mean > 0 else "worse")
        assert summary.data.tags["raysweep.vs_baseline"] == want


def test_the_headline_names_one_best_per_data_axis_setting_with_its_comparison(three_seeds):
    uri, parent_id, headline = three_seeds
    client = MlflowClient(uri)
    parent = client.get_run(parent_id)
    assert [b.setting for b in headline.bests] == [{"dataset.imbalance": 10}, {"dataset.imbalance": 100}]
    summaries = {s.data.tags["raysweep.config_id"]: s for s in _runs(client, parent_id, "summary")}
    for best in headline.bests:
        # the best by validation among this level's configurations only
        level = [s for s in summaries.values() if s.data.params["dataset.imbalance"] == str(best.setting[
            "dataset.imbalance"])]
        top = max(level, key=lambda s: s.data.metrics["val_balanced_acc"])
        assert best.config_id == top.data.tags["raysweep.config_id"]
        assert best.versus is not None and best.versus.baseline == "ce"
        prefix = f"best.imbalance_{best.setting['dataset.imbalance']}."
        for key in ("test_acc_vs_ce", "test_acc_vs_ce_lo", "test_acc_vs_ce_hi", "test_acc_vs_ce_p_adj"):
            assert parent.data.metrics[prefix + key] == pytest.approx(top.data.metrics[key]), key
        assert f"vs ce: {top.data.metrics['test_acc_vs_ce']:+.2f} points" in headline.describe()
        said = {"better": ": better", "worse": ": worse", "same": ": no significant difference"}
        assert said[best.versus.verdict] in best.versus.describe("test_acc"), "never 'same': not shown equal"
        assert "(95 % interval, uncorrected)" in best.versus.describe("test_acc")


def test_the_saved_view_shows_the_knobs_and_the_table_metric_sorted_by_it(three_seeds):
    uri, parent_id, _ = three_seeds
    client = MlflowClient(uri)
    experiment = client.get_experiment(client.get_run(parent_id).info.experiment_id)
    view = json.loads(experiment.tags["mlflow.sharedViewState.raysweep"])
    assert view["selectedColumns"] == [
        "params.`dataset.imbalance`", "params.`method.name`", "params.`method.beta`", "params.`method.gamma`",
        "params.`n_seeds`", "metrics.`test_acc`", "metrics.`test_acc_std`", "metrics.`test_acc_lo`",
        "metrics.`test_acc_hi`", "metrics.`test_acc_vs_ce`", "metrics.`test_acc_vs_ce_lo`",
        "metrics.`test_acc_vs_ce_hi`", "metrics.`test_acc_vs_ce_p_adj`"]
    assert (view["orderByKey"], view["orderByAsc"]) == ("metrics.`test_acc`", False)
    first = view["compareRunCharts"][0]
    assert first["type"] == "LINE" and first["selectedMetricKeys"] == [
        "curve.test_acc", "curve.test_acc_lo", "curve.test_acc_hi"]
    assert [c["metricKey"] for c in view["compareRunCharts"][1:3]] == ["test_acc", "test_acc_vs_ce"]
    assert view["searchFilter"] == "tags.`raysweep.role` != 'trial'"
    # A later sweep start in the same experiment keeps the view (it is the summaries' to set).
    from raysweep.tracking.mlflow_store import get_or_create_experiment

    get_or_create_experiment(client, experiment.name, uri)
    assert client.get_experiment(experiment.experiment_id).tags["mlflow.sharedViewState.raysweep"] == \
        experiment.tags["mlflow.sharedViewState.raysweep"]
