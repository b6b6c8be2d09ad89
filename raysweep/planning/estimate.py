"""A sweep's plan in wall-clock time: the trials laid onto slots, from :mod:`raysweep.planning.calibrate`'s timings.

:func:`estimate_wall_time` turns the timings into the wall time of the spec's resources and concurrency:
trials run on ``slots`` (CPUs // CPU per trial, capped by the GPUs and ``max_concurrent``), each taken by the
next trial in plan order as it frees, with Ray's own costs (:class:`~raysweep.planning.calibrate.Overhead`). It gives
the figure without early stopping, with the spec's scheduler's early stopping (where its
:meth:`~raysweep.search.schedulers.Scheduler.stops` say it judges and what share it keeps: ASHA 1/reduction_factor
at each rung) and with ``group_size`` planned trials per Ray trial sharing one start-up.

The model, stated so that its errors can be found: the time of a training epoch is proportional to the
training examples it sees (measured per example at the trial's batch size); trials that share a CPU slow
each other down by the oversubscription (slots x threads / CPUs) on CPU and not at all on a GPU; under
early stopping the earliest trials are the ones promoted (ASHA promotes asynchronously, so early arrivals
pass a rung more easily); phase 2 of a two-phase search reruns ``confirm_trials`` at full length.
``benchmarks/calibration.py`` compares the estimate with a measured sweep.
"""

from __future__ import annotations

import heapq
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from raysweep.planning.calibrate import Calibration, Overhead, dataset_key
from raysweep.search.schedulers import Scheduler
from raysweep.text import format_duration

ESTIMATE_LINE = re.compile(r"^estimated wall time: \S+ \((?P<seconds>[0-9.]+) s\) (?P<case>.+)$", re.M)
CASES = ("without early stopping", "with early stopping", "grouped", "grouped with early stopping")


# ---- early stopping ------------------------------------------------------------------------------------------

def stop_epochs(planned: Sequence[int], schedule: Scheduler | None, max_epoch: int) -> list[int]:
    """The epochs each trial runs under ``schedule`` (its :meth:`~raysweep.search.schedulers.Scheduler.stops`), in
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


__all__ = ["estimate_wall_time", "WallTimeEstimate", "stop_epochs", "trial_slots", "makespan", "parse_estimates"]
