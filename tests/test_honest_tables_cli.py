"""Issue 21 through the CLI with real Ray sweeps: a truly better method gets ▲ with scipy's p-value on the
trial runs read back through the MLflow API, and ASHA's early-stopped trials are never pooled."""

import pandas as pd
import pytest
from mlflow import MlflowClient
from scipy import stats

from _cli import raysweep, run_spec

pytestmark = [pytest.mark.slow, pytest.mark.process, pytest.mark.ray]

BETTER = {
    "name": "honest",
    "dataset": {"name": "mnist1d", "imbalance": 100, "meta_per_class": 10},
    "model": "cnn1d",
    "train": {"epochs": 4, "batch_size": 128, "lr": 0.1},
    "methods": {"ce": {}, "balanced_softmax": {}, "focal": {"gamma": [0.0]}},  # focal at gamma 0 is CE
    "seeds": 5,
    "search": {"mode": "grid", "metric": "val_balanced_acc"},
    "scheduler": {"name": "fifo"},
    "resources": {"cpu": 1},
    "execution": {"group": "seeds"},
    "table": {"rows": "config", "metric": "test_acc"},
}

ASHA = {
    "name": "honest_asha",
    "dataset": {"name": "gaussian", "imbalance": 10, "samples_per_class": 80},
    "model": {"name": "mlp", "width": 16},
    "train": {"epochs": 4, "batch_size": 64},
    "methods": {"ce": {}, "focal": {"gamma": [0.5, 2.0]}, "balanced_softmax": {}},
    "seeds": 2,
    "search": {"mode": "grid", "metric": "val_balanced_acc"},
    "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
    "resources": {"cpu": 0.5},
    "table": {"rows": "config", "metric": "test_acc"},
}


def _trial_values(uri: str, experiment: str) -> pd.DataFrame:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`raysweep.role` = 'trial'", max_results=1000)
    return pd.DataFrame([{"label": r.data.tags["raysweep.label"], "seed": int(r.data.tags["raysweep.seed"]),
                          "test_acc": r.data.metrics["test_acc"]} for r in runs])


def test_balanced_softmax_is_better_than_ce_with_scipys_p_on_the_mlflow_runs(tmp_path):
    run_spec(tmp_path, BETTER)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = raysweep("report", "honest", "--tracking-uri", uri, "--out", "out", "--no-log", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    comparisons = pd.read_csv(tmp_path / "out" / "tables" / "comparisons.csv")
    main = comparisons[comparisons["table"] == "main"].set_index("row")
    values = _trial_values(uri, "honest").pivot(index="seed", columns="label", values="test_acc")
    p = stats.ttest_rel(values["balanced_softmax"], values["ce"]).pvalue
    bs = main.loc["balanced_softmax"]
    assert bs["p_value"] == pytest.approx(p, rel=1e-9) and bs["n_pairs"] == 5 and bool(bs["significant"])
    assert bs["mean_diff"] == pytest.approx(100 * (values["balanced_softmax"] - values["ce"]).mean())
    table = pd.read_csv(tmp_path / "out" / "tables" / "main.csv").set_index("row")
    assert table.loc["balanced_softmax", "vs_baseline"] == "better"
    focal = [r for r in table.index if "focal" in r]
    if "ce = focal gamma=0.0" in table.index:  # bit-identical to CE: one row, the baseline, no mark
        assert pd.isna(table.loc["ce = focal gamma=0.0", "vs_baseline"])
    else:  # identical up to floating point: tested, not different
        assert focal and table.loc[focal[0], "vs_baseline"] == "same"
    printed = (tmp_path / "out" / "tables" / "main.md").read_text()
    assert "▲" in printed.splitlines()[[i for i, ln in enumerate(printed.splitlines())
                                        if ln.startswith("| balanced_softmax")][0]]
    assert "▼" not in "\n".join(printed.splitlines()[:-1])


def test_asha_never_pools_an_early_stopped_trial_with_a_finished_one(tmp_path):
    run_spec(tmp_path, ASHA)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = raysweep("report", "honest_asha", "--tracking-uri", uri, "--out", "out", "--no-log", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from analysis.mlflow_io import find_sweep, trials_frame
    from raysweep.reporting.report import build_report

    client = MlflowClient(uri)
    trials = trials_frame(client, find_sweep(client, "honest_asha"))
    stopped = trials["stop_reason"].str.startswith("stopped")
    assert stopped.any() and (~stopped).any(), "ASHA stopped some trials and let others finish"
    report = build_report(uri, "honest_asha", tmp_path / "again", log=False)
    for name, table in report.tables.items():
        for key, members in table.members.items():
            part = table.data.loc[members]
            early = part["_early"].astype(bool)
            assert early.all() or not early.any(), (name, key)  # never a mix
            if early.all():
                assert part["_epoch"].nunique() == 1 and table.cells[key].stopped_at == int(part["_epoch"].iloc[0])
                assert key not in table.marks.compared and not table.marks.is_tied(*key), (name, key)
    comparisons = pd.read_csv(tmp_path / "out" / "tables" / "comparisons.csv")
    stopped_rows = {r for r, c in report.tables["main"].cells if report.tables["main"].cells[(r, c)].stopped_at}
    assert not set(comparisons.loc[comparisons["table"] == "main", "row"]) & stopped_rows
    assert "stopped at epoch" in (tmp_path / "out" / "tables" / "main.md").read_text() or not stopped_rows
