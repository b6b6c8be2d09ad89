"""Methods, registered by name. Every module in this package that defines a Method subclass registers it
with :func:`register`; the package imports all its modules, so adding a method is adding one file.
"""

from __future__ import annotations

import importlib
import pkgutil

from trainables.methods.base import EpochEvaluation, Method, MethodContext
from trainables.registry import Registry

METHODS: Registry[type[Method]] = Registry("method")


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: register a Method subclass under its ``name`` with its ``description``."""
    if not cls.name or not cls.description:
        raise ValueError(f"{cls.__qualname__} needs a name and a description to register")
    return METHODS.register(cls.name, cls.description)(cls)


for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["METHODS", "EpochEvaluation", "Method", "MethodContext", "register"]
