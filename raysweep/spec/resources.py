"""What one trial asks Ray for, and whether any node of the cluster can ever give it.

Ray leaves a trial that no node can hold PENDING forever without a word (``resources: {cpu: 100}`` on a
2-CPU machine hung with a store, runs and idle workers created), and turns a fraction finer than its
resolution into a precision error with a traceback (``cpu: 1.0e-9``). These checks refuse both before
anything starts, naming the field and the allowed range.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from trainables.params import ConfigError

if TYPE_CHECKING:  # raysweep.spec.schema validates resources with check_resolution: no import cycle at run time
    from raysweep.spec.sections import Resources

# Ray 2.60 counts resources in fixed point: ray._raylet.RESOURCE_UNIT_SCALING = 10000 units per CPU or GPU
# (ray._private.ray_constants.MIN_RESOURCE_GRANULARITY = 0.0001); a test pins this to the installed Ray.
RESOURCE_UNITS = 10_000
RESOLUTION = 1.0 / RESOURCE_UNITS


def local_cpus() -> int:
    """The CPUs a local Ray gets: all of this machine's."""
    return os.cpu_count() or 1


def trial_resources(resources: Resources, cluster_gpus: float,
                    notice: Callable[[str], None]) -> tuple[dict, float | None]:
    """Ray resources per trial and the GPU memory fraction to cap, after checking the cluster has GPUs.

    An explicit ``gpu`` fraction is a demand: no GPU in the cluster is a ConfigError (Ray would leave the
    trials pending forever without a word). ``trials_per_gpu`` falls back to CPUs with a notice, unless
    ``require_gpu`` is set.
    """
    per_trial = {"cpu": resources.cpu}
    gpu = resources.gpu or (1.0 / resources.trials_per_gpu if resources.trials_per_gpu else 0.0)
    if gpu and cluster_gpus <= 0:
        if resources.gpu or resources.require_gpu:
            key = "resources.gpu" if resources.gpu else "resources.require_gpu"
            raise ConfigError(key, "the Ray cluster has no GPU; set resources.gpu: 0 (or use trials_per_gpu "
                                   "without require_gpu to fall back to CPUs)")
        notice("notice: no GPU in the Ray cluster; running trials_per_gpu trials on CPUs instead")
        return per_trial, None
    if gpu:
        per_trial["gpu"] = gpu
    return per_trial, (gpu or None)


def _units(amount: float) -> int:
    return round(float(amount) * RESOURCE_UNITS)


def _on_grid(amount: float) -> bool:
    """Whether ``amount`` is a whole number of Ray's resource units (up to float rounding)."""
    scaled = float(amount) * RESOURCE_UNITS
    return abs(scaled - round(scaled)) <= 1e-6 * max(1.0, scaled)


def check_resolution(resources: Resources) -> None:
    """The spec's ``resources`` (validated) respect Ray's resolution of 0.0001 CPU or GPU.

    ``cpu`` and a nonzero ``gpu`` must be whole multiples of 0.0001 (Ray would round anything finer, and
    refuses anything below it); ``trials_per_gpu`` may be at most 10000 (1/k below 0.0001 would be zero).
    A pure check on the spec: it needs no cluster and runs with the rest of spec validation.
    """
    for key in ("cpu", "gpu"):
        value = getattr(resources, key) or 0.0
        if value and (_units(value) < 1 or not _on_grid(value)):
            raise ConfigError(f"resources.{key}", f"must be a multiple of {RESOLUTION:g} (Ray's resource resolution), "
                                                  f"at least {RESOLUTION:g}; got {value!r}")
    k = resources.trials_per_gpu
    if k and k > RESOURCE_UNITS:
        raise ConfigError("resources.trials_per_gpu", f"must be at most {RESOURCE_UNITS} (each trial's 1/k of a GPU "
                                                      f"must be at least {RESOLUTION:g}); got {k!r}")


def local_cluster(num_cpus: float) -> list[dict[str, Any]]:
    """What ``ray.nodes()`` will say about the local Ray that ``raysweep.execution.cluster.start_ray`` starts with
    ``num_cpus``, so :func:`check_fits` can refuse a CPU demand before Ray starts (its GPUs are known only
    once Ray has detected them: check the GPU part again with the real ``ray.nodes()``)."""
    return [{"NodeID": "local", "Alive": True, "NodeManagerAddress": "127.0.0.1",
             "Resources": {"CPU": float(num_cpus)}}]


def _fmt(amount: float) -> str:
    return f"{float(amount):g}"


def check_fits(per_trial: Mapping[str, float], nodes: Iterable[Mapping[str, Any]],
               gpu_field: str = "resources.gpu") -> None:
    """Some alive node of ``nodes`` (``ray.nodes()``-shaped) holds one trial's ``per_trial`` demand at once.

    ``per_trial`` is :func:`trial_resources`' first value (``{"cpu": c}`` plus ``"gpu"`` when GPUs are
    used). Compared in Ray's fixed-point units. Otherwise a ConfigError: ``resources.cpu`` when no node
    has that many CPUs, ``gpu_field`` (``resources.gpu``, or ``resources.trials_per_gpu`` when the share
    came from it) when no node has that much GPU, or no node has both; each message gives the range that
    would fit.
    """
    alive = [n for n in nodes if n.get("Alive", True)]
    demand = {"CPU": float(per_trial.get("cpu") or 0.0), "GPU": float(per_trial.get("gpu") or 0.0)}

    def has(node: Mapping[str, Any], key: str) -> float:
        return float((node.get("Resources") or {}).get(key, 0.0))

    if any(all(_units(has(n, k)) >= _units(v) for k, v in demand.items() if v) for n in alive):
        return
    cpu, gpu = demand["CPU"], demand["GPU"]
    most_cpus = max((has(n, "CPU") for n in alive), default=0.0)
    if not alive:
        raise ConfigError("resources.cpu", "the Ray cluster has no alive node to run a trial on")
    if _units(cpu) > _units(most_cpus):
        raise ConfigError("resources.cpu", f"a trial asks for {_fmt(cpu)} CPUs, but the largest node of the Ray "
                                           f"cluster has {_fmt(most_cpus)}; allowed: {RESOLUTION:g} to "
                                           f"{_fmt(most_cpus)} (Ray would leave every trial pending)")
    most_gpus = max((has(n, "GPU") for n in alive), default=0.0)
    if _units(gpu) > _units(most_gpus):
        raise ConfigError(gpu_field, f"a trial asks for {_fmt(gpu)} GPU, but the largest node of the Ray cluster "
                                     f"has {_fmt(most_gpus)}; allowed: up to {_fmt(most_gpus)}")
    cpus_beside = max((has(n, "CPU") for n in alive if _units(has(n, "GPU")) >= _units(gpu)), default=0.0)
    raise ConfigError(gpu_field, f"no node of the Ray cluster has both {_fmt(cpu)} CPUs and {_fmt(gpu)} GPU for one "
                                 f"trial; the nodes with that much GPU have at most {_fmt(cpus_beside)} CPUs "
                                 f"(lower resources.cpu to at most that)")


def occupied_cpus(cpu_per_trial: float, uses_gpu: bool) -> float:
    """The CPUs one trial occupies: its ``cpu``, but at least one whole CPU for a CPU-only trial.

    A trial trains on ``max(1, floor(cpu))`` threads, so a CPU-only trial of ``cpu`` below 1 still keeps a
    whole core busy: packing ``cpus / cpu`` of them would start more worker processes than cores, each
    paying its start-up (seconds) to wait for a core. GPU trials keep the fractional packing (the GPU, not the
    core, is what they wait on).
    """
    return float(cpu_per_trial) if uses_gpu else max(1.0, float(cpu_per_trial))


def whole_cores(per_trial: Mapping[str, float]) -> dict[str, float]:
    """``per_trial`` asking Ray for :func:`occupied_cpus`: Ray's own packing then runs as many trials at once
    as :func:`concurrent_trials` counts, with no cap in Tune: what a synchronous scheduler needs (every trial
    created at the start, see ``raysweep.search.schedulers.Scheduler.synchronous``)."""
    return {**per_trial, "cpu": occupied_cpus(per_trial["cpu"], bool(per_trial.get("gpu")))}


def concurrent_trials(cpus: float, cpu_per_trial: float, uses_gpu: bool) -> int:
    """How many Ray trials (one worker process each) run at once on ``cpus`` CPUs: as many as fit when each
    occupies :func:`occupied_cpus`."""
    return max(1, _units(cpus) // max(1, _units(occupied_cpus(cpu_per_trial, uses_gpu))))
