"""The YAML sweep spec: its schema, ``--set`` overrides, and validation before anything starts.

A spec names a dataset, a model, train settings, and the methods under study as a mapping from registered
method name to that method's swept values. Validation resolves every section against the same ``Param``
declarations the trial uses, so an invalid value fails here with its key path (exit code 2 in the CLI),
before Ray starts or an MLflow run exists.
"""

from __future__ import annotations

import copy
import importlib
import re
from pathlib import Path
from typing import Any, Mapping

import yaml

from search_spaces import space_for
from search_spaces.grid import expand_method, factorial
from trainables.config import TRAIN_PARAMS, resolve_train
from trainables.data import dataset_params, resolve_dataset
from trainables.methods import METHODS
from trainables.models import model_params, resolve_model
from trainables.params import ConfigError, Param, as_list, resolve

SEARCH_MODES = ("grid", "ofat", "random", "optuna")
SEARCH_METRICS = {"val_balanced_acc": "max", "train_loss": "min"}  # never a test metric: no test-set selection

TOP_LEVEL = ("name", "description", "dataset", "model", "train", "methods", "axes", "seeds", "search",
             "scheduler", "resources", "tracking", "storage", "failure", "table", "cluster", "plugins")

SEARCH_PARAMS = {
    "mode": Param("grid", (str,), choices=SEARCH_MODES),
    "metric": Param("val_balanced_acc", (str,), choices=tuple(SEARCH_METRICS)),
    "direction": Param(None, (str,), choices=("max", "min"), nullable=True, help="null = the metric's natural one"),
    "num_samples": Param(8, (int,), low=1, help="random: configurations per method; optuna: trials in all"),
    "seed": Param(0, (int,), low=0, help="random/optuna: sampler seed"),
    "tune_train": Param(False, (bool,), help="random/optuna: also sample train.lr and train.weight_decay"),
    "base": Param(None, (dict,), nullable=True, help="ofat: base value of every factor (method.knob or axis key)"),
    "two_phase": Param(False, (bool,), help="search with the first seed, then rerun the top_k with all seeds"),
    "top_k": Param(3, (int,), low=1, help="two_phase: configurations confirmed in phase 2"),
    "baseline": Param(None, (str,), nullable=True,
                      help="two_phase: this method's best configuration is always confirmed too (e.g. ce)"),
}
SCHEDULER_PARAMS = {
    "name": Param("fifo", (str,), choices=("fifo", "asha")),
    "grace_period": Param(1, (int,), low=1, help="asha: epochs before a trial can be stopped"),
    "reduction_factor": Param(2.0, (float,), low=1.0, low_open=True),
}
RESOURCES_PARAMS = {
    "cpu": Param(1.0, (float,), low=0.0, low_open=True, help="CPUs per trial (fractions pack trials)"),
    "gpu": Param(0.0, (float,), low=0.0, high=1.0, help="GPU fraction per trial; demands a GPU"),
    "trials_per_gpu": Param(None, (int,), low=1, nullable=True, help="k trials share each GPU (gpu = 1/k)"),
    "require_gpu": Param(False, (bool,), help="trials_per_gpu on a GPU-less cluster: fail instead of CPU fallback"),
    "max_concurrent": Param(None, (int,), low=1, nullable=True),
}
TRACKING_PARAMS = {
    "uri": Param(None, (str,), nullable=True, help="MLflow tracking URI; null = sqlite file ./mlflow.db"),
    "experiment": Param(None, (str,), nullable=True, help="null = the spec's name"),
}
FAILURE_PARAMS = {
    "max_failures": Param(1, (int,), low=0, help="retries of a failed trial from its checkpoint"),
    "keep_checkpoints": Param(None, (int,), low=1, nullable=True,
                              help="null keeps every epoch's checkpoint; k keeps the last k (forces Ray snapshots)"),
}
TABLE_PARAMS = {
    "rows": Param("config", (str,), help="config, method, or a dotted config key such as method.gamma"),
    "cols": Param(None, (str,), nullable=True, help="a dotted config key such as dataset.imbalance"),
    "metric": Param("test_acc", (str,)),
}
CLUSTER_PARAMS = {
    "address": Param(None, (str,), nullable=True, help="an existing Ray cluster (host:port or auto); null = "
                                                       "RAY_ADDRESS, else start one on this machine"),
    "connect_timeout_s": Param(10.0, (float,), low=0.0, low_open=True,
                               help="give up on an unreachable cluster.address after this many seconds"),
    "storage_check": Param(True, (bool,), help="before any trial, check every node can read the storage folder"),
}
MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
AXIS_ROOTS = ("dataset", "model", "train")


def load_spec(path: str | Path) -> dict[str, Any]:
    """Read a YAML spec (``yaml.safe_load``); a file that is not a mapping is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("spec", f"file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError("spec", f"not valid YAML: {err}".replace("\n", " ")) from None
    if not isinstance(raw, dict):
        raise ConfigError("spec", "must be a YAML mapping of sections (name, dataset, model, methods, ...)")
    return raw


def apply_overrides(spec: Mapping[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a copy of ``spec``."""
    out = copy.deepcopy(dict(spec))
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError("--set", f"expected key.path=value, got {item!r}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(key, f"value {text!r} is not valid YAML") from None
        node = out
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if isinstance(child, str) and part == "model":
                child = {"name": child}
            if child is None:
                child = {}
            if not isinstance(child, dict):
                raise ConfigError(".".join(parts[: i + 1]), f"is {child!r}, not a section; cannot set {key}")
            node[part] = child
            node = child
        node[parts[-1]] = value
    return out


def import_plugins(raw: Any) -> list[str]:
    """Import the spec's ``plugins`` (module names) so the methods, datasets and models they register exist.

    The driver imports them before validating the rest of the spec, and every trial imports them again in
    its worker before training (``trainables.tune``), so a plugin must be importable on every node.
    """
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(m, str) and MODULE_NAME.match(m) for m in raw):
        raise ConfigError("plugins", f"must be a list of importable module names (e.g. [my_methods]), got {raw!r}")
    for name in raw:
        try:
            importlib.import_module(name)
        except Exception as err:  # a plugin's own bug is still bad input for this spec
            first = (str(err).splitlines() or [""])[0]
            raise ConfigError("plugins", f"cannot import {name!r}: {type(err).__name__}: {first}") from None
    return list(raw)


def _section(raw: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(key, f"must be a mapping, got {value!r}")
    return value


def _swept(section: Mapping[str, Any]) -> dict[str, Any]:
    """The scalar form of a section (the first value of any list) for validating the base config."""
    return {k: (v[0] if isinstance(v, list) and v else v) for k, v in section.items()}


def validate_spec(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a raw spec and return it normalised (every section resolved, defaults filled).

    The returned ``methods`` maps each method to its list of resolved hyperparameter dicts (grid mode)
    and ``axes`` maps dotted keys to value lists; the planner expands the rest.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError("spec", "must be a mapping")
    unknown = sorted(set(raw) - set(TOP_LEVEL))
    if unknown:
        raise ConfigError(unknown[0], f"unknown key; allowed keys: {', '.join(TOP_LEVEL)}")
    plugins = import_plugins(raw.get("plugins"))
    name = raw.get("name")
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_." for c in name):
        raise ConfigError("name", f"must be a non-empty string of letters, digits, '-', '_', '.', got {name!r}")
    if "dataset" not in raw:
        raise ConfigError("dataset", "missing; e.g. dataset: {name: mnist1d, imbalance: 100}")
    if "model" not in raw:
        raise ConfigError("model", "missing; e.g. model: cnn1d")
    dataset = resolve_dataset(_section(raw, "dataset"))
    model = resolve_model(raw["model"])
    train = resolve_train(_section(raw, "train"))
    search = resolve(SEARCH_PARAMS, _section(raw, "search"), "search")
    search["direction"] = search["direction"] or SEARCH_METRICS[search["metric"]]
    scheduler = resolve(SCHEDULER_PARAMS, _section(raw, "scheduler"), "scheduler")
    if scheduler["name"] == "asha" and scheduler["grace_period"] > train["epochs"]:
        raise ConfigError("scheduler.grace_period", f"must be <= train.epochs ({train['epochs']}), got {scheduler['grace_period']}")
    resources = resolve(RESOURCES_PARAMS, _section(raw, "resources"), "resources")
    if resources["gpu"] and resources["trials_per_gpu"]:
        raise ConfigError("resources.trials_per_gpu", "give either gpu or trials_per_gpu, not both")
    methods = _validate_methods(raw.get("methods"))
    if search["baseline"] is not None and search["baseline"] not in methods:
        raise ConfigError("search.baseline", f"must be one of the spec's methods: {', '.join(methods)}; "
                                             f"got {search['baseline']!r}")
    _validate_mode(search, raw["methods"])
    axes = _validate_axes(_section(raw, "axes"), dataset, model, train)
    return {
        "name": name,
        "description": str(raw.get("description", "")),
        # Sections stay as written (validated): the planner merges axis values in and resolves each trial.
        "dataset": dict(_section(raw, "dataset")),
        "model": {"name": raw["model"]} if isinstance(raw["model"], str) else dict(raw["model"]),
        "train": dict(_section(raw, "train")),
        "methods": methods, "methods_raw": {k: (v if v is not None else {}) for k, v in raw["methods"].items()},
        "axes": axes,
        "seeds": _validate_seeds(raw.get("seeds", 1)),
        "search": search, "scheduler": scheduler, "resources": resources,
        "tracking": resolve(TRACKING_PARAMS, _section(raw, "tracking"), "tracking"),
        "storage": _validate_storage(raw.get("storage", "raysweep_results")),
        "failure": resolve(FAILURE_PARAMS, _section(raw, "failure"), "failure"),
        "table": resolve(TABLE_PARAMS, _section(raw, "table"), "table"),
        "cluster": resolve(CLUSTER_PARAMS, _section(raw, "cluster"), "cluster"),
        "plugins": plugins,
    }


def _validate_methods(raw: Any) -> dict[str, list[dict[str, Any]]]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("methods", f"must map method names to swept values; registered: {', '.join(METHODS.names())}")
    out = {}
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
            for knob, vals in block.items():
                if isinstance(vals, list) and not vals:
                    raise ConfigError(f"{path}.{knob}", "empty list of values")
        out[name] = expand_method(name, blocks, path)
    return out


def _validate_mode(search: Mapping[str, Any], methods_raw: Mapping[str, Any]) -> None:
    """Mode-specific rules: ofat needs a base; sampled modes need fixed scalars and a sampling space."""
    mode = search["mode"]
    if mode == "ofat":
        if not search["base"]:
            raise ConfigError("search.base", "mode ofat needs a base value for every swept factor, "
                                             "e.g. base: {cdb_w_ce.tau: 1, dataset.imbalance: 100}")
        for name, values in methods_raw.items():
            if values is not None and not isinstance(values, dict):
                raise ConfigError(f"methods.{name}", "mode ofat takes one mapping of knob -> values per method")
    if mode in ("random", "optuna"):
        sampled = False
        for name, values in methods_raw.items():
            path = f"methods.{name}"
            if values is not None and (not isinstance(values, dict) or any(isinstance(v, list) for v in values.values())):
                raise ConfigError(path, f"mode {mode} samples the method's space: give single values to fix knobs, "
                                        "not lists, blocks or 'paper'")
            if METHODS.get(name).params and space_for(name).suggest is None:
                raise ConfigError(path, "has a grid-only search space; use mode grid or ofat")
            sampled = sampled or bool(METHODS.get(name).params)
        if mode == "optuna" and not (sampled or len(methods_raw) > 1 or search["tune_train"]):
            raise ConfigError("search.mode", "optuna has nothing to sample: add a method with knobs, a second "
                                             "method, or search.tune_train: true")


def _validate_axes(raw: Mapping[str, Any], dataset, model, train) -> dict[str, list[Any]]:
    """Each axis is a dotted key under dataset/model/train with a non-empty list of valid values."""
    declared = {"dataset": dataset_params(dataset["name"]), "model": model_params(model["name"]), "train": TRAIN_PARAMS}
    out = {}
    for key, values in raw.items():
        path = f"axes.{key}"
        root, _, leaf = str(key).partition(".")
        if root not in AXIS_ROOTS or not leaf:
            raise ConfigError(path, f"axis keys are dotted paths under {', '.join(AXIS_ROOTS)} (e.g. dataset.imbalance)")
        if leaf == "name" and root == "dataset":
            values = as_list(values)
            for v in values:
                resolve_dataset({"name": v}, path)
            out[key] = values
            continue
        if leaf not in declared[root]:
            raise ConfigError(path, f"unknown key; allowed under {root}: {', '.join(sorted(declared[root]))}")
        values = as_list(values)
        if not values:
            raise ConfigError(path, "empty list of values")
        out[key] = [declared[root][leaf].validate(v, path) for v in values]
    return out


def _validate_seeds(raw: Any) -> list[int]:
    """``seeds: n`` means seeds 0..n-1; a list gives them explicitly."""
    if isinstance(raw, bool):
        raise ConfigError("seeds", f"must be a positive integer or a list of distinct integers >= 0, got {raw!r}")
    if isinstance(raw, int):
        if raw < 1:
            raise ConfigError("seeds", f"must be a positive integer or a list of distinct integers >= 0, got {raw!r}")
        return list(range(raw))
    if isinstance(raw, list) and raw and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in raw) \
            and len(set(raw)) == len(raw):
        return list(raw)
    raise ConfigError("seeds", f"must be a positive integer or a list of distinct integers >= 0, got {raw!r}")


def _validate_storage(raw: Any) -> str:
    if not isinstance(raw, str) or not raw:
        raise ConfigError("storage", f"must be a directory path, got {raw!r}")
    return raw


def trial_axes(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The factorial of the spec's axes as a list of ``{dotted key: value}`` (one empty dict if none)."""
    return factorial(spec["axes"]) if spec["axes"] else [{}]


def spec_epochs(spec: Mapping[str, Any]) -> int:
    """The spec's ``train.epochs`` with its default filled (axes may still vary it per trial)."""
    return resolve_train(spec["train"])["epochs"]


def asha_rungs(grace_period: float, reduction_factor: float, max_epoch: float) -> list[float]:
    """ASHA's milestones below ``max_epoch``: grace_period * reduction_factor^k, as Ray's scheduler places them."""
    rungs, k = [], 0
    while (milestone := grace_period * reduction_factor ** k) < max_epoch:
        rungs.append(int(milestone) if float(milestone).is_integer() else milestone)
        k += 1
    return rungs
