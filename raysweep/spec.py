"""The YAML sweep spec: one table of sections, validated into a typed, frozen :class:`Spec`.

A spec names a dataset, a model, train settings, and the methods under study as a mapping from registered
method name to that method's swept values. :data:`SECTIONS` lists every top-level key with its validator,
in the order they are checked; it is the one list of keys (unknown ones are refused by it). Validation
resolves every section against the same ``Param`` declarations the trial uses, so an invalid value fails
here with its key path (exit code 2 in the CLI), before Ray starts or an MLflow run exists.

Reading a spec file and ``--set`` overrides is :mod:`raysweep.spec_yaml`'s job. Two forms of a spec:
:attr:`Spec.written` is the spec as written (after ``--set``), which the sweep
manifest keeps and ``raysweep resume`` validates again; the :class:`Spec` itself is the expanded one
(defaults filled, each method's grid expanded into ``methods_expanded``).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Mapping

from raysweep.modes import MODES, SearchMode
from raysweep.paths import check_name
from raysweep.resources import check_resolution
from raysweep.schedulers import Scheduler, resolve_scheduler
from raysweep.store_check import check_scheme
from search_spaces import space_for
from search_spaces.grid import expand_method, factorial
from trainables.config import TRAIN_PARAMS, resolve_train
from trainables.data import dataset_params, resolve_dataset
from trainables.methods import METHODS
from trainables.models import model_params, resolve_model
from trainables.params import ConfigError, Param, as_list, resolve
from trainables.plugins import import_plugins
from trainables.selection import selection_split

SEARCH_METRICS = {"val_balanced_acc": "max", "train_loss": "min"}  # never a test metric: no test-set selection
AXIS_ROOTS = ("dataset", "model", "train")


def knob(default: Any, types: tuple[type, ...] = (float,), **declaration: Any) -> Any:
    """A section field declared by its :class:`Param` (the one place its default and range are written)."""
    return field(default=default, metadata={"param": Param(default, types, **declaration)})


class Section:
    """A spec section with fixed keys: a frozen dataclass whose fields are declared with :func:`knob`."""

    @classmethod
    def params(cls) -> dict[str, Param]:
        return {f.name: f.metadata["param"] for f in fields(cls)}

    @classmethod
    def from_raw(cls, raw: Any, path: str):
        return cls(**resolve(cls.params(), _mapping(raw, path), path))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Search(Section):
    mode: str = knob("grid", (str,), choices=tuple(MODES.names()))
    metric: str = knob("val_balanced_acc", (str,), choices=tuple(SEARCH_METRICS))
    direction: str | None = knob(None, (str,), choices=("max", "min"), nullable=True,
                                 help="null = the metric's natural one")
    num_samples: int = knob(8, (int,), low=1, help="random: configurations per method; optuna: trials in all")
    seed: int = knob(0, (int,), low=0, help="random/optuna: sampler seed")
    tune_train: bool = knob(False, (bool,), help="random/optuna: also sample train.lr and train.weight_decay")
    base: dict | None = knob(None, (dict,), nullable=True,
                             help="ofat: base value of every factor (method.knob or axis key)")
    two_phase: bool = knob(False, (bool,), help="search with the first seed, then rerun the top_k with all seeds")
    top_k: int = knob(3, (int,), low=1, help="two_phase: configurations confirmed in phase 2")
    baseline: str | None = knob(None, (str,), nullable=True,
                                help="two_phase: this method's best configuration is always confirmed too (e.g. ce)")


@dataclass(frozen=True)
class Resources(Section):
    cpu: float = knob(1.0, (float,), low=0.0, low_open=True, help="CPUs per trial (fractions pack trials)")
    gpu: float = knob(0.0, (float,), low=0.0, high=1.0, help="GPU fraction per trial; demands a GPU")
    trials_per_gpu: int | None = knob(None, (int,), low=1, nullable=True, help="k trials share each GPU (gpu = 1/k)")
    require_gpu: bool = knob(False, (bool,), help="trials_per_gpu on a GPU-less cluster: fail instead of CPU fallback")
    max_concurrent: int | None = knob(None, (int,), low=1, nullable=True)


@dataclass(frozen=True)
class Tracking(Section):
    uri: str | None = knob(None, (str,), nullable=True, help="MLflow tracking URI; null = sqlite file ./mlflow.db")
    experiment: str | None = knob(None, (str,), nullable=True, help="null = the spec's name")


@dataclass(frozen=True)
class Failure(Section):
    max_failures: int = knob(1, (int,), low=0, help="retries of a failed trial from its checkpoint")
    keep_checkpoints: int | None = knob(None, (int,), low=1, nullable=True,
                                        help="null keeps every epoch's checkpoint; k keeps the last k "
                                             "(forces Ray snapshots)")


@dataclass(frozen=True)
class Table(Section):
    rows: str = knob("config", (str,), help="config, method, or a dotted config key such as method.gamma")
    cols: str | None = knob(None, (str,), nullable=True, help="a dotted config key such as dataset.imbalance")
    metric: str = knob("test_acc", (str,))


@dataclass(frozen=True)
class Cluster(Section):
    address: str | None = knob(None, (str,), nullable=True,
                               help="an existing Ray cluster (host:port or auto); null = RAY_ADDRESS, else start "
                                    "one on this machine")
    connect_timeout_s: float = knob(10.0, (float,), low=0.0, low_open=True,
                                    help="give up on an unreachable cluster.address after this many seconds")
    storage_check: bool = knob(True, (bool,), help="before any trial, check every node can read the storage folder")


@dataclass(frozen=True)
class Execution(Section):
    group: str = knob("none", (str,), choices=("none", "seeds", "configs"),
                      help="train several planned trials in one Ray trial: the seeds of a configuration, or "
                           "configurations that share dataset, model, batch size and epochs (FIFO phases)")
    max_members: int = knob(16, (int,), low=1, high=1024, help="members of one group at most")
    engine: str = knob("auto", (str,), choices=("auto", "fused", "loop"),
                       help="loop: members one after another; fused: one stacked forward/backward; auto: the "
                            "faster for the device")


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
def _mapping(value: Any, key: str) -> dict[str, Any]:
    value = value or {}
    if not isinstance(value, dict):
        raise ConfigError(key, f"must be a mapping, got {value!r}")
    return value


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
    resolve_dataset(_mapping(raw, "dataset"))
    return {"dataset": dict(raw)}


def _model(raw: Any, done: dict[str, Any]) -> dict[str, Any]:
    if raw is None:
        raise ConfigError("model", "missing; e.g. model: cnn1d")
    resolve_model(raw)
    return {"model": {"name": raw} if isinstance(raw, str) else dict(raw)}


def _train(raw: Any, done: dict[str, Any]) -> dict[str, Any]:
    resolve_train(_mapping(raw, "train"))
    return {"train": dict(_mapping(raw, "train"))}


def _search(raw: Any, done: dict[str, Any]) -> dict[str, Any]:
    search = Search.from_raw(raw, "search")
    if search.direction is None:
        search = Search(**{**search.as_dict(), "direction": SEARCH_METRICS[search.metric]})
    return {"search": search}


def _scheduler(raw: Any, done: dict[str, Any]) -> dict[str, Any]:
    return {"scheduler": resolve_scheduler(_mapping(raw, "scheduler"), resolve_train(done["train"])["epochs"])}


def _resources(raw: Any, done: dict[str, Any]) -> dict[str, Any]:
    resources = Resources.from_raw(raw, "resources")
    if resources.gpu and resources.trials_per_gpu:
        raise ConfigError("resources.trials_per_gpu", "give either gpu or trials_per_gpu, not both")
    check_resolution(resources)
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
    for key, values in _mapping(raw, "axes").items():
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
    return {"axes": out}


def _seeds(raw: Any, done: dict[str, Any]) -> dict[str, Any]:
    """``seeds: n`` means seeds 0..n-1; a list gives them explicitly."""
    raw = 1 if raw is None else raw
    problem = ConfigError("seeds", f"must be a positive integer or a list of distinct integers >= 0, got {raw!r}")
    if isinstance(raw, bool):
        raise problem
    if isinstance(raw, int):
        if raw < 1:
            raise problem
        return {"seeds": tuple(range(raw))}
    if isinstance(raw, list) and raw and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in raw) \
            and len(set(raw)) == len(raw):
        return {"seeds": tuple(raw)}
    raise problem


def _storage(raw: Any, done: dict[str, Any]) -> dict[str, Any]:
    raw = "raysweep_results" if raw is None else raw
    if not isinstance(raw, str) or not raw:
        raise ConfigError("storage", f"must be a directory path, got {raw!r}")
    return {"storage": raw}


def _section(key: str, cls: type[Section]) -> Callable[[Any, dict[str, Any]], dict[str, Any]]:
    return lambda raw, done: {key: cls.from_raw(raw, key)}


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
    ("table", _section("table", Table)),
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
