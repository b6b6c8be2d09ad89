"""Timing a sweep's trials on this machine, for ``raysweep plan --calibrate``.

:func:`calibrate` builds one trial of each distinct (method, dataset, model) among the planned trials with
:class:`trainables.loop.Trial` (in this process, no Ray) and times its set-up, a few training steps, one
evaluation and one checkpoint; it also times building each distinct dataset. :class:`Overhead` holds Ray's
own costs (the driver's start, each phase's Tuner, each worker's start, each trial's hand-off, each epoch's
report), from the project's benchmarks or measured. :mod:`raysweep.planning.estimate` turns both into wall time.
"""

from __future__ import annotations

import copy
import itertools
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

BENCHMARK_FILE = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "trial_overhead.json"

Key = tuple[str, str, str]  # (method, dataset, model) names


def calibration_key(config: Mapping[str, Any]) -> Key:
    """What decides a trial's step time: its method, dataset and model names."""
    return (config["method"]["name"], config["dataset"]["name"], config["model"]["name"])


def dataset_key(config: Mapping[str, Any]) -> str:
    """A resolved dataset config as a hashable key (one training-set size each)."""
    return json.dumps(config["dataset"], sort_keys=True, default=str)


@dataclass(frozen=True)
class StepTiming:
    """Seconds measured for one (method, dataset, model) on one device."""

    setup_s: float  # model, optimizer and method on top of the (cached) splits
    step_s: float  # one training step of ``batch_size`` examples (mean of the timed steps, after warm-up)
    batch_size: int
    eval_s: float  # one evaluation: validation, test (and clean-train accuracy on noisy data)
    epoch_start_s: float  # the method's per-epoch work before the steps (e.g. refreshed sampling weights)
    checkpoint_s: float  # saving one checkpoint (every epoch in a sweep)

    def epoch_s(self, examples: int) -> float:
        """One epoch over ``examples`` training examples, evaluation and checkpoint included."""
        return examples * self.step_s / self.batch_size + self.eval_s + self.epoch_start_s + self.checkpoint_s


@dataclass(frozen=True)
class Calibration:
    """The timings of every (method, dataset, model); the training-set size and build time of every dataset
    config (a worker process builds a dataset once and keeps it for its later trials)."""

    device: str
    threads: int
    steps: int
    timings: dict[Key, StepTiming]
    train_examples: dict[str, int]  # dataset_key -> training examples
    data_s: dict[str, float]  # dataset_key -> seconds to build its splits

    def trial_compute_s(self, config: Mapping[str, Any], epochs: int) -> float:
        """Set-up plus ``epochs`` epochs of one trial on built data, as measured here (no Ray, no contention)."""
        timing = self.timings[calibration_key(config)]
        examples = self.train_examples[dataset_key(config)]
        return timing.setup_s + epochs * timing.epoch_s(examples)


@dataclass(frozen=True)
class Overhead:
    """What a sweep costs beyond its trials' compute, in wall seconds.

    ``driver_s`` once per sweep (the driver's interpreter, imports and ``ray.init``), ``sweep_s`` once per
    phase (a Tuner's start until its first trial runs), ``worker_s`` once per slot and phase (a new worker
    process: imports, and the first result's round trip), ``trial_s`` per trial (Tune handing a reused
    worker its next trial) and ``epoch_s`` per epoch (reporting a result). Not counted: the sweep's end
    (the summary table, Ray's shutdown) and other processes competing for the machine.
    """

    driver_s: float
    sweep_s: float
    worker_s: float
    trial_s: float
    epoch_s: float
    source: str


def measure_import(module: str, python: str = sys.executable) -> float:
    """Seconds a fresh interpreter takes to import ``module`` (a driver: raysweep.execution.runner; a worker:
    the trainable)."""
    start = time.perf_counter()
    subprocess.run([python, "-c", f"import {module}"], check=True, capture_output=True, timeout=300)
    return time.perf_counter() - start


def _reused_trial_s(results: Path, epoch_s: float) -> float | None:
    """Tune's per-trial hand-off on a reused worker, fitted from ``runner_efficiency_*.json``: the slot time
    not spent computing, ``slots * wall - busy``, is a fixed part per sweep plus ``trial_s`` per trial (and
    ``epoch_s`` per epoch); two sweeps with different trial counts give the slope. None without two."""
    points = []
    for path in sorted(results.glob("runner_efficiency_*.json")):
        for run in json.loads(path.read_text()).get("runs", []):
            if run.get("mlflow"):
                idle = run["slots"] * run["wall_s"] - run["busy_s"] - run["trials"] * run["epochs"] * epoch_s
                points.append((run["trials"], idle))
    if len({n for n, _ in points}) < 2:
        return None
    mean_n = sum(n for n, _ in points) / len(points)
    mean_idle = sum(i for _, i in points) / len(points)
    slope = (sum((n - mean_n) * (i - mean_idle) for n, i in points)
             / sum((n - mean_n) ** 2 for n, _ in points))
    return max(0.0, slope)


def overhead_from_benchmark(path: str | Path = BENCHMARK_FILE, driver_import_s: float = 0.0) -> Overhead:
    """The overheads the project's benchmarks measured (``benchmarks/trial_overhead.py``: ``ray.init``, a
    Tuner's start, a cold trial's time before its first epoch, a steady epoch's report beyond its compute;
    ``benchmarks/runner_efficiency.py``: the per-trial hand-off), plus ``driver_import_s`` for the driver.
    The cold trial's time includes that benchmark's own data build and model, so it errs long by about a
    second per slot."""
    path = Path(path)
    record = json.loads(path.read_text())
    single = record["single_trial"]
    epoch_s = max(0.0, single["steady_result_interval_s"] - single["steady_epoch_compute_s"])
    trial_s = _reused_trial_s(path.parent, epoch_s)
    when = record.get("time", "?")
    cpus = (record.get("machine") or {}).get("cpus", "?")
    return Overhead(driver_s=driver_import_s + single["ray_init_s"], sweep_s=single["fit_to_trial_start_s"],
                    worker_s=max(0.0, single["trial_start_to_first_result_s"] - single["first_epoch_compute_s"]),
                    trial_s=trial_s or 0.0, epoch_s=epoch_s,
                    source=f"benchmarks/results ({when}, {cpus} CPUs)"
                           + ("" if trial_s is not None else "; no per-trial hand-off measured"))


def default_overhead() -> Overhead:
    """The benchmarks' figures (in a source checkout that has them) with the driver's imports measured now;
    without them, measured imports of a driver and of a worker only."""
    driver = measure_import("raysweep.execution.runner")
    if BENCHMARK_FILE.exists():
        return overhead_from_benchmark(BENCHMARK_FILE, driver)
    worker = measure_import("trainables.tune")
    return Overhead(driver_s=driver, sweep_s=0.0, worker_s=worker, trial_s=0.0, epoch_s=0.0,
                    source="measured imports only (no benchmark results: Ray's own start-up not counted)")


def _time_trial(config: Mapping[str, Any], steps: int, warmup: int, clock: Callable[[], float]) -> StepTiming:
    import torch

    from trainables.checkpoint import save_state
    from trainables.loop import Trial

    start = clock()
    trial = Trial(config)
    setup_s = clock() - start
    method, tcfg = trial.method, trial.config["train"]
    start = clock()
    _, batches = trial.begin_epoch()  # the method's epoch-start hooks and the first epoch's batches
    epoch_start_s = clock() - start
    times: list[float] = []
    # A tiny training set may have fewer batches than warm-up + steps: go round its batches again.
    for step, idx in enumerate(itertools.islice(itertools.cycle(batches), warmup + steps)):
        start = clock()
        x, y, idx = trial.batch(idx)
        loss = method.train_step(trial.model, trial.optimizer, x, y, idx)
        float(loss)  # waits for the device
        if step >= warmup:
            times.append(clock() - start)
    start = clock()
    trial.evaluate()
    eval_s = clock() - start
    with tempfile.TemporaryDirectory() as directory:
        start = clock()
        save_state(trial.state_dict(), directory)
        checkpoint_s = clock() - start
    if trial.device.type == "cuda":
        torch.cuda.empty_cache()
    return StepTiming(setup_s, sum(times) / len(times), tcfg["batch_size"], eval_s, epoch_start_s, checkpoint_s)


def calibrate(trials: Sequence[Any], steps: int = 5, device: str = "cpu", *, warmup: int = 1, threads: int = 1,
              clock: Callable[[], float] = time.perf_counter) -> Calibration:
    """Time ``steps`` training steps (after ``warmup``), one evaluation and one checkpoint of the first
    planned trial of each distinct (method, dataset, model) on ``device`` (cpu, cuda or auto) with
    ``threads`` torch threads (what a trial gets: its whole CPUs, at least one); time building each distinct
    dataset config and count its training examples. ``trials`` are planned trials (anything with a resolved
    ``config``, such as :class:`raysweep.planning.plan.PlannedTrial`). A dataset this process built before is cached
    and reads as free: calibrate in a fresh process (``raysweep plan --calibrate``)."""
    import torch

    from trainables.data import load_splits
    from trainables.loop import pick_device

    if steps < 1 or warmup < 0 or threads < 1:
        raise ValueError("calibrate: steps and threads must be at least 1, warmup at least 0")
    if not trials:
        raise ValueError("calibrate: no planned trials (an optuna search draws its trials while it runs)")
    chosen: dict[Key, dict[str, Any]] = {}
    for t in trials:
        chosen.setdefault(calibration_key(t.config), t.config)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        examples, data_s = {}, {}
        for t in trials:
            dkey = dataset_key(t.config)
            if dkey not in examples:
                start = clock()
                examples[dkey] = len(load_splits(t.config["dataset"]).train.y)
                data_s[dkey] = clock() - start
        timings = {}
        for key, config in chosen.items():
            config = copy.deepcopy(config)
            config["train"]["device"] = device
            timings[key] = _time_trial(config, steps, warmup, clock)
    finally:
        torch.set_num_threads(previous)
    return Calibration(pick_device(device).type, threads, steps, timings, examples, data_s)


__all__ = ["calibrate", "Calibration", "StepTiming", "Overhead", "default_overhead", "overhead_from_benchmark",
           "measure_import", "calibration_key", "dataset_key"]
