"""Expand a validated spec into the planned trials: every (method config x axes x seed), resolved.

Each planned trial carries a ``config_id`` (a hash of its resolved config without the seed, so the seeds
of one configuration share it) and a readable ``label`` made of what varies. Planning resolves every trial
with the same validator the trial itself uses, so an invalid combination fails before anything starts.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from search_spaces import space_for
from search_spaces.grid import dedupe
from raysweep.spec import trial_axes
from trainables.config import resolve_trial
from trainables.methods import METHODS
from trainables.params import ConfigError, InactiveParamError


@dataclass(frozen=True)
class PlannedTrial:
    """One trial of the sweep: its resolved config plus the ids that group and label it."""

    config: dict[str, Any]
    config_id: str
    seed: int
    label: str  # method and its swept knobs, e.g. "focal gamma=0.5"
    axes: dict[str, Any] = field(default_factory=dict)  # this trial's values of the spec's axes

    @property
    def key(self) -> str:
        """Unique within a sweep: configuration and seed."""
        return f"{self.config_id}-s{self.seed}"

    def as_tune_config(self) -> dict[str, Any]:
        """What the Ray trainable receives: the resolved trial plus its ids."""
        return {**self.config, "config_id": self.config_id, "label": self.label, "trial_key": self.key}


def config_id(resolved: Mapping[str, Any]) -> str:
    """Stable 10-hex-digit id of a resolved trial config, ignoring the seed."""
    body = {k: v for k, v in resolved.items() if k != "seed"}
    return hashlib.sha1(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:10]


def method_configs(spec: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per method, the hyperparameter dicts to run: the grid (grid mode) or samples of its space (random).

    In random mode a knob written in the spec as a single value stays fixed; the rest is sampled from the
    method's registered space with Optuna's RandomSampler (seeded by ``search.seed``), conditional knobs
    only where their parent allows them.
    """
    if spec["search"]["mode"] == "grid":
        return spec["methods"]
    import optuna  # only random mode needs it

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = {}
    for name, raw in spec["methods_raw"].items():
        path = f"methods.{name}"
        if not isinstance(raw, dict) or any(isinstance(v, list) for v in raw.values()):
            raise ConfigError(path, "random mode samples the method's space: give single values to fix knobs, not lists or 'paper'")
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=spec["search"]["seed"]))
        samples = []
        for _ in range(spec["search"]["num_samples"]):
            trial = study.ask()
            samples.append(METHODS.get(name).resolve_params({**space_for(name).suggest(trial), **raw}, path))
            study.tell(trial, 0.0)
        out[name] = dedupe(samples)  # a space with few knobs can draw the same configuration twice
    return out


def _varying(configs: list[dict[str, Any]]) -> list[str]:
    keys = list(configs[0]) if configs else []
    return [k for k in keys if len({json.dumps(c.get(k), default=str) for c in configs}) > 1]


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def plan(spec: Mapping[str, Any]) -> list[PlannedTrial]:
    """All trials of a validated spec, in a stable order (methods, configs, axes, then seeds)."""
    trials: list[PlannedTrial] = []
    for method, configs in method_configs(spec).items():
        varying = _varying(configs)
        for hparams in configs:
            label = " ".join([method] + [f"{k}={_fmt(hparams[k])}" for k in varying])
            for axes in trial_axes(spec):
                sections = {"dataset": copy.deepcopy(spec["dataset"]), "model": copy.deepcopy(spec["model"]),
                            "train": copy.deepcopy(spec["train"])}
                for key, value in axes.items():
                    root, leaf = key.split(".", 1)
                    sections[root][leaf] = value
                raw = {"method": {"name": method, **hparams}, **sections}
                try:
                    resolved = resolve_trial({**raw, "seed": 0})
                except ConfigError as err:
                    where = ", ".join(f"{k}={v}" for k, v in axes.items())
                    raise ConfigError(err.path, f"{err.message} (in the combination {where or label})") from None
                cid = config_id(resolved)
                for seed in spec["seeds"]:
                    trials.append(PlannedTrial({**resolved, "seed": seed}, cid, seed, label, dict(axes)))
    _check_unique(trials)
    return trials


def _check_unique(trials: list[PlannedTrial]) -> None:
    keys = [t.key for t in trials]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ConfigError("methods", f"two planned trials are identical ({dup}); remove the repeated values")


def trial_epochs(trials: list[PlannedTrial]) -> int:
    return sum(t.config["train"]["epochs"] for t in trials)


def relative_cost(trials: list[PlannedTrial]) -> float:
    """Trial-epochs weighted by each method's cost relative to CE (meta-learning methods about 3x)."""
    return sum(t.config["train"]["epochs"] * METHODS.get(t.config["method"]["name"]).relative_cost for t in trials)
