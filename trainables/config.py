"""The resolved configuration of one trial: method, dataset, model, train settings and seed.

``resolve_trial`` validates a raw trial config and fills every default; it is idempotent, so the planner
and the training loop can both call it and a standalone user can pass a partial config.
"""

from __future__ import annotations

from typing import Any, Mapping

from trainables.data import resolve_dataset
from trainables.methods import METHODS
from trainables.models import resolve_model
from trainables.params import ConfigError, Param, resolve, resolve_named
from trainables.selection import resolve_val_per_class

SCHEDULES = ("constant", "cosine", "multistep")

TRAIN_PARAMS: dict[str, Param] = {
    "epochs": Param(20, (int,), low=1, high=100000),
    "batch_size": Param(128, (int,), low=1),
    "lr": Param(0.1, (float,), low=0.0, high=10.0, low_open=True, help="SGD learning rate"),
    "momentum": Param(0.9, (float,), low=0.0, high=1.0, high_open=True),
    "nesterov": Param(False, (bool,)),
    "weight_decay": Param(5e-4, (float,), low=0.0, high=1.0),
    "schedule": Param("cosine", (str,), choices=SCHEDULES, help="per-epoch learning-rate schedule"),
    "milestones": Param([], (list,), help="multistep: epochs (0-based) at which lr *= lr_decay"),
    "lr_decay": Param(0.1, (float,), low=0.0, high=1.0, low_open=True),
    "warmup_epochs": Param(0, (int,), low=0, help="linear warm-up from lr/warmup to lr"),
    "eval_batch_size": Param(1024, (int,), low=1),
    "device": Param("auto", (str,), choices=("auto", "cpu", "cuda"), help="auto = cuda when visible"),
}


def resolve_train(raw: Mapping[str, Any] | None, path: str = "train") -> dict[str, Any]:
    cfg = resolve(TRAIN_PARAMS, raw, path)
    ms = cfg["milestones"]
    if not all(isinstance(m, int) and not isinstance(m, bool) and 0 < m < cfg["epochs"] for m in ms):
        raise ConfigError(f"{path}.milestones",
                          f"must be a list of integers in (0, epochs={cfg['epochs']}), got {ms!r}")
    if sorted(set(ms)) != list(ms):
        raise ConfigError(f"{path}.milestones", f"must be strictly increasing, got {ms!r}")
    if cfg["schedule"] == "multistep" and not ms:
        raise ConfigError(f"{path}.milestones", "schedule 'multistep' needs at least one milestone")
    if cfg["warmup_epochs"] >= cfg["epochs"]:
        raise ConfigError(f"{path}.warmup_epochs", f"must be < epochs ({cfg['epochs']}), got {cfg['warmup_epochs']}")
    return cfg


def resolve_method(raw: Mapping[str, Any], path: str = "method") -> dict[str, Any]:
    """Validate ``{name: ..., hyperparameters...}`` against the registered method's declaration."""
    return resolve_named(raw, path, METHODS.names(), "method",
                         lambda name, options, where: METHODS.get(name).resolve_params(options, where))


TRIAL_KEYS = ("method", "dataset", "model", "train", "seed")


def resolve_trial(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a whole trial config and fill defaults. Extra top-level keys (ids, tags) pass through.

    ``dataset.val_per_class: null`` (auto) is resolved for this trial's method: meta_per_class when the
    method learns from the meta set, else 0 (:func:`trainables.selection.resolve_val_per_class`; a sweep
    resolves it once over all its methods before its trials, so they share one split).
    """
    for key in ("method", "dataset", "model"):
        if key not in raw:
            raise ConfigError(key, "missing")
    seed = Param(0, (int,), low=0).validate(raw.get("seed", 0), "seed")
    out = {k: v for k, v in raw.items() if k not in TRIAL_KEYS}
    method = resolve_method(raw["method"])
    dataset = resolve_dataset(raw["dataset"])
    dataset["val_per_class"] = resolve_val_per_class(dataset, [method["name"]])
    out.update(
        method=method,
        dataset=dataset,
        model=resolve_model(raw["model"]),
        train=resolve_train(raw.get("train")),
        seed=seed,
    )
    return out
