"""The plan of a sweep: its phases, every planned trial of each, and what ``raysweep plan`` says about them.

A sweep has one phase (``search``) or, with ``search.two_phase``, two: phase 1 searches with the first
seed (early stopping and sampling allowed), phase 2 (``confirm``) reruns the ``top_k`` configurations of
phase 1 with every seed, to full length, without early stopping. Two-phase composes with any search mode,
so it is a property of the plan, not a fifth mode. Phase-2 selection (:func:`top_configs`) lives here,
beside the planner, because it decides phase 2's trials.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from raysweep.paths import CONFIRM_SUFFIX
from raysweep.spec.resources import concurrent_trials, local_cpus
from raysweep.spec.schema import Spec
from raysweep.trials import PlannedTrial, config_id, fmt, relative_cost, resolve_point
from trainables.data.fit import FitReport, check_fit, node_memory
from trainables.methods import METHODS
from trainables.params import ConfigError
from trainables.planned import MEMBERS, Envelope

SEARCH, CONFIRM = "search", "confirm"


@dataclass(frozen=True)
class Phase:
    """One phase of a sweep: its name (``search`` / ``confirm``) and its Ray experiment folder name."""

    name: str
    experiment: str

    @property
    def early_stopping(self) -> bool:
        """Only phase 1 may stop trials early; confirmed configurations run to full length."""
        return self.name == SEARCH


@dataclass(frozen=True)
class TrialGroup:
    """Planned trials trained in one Ray Tune trial (one process); a single trial is a group of one."""

    members: tuple[PlannedTrial, ...]

    @property
    def size(self) -> int:
        return len(self.members)


def grouping(spec: Spec, phase: Phase) -> str:
    """How ``phase`` groups its trials: ``none``, ``seeds`` or ``configs``.

    A scheduler that stops trials early stops a whole Ray trial, so a phase that can stop early groups
    only the seeds of one configuration (ASHA then decides per configuration, on the seed mean).
    """
    group = spec.execution.group
    if group == "configs" and phase.early_stopping and (spec.scheduler.stops_early or spec.mode.samples_while_running):
        return "seeds"
    return group


def shared_setup(trial: PlannedTrial) -> str:
    """What the members of a ``configs`` group must share: data, model, batch size, epochs and device."""
    cfg = trial.config
    train = {k: cfg["train"][k] for k in ("batch_size", "epochs", "eval_batch_size", "device")}
    return json.dumps([cfg["dataset"], cfg["model"], train], sort_keys=True, default=str)


def group_trials(spec: Spec, phase: Phase, trials: list[PlannedTrial], slots: int | None = None) -> list[TrialGroup]:
    """The phase's trials in groups of at most ``execution.max_members``, in plan order, sizes as even as
    the cap allows (10 members at most 4 a group: 4, 3, 3).

    ``slots`` is how many Ray trials run at once. A group trains its members one after another in one
    process, so a ``configs`` grouping with fewer groups than slots would leave them idle (phase 2 of a
    two-phase search is often one group): its groups are split further, evenly, until there are as many
    as slots or every group is one trial. Seeds stay together (a scheduler decides on their mean).
    """
    how = grouping(spec, phase)
    if how == "none":
        return [TrialGroup((t,)) for t in trials]
    by: dict[str, list[PlannedTrial]] = {}
    for t in trials:
        by.setdefault(t.config_id if how == "seeds" else shared_setup(t), []).append(t)
    buckets = list(by.values())
    parts = [math.ceil(len(b) / spec.execution.max_members) for b in buckets]
    if how == "configs" and slots:
        while sum(parts) < slots:
            # split the bucket whose groups are largest (the first such, so the plan is stable)
            widest = max(range(len(buckets)), key=lambda i: len(buckets[i]) / parts[i])
            if len(buckets[widest]) == parts[widest]:
                break  # every group is one trial
            parts[widest] += 1
    return [TrialGroup(chunk) for bucket, n in zip(buckets, parts, strict=True) for chunk in _even(bucket, n)]


def _even(items: list[PlannedTrial], parts: int) -> list[tuple[PlannedTrial, ...]]:
    """``items`` in order, cut into ``parts`` runs whose sizes differ by at most one (the larger first)."""
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (i < extra)
        out.append(tuple(items[start:end]))
        start = end
    return out


def planned_slots(spec: Spec) -> int | None:
    """How many Ray trials (worker processes) a sweep of ``spec`` runs at once on the local Ray it would start
    (:func:`raysweep.spec.resources.concurrent_trials` of this machine's CPUs, capped by
    ``resources.max_concurrent``), as the runner counts them; None when it joins a cluster, whose size only
    the run knows."""
    if spec.cluster.address or os.environ.get("RAY_ADDRESS"):
        return None
    res = spec.resources
    slots = concurrent_trials(local_cpus(), res.cpu, bool(res.gpu or res.trials_per_gpu))
    return min(slots, res.max_concurrent or slots)


def memory_fit(spec: Spec, trials: list[PlannedTrial]) -> FitReport | None:
    """The fit check (trainables.data.fit) with what this machine knows: a local run's node is this machine
    (its memory, its planned concurrent trials) and its GPU share is 1/trials_per_gpu (or resources.gpu) of
    the local card; a joined cluster's sizes are unknown here, so only the estimate is made. Preflight runs
    it before anything starts (a ConfigError naming the knob); ``raysweep plan`` prints its lines."""
    if not trials:
        return None
    slots = planned_slots(spec)
    local = slots is not None
    share = spec.resources.gpu or (1.0 / spec.resources.trials_per_gpu if spec.resources.trials_per_gpu else 0.0)
    gpu_share = None
    if share and local and any(t.config["train"]["device"] != "cpu" for t in trials):
        import torch

        if torch.cuda.is_available():
            gpu_share = int(torch.cuda.get_device_properties(0).total_memory * min(share, 1.0))
    return check_fit([t.config for t in trials], trials_per_node=min(slots or 1, len(trials)),
                     node_memory=node_memory() if local else None, gpu_share=gpu_share)


def phases(spec: Spec, sweep_id: str) -> list[Phase]:
    """The phases of the sweep ``sweep_id``, in order."""
    out = [Phase(SEARCH, sweep_id)]
    if spec.search.two_phase:
        out.append(Phase(CONFIRM, f"{sweep_id}{CONFIRM_SUFFIX}"))
    return out


def plan(spec: Spec, seeds: Iterable[int] | None = None) -> list[PlannedTrial]:
    """Phase 1's trials in a stable order (methods, configs, axes, then seeds); none for a sampling mode.

    ``seeds`` defaults to the spec's; a two-phase search plans phase 1 with the first seed only.
    """
    if seeds is None:
        seeds = spec.phase_seeds(SEARCH)
    points = spec.mode.points(spec)
    methods = dict.fromkeys(m for m, _, _ in points)
    varying = {m: _varying([hp for mm, hp, _ in points if mm == m]) for m in methods}
    trials: list[PlannedTrial] = []
    for method, hp, axes in points:
        resolved = resolve_point(spec.sections(), list(spec.methods_written), method, hp, axes)
        params = resolved["method"]
        label = " ".join([method] + [f"{k}={fmt(params[k])}" for k in varying[method]])
        cid = config_id(resolved)
        for seed in seeds:
            trials.append(PlannedTrial({**resolved, "seed": seed}, cid, seed, label, dict(axes), SEARCH, len(trials)))
    _check_unique(trials)
    return trials


def confirm_plan(spec: Spec, best: list[PlannedTrial]) -> list[PlannedTrial]:
    """Phase 2 of a two-phase search: each of the ``best`` configurations with every seed."""
    out: list[PlannedTrial] = []
    for t in best:
        for seed in spec.seeds:
            out.append(PlannedTrial({**t.config, "seed": seed}, t.config_id, seed, t.label, t.axes, CONFIRM, len(out)))
    return out


def top_configs(results, metric: str, direction: str, k: int, baseline: str | None = None) -> list[PlannedTrial]:
    """The ``k`` best configurations of a phase, judged on the validation metric (never the test set).

    Trials that ran more epochs rank first (under ASHA they are the survivors), then by the metric's last
    reported value, ties going to the earlier planned trial; repeated draws of one configuration count once,
    at their best. With a ``baseline`` method, its best configuration is added when the top k lack it, so
    phase 2 always has the reference to compare against.
    """
    sign = 1.0 if direction == "max" else -1.0
    ranked: dict[str, tuple[tuple[float, float, int], PlannedTrial]] = {}
    for trial, metrics, errored in member_results(results):
        if errored or metric not in metrics:
            continue
        score = (float(metrics.get("epoch", 0)), sign * float(metrics[metric]), -trial.index)
        if trial.config_id not in ranked or score > ranked[trial.config_id][0]:
            ranked[trial.config_id] = (score, trial)
    ordered = [trial for _, trial in sorted(ranked.values(), key=lambda item: item[0], reverse=True)]
    best = ordered[:k]
    if baseline and not any(t.config["method"]["name"] == baseline for t in best):
        best += [t for t in ordered if t.config["method"]["name"] == baseline][:1]
    return best


def member_results(results) -> Iterator[tuple[PlannedTrial, dict[str, Any], bool]]:
    """(planned trial, its last reported metrics, whether its Ray trial errored) of every member of a
    phase's Ray results: a group reports each member's latest metrics under ``members``."""
    for result in results:
        env = Envelope.from_config(result.config)
        metrics = result.metrics or {}
        for member in env.members:
            mine = (metrics.get(MEMBERS) or {}).get(member.key, {}) if env.grouped else metrics
            yield member, mine, result.error is not None


def describe_plan(spec: Spec, trials: list[PlannedTrial]) -> list[str]:
    """What ``raysweep plan`` prints: the trials (or the sampled space), phase 2, the scheduler, warnings."""
    lines = [f"sweep {spec.name}: {spec.description}".rstrip(": ")]
    lines += spec.mode.describe(spec, trials)
    selection, warning = spec.selection()
    lines.append(f"selection: {selection} (search metric {spec.search.metric})")
    if warning:
        lines.append(f"warning: {warning}")
    search, scheduler = spec.search, spec.scheduler
    if search.two_phase:
        confirmed = search.top_k + (1 if search.baseline else 0)
        baseline = f" (plus the best {search.baseline} if not among them)" if search.baseline else ""
        lines.append(f"two-phase: phase 1 searches with seed {spec.seeds[0]}; phase 2 reruns the top {search.top_k} "
                     f"configurations (by {search.metric}){baseline} with seeds {list(spec.seeds)} to full length "
                     f"without early stopping: at most {confirmed * len(spec.seeds)} more trials, "
                     f"{confirmed * len(spec.seeds) * spec.epochs} trial-epochs")
    lines += _describe_groups(spec, trials)
    lines.append(concurrency_line(spec))
    if scheduler.stops_early:
        epochs = max([t.config["train"]["epochs"] for t in trials] or [spec.epochs])
        lines.append(scheduler.describe(epochs))
        count = len(trials) or search.num_samples
        factor = scheduler.options.get("reduction_factor")
        if factor and count < factor:
            lines.append(f"warning: fewer trials than the reduction factor: {scheduler.name} cannot stop anything")
        first_stop = scheduler.first_stop(epochs)
        for t in {t.config_id: t for t in trials}.values():
            hp = {k: v for k, v in t.config["method"].items() if k != "name"}
            start = METHODS.get(t.config["method"]["name"]).acts_from_epoch(hp, t.config["train"]["epochs"])
            if first_stop is not None and start >= first_stop:
                lines.append(f"warning: {t.label} only starts acting at epoch {start + 1}, after "
                             f"{scheduler.first_stop_name} ({first_stop}): {scheduler.name} may stop it before "
                             "its weighting matters")
    return lines


def concurrency_line(spec: Spec) -> str:
    """``raysweep plan``'s line on how many Ray trials, each one worker process, run at once."""
    slots, res = planned_slots(spec), spec.resources
    if slots is None:
        return "workers: one process per running Ray trial, as many as the cluster's CPUs allow"
    line = f"workers: at most {slots} worker processes ({slots} Ray trials at once on {local_cpus()} CPUs)"
    if res.cpu < 1 and not (res.gpu or res.trials_per_gpu):
        line += (f"; resources.cpu {res.cpu:g} packs no more than one trial per core: a trial trains on one thread, "
                 "so more processes than cores would only add start-ups (group trials to share a process)")
    return line


def _describe_groups(spec: Spec, trials: list[PlannedTrial]) -> list[str]:
    """``raysweep plan``'s lines about trial groups (none when the spec does not group)."""
    execution = spec.execution
    if execution.group == "none":
        return []
    search = phases(spec, spec.name)[0]
    lines = []
    how = grouping(spec, search)
    if how != execution.group:
        lines.append(f"groups: a scheduler stops whole Ray trials, so phase 1 ({spec.scheduler.name}"
                     f"{', ' + spec.search.mode if spec.mode.samples_while_running else ''}) groups only seeds")
    if trials:
        slots = planned_slots(spec)
        groups = group_trials(spec, search, trials, slots)
        sizes = sorted({g.size for g in groups})
        shape = f"of {sizes[0]}" if len(sizes) == 1 else f"of {sizes[0]} to {sizes[-1]}"
        costs = sorted({relative_cost(list(g.members)) for g in groups})
        cost = f"{costs[0]:.0f}" if len(costs) == 1 else f"{costs[0]:.0f}-{costs[-1]:.0f}"
        lines.append(f"{len(trials)} trials in {len(groups)} group{'s' if len(groups) > 1 else ''} {shape} (by {how}), "
                     f"engine {execution.engine}; "
                     f"cost per group about {cost} CE-epochs")
        if how == "configs":
            lines.append(_slots_note(slots, len(groups) > len(group_trials(spec, search, trials))))
    elif how == "seeds":
        seeds = spec.phase_seeds(SEARCH)
        lines.append(f"each draw trains its {len(seeds)} seeds in one group; the search metric is their mean")
    if spec.search.two_phase and execution.group == "configs":
        lines.append("phase 2 (no early stopping) groups configurations that share dataset, model, batch size and "
                     f"epochs, up to {execution.max_members} members, split evenly while there are fewer groups than "
                     "slots")
    return lines


def _slots_note(slots: int | None, split: bool) -> str:
    if slots is None:
        return "groups: split further at run time while there are fewer of them than the cluster's slots"
    if split:
        return f"groups: split evenly to fill the {slots} slots of this machine (fewer would leave cores idle)"
    return f"groups: at least as many as the {slots} slots of this machine"


def _varying(configs: list[dict[str, Any]]) -> list[str]:
    keys = list(configs[0]) if configs else []
    return [k for k in keys if len({json.dumps(c.get(k), default=str) for c in configs}) > 1]


def _check_unique(trials: list[PlannedTrial]) -> None:
    keys = [t.key for t in trials]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ConfigError("methods", f"two planned trials are identical ({dup}); remove the repeated values")
