"""The environment raysweep's entry points set for the libraries they drive, in one place.

Set by :func:`apply_defaults` when a command starts (``raysweep.cli.main``) or the public API runs a sweep,
never as a side effect of importing a module; a value the user exported wins (``setdefault``).
"""

from __future__ import annotations

import os
from typing import Mapping, MutableMapping

DEFAULTS: Mapping[str, str] = {
    "MLFLOW_DISABLE_TELEMETRY": "true",  # MLflow 3 sends telemetry by default; clusters are often offline
    "RAY_USAGE_STATS_ENABLED": "0",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # report uploads would draw tqdm bars into the output
}


def apply_defaults(environ: MutableMapping[str, str] | None = None) -> None:
    """Set every :data:`DEFAULTS` variable that ``environ`` (default ``os.environ``) does not set yet."""
    environ = os.environ if environ is None else environ
    for key, value in DEFAULTS.items():
        environ.setdefault(key, value)


__all__ = ["DEFAULTS", "apply_defaults"]
