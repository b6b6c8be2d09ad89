"""Checks that run before anything of a sweep exists, and the Ray connection they lead to.

Order matters for the promise "bad input starts nothing": the spec is validated and planned first; here
the storage folder and the datasets are checked before Ray starts, and the cluster (its GPUs, every
node's view of the storage) right after it starts, before any MLflow run or sweep folder is created.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from raysweep.execution.cluster import check_storage_on_nodes, start_ray, stop_ray
from raysweep.planning.plan import memory_fit
from raysweep.spec.resources import (
    check_fits,
    concurrent_trials,
    local_cluster,
    local_cpus,
    trial_resources,
    whole_cores,
)
from raysweep.spec.schema import Spec
from raysweep.tracking.mlflow_store import resolve_tracking_uri
from raysweep.tracking.store_check import check_scheme, check_store
from raysweep.trials import PlannedTrial
from trainables.data import DATASETS, resolve_dataset
from trainables.data.sizes import SplitSizes, check_split_sizes
from trainables.methods import METHODS
from trainables.metrics import reported_metrics
from trainables.pairs import check_pairs
from trainables.params import ConfigError


@dataclass(frozen=True)
class TrialResources:
    """What each Tune trial gets: Ray resources, the GPU memory share to cap, and how many run at once."""

    per_trial: dict[str, float]
    gpu_fraction: float | None
    slots: int


def check_storage(path: str) -> Path:
    """The resolved storage folder after checking it can be written; leaves nothing behind.

    An unwritable folder (a file in the way, no permission, a read-only file system) is a ConfigError
    naming ``storage``. Folders missing on the way are created for the probe and removed again: bad input
    elsewhere must not leave an empty results folder behind.
    """
    root = Path(path).expanduser().resolve()
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError("storage", f"cannot write to {root}: {existing} is a file, not a folder")
    created: list[Path] = []
    try:
        for folder in reversed([root, *root.parents]):
            if not folder.exists():
                folder.mkdir()
                created.append(folder)
        fd, probe = tempfile.mkstemp(prefix=".raysweep-write-test-", dir=root)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ConfigError("storage", f"cannot write to {root}: {err.strerror or err}") from None
    finally:
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()
    return root


def check_datasets(spec: Spec, trials: list[PlannedTrial]) -> None:
    """Each distinct dataset config: its source's own preflight (e.g. files present under ``root``), then
    that each trial's model can take its inputs (trainables.pairs), then its split sizes (every class keeps
    training examples after the hold-outs) where labels are cheap, and that the table's metric is one the
    trials will report."""
    configs = [t.config["dataset"] for t in trials] or [resolve_dataset(spec.dataset)]
    seen = set()
    for cfg in configs:
        key = json.dumps(cfg, sort_keys=True, default=str)
        preflight = DATASETS.get(cfg["name"]).preflight
        if key not in seen and preflight is not None:
            preflight(cfg)
        seen.add(key)
    check_pairs([t.config for t in trials])
    memory_fit(spec, trials)
    check_table_metric(spec, check_split_sizes(configs).values())


def check_table_metric(spec: Spec, sizes: Iterable[SplitSizes | None]) -> None:
    """``table.metric`` names a metric every epoch reports (known once every dataset's split sizes are) or a
    diagnostic of one of the spec's methods; else a ConfigError listing the allowed names."""
    sizes = list(sizes)
    metric = spec.table.metric
    if not sizes or any(s is None for s in sizes) or any(METHODS.get(m).reports(metric) for m in spec.methods_written):
        return
    allowed = sorted(set().union(*(reported_metrics(s.num_classes, s.groups, s.noisy) for s in sizes)))
    if metric not in allowed:
        shown = [m for m in allowed if "_class" not in m]
        raise ConfigError("table.metric", f"no trial reports {metric!r}; allowed: {', '.join(shown)} (and per-class "
                                          "test_acc_class<c>, or a method's own diagnostics such as cdb_tau)")


def check_table_keys(spec: Spec, trials: list[PlannedTrial]) -> None:
    """``table.rows`` and ``table.cols`` name keys the planned configurations have, read the way the table reads
    MLflow's params (flattened config, method knobs scoped by method); else a ConfigError listing them.
    A sampling mode's draws are not known yet: nothing to check before it runs."""
    import pandas as pd

    from analysis.aggregate import key_values, known_keys, scope_knobs
    from raysweep.tracking.mlflow_store import flatten

    if not trials:
        return
    frame = scope_knobs(pd.DataFrame([{"config_id": t.config_id, "seed": t.seed, "method": t.config["method"]["name"],
                                       "label": t.label, **flatten(t.config)} for t in trials]))
    for field, key in (("table.rows", spec.table.rows), ("table.cols", spec.table.cols)):
        if key is not None and key not in ("config", "method") and key_values(frame, key) is None:
            raise ConfigError(field, f"no planned configuration has the key {key!r}; allowed: "
                                     f"{', '.join(['config', 'method'] + known_keys(frame))} (a method's knob also "
                                     "as method.<knob>)")


def check_tracking(spec: Spec) -> str:
    """The tracking URI the sweep will log to (spec, MLFLOW_TRACKING_URI or ./mlflow.db), after checking
    MLflow supports it and the store answers (or can be created) now; a ConfigError names ``tracking.uri``."""
    uri = resolve_tracking_uri(spec.tracking.uri)
    check_scheme(uri)
    check_store(uri)
    return uri


def check_local_cpus(spec: Spec) -> None:
    """A trial's CPU demand fits the local Ray this machine would start (before starting it)."""
    if not (spec.cluster.address or os.environ.get("RAY_ADDRESS")):
        check_fits({"cpu": spec.resources.cpu}, local_cluster(local_cpus()))


@contextlib.contextmanager
def connected(spec: Spec, storage: Path, echo: Callable[[str], None]) -> Iterator[TrialResources]:
    """Start or join Ray, run the cluster preflights, and yield each trial's resources; Ray is shut down
    (a Ray started here is stopped; a cluster joined is only left) when the block ends, whatever happens."""
    import ray

    check_local_cpus(spec)
    started = start_ray(spec.cluster.address, spec.cluster.connect_timeout_s)
    try:
        per_trial, gpu_fraction = trial_resources(spec.resources, ray.cluster_resources().get("GPU", 0), echo)
        check_fits(per_trial, ray.nodes(), "resources.trials_per_gpu" if spec.resources.trials_per_gpu else
                   "resources.gpu")
        if not started and spec.cluster.storage_check and not only_this_node():
            _check_shared_storage(storage)
        slots = concurrent_trials(ray.cluster_resources().get("CPU", 1), per_trial["cpu"], "gpu" in per_trial)
        if spec.scheduler.synchronous:  # no cap in Tune (build_tuner): Ray's packing holds trials to the slots
            per_trial = whole_cores(per_trial)
        yield TrialResources(per_trial, gpu_fraction, slots)
    finally:
        stop_ray()


def only_this_node() -> bool:
    """Whether the joined cluster is this machine alone (a head kept running for fast iteration): then every
    node sees the driver's folders, and the storage check's task (a worker process start) is skipped."""
    import ray

    alive = [n for n in ray.nodes() if n.get("Alive")]
    return len(alive) == 1 and alive[0]["NodeID"] == ray.get_runtime_context().get_node_id()


def _check_shared_storage(storage: Path) -> None:
    """Every node of a joined cluster reads the storage folder (created for the check, removed if it fails)."""
    created = not storage.exists()
    storage.mkdir(parents=True, exist_ok=True)
    try:
        check_storage_on_nodes(storage)
    except ConfigError:
        if created:
            with contextlib.suppress(OSError):
                storage.rmdir()
        raise

