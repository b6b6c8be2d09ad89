"""Importing a spec's ``plugins``: the one importer used by the driver and by every Ray worker.

A plugin is a module whose import registers methods, datasets or models. Its import is untrusted in the
sense that matters here: a plugin that raises, or calls ``sys.exit`` on import, must not end a sweep
silently (``sys.exit(0)`` in a plugin made ``raysweep run`` exit 0 with no output). Any exception or
SystemExit becomes a :class:`PluginError` naming the plugin; KeyboardInterrupt (the user's Ctrl-C) is
left alone. ``os._exit`` cannot be intercepted by anyone and is not covered.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from trainables.params import ConfigError

FIELD = "plugins"
MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class PluginError(ConfigError):
    """A plugin could not be imported; ``plugin`` is its module name (the field is always ``plugins``)."""

    def __init__(self, plugin: str, reason: str) -> None:
        super().__init__(FIELD, f"cannot import {plugin!r}: {reason}")
        self.plugin = plugin


def plugin_names(raw: Any) -> list[str]:
    """The ``plugins`` value as a list of module names (None = none), else a ConfigError naming ``plugins``."""
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(m, str) and MODULE_NAME.match(m) for m in raw):
        raise ConfigError(FIELD, f"must be a list of importable module names (e.g. [my_methods]), got {raw!r}")
    return list(raw)


def import_plugins(raw: Any) -> list[str]:
    """Import every plugin module named in ``raw`` (see :func:`plugin_names`), in order; their names.

    A module already imported is not imported again (Python's module cache), so calling this once per
    trial in a reused worker costs nothing after the first time.
    """
    names = plugin_names(raw)
    for name in names:
        try:
            importlib.import_module(name)
        except KeyboardInterrupt:
            raise
        except SystemExit as err:
            raise PluginError(name, f"it called sys.exit({err.code!r}) on import; a plugin must only define and "
                                    "register things") from None
        except Exception as err:  # a plugin's own bug is still bad input for this spec
            first = (str(err).strip().splitlines() or [""])[0][:300]
            raise PluginError(name, f"{type(err).__name__}: {first}".rstrip(": ")) from None
    return names
