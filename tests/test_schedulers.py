"""Schedulers by name: each entry's options, rungs and plan text (unit), and HyperBand and median stopping
running a real sweep through the CLI (slow): every trial logged once, stopped ones tagged as such."""

import pytest
from mlflow import MlflowClient

from raysweep.search.schedulers import SCHEDULERS, resolve_scheduler
from trainables.params import ConfigError

from _cli import run_spec


def test_every_scheduler_builds_a_ray_scheduler_on_the_reported_epoch():
    for name in SCHEDULERS.names():
        scheduler = resolve_scheduler({"name": name}, 8)
        built = scheduler.build("val_balanced_acc", "max", 8)
        assert type(built).__module__.startswith("ray.tune.schedulers")
        if scheduler.stops_early:
            assert built._time_attr == "epoch"


def test_rungs_and_stops_of_each_scheduler():
    assert resolve_scheduler({"name": "fifo"}, 20).rungs(20) == []
    asha = resolve_scheduler({"name": "asha", "grace_period": 5, "reduction_factor": 2}, 20)
    assert asha.rungs(20) == [5, 10] and asha.stops(20) == [(5, 0.5), (10, 0.5)]
    hyperband = resolve_scheduler({"name": "hyperband", "reduction_factor": 3}, 27)
    assert hyperband.rungs(27) == [1, 3, 9] and hyperband.first_stop(27) == 1
    median = resolve_scheduler({"name": "median", "grace_period": 2}, 6)
    assert median.rungs(6) == [2, 3, 4, 5] and median.stops(6) == [(2, 0.5)]
    assert "ASHA rungs at epochs [5, 10] (max 20)" in asha.describe(20)
    assert "milestones at epochs [1, 3, 9]" in hyperband.describe(27)


def test_options_belong_to_their_scheduler():
    with pytest.raises(ConfigError) as err:
        resolve_scheduler({"name": "hyperband", "grace_period": 2}, 8)
    assert err.value.path == "scheduler.grace_period" and "reduction_factor" in str(err.value)
    with pytest.raises(ConfigError) as err:
        resolve_scheduler({"name": "median", "grace_period": 9}, 8)
    assert err.value.path == "scheduler.grace_period"


SPEC = {
    "dataset": {"name": "gaussian", "imbalance": 10, "samples_per_class": 80},
    "model": {"name": "mlp", "width": 16},
    "train": {"epochs": 4, "batch_size": 64},
    "methods": {"focal": {"gamma": [0.0, 0.25, 0.5, 1.0, 2.0, 3.0]}},
    "seeds": 1,
    "resources": {"cpu": 0.5},
}


@pytest.mark.parametrize("name", SCHEDULERS.names())
def test_a_grid_under_a_synchronous_scheduler_creates_every_trial_at_once(name, tmp_path):
    """Tune's generator, capped at the slots, creates a trial only when another ends (a paused one still
    counts), so a HyperBand bracket would fill one trial at a time and stop nothing. Under a synchronous
    scheduler the grid has no cap in Tune and whole-core resources hold it to the slots instead."""
    import yaml
    from ray.tune.callback import Callback

    import raysweep
    from raysweep.execution.preflight import TrialResources
    from raysweep.execution.tuner import build_tuner
    from raysweep.planning.plan import phases, plan
    from raysweep.spec.resources import whole_cores

    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({**SPEC, "name": "sync", "scheduler": {"name": name}}))
    spec = raysweep.load_spec(tmp_path / "spec.yaml")
    tuner = build_tuner(spec, phases(spec, "s1")[0], plan(spec), tmp_path, TrialResources({"cpu": 1.0}, None, 2),
                        Callback())
    cap = tuner._local_tuner._tune_config.max_concurrent_trials
    assert cap == (None if SCHEDULERS.get(name).synchronous else 2)
    assert SCHEDULERS.get("hyperband").synchronous and not SCHEDULERS.get("asha").synchronous
    assert whole_cores({"cpu": 0.5}) == {"cpu": 1.0} and whole_cores({"cpu": 3.0}) == {"cpu": 3.0}
    assert whole_cores({"cpu": 0.5, "gpu": 0.25}) == {"cpu": 0.5, "gpu": 0.25}


def _children(root, name):
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=100)
    return client, [r for r in runs if r.data.tags.get("raysweep.role") == "trial"]


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("scheduler", [{"name": "hyperband", "reduction_factor": 2},
                                       {"name": "median", "grace_period": 1, "min_samples_required": 2}],
                         ids=["hyperband", "median"])
def test_a_sweep_runs_under_the_scheduler(scheduler, tmp_path):
    name = f"sched-{scheduler['name']}"
    out = run_spec(tmp_path, {**SPEC, "name": name, "scheduler": scheduler}).stdout
    assert "6 trials, 0 failed" in out
    client, children = _children(tmp_path, name)
    assert len(children) == 6 and len({c.data.tags["raysweep.trial_key"] for c in children}) == 6
    stopped = 0
    for child in children:
        epochs_run = int(child.data.tags["raysweep.epochs_run"])
        steps = sorted(m.step for m in client.get_metric_history(child.info.run_id, "val_balanced_acc"))
        assert steps == list(range(1, epochs_run + 1)), "each epoch once, even after HyperBand pauses a trial"
        reason = child.data.tags["raysweep.stop_reason"]
        assert reason == ("completed" if epochs_run == 4 else f"stopped by the scheduler at epoch {epochs_run}")
        stopped += epochs_run < 4
    if scheduler["name"] == "hyperband":
        # Ray fills its brackets in order, the one without early stopping first: 3 trials run 4 epochs; the
        # next bracket's 3 trials meet the milestone at epoch 2 (paused until all three are there), 2 go on.
        assert stopped == 1
