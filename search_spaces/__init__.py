"""What varies in a sweep: each method's default search space and paper grid, and grid expansion.

A :class:`MethodSpace` gives, for one registered method,

- ``grid``: the papers' grid as a list of blocks; each block is a factorial ``{knob: [values]}`` and the
  union of the blocks is the grid (this is how conditional structure is written: one block per parent
  value, e.g. DM's beta values per lambda; CDB's ``p`` only in the ``poly`` block);
- ``suggest(trial)``: a define-by-run sampler (Optuna's ``trial.suggest_*`` API) for random and Optuna
  search, which samples a conditional knob only when its parent allows it.

Modules in ``search_spaces/methods/`` register one space each (``SPACES.add``; found by ``discover``), so
adding a method's space is adding a file. A space must name a registered method.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

from trainables.methods import METHODS
from trainables.registry import Registry, discover

Suggest = Callable[[Any], dict[str, Any]]


@dataclass(frozen=True)
class MethodSpace:
    """The search space of one method (its own hyperparameters only; lr and wd are :func:`suggest_train`'s).

    Registered with ``SPACES.add(MethodSpace(method, description, grid=..., suggest=...))``.
    """

    method: str  # the registered method it belongs to (its registry name)
    description: str
    grid: list[dict[str, list[Any]]] = field(default_factory=list)
    suggest: Suggest | None = None  # None: grid only (random and Optuna search cannot sample it)

    @property
    def name(self) -> str:
        return self.method


def _names_a_method(space: MethodSpace) -> None:
    """A space for a method that is not registered would silently leave that method nothing to tune."""
    if space.method not in METHODS:
        raise ValueError(f"search space for unknown method {space.method!r}; registered: {', '.join(METHODS.names())}")


SPACES: Registry[MethodSpace] = Registry("search space", check=_names_a_method)


def suggest_train(trial: Any) -> dict[str, Any]:
    """The learning-rate and weight-decay space every method shares (log-uniform)."""
    return {"lr": trial.suggest_float("train.lr", 1e-3, 0.5, log=True),
            "weight_decay": trial.suggest_float("train.weight_decay", 1e-5, 1e-2, log=True)}


def space_for(method: str) -> MethodSpace:
    """The registered space of ``method``; a method without one has nothing to tune."""
    return SPACES.get(method) if method in SPACES else MethodSpace(method, "nothing to tune", suggest=lambda trial: {})


discover(f"{__name__}.methods", [os.path.join(os.path.dirname(__file__), "methods")])

__all__ = ["MethodSpace", "SPACES", "space_for", "suggest_train"]
