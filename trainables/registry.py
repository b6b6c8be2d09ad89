"""A tiny name -> object registry shared by methods, search spaces, datasets, models, search modes and
schedulers.

Modelled on timm's registry. One style everywhere: an entry describes itself (``name``, ``description``)
and a module registers it with ``REGISTRY.add(entry)`` (a class decorator too); a package's modules are
found by :func:`discover`, so adding an entry is adding a file. Lookups of unknown names fail with a
message that lists every valid option.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import Callable, Generic, Iterable, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised when a registry lookup names nothing registered; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want a plain sentence.
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps names to registered objects (classes or factories) with a short description each."""

    def __init__(self, kind: str, check: Callable[[T], None] | None = None) -> None:
        self.kind = kind
        self._check = check  # runs on every entry added (e.g. a search space must name a registered method)
        self._entries: dict[str, T] = {}
        self._descriptions: dict[str, str] = {}

    def add(self, entry: T) -> T:
        """Register ``entry`` under its own ``name`` with its ``description``; returns it (a class decorator)."""
        name, description = getattr(entry, "name", ""), getattr(entry, "description", "")
        if not name or not description:
            raise ValueError(f"a {self.kind} needs a name and a description to register, got {entry!r}")
        if self._check is not None:
            self._check(entry)
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        self._descriptions[name] = description
        global _added
        _added += 1
        return entry

    def get(self, name: str) -> T:
        """Return the object registered as ``name``; unknown names raise with the allowed values."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; allowed: {', '.join(self.names())}"
            ) from None

    def describe(self, name: str) -> str:
        return self._descriptions[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


_added = 0  # entries added to any registry so far: discover() checks that each module it imports registers


def discover(package: str, path: list[str], helpers: Iterable[str] = ()) -> None:
    """Import every module of ``package`` (its ``__path__``) so each registers itself.

    ``helpers`` (and ``_private`` modules) are not imported: they register nothing (a base class, shared
    math) and are imported by the modules that use them. A discovered module that registers nothing when
    imported is an error naming it, so the helpers list stays honest.
    """
    helpers = set(helpers)
    for info in pkgutil.iter_modules(path):
        if info.name.startswith("_") or info.name in helpers:
            continue
        name = f"{package}.{info.name}"
        if name in sys.modules:  # imported by a module discovered before it, which the count then credited
            continue
        before = _added
        importlib.import_module(name)
        if _added == before:
            raise RuntimeError(f"{name} registers nothing: list it in {package}'s discover(helpers=...)")
