"""`raysweep sync` with gaps in Ray's result.json (issue 15, item 5): epochs come back from the checkpoints,
and what cannot come back is reported per trial. Synthetic trial folders; a real sqlite MLflow store."""

import json
import time

import pytest
from mlflow import MlflowClient

from raysweep.planning.plan import plan
from raysweep.spec.schema import validate_spec
from raysweep.tracking.manifest import Manifest, claim_sweep_dir
from raysweep.tracking.sync import checkpoint_results, sync_sweep, trial_history
from trainables.checkpoint import STATE_FILE, save_state
from trainables.planned import LAST_METRICS, Envelope

SPEC = {"name": "gaps", "dataset": {"name": "gaussian", "samples_per_class": 100}, "model": "mlp",
        "train": {"epochs": 10}, "methods": {"ce": {}, "focal": {"gamma": [1.0]}}, "seeds": 1}


def metrics(epoch: int) -> dict:
    return {"epoch": float(epoch), "train_loss": 1.0 / epoch, "val_balanced_acc": 0.5 + epoch / 100,
            "test_acc": 0.4 + epoch / 100, "lr": 0.1}


def write_trial(folder, member, result_epochs, checkpoint_epochs, trial_id="abc_00000", truncated=()):
    """A trial folder as Ray and trainables.tune leave it: params.json (the envelope of one planned trial),
    result.json, checkpoint_*/state.pt."""
    folder.mkdir(parents=True)
    params = Envelope.of([member], experiment_dir=str(folder.parent)).to_config() if member else {}
    (folder / "params.json").write_text(json.dumps(params))
    now = int(time.time())
    lines = [json.dumps({**metrics(e), "trial_id": trial_id, "timestamp": now, "training_iteration": e})
             for e in result_epochs]
    (folder / "result.json").write_text("\n".join(lines) + ("\n" if lines else ""))
    for i, epoch in enumerate(checkpoint_epochs):
        directory = folder / f"checkpoint_{i:06d}"
        directory.mkdir()
        if epoch in truncated:
            (directory / STATE_FILE).write_bytes(b"PK\x03\x04 cut short")
        else:
            save_state({"epoch": epoch, "model": {}, LAST_METRICS: metrics(epoch)}, directory)


def test_checkpoints_give_back_each_epochs_metrics(tmp_path):
    write_trial(tmp_path / "t", None, [], [1, 2, 3], truncated=(2,))
    found = checkpoint_results(tmp_path / "t")
    assert sorted(found) == [1, 3]  # the truncated one is skipped
    assert found[3]["val_balanced_acc"] == metrics(3)["val_balanced_acc"] and "timestamp" in found[3]


def test_a_gap_in_result_json_is_filled_from_checkpoints(tmp_path):
    write_trial(tmp_path / "t", None, [1, 2, 3, 4, 7, 8, 9, 10], range(1, 11))
    history = trial_history(tmp_path / "t", planned_epochs=10)
    assert [int(r["epoch"]) for r in history.results] == list(range(1, 11))
    assert history.recovered == [5, 6] and history.missing == []
    assert history.results[4]["test_acc"] == metrics(5)["test_acc"]


def test_trailing_epochs_lost_with_the_driver_come_back(tmp_path):
    write_trial(tmp_path / "t", None, [1, 2], [1, 2, 3, 4])
    history = trial_history(tmp_path / "t", planned_epochs=10)
    assert history.recovered == [3, 4] and history.missing == []


def test_an_epoch_in_neither_place_is_missing(tmp_path):
    write_trial(tmp_path / "t", None, [1, 2, 3, 4, 7, 8, 9, 10], [1, 2, 3, 4, 5, 7, 8, 9, 10])  # epoch 6 pruned
    history = trial_history(tmp_path / "t", planned_epochs=10)
    assert history.recovered == [5] and history.missing == [6]


def test_a_complete_result_json_does_not_read_checkpoints(tmp_path):
    write_trial(tmp_path / "t", None, range(1, 11), [11])  # were it read, epoch 11 would come back
    assert trial_history(tmp_path / "t", planned_epochs=10).recovered == []
    assert trial_history(tmp_path / "t", planned_epochs=None).recovered == [11]


def test_a_result_reported_again_after_a_restore_counts_once(tmp_path):
    write_trial(tmp_path / "t", None, [1, 2, 3, 3], [])
    assert [int(r["epoch"]) for r in trial_history(tmp_path / "t", planned_epochs=3).results] == [1, 2, 3]


@pytest.fixture
def gappy_sweep(tmp_path):
    """A finished two-trial sweep whose first trial's result.json lost epochs 5 and 6 and whose epoch-6
    checkpoint was pruned; the second trial is complete."""
    spec = validate_spec(SPEC)
    trials = plan(spec)
    sweep_id, folder = claim_sweep_dir(tmp_path / "results", "gaps")
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    manifest = Manifest.new(folder, sweep_id=sweep_id, spec=spec.written, tracking_uri=uri, experiment="gaps",
                            parent_tags={"raysweep.spec_name": "gaps"})
    manifest.save()
    manifest.start_phase("search", sweep_id, [t.key for t in trials])
    manifest.finish_phase("search", 2, 0, 0)
    manifest.update(status="finished")
    write_trial(folder / trials[0].key, trials[0], [1, 2, 3, 4, 7, 8, 9, 10],
                [1, 2, 3, 4, 5, 7, 8, 9, 10], trial_id="t_00000")
    write_trial(folder / trials[1].key, trials[1], range(1, 11), [], trial_id="t_00001")
    return manifest, trials, uri


def test_sync_recovers_what_it_can_and_reports_the_rest(gappy_sweep):
    manifest, trials, uri = gappy_sweep
    report = sync_sweep(manifest)
    assert report.trials == 2 and report.runs_created == 2 and report.waiting == 0
    assert report.epochs_recovered == 1
    assert report.missing == {trials[0].key: [6]}
    assert not report.complete

    client = MlflowClient(uri)
    runs = {r.data.tags["raysweep.trial_key"]: r for r in client.search_runs(
        [client.get_experiment_by_name("gaps").experiment_id], "tags.`raysweep.role` = 'trial'")}
    steps = sorted(m.step for m in client.get_metric_history(runs[trials[0].key].info.run_id, "val_balanced_acc"))
    assert steps == [1, 2, 3, 4, 5, 7, 8, 9, 10]
    recovered = {m.step: m.value for m in client.get_metric_history(runs[trials[0].key].info.run_id, "test_acc")}
    assert recovered[5] == pytest.approx(metrics(5)["test_acc"])
    assert len(client.get_metric_history(runs[trials[1].key].info.run_id, "epoch")) == 10

    again = sync_sweep(manifest)  # idempotent: nothing new, the same gap still reported
    assert again.runs_created == 0 and again.epochs_logged == 0 and again.missing == report.missing


def test_a_sweep_without_gaps_syncs_complete(gappy_sweep):
    manifest, trials, _ = gappy_sweep
    save_state({"epoch": 6, "model": {}, LAST_METRICS: metrics(6)}, _checkpoint(manifest, trials[0].key, 99))
    report = sync_sweep(manifest)
    assert report.epochs_recovered == 2 and report.missing == {} and report.complete


def _checkpoint(manifest, key, index):
    directory = manifest.sweep_dir / key / f"checkpoint_{index:06d}"
    directory.mkdir()
    return directory


def test_a_group_recovers_its_rounds_and_counts_gaps_per_member(tmp_path):
    """A group of two seeds: round 3 is missing from result.json but in a checkpoint; seed 0 diverged at
    epoch 2 (its later rounds repeat its last metrics), so only seed 1 ran to epoch 4."""
    from trainables.tune import group_result

    spec = validate_spec({**SPEC, "methods": {"ce": {}}, "seeds": 2, "train": {"epochs": 4}})
    members = plan(spec)
    keys = [m.key for m in members]
    sweep_id, folder = claim_sweep_dir(tmp_path / "results", "gaps")
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    manifest = Manifest.new(folder, sweep_id=sweep_id, spec=spec.written, tracking_uri=uri, experiment="gaps",
                            parent_tags={})
    manifest.save()
    manifest.start_phase("search", sweep_id, keys)
    manifest.finish_phase("search", 2, 0, 0)
    manifest.update(status="finished")
    env = Envelope.of(members, experiment_dir=str(folder))
    trial = folder / env.key
    trial.mkdir()
    (trial / "params.json").write_text(json.dumps(env.to_config()))
    rounds = {}
    for epoch in range(1, 5):
        latest = {keys[0]: {**metrics(min(epoch, 2)), **({"non_finite_loss": 1.0} if epoch >= 2 else {})},
                  keys[1]: metrics(epoch)}
        rounds[epoch] = group_result(members, latest)
    lines = [json.dumps({**rounds[e], "trial_id": "g_00000", "timestamp": 1, "training_iteration": e})
             for e in (1, 2, 4)]
    (trial / "result.json").write_text("\n".join(lines) + "\n")
    directory = trial / "checkpoint_000002"
    directory.mkdir()
    save_state({"members": [{"epoch": 2}, {"epoch": 3}], "ended": [True, False], LAST_METRICS: rounds[3]}, directory)

    report = sync_sweep(manifest)
    assert report.trials == 2 and report.epochs_recovered == 1 and report.missing == {}
    client = MlflowClient(uri)
    runs = {r.data.tags["raysweep.trial_key"]: r.info.run_id for r in client.search_runs(
        [client.get_experiment_by_name("gaps").experiment_id], "tags.`raysweep.role` = 'trial'")}
    assert sorted(m.step for m in client.get_metric_history(runs[keys[0]], "test_acc")) == [1, 2]
    assert sorted(m.step for m in client.get_metric_history(runs[keys[1]], "test_acc")) == [1, 2, 3, 4]

    (directory / STATE_FILE).unlink()  # round 3 is now gone from the storage, but the store has it
    assert sync_sweep(manifest).missing == {}
    # into a fresh store it is gone for good, for the member that got there only
    assert sync_sweep(manifest, f"sqlite:///{tmp_path / 'other.db'}").missing == {keys[1]: [3]}
