"""Planned trials: one resolved trial config with the ids that group, key and label it.

Each planned trial carries a ``config_id`` (a hash of its resolved config without the seed, so the seeds
of one configuration share it) and a readable ``label`` made of what varies. Every point is resolved with
the same validator the trial itself uses (:func:`trainables.config.resolve_trial`), so an invalid
combination fails before anything starts.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from trainables.config import resolve_trial
from trainables.methods import METHODS
from trainables.params import ConfigError
from trainables.selection import resolve_val_per_class

# The ids a planned trial adds to its resolved config in the Tune config (see as_tune_config).
ID_KEYS = ("config_id", "label", "trial_key", "phase", "axes", "plan_index", "draw")


@dataclass(frozen=True)
class PlannedTrial:
    """One trial of the sweep: its resolved config plus the ids that group and label it."""

    config: dict[str, Any]
    config_id: str
    seed: int
    label: str  # method and its swept knobs, e.g. "focal gamma=0.5"
    axes: dict[str, Any] = field(default_factory=dict)  # this trial's values of the spec's axes
    phase: str = "search"
    index: int = 0  # position in the plan (tables keep this order)
    draw: int | None = None  # Optuna's trial number for sampled trials (a draw can repeat a configuration)

    @property
    def key(self) -> str:
        """Unique within a sweep: configuration, seed, Optuna draw and (for phase 2) the phase."""
        return (f"{self.config_id}-s{self.seed}" + ("" if self.draw is None else f"-n{self.draw}")
                + ("" if self.phase == "search" else f"-{self.phase}"))

    def as_tune_config(self) -> dict[str, Any]:
        """The resolved trial plus its ids: what the trainable trains and the logger records."""
        return {**self.config, "config_id": self.config_id, "label": self.label, "trial_key": self.key,
                "phase": self.phase, "axes": self.axes, "plan_index": self.index, "draw": self.draw}

    @classmethod
    def from_tune_config(cls, cfg: Mapping[str, Any]) -> PlannedTrial:
        return cls({k: v for k, v in cfg.items() if k not in ID_KEYS}, cfg["config_id"], cfg["seed"], cfg["label"],
                   dict(cfg.get("axes", {})), cfg.get("phase", "search"), cfg.get("plan_index", 0), cfg.get("draw"))


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
    return sum(t.config["train"]["epochs"] for t in trials)


def relative_cost(trials: list[PlannedTrial]) -> float:
    """Trial-epochs weighted by each method's cost relative to CE (meta-learning methods about 3x)."""
    return sum(t.config["train"]["epochs"] * METHODS.get(t.config["method"]["name"]).relative_cost for t in trials)
