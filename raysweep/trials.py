"""Making planned trials: resolving one point of a spec into a trial config, its ``config_id`` and label.

The planned trial itself (:class:`trainables.planned.PlannedTrial`, re-exported here) is the one form a
trial takes from the planner to the trainable and the logger. Every point is resolved with the same
validator the trial itself uses (:func:`trainables.config.resolve_trial`), so an invalid combination fails
before anything starts.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any, Mapping, Sequence

from trainables.config import resolve_trial
from trainables.methods import METHODS
from trainables.params import ConfigError
from trainables.planned import PlannedTrial
from trainables.selection import resolve_val_per_class


def config_id(resolved: Mapping[str, Any]) -> str:
    """Stable 10-hex-digit id of a resolved trial config, ignoring the seed."""
    body = {k: v for k, v in resolved.items() if k != "seed"}
    return hashlib.sha1(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:10]


def fmt(value: Any) -> str:
    """A knob value as labels show it."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def resolve_point(sections: Mapping[str, Mapping[str, Any]], sweep_methods: Sequence[str], method: str,
                  hparams: Mapping[str, Any], axes: Mapping[str, Any],
                  train: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The resolved trial config (seed 0) of one point: a method config, axis values, train overrides.

    ``sections`` holds the spec's ``dataset``, ``model`` and ``train`` sections as written; axis values
    (dotted keys under those three) replace what they name. ``dataset.val_per_class: null`` (auto) is
    resolved over all ``sweep_methods``, so every trial of a sweep selects on the same split (see
    :mod:`trainables.selection`).
    """
    merged = {"dataset": copy.deepcopy(dict(sections["dataset"])), "model": copy.deepcopy(dict(sections["model"])),
              "train": {**copy.deepcopy(dict(sections["train"])), **(train or {})}}
    for key, value in axes.items():
        root, leaf = key.split(".", 1)
        merged[root][leaf] = value
    try:
        if merged["dataset"].get("val_per_class") is None:
            merged["dataset"]["val_per_class"] = resolve_val_per_class(merged["dataset"], sweep_methods)
        return resolve_trial({"method": {"name": method, **hparams}, **merged, "seed": 0})
    except ConfigError as err:
        where = ", ".join(f"{k}={v}" for k, v in axes.items())
        raise ConfigError(err.path, f"{err.message}" + (f" (with {where})" if where else "")) from None


def sampled_trial(sections: Mapping[str, Mapping[str, Any]], sweep_methods: Sequence[str], draw: Mapping[str, Any],
                  seed: int, number: int) -> PlannedTrial:
    """A trial drawn by Optuna (``search_spaces.sampling.sample``), resolved like a planned one."""
    method = draw["method"]
    resolved = resolve_point(sections, sweep_methods, method, draw["hparams"], {}, draw["train"])
    shown = {**{k: v for k, v in resolved["method"].items() if k != "name" and k in draw["hparams"]},
             **{f"train.{k}": resolved["train"][k] for k in draw["train"]}}
    label = " ".join([method] + [f"{k}={fmt(v)}" for k, v in shown.items()])
    return PlannedTrial({**resolved, "seed": seed}, config_id(resolved), seed, label, {}, "search", number, number)


def trial_epochs(trials: list[PlannedTrial]) -> int:
    return sum(t.epochs for t in trials)


def relative_cost(trials: list[PlannedTrial]) -> float:
    """Trial-epochs weighted by each method's cost relative to CE (meta-learning methods about 3x)."""
    return sum(t.epochs * METHODS.get(t.config["method"]["name"]).relative_cost for t in trials)


__all__ = ["PlannedTrial", "config_id", "fmt", "relative_cost", "resolve_point", "sampled_trial", "trial_epochs"]
