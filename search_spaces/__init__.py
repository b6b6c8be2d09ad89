"""What varies in a sweep: each method's default search space and paper grid, and grid expansion.

A :class:`MethodSpace` gives, for one registered method,

- ``grid``: the papers' grid as a list of blocks; each block is a factorial ``{knob: [values]}`` and the
  union of the blocks is the grid (this is how conditional structure is written: one block per parent
  value, e.g. DM's beta values per lambda; CDB's ``p`` only in the ``poly`` block);
- ``suggest(trial)``: a define-by-run sampler (Optuna's ``trial.suggest_*`` API) for random and Optuna
  search, which samples a conditional knob only when its parent allows it.

Modules in ``search_spaces/methods/`` register one space each, so adding a method's space is adding a file.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

from trainables.registry import Registry

Suggest = Callable[[Any], dict[str, Any]]


@dataclass(frozen=True)
class MethodSpace:
    """The search space of one method (its own hyperparameters only; lr and wd are :func:`suggest_train`'s)."""

    grid: list[dict[str, list[Any]]] = field(default_factory=list)
    suggest: Suggest | None = None  # None: grid only (random and Optuna search cannot sample it)


SPACES: Registry[MethodSpace] = Registry("search space")


def register_space(method: str, description: str, space: MethodSpace) -> MethodSpace:
    return SPACES.register(method, description)(space)


def suggest_train(trial: Any) -> dict[str, Any]:
    """The learning-rate and weight-decay space every method shares (log-uniform)."""
    return {"lr": trial.suggest_float("train.lr", 1e-3, 0.5, log=True),
            "weight_decay": trial.suggest_float("train.weight_decay", 1e-5, 1e-2, log=True)}


def space_for(method: str) -> MethodSpace:
    """The registered space of ``method``; a method without one has nothing to tune."""
    return SPACES.get(method) if method in SPACES else MethodSpace(suggest=lambda trial: {})


for _info in pkgutil.iter_modules([os.path.join(os.path.dirname(__file__), "methods")]):
    importlib.import_module(f"{__name__}.methods.{_info.name}")

__all__ = ["MethodSpace", "SPACES", "register_space", "space_for", "suggest_train"]
