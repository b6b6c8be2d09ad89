"""Faults provoked for real through the CLI: a trial that raises once, a loss that turns NaN, the driver
killed with SIGKILL mid-sweep (then `raysweep resume`), and the MLflow server stopped mid-sweep (then
`raysweep sync`). Each asserts the promise: every planned trial exactly once, epochs 1..E without
duplicates, the recorded reasons."""

import json
import re
import signal
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient

from _cli import raysweep_cmd
from _faults import GAUSSIAN, MLP, epoch_log, finished_and_midway, last_epochs, setup_workdir
from _procs import free_port, start_mlflow_server, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.ray]

EPOCHS = 4


def trial_runs(uri: str, experiment: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000) if exp else []
    return client, [r for r in runs if r.data.tags.get("raysweep.role") == "sweep"], \
        [r for r in runs if r.data.tags.get("raysweep.role") == "trial"]


def steps(client, run, metric="val_balanced_acc"):
    return [m.step for m in sorted(client.get_metric_history(run.info.run_id, metric), key=lambda m: m.step)]


def planned(root: Path, env: dict) -> dict[str, str]:
    """trial key -> label, from `raysweep plan` (a subprocess: the plugin stays out of this process)."""
    proc = subprocess.run(raysweep_cmd("plan", "spec.yaml"), cwd=root, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [ln.split("  ") for ln in proc.stdout.splitlines() if ln.startswith("  ") and "seed=" in ln]
    return {r[1].strip(): r[2].strip() for r in rows}


def test_a_failing_trial_is_retried_from_its_checkpoint_and_a_nan_loss_stops_only_its_trial(tmp_path, ray_tmp):
    spec = {"name": "faults", "plugins": ["fault_plugin"], "dataset": GAUSSIAN, "model": MLP,
            "train": {"epochs": 3, "batch_size": 64}, "methods": {"nan_at": {"at": [0, 2]}, "fail_once": {"at": 2}},
            "seeds": 1, "resources": {"cpu": 1}, "failure": {"max_failures": 1}}
    env = setup_workdir(tmp_path, spec)
    proc = subprocess.run(raysweep_cmd("run", "spec.yaml"), cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "3 trials, 0 failed, 1 stopped on a non-finite loss" in proc.stdout
    # fail_once raised in epoch 2, and its retry started again at epoch 2 (from the epoch-1 checkpoint).
    assert [e for tag, e in epoch_log(tmp_path) if tag == "fail_once"] == [1, 2, 2, 3]
    client, parents, children = trial_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "faults")
    assert len(parents) == 1 and len(children) == 3
    by_label = {c.data.tags["raysweep.label"]: c for c in children}
    nan_run = by_label["nan_at at=2"]
    assert nan_run.data.tags["raysweep.stop_reason"] == "non-finite loss at epoch 2"
    assert nan_run.info.status == "FINISHED" and nan_run.data.tags["raysweep.epochs_run"] == "2"
    assert steps(client, nan_run) == [1, 2], "the search metric is reported at the diverging epoch too"
    assert nan_run.data.metrics["non_finite_loss"] == 1.0
    for label in ("nan_at at=0", "fail_once"):
        run = by_label[label]
        assert run.data.tags["raysweep.stop_reason"] == "completed" and steps(client, run) == [1, 2, 3]


RESUME_SPEC = {"name": "crash", "plugins": ["fault_plugin"], "dataset": GAUSSIAN, "model": MLP,
               "train": {"epochs": EPOCHS, "batch_size": 64},
               "methods": {"slow": {"tag": [1, 2, 3, 4, 5], "sleep": 1.5}},
               "seeds": 1, "resources": {"cpu": 1}, "table": {"rows": "config", "metric": "test_acc"}}


def test_resume_after_the_driver_is_killed_finishes_exactly_the_planned_trials(tmp_path, procs, ray_tmp):
    env = setup_workdir(tmp_path, RESUME_SPEC)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    log = tmp_path / "run.log"
    driver = procs.start(raysweep_cmd("run", "spec.yaml"), env, tmp_path, log)

    done = wait_for(lambda: finished_and_midway(tmp_path, "crash", lambda: trial_runs(uri, "crash")[2], EPOCHS),
                    "a finished and a half-way trial", 240, driver, log)
    procs.kill_group(driver)
    procs.kill_leftovers()  # Ray's agents outlive a killed driver
    killed_at = len(epoch_log(tmp_path))
    before_kill = last_epochs(epoch_log(tmp_path)[:killed_at])
    midway = [tag for tag, last in before_kill.items() if 2 <= last < EPOCHS]
    assert midway, before_kill
    sweep_dir = next((tmp_path / "raysweep_results").glob("crash-*"))
    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    assert manifest["status"] == "running" and manifest["phases"]["search"]["status"] == "running"

    resumed = subprocess.run(raysweep_cmd("resume", str(sweep_dir)), cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    plan = planned(tmp_path, env)
    assert "5 trials, 0 failed" in resumed.stdout

    client, parents, children = trial_runs(uri, "crash")
    assert len(parents) == 1 and parents[0].info.run_id == manifest["parent_run_id"]
    assert sorted(c.data.tags["raysweep.trial_key"] for c in children) == sorted(plan), "each trial once"
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags["raysweep.stop_reason"] == "completed"
        assert steps(client, child) == list(range(1, EPOCHS + 1)), "epochs 1..E, no duplicates"
        assert steps(client, child, "epoch") == list(range(1, EPOCHS + 1))
    after = epoch_log(tmp_path)[killed_at:]
    for run in done:  # finished before the kill: not rerun
        assert not [e for tag, e in after if tag == run.data.params["method.tag"]]
    for tag in midway:  # continued from a checkpoint: the epoch counter goes on, it does not restart at 1
        again = [e for t, e in after if t == tag]
        assert again and again[0] > 1 and again == list(range(again[0], EPOCHS + 1)), (tag, again)
    lines = [ln for ln in resumed.stdout.splitlines() if ln.startswith("| slow")]
    # The tag changes no number, so configurations identical on every seed share one row ("a = b = c"): the
    # resumed trials' results may merge with the uninterrupted ones'. Every planned trial is named once.
    named = [name for ln in lines for name in ln.split(" | ")[0][2:].split(" = ")]
    assert sorted(named) == sorted(plan.values())


def _server(procs, root: Path, port: int, log: Path):
    """An MLflow server on ``port`` whose store (a sqlite file in ``root``) outlives a restart."""
    return start_mlflow_server(procs, root, f"sqlite:///{root / 'server.db'}", log, port)[1]


def test_mlflow_outage_mid_sweep_loses_nothing_and_sync_backfills_without_duplicates(tmp_path, procs, ray_tmp):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    spec = {**RESUME_SPEC, "name": "outage", "methods": {"slow": {"tag": [1, 2, 3, 4], "sleep": 1.5}},
            "tracking": {"uri": url}}
    env = setup_workdir(tmp_path, spec)
    server = _server(procs, tmp_path, port, tmp_path / "server.log")
    log = tmp_path / "run.log"
    driver = procs.start(raysweep_cmd("run", "spec.yaml"), env, tmp_path, log)

    def first_epochs_logged():
        try:
            client, _, children = trial_runs(url, "outage")
            return any(steps(client, c) for c in children)
        except Exception:
            return False

    wait_for(first_epochs_logged, "the first logged epoch", 240, driver, log)
    procs.kill_group(server, signal.SIGTERM)  # the tracking server goes away mid-sweep
    assert driver.wait(timeout=600) == 0, log.read_text()[-4000:]
    out = log.read_text()
    assert "4 trials, 0 failed" in out
    assert "warning: MLflow at" in out and "raysweep sync" in out
    sweep_dir = next((tmp_path / "raysweep_results").glob("outage-*"))

    _server(procs, tmp_path, port, tmp_path / "server2.log")
    first = subprocess.run(raysweep_cmd("sync", str(sweep_dir)), cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    backfilled = re.search(r"logged (\d+) epochs", first.stdout)
    assert backfilled and int(backfilled.group(1)) > 0, "the sweep went on while the store was down: sync fills the gap"
    client, parents, children = trial_runs(url, "outage")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(c.data.tags["raysweep.trial_key"] for c in children) == sorted(planned(tmp_path, env))
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags["raysweep.stop_reason"] == "completed"
        assert steps(client, child) == list(range(1, EPOCHS + 1))
        assert steps(client, child, "train_loss") == list(range(1, EPOCHS + 1))
    again = subprocess.run(raysweep_cmd("sync", str(sweep_dir)), cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0 and "created 0 runs, logged 0 epochs, ended 0 runs" in again.stdout, again.stdout

