"""The MLflow store from the driver, without a sweep: its circuit breaker and what it creates."""

import pytest


def test_a_store_that_fails_while_being_created_never_ends_the_sweep(tmp_path):
    """Creating the client is guarded like every other call: the logger sees an outage, not a crash."""
    from raysweep.mlflow_store import SweepRun, TrackingUnavailable

    (tmp_path / "a-file").write_text("not a folder")  # the store's folder cannot be created: the client fails
    sweep = SweepRun(f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}", "e", "s-1")
    with pytest.raises(TrackingUnavailable):
        _ = sweep.client
    assert sweep.down and sweep.failures == 1


def test_experiments_are_created_and_found_as_training_runs_experiments(tmp_path):
    """MLflow 3's UI opens an experiment without a kind on its GenAI overview; raysweep's open on the runs."""
    from mlflow import MlflowClient

    from analysis import mlflow_tags as tags
    from raysweep.mlflow_store import get_or_create_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    new = get_or_create_experiment(client, "fresh", uri)
    assert client.get_experiment(new).tags[tags.EXPERIMENT_KIND] == tags.TRAINING_RUNS_KIND
    older = client.create_experiment("older")  # made before raysweep tagged its experiments
    assert get_or_create_experiment(client, "older", uri) == older
    assert client.get_experiment(older).tags[tags.EXPERIMENT_KIND] == "custom_model_development"
