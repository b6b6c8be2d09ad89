"""The MLflow store from the driver, without a sweep: its circuit breaker and what it creates."""

import pytest


def test_a_store_that_fails_while_being_created_never_ends_the_sweep(tmp_path):
    """Creating the client is guarded like every other call: the logger sees an outage, not a crash."""
    from raysweep.tracking.mlflow_store import SweepRun, TrackingUnavailable

    (tmp_path / "a-file").write_text("not a folder")  # the store's folder cannot be created: the client fails
    sweep = SweepRun(f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}", "e", "s-1")
    with pytest.raises(TrackingUnavailable):
        _ = sweep.client
    assert sweep.down and sweep.failures == 1


def test_experiments_are_created_and_found_as_training_runs_experiments(tmp_path):
    """MLflow 3's UI opens an experiment without a kind on its GenAI overview; raysweep's open on the runs."""
    from mlflow import MlflowClient

    from analysis import mlflow_tags as tags
    from raysweep.tracking.mlflow_store import get_or_create_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    new = get_or_create_experiment(client, "fresh", uri)
    assert client.get_experiment(new).tags[tags.EXPERIMENT_KIND] == tags.TRAINING_RUNS_KIND
    older = client.create_experiment("older")  # made before raysweep tagged its experiments
    assert get_or_create_experiment(client, "older", uri) == older
    assert client.get_experiment(older).tags[tags.EXPERIMENT_KIND] == "custom_model_development"


def test_waiting_epochs_are_batched_whole_under_the_metric_limit():
    from raysweep.tracking.mlflow_store import epoch_batches

    epochs = [(1, {"a": 1.0, "b": 2.0}, 10), (2, {"a": 3.0, "b": 4.0}, 20), (3, {f"m{i}": 0.0 for i in range(5)}, 30),
              (4, {"a": 5.0}, 40)]
    batches = list(epoch_batches(epochs, limit=4))
    assert [steps for steps, _ in batches] == [[1, 2], [3], [4]], "whole epochs; an oversized one alone"
    first = batches[0][1]
    assert [(m.key, m.value, m.step, m.timestamp) for m in first] == [("a", 1.0, 1, 10), ("b", 2.0, 1, 10),
                                                                      ("a", 3.0, 2, 20), ("b", 4.0, 2, 20)]
    assert len(batches[1][1]) == 5


def _logged_trial(tmp_path, send_interval_s):
    """A trial logger on a fresh SQLite store, one planned trial started, and a counter of its requests."""
    from types import SimpleNamespace

    from raysweep.tracking.mlflow_store import SweepRun
    from raysweep.tracking.trial_logger import TrialLogger, TuneCallback
    from raysweep.trials import PlannedTrial
    from trainables.planned import Envelope

    planned = PlannedTrial({"method": {"name": "ce"}, "dataset": {"name": "gaussian"}, "train": {"epochs": 5},
                            "seed": 0}, "c0ffee0000", 0, "ce")
    sweep = SweepRun.create(f"sqlite:///{tmp_path / 'mlflow.db'}", "batched", "batched-1", {})
    logger = TrialLogger(sweep, send_interval_s=send_interval_s)
    callback = TuneCallback(logger)
    trial = SimpleNamespace(config=Envelope.of([planned]).to_config(), trial_id="t0")
    callback.on_trial_start(0, [], trial)
    calls = []
    log_batch = sweep.client.log_batch
    sweep.client.log_batch = lambda *a, **kw: (calls.append(kw), log_batch(*a, **kw))[1]
    return sweep, logger, callback, trial, calls


def _result(epoch):
    return {"epoch": epoch, "timestamp": 1_700_000_000 + epoch, "val_acc": epoch / 10, "train_loss": 1 / epoch,
            "node_ip": "127.0.0.1", "hostname": "here"}


def test_a_running_trials_epochs_wait_for_the_send_interval_and_go_in_one_request(tmp_path):
    """Tune asks a trial for its next result only after the driver's callbacks: one request per epoch held
    every trial back, so epochs within the interval wait and go together; the trial's end sends the rest."""
    sweep, logger, callback, trial, calls = _logged_trial(tmp_path, send_interval_s=3600)
    for epoch in (1, 2, 3, 2):  # epoch 2 reported again (a restored trial): logged once, its first value
        callback.on_trial_result(0, [], trial, _result(epoch))
        callback.on_step_end(0, [])
    first = [c for c in calls if c.get("metrics")]
    assert len(first) == 1 and {m.step for m in first[0]["metrics"]} == {1}, "the first epoch goes at once"
    host_tags = [c for c in calls if c.get("tags")]
    assert len(host_tags) == 1, "the node's ip and hostname are tagged once, not with every epoch"
    callback.on_trial_complete(0, [], trial)
    sent = [c for c in calls if c.get("metrics")]
    assert len(sent) == 2 and sorted({m.step for m in sent[1]["metrics"]}) == [2, 3]
    (log,) = logger.trials.values()
    history = sweep.client.get_metric_history(log.run_id, "val_acc")
    assert sorted((m.step, m.value) for m in history) == [(1, 0.1), (2, 0.2), (3, 0.3)]
    assert logger.epochs_logged == 3 and logger.waiting() == 0


def test_epochs_whose_interval_passed_are_sent_at_the_next_step(tmp_path):
    sweep, logger, callback, trial, calls = _logged_trial(tmp_path, send_interval_s=0.0)
    for epoch in (1, 2, 3):
        callback.on_trial_result(0, [], trial, _result(epoch))
    assert [sorted({m.step for m in c["metrics"]}) for c in calls if c.get("metrics")] == [[1], [2], [3]]
    assert logger.waiting() == 0


def _open_and_create(args):
    """In a fresh process: wait for the others, then open the store and make an experiment of its own."""
    uri, barrier, name = args
    from raysweep.tracking.mlflow_store import open_client

    barrier.wait(timeout=120)
    return open_client(uri).create_experiment(name)


@pytest.mark.process
def test_processes_opening_one_fresh_sqlite_store_at_once_all_get_it(tmp_path):
    """Two sweeps started together on a new mlflow.db race on MLflow's schema migration ("table ... already
    exists"); the loser once ran its whole sweep untracked. Four processes open it at the same moment."""
    import multiprocessing as mp

    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(4)
        with ctx.Pool(4) as pool:
            ids = pool.map_async(_open_and_create, [(uri, barrier, f"e{i}") for i in range(4)]).get(timeout=300)
    assert len(set(ids)) == 4
    assert {e.name for e in MlflowClient(uri).search_experiments()} >= {"e0", "e1", "e2", "e3"}


@pytest.mark.parametrize("scheme", ["sqlite", "sqlite+pysqlite"])
def test_opening_a_sqlite_store_waits_for_the_process_creating_it(tmp_path, scheme):
    """The creator holds an exclusive flock on the database file while MLflow migrates the schema; an opener
    waits for it, bounded, and SQLite's own locking is not in the way (a named driver is the same store)."""
    import fcntl

    from raysweep.tracking.mlflow_store import open_client

    db = tmp_path / "mlflow.db"
    uri = f"{scheme}:///{db}"
    with open(db, "ab") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(TimeoutError, match="stayed locked"):
            open_client(uri, wait_s=0.3)
        fcntl.flock(held, fcntl.LOCK_UN)
    client = open_client(uri, wait_s=0.3)
    assert client.create_experiment("after") and client.get_experiment_by_name("after")
