"""Lazy public names for a package's thin ``__init__`` (PEP 562), so importing a subpackage for one name
does not import every module beside it (``raysweep.tracking`` for the manifest need not import MLflow)."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_exports(package: str, names: Mapping[str, str]) -> tuple[list[str], Callable[[str], Any]]:
    """``(__all__, __getattr__)`` for ``package``: each public name is read from its module when first used.

    ``names`` maps a public name to the module (relative to ``package``) that defines it.
    """

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{names[name]}"), name)

    return sorted(names), __getattr__
