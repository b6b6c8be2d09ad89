"""Expand a validated spec into the planned trials: every (method config x axes x seed), resolved.

Each planned trial carries a ``config_id`` (a hash of its resolved config without the seed, so the seeds
of one configuration share it) and a readable ``label`` made of what varies. Planning resolves every trial
with the same validator the trial itself uses, so an invalid combination fails before anything starts.
Optuna trials are sampled while the sweep runs; :func:`sampled_trial` resolves each of them the same way.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from search_spaces.ablation import ofat
from search_spaces.grid import dedupe
from search_spaces.sampling import sample_method
from raysweep.spec import trial_axes
from trainables.config import resolve_trial
from trainables.methods import METHODS
from trainables.params import ConfigError

PHASES = ("search", "confirm")


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
        """What the Ray trainable receives: the resolved trial plus its ids."""
        return {**self.config, "config_id": self.config_id, "label": self.label, "trial_key": self.key,
                "phase": self.phase, "axes": self.axes, "plan_index": self.index, "draw": self.draw}

    @classmethod
    def from_tune_config(cls, cfg: Mapping[str, Any]) -> "PlannedTrial":
        ids = ("config_id", "label", "trial_key", "phase", "axes", "plan_index", "draw", "gpu_fraction")
        return cls({k: v for k, v in cfg.items() if k not in ids}, cfg["config_id"], cfg["seed"], cfg["label"],
                   dict(cfg.get("axes", {})), cfg.get("phase", "search"), cfg.get("plan_index", 0), cfg.get("draw"))


def config_id(resolved: Mapping[str, Any]) -> str:
    """Stable 10-hex-digit id of a resolved trial config, ignoring the seed."""
    body = {k: v for k, v in resolved.items() if k != "seed"}
    return hashlib.sha1(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def resolve_point(spec: Mapping[str, Any], method: str, hparams: Mapping[str, Any], axes: Mapping[str, Any],
                  train: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The resolved trial config (seed 0) of one point: a method config, axis values, train overrides."""
    sections = {"dataset": copy.deepcopy(spec["dataset"]), "model": copy.deepcopy(spec["model"]),
                "train": {**copy.deepcopy(spec["train"]), **(train or {})}}
    for key, value in axes.items():
        root, leaf = key.split(".", 1)
        sections[root][leaf] = value
    try:
        return resolve_trial({"method": {"name": method, **hparams}, **sections, "seed": 0})
    except ConfigError as err:
        where = ", ".join(f"{k}={v}" for k, v in axes.items())
        raise ConfigError(err.path, f"{err.message}" + (f" (with {where})" if where else "")) from None


def points(spec: Mapping[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(method, hyperparameters, axis values) of every configuration the mode asks for."""
    mode = spec["search"]["mode"]
    if mode == "ofat":
        return _ofat_points(spec)
    if mode == "optuna":
        return []
    out = []
    for method, configs in method_configs(spec).items():
        out += [(method, hp, axes) for hp in configs for axes in trial_axes(spec)]
    return out


def method_configs(spec: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per method, the hyperparameter dicts to run: the grid (grid mode) or samples of its space (random).

    In random mode a knob written in the spec as a single value stays fixed; the rest is drawn from the
    method's registered space with Optuna's RandomSampler (seeded by ``search.seed``), conditional knobs
    only where their parent allows them.
    """
    if spec["search"]["mode"] != "random":
        return spec["methods"]
    import optuna  # only random mode needs it here

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = {}
    for name, fixed in spec["methods_raw"].items():
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=spec["search"]["seed"]))
        samples = []
        for _ in range(spec["search"]["num_samples"]):
            trial = study.ask()
            samples.append(METHODS.get(name).resolve_params(sample_method(trial, name, fixed), f"methods.{name}"))
            study.tell(trial, 0.0)
        out[name] = dedupe(samples)  # a space with few knobs can draw the same configuration twice
    return out


def _ofat_points(spec: Mapping[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Per method: its swept knobs (``method.knob``) and the spec's axes are the factors."""
    base = spec["search"]["base"]
    swept = {m: {f"{m}.{k}": v for k, v in raw.items() if isinstance(v, list)} for m, raw in spec["methods_raw"].items()}
    known = set(spec["axes"]).union(*(set(f) for f in swept.values()))
    unknown = sorted(set(base) - known)
    if unknown:
        raise ConfigError(f"search.base.{unknown[0]}", f"is not a swept factor; factors: {', '.join(sorted(known)) or '(none)'}")
    out = []
    for method, raw in spec["methods_raw"].items():
        fixed = {k: v for k, v in raw.items() if not isinstance(v, list)}
        factors = {**swept[method], **spec["axes"]}
        for point in ofat(factors, {k: v for k, v in base.items() if k in factors}):
            hp = {**fixed, **{k.split(".", 1)[1]: v for k, v in point.items() if k in swept[method]}}
            out.append((method, hp, {k: v for k, v in point.items() if k in spec["axes"]}))
    return out


def plan(spec: Mapping[str, Any], seeds: list[int] | None = None) -> list[PlannedTrial]:
    """All trials of a validated spec, in a stable order (methods, configs, axes, then seeds).

    ``seeds`` defaults to the spec's; a two-phase search plans phase 1 with the first seed only.
    """
    if seeds is None:
        seeds = spec["seeds"][:1] if spec["search"]["two_phase"] else spec["seeds"]
    pts = points(spec)
    varying = {m: _varying([hp for mm, hp, _ in pts if mm == m]) for m in dict.fromkeys(m for m, _, _ in pts)}
    trials: list[PlannedTrial] = []
    for method, hp, axes in pts:
        resolved = resolve_point(spec, method, hp, axes)
        params = resolved["method"]
        label = " ".join([method] + [f"{k}={_fmt(params[k])}" for k in varying[method]])
        cid = config_id(resolved)
        for seed in seeds:
            trials.append(PlannedTrial({**resolved, "seed": seed}, cid, seed, label, dict(axes), "search", len(trials)))
    _check_unique(trials)
    return trials


def confirm_plan(spec: Mapping[str, Any], best: list[PlannedTrial]) -> list[PlannedTrial]:
    """Phase 2 of a two-phase search: each of the ``best`` configurations with every seed."""
    out = []
    for t in best:
        for seed in spec["seeds"]:
            out.append(PlannedTrial({**t.config, "seed": seed}, t.config_id, seed, t.label, t.axes, "confirm", len(out)))
    return out


def sampled_trial(spec: Mapping[str, Any], draw: Mapping[str, Any], seed: int, number: int) -> PlannedTrial:
    """A trial drawn by Optuna (``search_spaces.sampling.sample``), resolved like a planned one."""
    method = draw["method"]
    resolved = resolve_point(spec, method, draw["hparams"], {}, draw["train"])
    shown = {**{k: v for k, v in resolved["method"].items() if k != "name" and k in draw["hparams"]},
             **{f"train.{k}": resolved["train"][k] for k in draw["train"]}}
    label = " ".join([method] + [f"{k}={_fmt(v)}" for k, v in shown.items()])
    return PlannedTrial({**resolved, "seed": seed}, config_id(resolved), seed, label, {}, "search", number, number)


def _varying(configs: list[dict[str, Any]]) -> list[str]:
    keys = list(configs[0]) if configs else []
    return [k for k in keys if len({json.dumps(c.get(k), default=str) for c in configs}) > 1]


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
