"""Grid expansion with conditional structure: the valid combinations only, each once, in a stable order."""

from __future__ import annotations

import itertools
import json
from typing import Any, Iterable, Mapping

from trainables.methods import METHODS
from trainables.params import ConfigError, InactiveParamError, as_list


def factorial(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """All combinations of ``{key: [values]}`` (scalars count as one value), keys in the given order."""
    keys = list(values)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(as_list(values[k]) for k in keys))]


def dedupe(configs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Drop repeated configurations (compared after canonical JSON encoding), keeping first occurrences."""
    seen, out = set(), []
    for cfg in configs:
        key = json.dumps(cfg, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append(dict(cfg))
    return out


def expand_method(method: str, blocks: list[Mapping[str, Any]] | Mapping[str, Any], path: str) -> list[dict[str, Any]]:
    """Expand a method's swept values into resolved hyperparameter dicts (defaults filled).

    ``blocks`` is one factorial or a list of them. Combinations in which a conditional knob is inactive
    (its parent disables it) are dropped; if a knob is inactive in every combination, or any other value
    is invalid, a ConfigError names the key.
    """
    cls = METHODS.get(method)
    blocks = [blocks] if isinstance(blocks, Mapping) else list(blocks)
    resolved, inactive = [], None
    for block in blocks:
        for combo in factorial(block):
            try:
                resolved.append(cls.resolve_params(combo, path))
            except InactiveParamError as err:
                inactive = err
    if not resolved:
        raise inactive or ConfigError(path, "expands to no configuration")
    return dedupe(resolved)
