"""One-factor-at-a-time ablations: a base point plus each factor's values with every other factor at base."""

from __future__ import annotations

from typing import Any, Mapping

from trainables.params import ConfigError


def ofat(factors: Mapping[str, list[Any]], base: Mapping[str, Any], path: str = "search.base") -> list[dict[str, Any]]:
    """The base point once, then for each factor every non-base value with the others at base.

    Yields 1 + sum(len(values) - 1) points. Every factor needs a base value, and it must be one of the
    factor's values (so the base point is part of each one-way curve).
    """
    missing = [k for k in factors if k not in base]
    if missing:
        raise ConfigError(f"{path}.{missing[0]}",
                          f"ofat needs a base value for every swept factor: {', '.join(factors)}")
    point = {k: base[k] for k in factors}
    for key, values in factors.items():
        if point[key] not in values:
            raise ConfigError(f"{path}.{key}", f"base value {point[key]!r} is not among the swept values {values!r}")
    points = [dict(point)]
    for key, values in factors.items():
        points += [{**point, key: v} for v in values if v != point[key]]
    return points
