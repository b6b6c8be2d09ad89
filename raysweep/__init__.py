"""raysweep: Ray Tune sweeps and ablations of example-weighting methods, tracked in MLflow.

The public API, what the command line does, as functions::

    import raysweep

    spec = raysweep.load_spec("sweep.yaml", overrides=["seeds=3"])   # validated, typed, frozen
    trials = raysweep.plan(spec)                                      # every planned trial of phase 1
    result = raysweep.run(spec)                                       # the sweep on Ray, logged to MLflow
    frame = raysweep.results(result.experiment, tracking_uri=result.tracking_uri)   # one row per trial

Everything else lives in the subpackages by concern (``spec``, ``search``, ``planning``, ``execution``,
``tracking``, ``reporting``; see docs/architecture.md); only these names are promised to stay.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:
    import pandas as pd

    from raysweep.execution.session import SweepResult
    from raysweep.spec.schema import Spec
    from raysweep.trials import PlannedTrial


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> Spec:
    """Read a spec file strictly, apply ``--set``-style ``overrides`` (``"key.path=value"``), validate it.

    Bad input raises :class:`trainables.params.ConfigError` naming the field and the allowed values.
    """
    from raysweep.spec.loading import apply_overrides, load_spec_file
    from raysweep.spec.schema import validate_spec

    return validate_spec(apply_overrides(load_spec_file(path), list(overrides)))


def plan(spec: Spec) -> list[PlannedTrial]:
    """Phase 1's planned trials of ``spec`` (a sampling mode plans as it runs: its list is empty)."""
    from raysweep.planning.plan import plan as plan_trials

    return plan_trials(spec)


def run(spec: Spec, *, echo: Callable[[str], None] = print, verbose: bool = False) -> SweepResult:
    """Run ``spec`` on Ray as ``raysweep run`` does (preflights, MLflow parent, phases, summary runs, table)."""
    from raysweep.environment import apply_defaults
    from raysweep.execution.runner import run_sweep

    apply_defaults()
    return run_sweep(spec, plan(spec), echo=echo, verbose=verbose)


def results(experiment_or_parent_run: str, *, tracking_uri: str | None = None) -> pd.DataFrame:
    """The trials of a sweep read back from MLflow alone: one row per trial (config columns, ids, final and
    best-epoch metrics), the frame every table is built from. ``tracking_uri`` None: ``./mlflow.db``."""
    from analysis.mlflow_io import load_sweep, resolve_sweep
    from raysweep.reporting.summaries import summary_history_metrics
    from raysweep.tracking.mlflow_store import open_client, resolve_tracking_uri

    client = open_client(resolve_tracking_uri(tracking_uri))
    parent = resolve_sweep(client, experiment_or_parent_run)
    return load_sweep(client, parent, summary_history_metrics(parent)).trials


__all__ = ["load_spec", "plan", "results", "run"]
