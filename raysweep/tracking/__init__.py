"""What a sweep records, and where: MLflow from the driver, the manifest beside Ray's storage.

- ``mlflow_store``: the store (URIs, batched writes within MLflow's limits, the outage breaker, the parent run);
- ``store_check``: whether ``tracking.uri`` names a store that exists and answers, before anything starts;
- ``trial_logger``: idempotent per-trial, per-epoch logging and the Tune callback that feeds it;
- ``manifest``: the sweep's ``manifest.json`` and the atomic claim of a sweep folder;
- ``sync``: backfilling MLflow from Ray's storage (results and checkpoints);
- ``provenance``: package versions, git commit, host, command line.

Imports only the leaves: it knows trials by their planned form, never the spec or the plan.
"""

from raysweep._exports import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "SweepRun": "mlflow_store", "resolve_tracking_uri": "mlflow_store", "TrialLogger": "trial_logger",
    "Manifest": "manifest", "sync_sweep": "sync", "check_store": "store_check",
})
