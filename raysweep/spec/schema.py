"""The YAML sweep spec: one table of sections, validated into a typed, frozen :class:`Spec`.

A spec names a dataset, a model, train settings, and the methods under study as a mapping from registered
method name to that method's swept values. :data:`SECTIONS` lists every top-level key with its validator,
in the order they are checked; it is the one list of keys (unknown ones are refused by it). Validation
resolves every section against the same ``Param`` declarations the trial uses, so an invalid value fails
here with its key path (exit code 2 in the CLI), before Ray starts or an MLflow run exists.

Reading a spec file and ``--set`` overrides is :mod:`raysweep.spec.loading`'s job. Two forms of a spec:
:attr:`Spec.written` is the spec as written (after ``--set``), which the sweep
manifest keeps and ``raysweep resume`` validates again; the :class:`Spec` itself is the expanded one
(defaults filled, each method's grid expanded into ``methods_expanded``).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from raysweep.paths import check_name
from raysweep.search.modes import MODES, SearchMode
from raysweep.search.schedulers import SCHEDULERS, Scheduler, resolve_scheduler
from raysweep.spec.bounds import check_count, grid_size
from raysweep.spec.resources import check_resolution
from raysweep.spec.sections import (
    SEARCH_METRICS,
    Cluster,
    Execution,
    Failure,
    Resources,
    Search,
    Section,
    Table,
    Tracking,
    mapping,
)
from raysweep.tracking.store_check import check_scheme
from search_spaces import space_for
from search_spaces.grid import expand_method, factorial
from trainables.config import TRAIN_PARAMS, resolve_train
from trainables.data import dataset_params, resolve_dataset
from trainables.methods import METHODS
from trainables.models import model_params, resolve_model
from trainables.params import ConfigError, as_list
from trainables.plugins import import_plugins
from trainables.selection import selection_split

AXIS_ROOTS = ("dataset", "model", "train")
MAX_SEED = 2**63 - 1  # torch.manual_seed's signed 64-bit range (numpy generators take any such integer)


@dataclass(frozen=True)
class Spec:
    """A validated sweep spec (see the module docstring). Sections as written are plain read-only dicts."""

    name: str
    description: str
    dataset: dict[str, Any]  # as written, validated: the planner merges axis values in and resolves each trial
    model: dict[str, Any]
    train: dict[str, Any]
    methods_written: dict[str, Any]  # method -> its values as written ({} for none)
    methods_expanded: dict[str, list[dict[str, Any]]]  # method -> every resolved hyperparameter dict of its grid
    axes: dict[str, list[Any]]  # dotted key -> values
    seeds: tuple[int, ...]
    search: Search
    scheduler: Scheduler
    resources: Resources
    tracking: Tracking
    storage: str
    failure: Failure
    table: Table
    cluster: Cluster
    execution: Execution
    plugins: tuple[str, ...]
    written: dict[str, Any]  # the spec as written, after --set overrides

    @property
    def mode(self) -> SearchMode:
        return MODES.get(self.search.mode)()

    @property
    def epochs(self) -> int:
        """``train.epochs`` with its default filled (axes may still vary it per trial)."""
        return resolve_train(self.train)["epochs"]

    def sections(self) -> dict[str, dict[str, Any]]:
        """The ``dataset``, ``model`` and ``train`` sections a trial is resolved from."""
        return {"dataset": self.dataset, "model": self.model, "train": self.train}

    def phase_seeds(self, phase: str) -> tuple[int, ...]:
        """The seeds a phase runs: two-phase searches with the first seed and confirms with all of them."""
        return self.seeds[:1] if self.search.two_phase and phase == "search" else self.seeds

    def selection(self) -> tuple[str, str | None]:
        """(which split selects configurations, a warning when a method learns from it) for the whole sweep."""
        return selection_split(self.dataset, list(self.methods_written))

    def axis_points(self) -> list[dict[str, Any]]:
        """The factorial of the spec's axes as a list of ``{dotted key: value}`` (one empty dict if none)."""
        return factorial(self.axes) if self.axes else [{}]

    def to_dict(self) -> dict[str, Any]:
        """Every section resolved, in spec form (validating it again gives the same Spec)."""
        out: dict[str, Any] = {}
        for key, _ in SECTIONS:
            value = self.methods_written if key == "methods" else getattr(self, key)
            if isinstance(value, Section):
                value = value.as_dict()
            elif isinstance(value, Scheduler):
                value = {"name": value.name, **value.options}
            out[key] = list(value) if isinstance(value, tuple) else copy.deepcopy(value)
        return out


# ---- the sections and their validators, in the order they are checked ----------------------------------------
def _plugins(raw: Any, done: dict[str, Any]) -> dict[str, Any]:
    """The driver imports the plugins before the rest is checked; every trial imports them again in its worker
    (``trainables.tune``), so a plugin must be importable on every node."""
    return {"plugins": tuple(import_plugins(raw))}


def _name(raw: Any, done: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(raw, str) or not raw or not all(c.isalnum() or c in "-_." for c in raw):
        raise ConfigError("name", f"must be a non-empty string of letters, digits, '-', '_', '.', got {raw!r}")
    return {"name": check_name(raw, "name")}


def _description(raw: Any, done: dict[str, Any]) -> dict[str, Any]:
    return {"description": "" if raw is None else str(raw)}


def _dataset(raw: Any, done: dict[str, Any]) -> dict[str, Any]:
    if raw is None:
        raise ConfigError("dataset", "missing; e.g. dataset: {name: mnist1d, imbalance: 100}")
    resolve_dataset(mapping(raw, "dataset"))
    return {"dataset": dict(raw)}


def _model(raw: Any, done: dict[str, Any]) -> dict[str, Any]:
    if raw is None:
        raise ConfigError("model", "missing; e.g. model: cnn1d")
    resolve_model(raw)
    return {"model": {"name": raw} if isinstance(raw, str) else dict(raw)}


def _train(raw: Any, done: dict[str, Any]) -> dict[str, Any]:
    resolve_train(mapping(raw, "train"))
    return {"train": dict(mapping(raw, "train"))}


def _search(raw: Any, done: dict[str, Any]) -> dict[str, Any]:
    search = Search.from_raw(raw, "search")
    if search.direction is None:
        search = Search(**{**search.as_dict(), "direction": SEARCH_METRICS[search.metric]})
    return {"search": search}


def _scheduler(raw: Any, done: dict[str, Any]) -> dict[str, Any]:
    return {"scheduler": resolve_scheduler(mapping(raw, "scheduler"), resolve_train(done["train"])["epochs"])}


def _resources(raw: Any, done: dict[str, Any]) -> dict[str, Any]:
    resources = Resources.from_raw(raw, "resources")
    if resources.gpu and resources.trials_per_gpu:
        raise ConfigError("resources.trials_per_gpu", "give either gpu or trials_per_gpu, not both")
    check_resolution(resources)
    scheduler: Scheduler = done["scheduler"]
    if resources.max_concurrent is not None and scheduler.synchronous:
        others = ", ".join(n for n in SCHEDULERS.names() if not SCHEDULERS.get(n).synchronous)
        raise ConfigError("resources.max_concurrent",
                          f"cannot be combined with scheduler {scheduler.name!r}: a bracket is decided when all its "
                          "trials reach a milestone, and a cap on running trials fills it one trial at a time "
                          f"(nothing would be stopped); allowed: unset, or scheduler.name one of {others}")
    return {"resources": resources}


def _tracking(raw: Any, done: dict[str, Any]) -> dict[str, Any]:
    """A store MLflow can use (its scheme; whether it answers is a preflight) and an experiment name that
    cannot steer its artifact folder outside the store's artifact root."""
    tracking = Tracking.from_raw(raw, "tracking")
    if tracking.uri is not None:
        check_scheme(tracking.uri)
    if tracking.experiment is not None:
        check_name(tracking.experiment, "tracking.experiment")
    return {"tracking": tracking}


def _methods(raw: Any, done: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("methods", f"must map method names to swept values; registered: {', '.join(METHODS.names())}")
    expanded = {}
    for name, values in raw.items():
        path = f"methods.{name}"
        if name not in METHODS:
            raise ConfigError(path, f"unknown method; allowed: {', '.join(METHODS.names())}")
        if values == "paper":
            blocks = space_for(name).grid or [{}]
        elif values is None or isinstance(values, dict):
            blocks = [values or {}]
        elif isinstance(values, list) and all(isinstance(b, dict) for b in values):
            blocks = values
        else:
            raise ConfigError(path, "must be a mapping of knob -> values, a list of such mappings, or 'paper'")
        for block in blocks:
            for knob_name, vals in block.items():
                if isinstance(vals, list) and not vals:
                    raise ConfigError(f"{path}.{knob_name}", "empty list of values")
        check_count(grid_size(blocks), path, "configurations")  # counted before the grid is built
        expanded[name] = expand_method(name, blocks, path)
    search: Search = done["search"]
    if search.baseline is not None and search.baseline not in expanded:
        raise ConfigError("search.baseline", f"must be one of the spec's methods: {', '.join(expanded)}; "
                                             f"got {search.baseline!r}")
    written = {k: (v if v is not None else {}) for k, v in raw.items()}
    MODES.get(search.mode)().check(search, written)
    return {"methods_written": written, "methods_expanded": expanded}


def _axes(raw: Any, done: dict[str, Any]) -> dict[str, Any]:
    """Each axis is a dotted key under dataset/model/train with a non-empty list of valid values."""
    dataset, model = resolve_dataset(done["dataset"]), resolve_model(done["model"])
    declared = {"dataset": dataset_params(dataset["name"]), "model": model_params(model["name"]), "train": TRAIN_PARAMS}
    out = {}
    for key, values in mapping(raw, "axes").items():
        path = f"axes.{key}"
        root, _, leaf = str(key).partition(".")
        if root not in AXIS_ROOTS or not leaf:
            raise ConfigError(path, f"axis keys are dotted paths under {', '.join(AXIS_ROOTS)} "
                                    "(e.g. dataset.imbalance)")
        values = as_list(values)
        if leaf == "name" and root == "dataset":
            for v in values:
                resolve_dataset({"name": v}, path)
            out[key] = values
            continue
        if leaf not in declared[root]:
            raise ConfigError(path, f"unknown key; allowed under {root}: {', '.join(sorted(declared[root]))}")
        if not values:
            raise ConfigError(path, "empty list of values")
        out[key] = [declared[root][leaf].validate(v, path) for v in values]
    configurations = sum(len(v) for v in done["methods_expanded"].values())
    check_count(configurations * math.prod(len(v) for v in out.values()), "axes", "configurations (methods x axes)")
    return {"axes": out}


def _seeds(raw: Any, done: dict[str, Any]) -> dict[str, Any]:
    """``seeds: n`` means seeds 0..n-1; a list gives them explicitly (each in the 64-bit range torch seeds with).
    The trials they make (configurations x axis points x seeds) are counted before any list is built."""
    raw = 1 if raw is None else raw
    problem = ConfigError("seeds", f"must be a positive integer or a list of distinct integers in [0, {MAX_SEED}], "
                                   f"got {raw!r}")
    if isinstance(raw, bool):
        raise problem
    count = raw if isinstance(raw, int) else len(raw) if isinstance(raw, list) else 0
    configurations = sum(len(v) for v in done["methods_expanded"].values()) * math.prod(
        len(v) for v in done["axes"].values())
    check_count(count * configurations, "seeds", f"trials ({configurations:,} configurations x {count:,} seeds)")
    if isinstance(raw, int):
        if raw < 1:
            raise problem
        return {"seeds": tuple(range(raw))}
    if isinstance(raw, list) and raw and all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED
                                             for s in raw) and len(set(raw)) == len(raw):
        return {"seeds": tuple(raw)}
    raise problem


def _storage(raw: Any, done: dict[str, Any]) -> dict[str, Any]:
    raw = "raysweep_results" if raw is None else raw
    if not isinstance(raw, str) or not raw:
        raise ConfigError("storage", f"must be a directory path, got {raw!r}")
    return {"storage": raw}


def _section(key: str, cls: type[Section]) -> Callable[[Any, dict[str, Any]], dict[str, Any]]:
    return lambda raw, done: {key: cls.from_raw(raw, key)}


def _table(raw: Any, done: dict[str, Any]) -> dict[str, Any]:
    table = Table.from_raw(raw, "table")
    methods = list(done["methods_expanded"])
    if table.baseline not in (None, "auto") and table.baseline not in methods:
        raise ConfigError("table.baseline", f"must be auto, null or one of the spec's methods: {', '.join(methods)}; "
                                            f"got {table.baseline!r}")
    return {"table": table}


SECTIONS: tuple[tuple[str, Callable[[Any, dict[str, Any]], dict[str, Any]]], ...] = (
    ("plugins", _plugins),  # first: what plugins register must exist before the rest is checked
    ("name", _name),
    ("description", _description),
    ("dataset", _dataset),
    ("model", _model),
    ("train", _train),
    ("search", _search),
    ("scheduler", _scheduler),
    ("resources", _resources),
    ("methods", _methods),
    ("axes", _axes),
    ("seeds", _seeds),
    ("tracking", _tracking),
    ("storage", _storage),
    ("failure", _section("failure", Failure)),
    ("table", _table),
    ("cluster", _section("cluster", Cluster)),
    ("execution", _section("execution", Execution)),
)
TOP_LEVEL = tuple(key for key, _ in SECTIONS)


def validate_spec(raw: Mapping[str, Any]) -> Spec:
    """Validate a spec as written (sections in :data:`SECTIONS` order) and return the expanded :class:`Spec`."""
    if not isinstance(raw, Mapping):
        raise ConfigError("spec", "must be a mapping")
    unknown = sorted(set(raw) - set(TOP_LEVEL), key=str)
    if unknown:
        raise ConfigError(str(unknown[0]), f"unknown key; allowed keys: {', '.join(TOP_LEVEL)}")
    done: dict[str, Any] = {}
    for key, check in SECTIONS:
        done.update(check(raw.get(key), done))
    return Spec(**done, written=copy.deepcopy(dict(raw)))
