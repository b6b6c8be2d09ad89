"""Trial groups through the CLI, as a user runs them: a grouped sweep (seeds or configurations, loop or fused
engine) logs to MLflow what the ungrouped sweep logs; ASHA with `group: seeds` stops whole configurations;
a member whose loss turns non-finite leaves its group while the others go on; SIGKILL of the driver, then
`raysweep resume`, finishes every member once; Optuna trains each draw's seeds in one group."""

import json
import statistics
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient

from analysis import mlflow_tags as tags
from raysweep.reporting.report import sweep_table

from _cli import raysweep_cmd
from _faults import GAUSSIAN, MLP, epoch_log, finished_and_midway, last_epochs, setup_workdir
from _procs import wait_for

TIMING = {"epoch_seconds"}  # the only metric that differs between two runs of the same trial
# Tags that name a sweep's own Ray trials, nodes and parent run: everything else must be equal.
PER_SWEEP = {tags.GROUP, tags.RAY_TRIAL_ID, tags.NODE_ID, tags.NODE_IDS, tags.PARENT}
# 8 trials: 4 configurations (two methods x two learning rates) x 2 seeds, every one sharing the setup.
COMPARE = {"name": "groups", "dataset": GAUSSIAN, "model": MLP, "train": {"epochs": 3, "batch_size": 64},
           "methods": {"ce": {}, "focal": {"gamma": 2.0}}, "axes": {"train.lr": [0.05, 0.2]}, "seeds": 2,
           "resources": {"cpu": 0.5, "max_concurrent": 2},  # 2 slots on any machine: groups do not depend on it
           "table": {"rows": "config", "cols": "train.lr", "metric": "test_acc"}}


def run(root: Path, spec: dict, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """`raysweep ARGS` (default: run the spec) in ``root`` with the fault plugin importable."""
    env = setup_workdir(root, spec)
    proc = subprocess.run(raysweep_cmd(*(args or ("run", "spec.yaml"))), cwd=root, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def runs(root: Path, experiment: str, role: str = tags.TRIAL):
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    found = client.search_runs([exp.experiment_id], tags.role_filter(role), max_results=1000) if exp else []
    return client, found


def by_key(found) -> dict:
    return {r.data.tags[tags.TRIAL_KEY]: r for r in found}


def histories(client, run) -> dict[str, list[tuple[int, float]]]:
    """Every metric's per-epoch history (step, value), the timing metric left out."""
    return {name: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, name))
            for name in run.data.metrics if name not in TIMING}


def steps(client, run, metric: str = "val_balanced_acc") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run.info.run_id, metric))


def summary_lines(out: str) -> list[str]:
    """The seed-averaged table at the end of a run's output."""
    lines = out.splitlines()
    start = max(i for i, ln in enumerate(lines) if ln.startswith("| config |"))
    return [ln for ln in lines[start:] if ln.startswith("| ")]


def table_cells(root: Path, experiment: str) -> dict:
    client, (parent,) = runs(root, experiment, tags.SWEEP)
    table = sweep_table(f"sqlite:///{root / 'mlflow.db'}", parent_run_id=parent.info.run_id, rows="config",
                        cols="train.lr", metric="test_acc")
    return {key: (cell.mean, cell.std, cell.n) for key, cell in table.cells.items()}


def groups_of(found) -> dict[str, list]:
    """Group key -> its members' runs (by the raysweep.group tag)."""
    out: dict[str, list] = {}
    for r in found:
        out.setdefault(r.data.tags[tags.GROUP], []).append(r)
    return out


# ---- a grouped sweep logs what the ungrouped one logs ------------------------------------------------------
@pytest.fixture(scope="module")
def ungrouped(tmp_path_factory):
    root = tmp_path_factory.mktemp("ungrouped")
    return root, run(root, COMPARE).stdout


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize(("group", "engine", "shape"), [
    ("seeds", "loop", "8 trials in 4 groups of 2 (by seeds)"),
    ("seeds", "fused", "8 trials in 4 groups of 2 (by seeds)"),
    ("configs", "loop", "8 trials in 3 groups of 2 to 3 (by configs)"),
    ("configs", "fused", "8 trials in 3 groups of 2 to 3 (by configs)"),
])
def test_a_grouped_sweep_logs_the_runs_tags_histories_and_table_of_the_ungrouped_one(
        ungrouped, tmp_path, group, engine, shape):
    base_root, base_out = ungrouped
    spec = {**COMPARE, "execution": {"group": group, "engine": engine, "max_members": 3}}
    assert shape in run(tmp_path, spec, "plan", "spec.yaml").stdout
    out = run(tmp_path, spec).stdout
    assert "8 trials, 0 failed" in out, "the summary counts members, not Ray trials"

    base_client, base = runs(base_root, "groups")
    client, grouped = runs(tmp_path, "groups")
    base, grouped = by_key(base), by_key(grouped)
    assert len(grouped) == 8 and grouped.keys() == base.keys(), "one child run per member, the same trials"
    exact = engine == "loop"
    for key, want in base.items():
        got = grouped[key]
        assert tags.GROUP not in want.data.tags and got.data.tags[tags.GROUP]
        assert {k: v for k, v in got.data.tags.items() if k not in PER_SWEEP} == \
            {k: v for k, v in want.data.tags.items() if k not in PER_SWEEP}, key
        assert got.data.params == want.data.params and got.info.status == want.info.status == "FINISHED"
        mine, theirs = histories(client, got), histories(base_client, want)
        assert mine.keys() == theirs.keys() and all(len(h) == 3 for h in mine.values()), key
        for name, history in theirs.items():
            assert [s for s, _ in mine[name]] == [s for s, _ in history] == [1, 2, 3], (key, name)
            values = [v for _, v in mine[name]]
            expected = [v for _, v in history]
            assert values == expected if exact else values == pytest.approx(expected, rel=1e-5, abs=1e-5), \
                (key, name)
    members = groups_of(grouped.values())
    assert sorted(len(m) for m in members.values()) == ([2, 2, 2, 2] if group == "seeds" else [2, 3, 3])
    for key, group_runs in members.items():
        assert {r.data.tags[tags.RAY_TRIAL_ID] for r in group_runs} == {group_runs[0].data.tags[tags.RAY_TRIAL_ID]}
        assert key.split("+")[0] in {r.data.tags[tags.TRIAL_KEY] for r in group_runs}, "named after its first member"
        if group == "seeds":
            assert len({r.data.tags[tags.CONFIG_ID] for r in group_runs}) == 1
    if exact:
        assert summary_lines(out) == summary_lines(base_out)
    else:
        cells, base_cells = table_cells(tmp_path, "groups"), table_cells(base_root, "groups")
        assert cells.keys() == base_cells.keys() and len(cells) == 4
        for cell, (mean, std, n) in base_cells.items():
            assert cells[cell] == (pytest.approx(mean, rel=1e-5, abs=1e-5), pytest.approx(std, rel=1e-5, abs=1e-5), n)


# ---- ASHA with group: seeds stops whole configurations -----------------------------------------------------
@pytest.mark.slow
@pytest.mark.ray
def test_asha_with_seed_groups_stops_whole_configurations_on_the_seed_mean(tmp_path):
    # Two configurations that learn (lr 0.5, 0.2) planned before two that barely move (lr 1e-4, 2e-4). At most
    # two groups run at once, so the poor ones reach ASHA's first rung (epoch 1) only after a good one has
    # recorded its seed mean there, far above theirs: they are stopped, both seeds together.
    spec = {"name": "asha", "dataset": {**GAUSSIAN, "samples_per_class": 300}, "model": MLP,
            "train": {"epochs": 4, "batch_size": 64}, "methods": {"ce": {}},
            "axes": {"train.lr": [0.5, 0.2, 1e-4, 2e-4]}, "seeds": 2,
            "search": {"metric": "val_balanced_acc"}, "scheduler": {"name": "asha", "grace_period": 1,
                                                                     "reduction_factor": 2},
            "resources": {"cpu": 0.5, "max_concurrent": 2}, "execution": {"group": "seeds", "max_members": 4}}
    assert "8 trials in 4 groups of 2 (by seeds)" in run(tmp_path, spec, "plan", "spec.yaml").stdout
    out = run(tmp_path, spec).stdout
    assert "8 trials, 0 failed" in out
    client, found = runs(tmp_path, "asha")
    assert len(found) == 8
    members = groups_of(found)
    assert len(members) == 4
    outcome = {}
    for group_runs in members.values():
        assert len({r.data.tags[tags.CONFIG_ID] for r in group_runs}) == 1
        assert sorted(r.data.tags[tags.SEED] for r in group_runs) == ["0", "1"]
        ends = {(r.data.tags[tags.EPOCHS_RUN], r.data.tags[tags.STOP_REASON]) for r in group_runs}
        assert len(ends) == 1, f"the members of one group ended differently: {ends}"
        (epochs_run, reason), = ends
        for r in group_runs:
            assert steps(client, r) == list(range(1, int(epochs_run) + 1)) and r.info.status == "FINISHED"
        outcome[float(group_runs[0].data.params["train.lr"])] = (int(epochs_run), reason)
    assert outcome[1e-4] == outcome[2e-4] == (1, "stopped by the scheduler at epoch 1"), outcome
    assert (4, "completed") in outcome.values(), outcome


# ---- a diverging member leaves, the others go on -----------------------------------------------------------
@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("engine", ["loop", "fused"])
def test_a_member_going_non_finite_leaves_its_group_and_the_others_go_on(tmp_path, engine):
    spec = {"name": "nan", "plugins": ["fault_plugin"], "dataset": GAUSSIAN, "model": MLP,
            "train": {"epochs": 3, "batch_size": 64}, "methods": {"nan_at": {"at": [0, 2]}, "ce": {}}, "seeds": 1,
            "resources": {"cpu": 1, "max_concurrent": 1}, "execution": {"group": "configs", "engine": engine}}
    out = run(tmp_path, spec).stdout
    assert "3 trials, 0 failed, 1 stopped on a non-finite loss" in out
    client, found = runs(tmp_path, "nan")
    assert len(found) == 3 and len(groups_of(found)) == 1, "the three configurations trained in one group"
    by_label = {r.data.tags[tags.LABEL]: r for r in found}
    diverged = by_label["nan_at at=2"]
    assert diverged.data.tags[tags.STOP_REASON] == "non-finite loss at epoch 2"
    assert diverged.data.tags[tags.EPOCHS_RUN] == "2" and diverged.info.status == "FINISHED"
    assert steps(client, diverged) == [1, 2] and diverged.data.metrics["non_finite_loss"] == 1.0
    for label in ("nan_at at=0", "ce"):
        r = by_label[label]
        assert r.data.tags[tags.STOP_REASON] == "completed" and r.data.tags[tags.EPOCHS_RUN] == "3"
        assert steps(client, r) == [1, 2, 3] and steps(client, r, "train_loss") == [1, 2, 3]
        assert "non_finite_loss" not in r.data.metrics
        assert all(m.value < 10 for m in client.get_metric_history(r.info.run_id, "train_loss")), label


# ---- SIGKILL of the driver, then raysweep resume ------------------------------------------------------------
EPOCHS = 4
CRASH = {"name": "crash", "plugins": ["fault_plugin"], "dataset": GAUSSIAN, "model": MLP,
         "train": {"epochs": EPOCHS, "batch_size": 64}, "methods": {"slow": {"tag": [1, 2, 3, 4, 5, 6], "sleep": 0.8}},
         "seeds": 1, "resources": {"cpu": 1, "max_concurrent": 2}, "execution": {"group": "configs", "max_members": 2}}


@pytest.mark.slow
@pytest.mark.ray
def test_resume_after_the_driver_is_killed_finishes_every_member_once(tmp_path, procs, ray_tmp):
    env = setup_workdir(tmp_path, CRASH)
    log = tmp_path / "run.log"
    driver = procs.start(raysweep_cmd("run", "spec.yaml"), env, tmp_path, log)

    done = wait_for(lambda: finished_and_midway(tmp_path, "crash", lambda: runs(tmp_path, "crash")[1], EPOCHS),
                    "a finished group and a half-way one", 300, driver, log)
    procs.kill_group(driver)
    procs.kill_leftovers()  # Ray's agents outlive a killed driver
    killed_at = len(epoch_log(tmp_path))
    midway = [tag for tag, last in last_epochs(epoch_log(tmp_path)).items() if 2 <= last < EPOCHS]
    assert midway
    sweep_dir = next((tmp_path / "raysweep_results").glob("crash-*"))
    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    assert manifest["status"] == "running"

    resumed = subprocess.run(raysweep_cmd("resume", str(sweep_dir)), cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "6 trials, 0 failed" in resumed.stdout
    client, children = runs(tmp_path, "crash")
    assert sorted(c.data.params["method.tag"] for c in children) == [str(t) for t in range(1, 7)], "each member once"
    assert sorted(len(m) for m in groups_of(children).values()) == [2, 2, 2]
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags[tags.STOP_REASON] == "completed"
        assert child.data.tags[tags.EPOCHS_RUN] == str(EPOCHS)
        for metric in ("val_balanced_acc", "epoch", "train_loss"):
            assert steps(client, child, metric) == list(range(1, EPOCHS + 1)), "epochs 1..E, no duplicates"
    after = epoch_log(tmp_path)[killed_at:]
    for run_ in done:  # finished before the kill: not trained again
        assert not [e for tag, e in after if tag == run_.data.params["method.tag"]]
    for tag in midway:  # continued from its group's checkpoint: the epoch counter goes on
        again = [e for t, e in after if t == tag]
        assert again and again[0] > 1 and again == list(range(again[0], EPOCHS + 1)), (tag, again)


# ---- Optuna draws a configuration; its seeds train in one group ---------------------------------------------
@pytest.mark.slow
@pytest.mark.ray
def test_optuna_trains_each_draws_seeds_in_one_group_and_searches_on_their_mean(tmp_path):
    spec = {"name": "optuna", "dataset": GAUSSIAN, "model": MLP, "train": {"epochs": 2, "batch_size": 64},
            "methods": {"focal": {}}, "seeds": 2, "resources": {"cpu": 1},
            "search": {"mode": "optuna", "num_samples": 3, "metric": "val_balanced_acc"},
            "execution": {"group": "seeds"}}
    planned = run(tmp_path, spec, "plan", "spec.yaml").stdout
    assert "each draw trains its 2 seeds in one group; the search metric is their mean" in planned
    assert "6 trials, 0 failed" in run(tmp_path, spec).stdout
    client, found = runs(tmp_path, "optuna")
    members = groups_of(found)
    assert len(found) == 6 and len(members) == 3
    experiment = next((tmp_path / "raysweep_results").glob("optuna-*"))
    for key, group_runs in members.items():
        keys = sorted(r.data.tags[tags.TRIAL_KEY] for r in group_runs)
        assert sorted(r.data.tags[tags.SEED] for r in group_runs) == ["0", "1"]
        assert len({r.data.tags[tags.CONFIG_ID] for r in group_runs}) == 1 and len({k[-3:] for k in keys}) == 1, \
            "one Optuna draw (its number ends the trial key) per group"
        assert len({r.data.params["method.gamma"] for r in group_runs}) == 1
        # What Tune (and so Optuna) saw for the group is the mean of its members' metric.
        last = json.loads((experiment / key / "result.json").read_text().splitlines()[-1])
        assert last["val_balanced_acc"] == pytest.approx(
            statistics.mean(r.data.metrics["val_balanced_acc"] for r in group_runs), abs=1e-9)
        assert set(last["members"]) == set(keys)
    assert len({rs[0].data.params["method.gamma"] for rs in members.values()}) == 3, "three distinct draws"


@pytest.mark.process
def test_plan_says_asha_groups_only_seeds(tmp_path):
    spec = {**COMPARE, "scheduler": {"name": "asha", "grace_period": 1}, "execution": {"group": "configs"}}
    out = run(tmp_path, spec, "plan", "spec.yaml").stdout
    assert "phase 1 (asha) groups only seeds" in out and "8 trials in 4 groups of 2 (by seeds)" in out
