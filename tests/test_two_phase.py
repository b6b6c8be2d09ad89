"""Two-phase search end to end: ASHA with one seed, then the top-k configurations with every seed."""

import pytest
from mlflow import MlflowClient

from _cli import run_spec

pytestmark = [pytest.mark.slow, pytest.mark.ray]

SPEC = {
    "name": "twophase",
    "dataset": {"name": "gaussian", "imbalance": 10, "samples_per_class": 120},
    "model": {"name": "mlp", "width": 32},
    "train": {"epochs": 3, "batch_size": 64},
    "methods": {"focal": {"gamma": [0.0, 1.0, 3.0, 6.0]}},
    "seeds": [0, 1],
    "search": {"mode": "grid", "metric": "val_balanced_acc", "two_phase": True, "top_k": 2},
    "scheduler": {"name": "asha", "grace_period": 1},
    "resources": {"cpu": 0.5},
}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("twophase")
    proc = run_spec(root, SPEC, timeout=900)
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("twophase")
    return client, client.search_runs([exp.experiment_id], max_results=1000), proc.stdout


def test_phase_two_reruns_exactly_the_top_k_of_phase_one_with_all_seeds(sweep):
    client, runs, _ = sweep
    parent = next(r for r in runs if r.data.tags.get("raysweep.role") == "sweep")
    trials = [r for r in runs if r.data.tags.get("raysweep.role") == "trial"]
    assert all(t.data.tags["mlflow.parentRunId"] == parent.info.run_id for t in trials)
    search = [t for t in trials if t.data.tags["raysweep.phase"] == "search"]
    confirm = [t for t in trials if t.data.tags["raysweep.phase"] == "confirm"]
    assert len(search) == 4 and {t.data.tags["raysweep.seed"] for t in search} == {"0"}

    def rank(run):  # survivors first (more epochs), then the validation metric (never the test set), then plan order
        return (int(run.data.tags["raysweep.epochs_run"]), run.data.metrics["val_balanced_acc"],
                -int(run.data.tags["raysweep.plan_index"]))

    top = {t.data.tags["raysweep.config_id"] for t in sorted(search, key=rank, reverse=True)[:2]}
    assert {t.data.tags["raysweep.config_id"] for t in confirm} == top
    assert sorted((t.data.tags["raysweep.config_id"], t.data.tags["raysweep.seed"]) for t in confirm) == \
        sorted((c, s) for c in top for s in ("0", "1"))
    for t in confirm:  # full length, no early stopping
        assert t.data.tags["raysweep.stop_reason"] == "completed" and t.data.tags["raysweep.epochs_run"] == "3"
