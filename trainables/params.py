"""Typed hyperparameter declarations: one place that says what a knob is, its default and its range.

Every method, dataset option and training setting is declared with :class:`Param`. The same declaration
validates a sweep spec before Ray starts, fills defaults inside a trial, and documents the knob in
``raysweep list``. Validation errors carry the dotted key path so the CLI can name the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence


class ConfigError(ValueError):
    """A configuration value is invalid. ``path`` is the dotted key that is wrong."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


class InactiveParamError(ConfigError):
    """A conditional knob was given while its parent disables it (e.g. CDB ``p`` with a fixed tau).

    Grid expansion drops such combinations; a spec where a knob is inactive in every combination fails.
    """


_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
               dict: "a mapping"}


@dataclass(frozen=True)
class Param:
    """One knob. ``types`` lists the accepted Python types in preference order (int is accepted for float).

    ``low``/``high`` bound numbers (inclusive unless ``low_open``/``high_open``); ``choices`` restricts
    strings (and, if no string type is allowed, any value): a tuple, or a function returning the allowed
    values when a value is checked (a registry's ``names``, so what a plugin registers later is allowed).
    ``nullable`` admits ``None``.
    """

    default: Any
    types: tuple[type, ...] = (float,)
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] | Callable[[], Sequence[Any]] | None = None
    nullable: bool = False
    help: str = ""

    def allowed_choices(self) -> tuple[Any, ...] | None:
        """The allowed values now (``choices`` called if it is a function), or None for no restriction."""
        return tuple(self.choices()) if callable(self.choices) else self.choices

    def allowed(self) -> str:
        """Human-readable description of the allowed values, used in error messages and docs."""
        parts = []
        if self.choices is not None:
            parts.append("one of " + ", ".join(repr(c) for c in self.allowed_choices()))
        numeric = [t for t in self.types if t in (int, float)]
        if numeric:
            kind = "an integer" if numeric == [int] else "a number"
            if self.low is not None and self.high is not None:
                lo = "(" if self.low_open else "["
                hi = ")" if self.high_open else "]"
                kind += f" in {lo}{_fmt(self.low)}, {_fmt(self.high)}{hi}"
            elif self.low is not None:
                kind += f" {'>' if self.low_open else '>='} {_fmt(self.low)}"
            elif self.high is not None:
                kind += f" {'<' if self.high_open else '<='} {_fmt(self.high)}"
            parts.append(kind)
        for t in self.types:
            if t not in (int, float) and not (t is str and self.choices is not None):
                parts.append(_TYPE_NAMES.get(t, t.__name__))
        if self.nullable:
            parts.append("null")
        return " or ".join(parts)

    def validate(self, value: Any, path: str) -> Any:
        """Return ``value`` coerced to its declared type, or raise :class:`ConfigError` naming ``path``."""
        if value is None:
            if self.nullable:
                return None
            raise ConfigError(path, f"must be {self.allowed()}, got null")
        if isinstance(value, bool):
            if bool in self.types:
                return value
            raise ConfigError(path, f"must be {self.allowed()}, got {value!r}")
        if isinstance(value, (int, float)) and any(t in (int, float) for t in self.types):
            if int in self.types and float not in self.types:
                if isinstance(value, float) and not value.is_integer():
                    raise ConfigError(path, f"must be {self.allowed()}, got {value!r}")
                value = int(value)
            else:
                value = float(value)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(path, f"must be {self.allowed()}, got {value!r}")
            if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
                raise ConfigError(path, f"must be {self.allowed()}, got {value!r}")
            if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
                raise ConfigError(path, f"must be {self.allowed()}, got {value!r}")
            if self.choices is not None and str not in self.types and value not in self.allowed_choices():
                raise ConfigError(path, f"must be {self.allowed()}, got {value!r}")
            return value
        if isinstance(value, str) and str in self.types:
            if self.choices is not None and value not in self.allowed_choices():
                raise ConfigError(path, f"must be {self.allowed()}, got {value!r}")
            return value
        if isinstance(value, (list, tuple)) and list in self.types:
            return list(value)
        if isinstance(value, dict) and dict in self.types:
            return dict(value)
        raise ConfigError(path, f"must be {self.allowed()}, got {value!r}")


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


def resolve(params: Mapping[str, Param], raw: Mapping[str, Any] | None, path: str) -> dict[str, Any]:
    """Validate ``raw`` against ``params`` and fill defaults. Unknown keys raise, naming the allowed keys."""
    raw = dict(raw or {})
    unknown = sorted(set(raw) - set(params))
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        allowed = ", ".join(sorted(params)) or "(none)"
        raise ConfigError(where, f"unknown key; allowed keys: {allowed}")
    out = {}
    for name, param in params.items():
        key = f"{path}.{name}" if path else name
        out[name] = param.validate(raw[name], key) if name in raw else param.default
    return out


def resolve_named(raw: Any, path: str, names: Sequence[str], kind: str,
                  resolver: Callable[[str, dict[str, Any], str], dict[str, Any]]) -> dict[str, Any]:
    """Validate a ``{name: ..., options...}`` section of a registered thing (a bare name is allowed).

    ``names`` are the registered names (named in the error), ``resolver(name, options, path)`` validates
    the options of that entry and fills its defaults.
    """
    raw = {"name": raw} if isinstance(raw, str) else dict(raw or {})
    name = raw.pop("name", None)
    if name not in names:
        problem = "missing" if name is None else f"unknown {kind} {name!r}"
        raise ConfigError(f"{path}.name", f"{problem}; allowed: {', '.join(names)}")
    return {"name": name, **resolver(name, raw, path)}


def describe(params: Mapping[str, Param]) -> list[str]:
    """One line per knob: name, default and allowed values (for ``raysweep list`` and the docs)."""
    return [f"{n} = {p.default!r}  ({p.allowed()}){'  ' + p.help if p.help else ''}" for n, p in params.items()]


def as_list(value: Any) -> list[Any]:
    """A swept value list: scalars become one-element lists (so ``gamma: 2`` and ``gamma: [2]`` agree)."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return list(value)
    return [value]
