"""Methods, registered by name. Every module in this package that defines a Method subclass registers it
with ``@METHODS.add``; the package imports all its modules (:func:`~trainables.registry.discover`), so
adding a method is adding one file.
"""

from __future__ import annotations

from trainables.methods.base import EpochEvaluation, Method, MethodContext
from trainables.registry import Registry, discover

METHODS: Registry[type[Method]] = Registry("method")

discover(__name__, __path__, helpers=("base", "meta"))

__all__ = ["METHODS", "EpochEvaluation", "Method", "MethodContext"]
