"""Define-by-run sampling across methods: ``method`` is the top-level choice, each method's space under it.

Used by random and Optuna search. Knob names are namespaced by method (``focal.gamma``) so two methods'
knobs with the same name never share an Optuna distribution.
"""

from __future__ import annotations

from typing import Any, Mapping

from search_spaces import space_for, suggest_train


class PrefixedTrial:
    """Wraps an Optuna trial so a method's ``suggest`` names its knobs ``<prefix><name>``."""

    def __init__(self, trial: Any, prefix: str) -> None:
        self._trial, self._prefix = trial, prefix

    def suggest_float(self, name: str, *args: Any, **kwargs: Any) -> float:
        return self._trial.suggest_float(self._prefix + name, *args, **kwargs)

    def suggest_int(self, name: str, *args: Any, **kwargs: Any) -> int:
        return self._trial.suggest_int(self._prefix + name, *args, **kwargs)

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self._trial.suggest_categorical(self._prefix + name, choices)


def sample_method(trial: Any, method: str, fixed: Mapping[str, Any]) -> dict[str, Any]:
    """One draw of ``method``'s own space with the ``fixed`` knobs overriding the draw."""
    suggest = space_for(method).suggest
    if suggest is None:
        raise ValueError(f"method {method!r} has a grid-only search space")
    return {**suggest(PrefixedTrial(trial, f"{method}.")), **fixed}


def sample(trial: Any, methods: Mapping[str, Mapping[str, Any]], tune_train: bool) -> dict[str, Any]:
    """Draw ``{"method": name, "hparams": {...}, "train": {...}}``: the method first, then its sub-space."""
    names = list(methods)
    method = trial.suggest_categorical("method", names) if len(names) > 1 else names[0]
    return {"method": method, "hparams": sample_method(trial, method, methods[method]),
            "train": suggest_train(trial) if tune_train else {}}
