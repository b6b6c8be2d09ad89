"""`raysweep plan --calibrate`'s arithmetic on hand-made timings, exactly; and a real calibration of a tiny spec."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from raysweep.planning.calibrate import (
    Calibration,
    Overhead,
    StepTiming,
    calibrate,
    dataset_key,
    overhead_from_benchmark,
)
from raysweep.planning.estimate import estimate_wall_time, makespan, parse_estimates, stop_epochs, trial_slots
from raysweep.search.schedulers import resolve_scheduler

DATASET = {"name": "gaussian", "imbalance": 10}


def _config(method, epochs=4):
    return {"method": {"name": method}, "dataset": DATASET, "model": {"name": "mlp"}, "train": {"epochs": epochs}}


# An epoch over 500 examples: 500 * step / 50 + eval 0.1 + checkpoint 0.05 -> CE 0.35 s, focal 0.55 s.
# Set-up 0.5 s per trial; building the dataset 1.0 s, once per slot.
CAL = Calibration("cpu", 1, 3, {
    ("ce", "gaussian", "mlp"): StepTiming(0.5, 0.02, 50, 0.1, 0.0, 0.05),
    ("focal", "gaussian", "mlp"): StepTiming(0.5, 0.04, 50, 0.1, 0.0, 0.05),
}, {dataset_key(_config("ce")): 500}, {dataset_key(_config("ce")): 1.0})
OVERHEAD = Overhead(driver_s=5.0, sweep_s=10.0, worker_s=1.5, trial_s=2.0, epoch_s=0.01, source="test")
TRIALS = [SimpleNamespace(config=_config(m)) for m in ("ce", "ce", "focal", "focal", "focal", "focal")]


def test_slots_and_makespan():
    assert trial_slots(2, 1) == 2 and trial_slots(2, 0.5) == 4 and trial_slots(2, 0.3) == 6
    assert trial_slots(16, 1, gpus=1, gpu_per_trial=0.25) == 4 and trial_slots(16, 1, max_concurrent=3) == 3
    with pytest.raises(ValueError, match="a trial needs 4 CPU and 0 GPU; the machine has 2 CPUs"):
        trial_slots(2, 4)
    assert makespan([5, 3, 3, 1], 2) == 6  # 5 | 3 then 3 (frees at 3) then 1 (frees at 5): max(5 + 1, 6)
    assert makespan([], 3) == 0 and makespan([2, 2, 2], 1) == 6
    # A slot pays for what a unit needs once: slot 0 builds a (1) then b (4); slot 1 builds a.
    needs = [frozenset("a"), frozenset("a"), frozenset("ab"), frozenset("a")]
    assert makespan([2, 3, 1, 1], 2, needs, {"a": 1, "b": 4}) == 8  # 0: 1+2, 1: 1+3, 0: 3+4+1, 1: 4+1


def asha(grace_period, reduction_factor):
    return resolve_scheduler({"name": "asha", "grace_period": grace_period, "reduction_factor": reduction_factor}, 4)


def test_asha_keeps_the_first_ceil_n_over_rf_at_each_rung():
    halving = asha(1, 2)
    assert halving.stops(4) == [(1, 0.5), (2, 0.5)]
    assert stop_epochs([4] * 6, halving, 4) == [4, 4, 2, 1, 1, 1]
    assert stop_epochs([4, 1, 4, 4], halving, 4) == [4, 1, 2, 1], "a 1-epoch trial is not judged at epoch 1"
    assert stop_epochs([4], halving, 4) == [4], "one trial always goes on"
    assert stop_epochs([3, 3], None, 3) == [3, 3]
    assert stop_epochs([3, 3], resolve_scheduler({"name": "fifo"}, 3), 3) == [3, 3]


def test_estimate_by_hand():
    est = estimate_wall_time(TRIALS, CAL, cpus=2, cpu_per_trial=1, overhead=OVERHEAD,
                             schedule=asha(1, 2), group_size=2)
    assert est.slots == 2 and est.waves == 2 and est.contention == 1.0  # 3 groups of 2 on 2 slots
    # Per trial: contention x (set-up 0.5 + epochs x epoch) + epochs x 0.01; per unit + 2.0; per slot, once,
    # the worker's start 1.5 and the data 1.0; the sweep: driver 5 + phase 10.
    ce, focal = 0.5 + 4 * 0.35 + 0.04, 0.5 + 4 * 0.55 + 0.04  # 1.94, 2.74
    # slot A: 2.5 + 3.94, then 4.74, 4.74; slot B the same
    assert est.full_s == pytest.approx(15 + 2.5 + (2 + ce) + 2 * (2 + focal)) and est.full_s == pytest.approx(30.92)
    # ASHA: epochs [4, 4, 2, 1, 1, 1]
    focal2, focal1 = 0.5 + 2 * 0.55 + 0.02, 0.5 + 0.55 + 0.01  # 1.62, 1.06
    assert est.early_epochs == 13 and est.full_epochs == 24
    # A: 6.44, +3.62 -> 10.06, +3.06 -> 13.12; B: 6.44, +3.06 -> 9.50, +3.06 -> 12.56
    assert est.early_stop_s == pytest.approx(15 + 2.5 + (2 + ce) + (2 + focal2) + (2 + focal1))
    assert est.early_stop_s == pytest.approx(28.12)
    # groups of two: [ce ce] 5.88 on A (8.38), [focal focal] 7.48 on B (9.98), the last on A: 8.38 + 7.48
    assert est.grouped_full_s == pytest.approx(15 + 2.5 + (2 + 2 * ce) + (2 + 2 * focal))
    # [ce ce] on A: 8.38; [focal2 focal1] on B: 7.18; [focal1 focal1] on B: 7.18 + 4.12
    assert est.grouped_early_stop_s == pytest.approx(15 + 2.5 + (2 + focal2 + focal1) + (2 + 2 * focal1))
    assert est.grouped_early_stop_s == pytest.approx(26.30)
    assert est.busy_s == pytest.approx(2 * 1.9 + 4 * 2.7)


def test_contention_two_phase_and_the_printed_estimate():
    est = estimate_wall_time(TRIALS, CAL, cpus=2, cpu_per_trial=0.5, overhead=OVERHEAD, confirm_trials=2)
    assert est.slots == 4 and est.contention == 2.0 and est.early_stop_s is None and est.grouped_full_s is None
    ce, focal = 2 * 1.9 + 0.04, 2 * 2.7 + 0.04  # compute twice as slow; the data build too (2.0)
    # ce, ce, focal, focal start at once, each slot starting a worker (1.5) and building the data (2.0); the
    # last two focal follow the CE trials
    phase1 = 5 + 10 + 3.5 + (2 + ce) + (2 + focal)
    confirm = (2 * ce + 4 * focal) / 6
    assert est.full_s == pytest.approx(phase1 + 10 + 3.5 + (2 + confirm))  # phase 2: fresh workers, again
    assert est.full_s == pytest.approx(31.78 + 20.406667)
    text = est.describe()
    assert "6 trials + 2 in phase 2 on 4 slots (2 CPUs, 0.5 CPU per trial), 2 waves" in text
    assert "compute runs 2.00x slower while every slot is busy" in text
    assert "overhead: driver 5.0 s, 10.0 s per phase, 1.5 s per worker, 2.00 s per trial, 10 ms per epoch (test)" \
        in text
    assert parse_estimates(text) == {"without early stopping": pytest.approx(est.full_s, abs=0.05)}
    early = estimate_wall_time(TRIALS, CAL, cpus=2, overhead=OVERHEAD, schedule=asha(1, 2), group_size=3)
    assert set(parse_estimates(early.describe())) == {"without early stopping", "with early stopping", "grouped",
                                                      "grouped with early stopping"}
    assert "(ASHA rungs at epochs [1, 2] (max 4); keeps the top 1/2 at each: 13 of 24 trial-epochs)" in early.describe()
    with pytest.raises(ValueError, match="no planned trials"):
        estimate_wall_time([], CAL, cpus=2)


def test_overhead_from_the_benchmarks_fits_the_per_trial_hand_off(tmp_path):
    (tmp_path / "trial_overhead.json").write_text(json.dumps({"time": "t", "machine": {"cpus": 2}, "single_trial": {
        "ray_init_s": 4.0, "fit_to_trial_start_s": 6.0, "trial_start_to_first_result_s": 3.5,
        "first_epoch_compute_s": 0.5, "steady_epoch_compute_s": 0.05, "steady_result_interval_s": 0.06}}))
    # slot time not computing: 2 * wall - busy - trials * epochs * 0.01 = 49.5 (10 trials) and 68.5 (30 trials)
    (tmp_path / "runner_efficiency_1.json").write_text(json.dumps({"runs": [
        {"trials": 10, "epochs": 5, "slots": 2, "wall_s": 100.0, "busy_s": 150.0, "mlflow": True},
        {"trials": 10, "epochs": 5, "slots": 2, "wall_s": 50.0, "busy_s": 90.0, "mlflow": False}]}))
    (tmp_path / "runner_efficiency_2.json").write_text(json.dumps({"runs": [
        {"trials": 30, "epochs": 5, "slots": 2, "wall_s": 130.0, "busy_s": 190.0, "mlflow": True}]}))
    o = overhead_from_benchmark(tmp_path / "trial_overhead.json", driver_import_s=2.0)
    assert (o.driver_s, o.sweep_s, o.worker_s) == (6.0, 6.0, 3.0)
    assert o.epoch_s == pytest.approx(0.01) and o.trial_s == pytest.approx((68.5 - 49.5) / 20)
    (tmp_path / "runner_efficiency_2.json").unlink()
    alone = overhead_from_benchmark(tmp_path / "trial_overhead.json")
    assert alone.trial_s == 0.0 and "no per-trial hand-off measured" in alone.source


def test_calibrate_times_each_method_dataset_model_of_a_tiny_spec():
    from raysweep.planning.plan import plan
    from raysweep.spec.schema import validate_spec
    from trainables.data import load_splits

    spec = validate_spec({"name": "cal", "dataset": {"name": "gaussian", "imbalance": 10, "samples_per_class": 200},
                          "model": {"name": "mlp", "width": 16}, "train": {"epochs": 3, "batch_size": 32},
                          "methods": {"ce": {}, "focal": {"gamma": [0.5, 2.0]}}, "seeds": 2,
                          "axes": {"dataset.imbalance": [10, 20]}})
    trials = plan(spec)
    threads = torch.get_num_threads()
    cal = calibrate(trials, steps=2, device="cpu")
    assert torch.get_num_threads() == threads, "the caller's thread count is restored"
    assert set(cal.timings) == {("ce", "gaussian", "mlp"), ("focal", "gaussian", "mlp")}
    for timing in cal.timings.values():
        assert timing.batch_size == 32 and timing.step_s > 0 and timing.eval_s > 0 and timing.checkpoint_s > 0
        assert math.isfinite(timing.setup_s) and timing.setup_s > 0
    assert len(cal.train_examples) == len(cal.data_s) == 2, "one training-set size per imbalance"
    for t in trials:
        assert cal.train_examples[dataset_key(t.config)] == len(load_splits(t.config["dataset"]).train.y)
    est = estimate_wall_time(trials, cal, cpus=2, cpu_per_trial=1, overhead=OVERHEAD)
    assert est.trials == 12 and est.full_s > 10 and "calibrated on cpu with 1 thread per trial" in est.describe()
    with pytest.raises(ValueError, match="no planned trials"):
        calibrate([], steps=1)
