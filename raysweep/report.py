"""Tables of a finished sweep, rebuilt from MLflow alone (the Ray results folder is not needed)."""

from __future__ import annotations

import json

from mlflow import MlflowClient

from analysis.mlflow_io import find_sweep, sweep_axes, trials_frame
from analysis.tables import SensitivityTable, seed_table


def sweep_table(tracking_uri: str, *, experiment: str | None = None, parent_run_id: str | None = None,
                rows: str | None = None, cols: str | None = None, metric: str | None = None) -> SensitivityTable:
    """The seed-averaged table of a sweep; unset rows/cols/metric fall back to the spec's ``table`` section."""
    client = MlflowClient(tracking_uri)
    parent = find_sweep(client, experiment, parent_run_id)
    defaults = json.loads(parent.data.tags.get("raysweep.table", "{}"))
    df = trials_frame(client, parent)
    if df.empty:
        raise KeyError("the sweep has no trial runs")
    return seed_table(df, metric or defaults.get("metric", "test_acc"), rows or defaults.get("rows", "config"),
                      cols if cols is not None else defaults.get("cols"), sweep_axes(parent))
