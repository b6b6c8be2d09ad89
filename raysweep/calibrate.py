"""A sweep's plan in wall-clock time: time a few training steps on this machine, then lay the trials onto slots.

:func:`calibrate` builds one trial of each distinct (method, dataset, model) among the planned trials with
:class:`trainables.loop.Trial` (in this process, no Ray) and times its set-up, a few training steps, one
evaluation and one checkpoint. :func:`estimate_wall_time` turns those timings into the wall time of the
spec's resources and concurrency: trials run on ``slots`` (CPUs // CPU per trial, capped by the GPUs and
``max_concurrent``), each taken by the next trial in plan order as it frees, with Ray's own costs
(:class:`Overhead`: the driver's start, each phase's Tuner, each worker's start, each trial's hand-off, each
epoch's report) from the project's benchmarks or measured. It gives the figure without early stopping,
with the spec's scheduler's early stopping (where its :meth:`~raysweep.schedulers.Scheduler.stops` say it
judges and what share it keeps: ASHA 1/reduction_factor at each rung) and with ``group_size`` planned
trials per Ray trial sharing one start-up.

The model, stated so that its errors can be found: the time of a training epoch is proportional to the
training examples it sees (measured per example at the trial's batch size); trials that share a CPU slow
each other down by the oversubscription (slots x threads / CPUs) on CPU and not at all on a GPU; under
early stopping the earliest trials are the ones promoted (ASHA promotes asynchronously, so early arrivals
pass a rung more easily); phase 2 of a two-phase search reruns ``confirm_trials`` at full length.
``benchmarks/calibration.py`` compares the estimate with a measured sweep.
"""

from __future__ import annotations

import copy
import heapq
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from raysweep.progress import format_duration
from raysweep.schedulers import Scheduler

BENCHMARK_FILE = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "trial_overhead.json"
ESTIMATE_LINE = re.compile(r"^estimated wall time: \S+ \((?P<seconds>[0-9.]+) s\) (?P<case>.+)$", re.M)
CASES = ("without early stopping", "with early stopping", "grouped", "grouped with early stopping")

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
    """Seconds a fresh interpreter takes to import ``module`` (a driver: raysweep.runner; a worker: the trainable)."""
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
    driver = measure_import("raysweep.runner")
    if BENCHMARK_FILE.exists():
        return overhead_from_benchmark(BENCHMARK_FILE, driver)
    worker = measure_import("trainables.tune")
    return Overhead(driver_s=driver, sweep_s=0.0, worker_s=worker, trial_s=0.0, epoch_s=0.0,
                    source="measured imports only (no benchmark results: Ray's own start-up not counted)")


def _time_trial(config: Mapping[str, Any], steps: int, warmup: int, clock: Callable[[], float]) -> StepTiming:
    import torch

    from trainables.checkpoint import save_state
    from trainables.loop import Trial, epoch_batches

    start = clock()
    trial = Trial(config)
    setup_s = clock() - start
    method, tcfg = trial.method, trial.config["train"]
    start = clock()
    method.on_epoch_start(0)
    weights = method.sample_weights(0)
    epoch_start_s = clock() - start
    trial.model.train()
    times: list[float] = []
    done = 0
    while len(times) < steps:  # a tiny training set may need more than one epoch's batches
        for idx in epoch_batches(len(trial.train_set), tcfg["batch_size"], weights, trial.generator):
            # The body of Trial.run_epoch's batch loop, one step at a time.
            start = clock()
            idx = idx.to(trial.device)
            x = trial.train_set.x[idx]
            if trial.splits.augment is not None:
                x = trial.splits.augment(x, trial.generator)
            loss = method.train_step(trial.model, trial.optimizer, x, trial.train_set.y[idx], idx)
            float(loss)  # waits for the device
            elapsed = clock() - start
            done += 1
            if done > warmup:
                times.append(elapsed)
            if len(times) == steps:
                break
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
    ``config``, such as :class:`raysweep.plan.PlannedTrial`). A dataset this process built before is cached
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


# ---- early stopping ------------------------------------------------------------------------------------------

def stop_epochs(planned: Sequence[int], schedule: Scheduler | None, max_epoch: int) -> list[int]:
    """The epochs each trial runs under ``schedule`` (its :meth:`~raysweep.schedulers.Scheduler.stops`), in
    plan order: at every place it judges, of the trials that got there the first ``ceil(n * keep)`` go on
    and the others stop there (the epoch rounded up)."""
    epochs = list(planned)
    if schedule is None or not schedule.stops_early:
        return epochs
    alive = list(range(len(epochs)))
    for epoch, keep in schedule.stops(max_epoch):
        stop_at = math.ceil(epoch)
        judged = [i for i in alive if epochs[i] > stop_at]  # trials that end before the rung finish anyway
        survivors = math.ceil(len(judged) * keep - 1e-9)
        for i in judged[survivors:]:
            epochs[i] = stop_at
        alive = judged[:survivors]
    return epochs


# ---- laying trials onto slots -------------------------------------------------------------------------------

def trial_slots(cpus: float, cpu_per_trial: float, gpus: float = 0.0, gpu_per_trial: float = 0.0,
                max_concurrent: int | None = None) -> int:
    """How many trials run at once: CPUs // CPU per trial, capped by GPUs // GPU per trial and max_concurrent."""
    if cpu_per_trial <= 0:
        raise ValueError(f"cpu_per_trial must be positive, got {cpu_per_trial}")
    slots = math.floor(cpus / cpu_per_trial + 1e-9)
    if gpu_per_trial > 0:
        slots = min(slots, math.floor(gpus / gpu_per_trial + 1e-9))
    if max_concurrent is not None:
        slots = min(slots, max_concurrent)
    if slots < 1:
        raise ValueError(f"resources: a trial needs {cpu_per_trial:g} CPU and {gpu_per_trial:g} GPU; "
                         f"the machine has {cpus:g} CPUs and {gpus:g} GPUs")
    return slots


def makespan(durations: Sequence[float], slots: int, needs: Sequence[frozenset] | None = None,
             cost: Mapping[Any, float] | None = None) -> float:
    """Seconds until the last of ``durations`` ends when each, in order, takes the slot that frees first.

    With ``needs`` (per duration, the things it needs, e.g. its datasets) and their ``cost``, a slot pays
    a thing's cost the first time one of its units needs it and keeps it afterwards (a worker's cache).
    """
    free = [(0.0, i) for i in range(max(1, slots))]
    held: list[set] = [set() for _ in free]
    for n, d in enumerate(durations):
        start, slot = free[0]
        wanted = needs[n] if needs is not None else frozenset()
        extra = sum((cost or {})[k] for k in wanted - held[slot])
        held[slot] |= wanted
        heapq.heapreplace(free, (start + extra + d, slot))
    return max(t for t, _ in free)


def _groups(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


@dataclass(frozen=True)
class WallTimeEstimate:
    """Estimated wall seconds of a sweep on given resources; see :func:`estimate_wall_time`."""

    trials: int
    slots: int
    waves: int  # rounds of ``slots`` trials (the last may be partial)
    contention: float  # how much slower compute runs while every slot is busy (1 = not at all)
    full_s: float
    early_stop_s: float | None  # None without an early-stopping scheduler
    group_size: int = 1
    grouped_full_s: float | None = None  # None when group_size is 1
    grouped_early_stop_s: float | None = None
    busy_s: float = 0.0  # compute seconds of every trial at full length, before contention
    early_epochs: int | None = None  # trial-epochs run under early stopping (of ``full_epochs``)
    full_epochs: int = 0
    confirm_trials: int = 0
    overhead: Overhead | None = None
    calibration: Calibration | None = None
    scheduler: str | None = None
    resources: str = ""
    notes: list[str] = field(default_factory=list)

    def cases(self) -> dict[str, float]:
        out = {CASES[0]: self.full_s}
        if self.early_stop_s is not None:
            out[CASES[1]] = self.early_stop_s
        if self.grouped_full_s is not None:
            out[CASES[2]] = self.grouped_full_s
        if self.grouped_early_stop_s is not None:
            out[CASES[3]] = self.grouped_early_stop_s
        return out

    def describe(self) -> str:
        """What ``raysweep plan --calibrate`` prints: the timings, the assumptions and one line per case."""
        lines = []
        if self.calibration is not None:
            cal = self.calibration
            lines.append(f"calibrated on {cal.device} with {cal.threads} thread{'s' if cal.threads > 1 else ''} "
                         f"per trial ({cal.steps} timed steps each):")
            for (method, dataset, model), t in cal.timings.items():
                lines.append(f"  {method:<16} {dataset:<12} {model:<10} set-up {1000 * t.setup_s:.0f} ms, "
                             f"step {1000 * t.step_s:.1f} ms ({t.batch_size} examples), "
                             f"eval {1000 * t.eval_s:.0f} ms, checkpoint {1000 * t.checkpoint_s:.0f} ms")
            sizes = sorted(cal.train_examples.values())
            span = str(sizes[0]) if sizes[0] == sizes[-1] else f"{sizes[0]}-{sizes[-1]}"
            lines.append(f"  {len(sizes)} dataset config{'s' if len(sizes) > 1 else ''}: {span} training examples, "
                         f"built in {sum(cal.data_s.values()):.1f} s in all")
        if self.overhead is not None:
            o = self.overhead
            lines.append(f"overhead: driver {o.driver_s:.1f} s, {o.sweep_s:.1f} s per phase, {o.worker_s:.1f} s per "
                         f"worker, {o.trial_s:.2f} s per trial, {1000 * o.epoch_s:.0f} ms per epoch ({o.source})")
        confirm = f" + {self.confirm_trials} in phase 2" if self.confirm_trials else ""
        lines.append(f"{self.trials} trials{confirm} on {self.slots} slots ({self.resources}), {self.waves} waves; "
                     f"{self.busy_s:.0f} s of compute at full length")
        if self.contention > 1:
            lines.append(f"trials share CPUs: compute runs {self.contention:.2f}x slower while every slot is busy")
        lines += self.notes
        stopping = f" ({self.scheduler}: {self.early_epochs} of {self.full_epochs} trial-epochs)" \
            if self.early_stop_s is not None else ""
        grouped = f" ({self.group_size} trials per Ray trial)"
        suffix = {CASES[1]: stopping, CASES[2]: grouped, CASES[3]: grouped}
        for case, seconds in self.cases().items():
            shown = f"{format_duration(seconds)} ({seconds:.1f} s)"
            lines.append(f"estimated wall time: {shown} {case}{suffix.get(case, '')}")
        return "\n".join(lines)


def parse_estimates(text: str) -> dict[str, float]:
    """The seconds of each case in :meth:`WallTimeEstimate.describe` output (for benchmarks reading the CLI)."""
    out = {}
    for match in ESTIMATE_LINE.finditer(text):
        case = match["case"]
        name = next((c for c in sorted(CASES, key=len, reverse=True) if case.startswith(c)), case)
        out[name] = float(match["seconds"])
    return out


def estimate_wall_time(trials: Sequence[Any], calibration: Calibration, *, cpus: float, cpu_per_trial: float = 1.0,
                       gpus: float = 0.0, gpu_per_trial: float = 0.0, max_concurrent: int | None = None,
                       schedule: Scheduler | None = None, group_size: int = 1, confirm_trials: int = 0,
                       overhead: Overhead | None = None) -> WallTimeEstimate:
    """Wall seconds of running the planned ``trials`` (in plan order) with these resources.

    A trial (or a group of ``group_size`` consecutive trials, one Ray trial) costs ``overhead.trial_s``
    plus, for each trial in it, ``contention`` x its measured compute plus ``overhead.epoch_s`` per epoch;
    units go to the slot that frees first; a slot starts its worker once (``overhead.worker_s``) and builds
    each dataset once (``contention`` x its build time); each phase adds ``overhead.sweep_s`` and the sweep
    ``overhead.driver_s``. ``confirm_trials`` run in a second phase at full length (two-phase search, fresh
    workers), at the mean compute and data build of the planned configurations.
    """
    if not trials:
        raise ValueError("estimate_wall_time: no planned trials")
    if group_size < 1 or confirm_trials < 0:
        raise ValueError("group_size must be at least 1 and confirm_trials at least 0")
    overhead = overhead or Overhead(0.0, 0.0, 0.0, 0.0, 0.0, "none given")
    slots = trial_slots(cpus, cpu_per_trial, gpus, gpu_per_trial, max_concurrent)
    threads = max(1, math.floor(cpu_per_trial))
    contention = max(1.0, slots * threads / cpus) if calibration.device == "cpu" else 1.0
    planned = [int(t.config["train"]["epochs"]) for t in trials]
    max_epoch = max(planned)
    early = stop_epochs(planned, schedule, max_epoch) if schedule is not None and schedule.stops_early else None

    def member_s(config: Mapping[str, Any], epochs: int) -> float:
        return contention * calibration.trial_compute_s(config, epochs) + epochs * overhead.epoch_s

    full_members = [member_s(t.config, e) for t, e in zip(trials, planned, strict=True)]
    confirm_each = sum(full_members) / len(full_members)

    datasets = [dataset_key(t.config) for t in trials]
    worker = ("worker",)  # what every unit needs once per slot; not a dataset key (those are JSON objects)
    cost = {worker: overhead.worker_s, **{k: contention * v for k, v in calibration.data_s.items()}}
    confirm_cost = {worker: overhead.worker_s, "data": sum(cost[k] for k in datasets) / len(datasets)}

    def phases(members: list[float], size: int) -> float:
        groups = _groups(range(len(members)), size)
        units = [overhead.trial_s + sum(members[i] for i in g) for g in groups]
        needs = [frozenset({worker, *(datasets[i] for i in g)}) for g in groups]
        wall = overhead.driver_s + overhead.sweep_s + makespan(units, slots, needs, cost)
        if confirm_trials:
            extra = [overhead.trial_s + sum(g) for g in _groups([confirm_each] * confirm_trials, size)]
            wall += overhead.sweep_s + makespan(extra, slots, [frozenset({worker, "data"})] * len(extra), confirm_cost)
        return wall

    early_members = None if early is None else [member_s(t.config, e) for t, e in zip(trials, early, strict=True)]
    grouped = group_size > 1
    resources = f"{cpus:g} CPUs, {cpu_per_trial:g} CPU per trial" + (
        f", {gpus:g} GPUs, {gpu_per_trial:g} GPU per trial" if gpu_per_trial else "") + (
        f", at most {max_concurrent} at once" if max_concurrent else "")
    notes = []
    if calibration.device != "cpu":
        notes.append("trials sharing a GPU are assumed not to slow each other down")
    return WallTimeEstimate(
        trials=len(trials), slots=slots, waves=math.ceil(math.ceil(len(trials) / group_size) / slots),
        contention=contention, full_s=phases(full_members, 1),
        early_stop_s=None if early_members is None else phases(early_members, 1), group_size=group_size,
        grouped_full_s=phases(full_members, group_size) if grouped else None,
        grouped_early_stop_s=phases(early_members, group_size) if grouped and early_members is not None else None,
        busy_s=sum(calibration.trial_compute_s(t.config, e) for t, e in zip(trials, planned, strict=True)),
        early_epochs=None if early is None else sum(early), full_epochs=sum(planned), confirm_trials=confirm_trials,
        overhead=overhead, calibration=calibration,
        scheduler=schedule.describe(max_epoch) if early is not None else None,
        resources=resources, notes=notes)


__all__ = ["calibrate", "estimate_wall_time", "Calibration", "StepTiming", "Overhead", "WallTimeEstimate",
           "stop_epochs", "trial_slots", "makespan", "default_overhead", "overhead_from_benchmark", "measure_import",
           "parse_estimates"]
