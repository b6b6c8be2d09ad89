"""Run a sweep, or resume one whose driver died: the preflights, the sweep folder and manifest, the MLflow
parent run, then one :class:`~raysweep.execution.session.SweepSession` for the phases and the table.

Order matters for the promise "bad input starts nothing": the spec is validated and planned before this
module is called; storage, datasets and the cluster are checked (:mod:`raysweep.execution.preflight`) before any
sweep folder or MLflow run is created.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Callable

import yaml

from analysis import mlflow_tags as tags
from raysweep.execution.disk import StorageFull, check_free_space, estimate_bytes
from raysweep.execution.footprint import check_device, check_footprint
from raysweep.execution.interrupt import Interrupted, StopSignals
from raysweep.execution.preflight import (
    check_datasets,
    check_local_cpus,
    check_storage,
    check_table_keys,
    check_tracking,
    connected,
)
from raysweep.planning.plan import plan
from raysweep.spec.schema import Spec, validate_spec
from raysweep.tracking.manifest import Manifest, claim_sweep_dir
from raysweep.tracking.mlflow_store import SweepRun, limit_http_retries, open_in_background
from raysweep.tracking.provenance import provenance
from raysweep.trials import PlannedTrial
from trainables.params import ConfigError

if TYPE_CHECKING:  # the session imports Ray Tune: the runner imports it once Ray is starting
    from raysweep.execution.session import SweepResult, SweepSession


def parent_tags(spec: Spec, sweep_dir: str) -> dict[str, str]:
    """The parent run's tags: provenance plus what the report needs to rebuild the sweep's tables."""
    selection, warning = spec.selection()
    values = {
        **provenance(), tags.SPEC_NAME: spec.name, tags.AXES: json.dumps(list(spec.axes)),
        tags.SELECTION: selection, **({tags.SELECTION_WARNING: warning} if warning else {}),
        tags.METRIC: spec.search.metric, tags.DIRECTION: spec.search.direction,
        tags.TABLE: json.dumps(spec.table.as_dict()), tags.STORAGE: sweep_dir, tags.MODE: spec.search.mode,
        tags.TWO_PHASE: spec.search.two_phase, tags.SCHEDULER: spec.scheduler.name,
    }
    return {k: str(v) for k, v in values.items()}


def _recorder(manifest: Manifest) -> Callable[[str], None]:
    """Records the parent run's id in the manifest whenever the store creates or finds it."""
    return lambda run_id: manifest.update(parent_run_id=run_id)


def run_sweep(spec: Spec, trials: list[PlannedTrial], *, echo: Callable[[str], None] = print,
              verbose: bool = False) -> SweepResult:
    """Run a validated spec: its planned ``trials`` (or a sampling mode's draws), then phase 2 if two-phase."""
    storage = check_storage(spec.storage)
    check_device(spec, trials)
    check_footprint(spec, trials)  # before check_datasets, which loads the sources that read no files
    check_datasets(spec, trials)
    check_table_keys(spec, trials)
    need = estimate_bytes(spec, trials)
    check_free_space(storage, need)
    limit_http_retries()
    tracking_uri = check_tracking(spec)
    check_local_cpus(spec)  # before the store is touched: an unsatisfiable demand creates nothing
    store = open_in_background(tracking_uri)  # MLflow's import (and an existing store) while Ray starts
    with connected(spec, storage, echo) as resources, StopSignals().installed() as stops:
        from raysweep.execution.session import SweepSession, jsonable

        store.join()
        sweep_id, sweep_dir = claim_sweep_dir(storage, spec.name)
        experiment = spec.tracking.experiment or spec.name
        values = parent_tags(spec, str(sweep_dir))
        manifest = Manifest.new(sweep_dir, sweep_id=sweep_id, spec=jsonable(spec.written), tracking_uri=tracking_uri,
                                experiment=experiment, parent_tags=values)
        manifest.save()
        sweep = SweepRun.open(tracking_uri, experiment, sweep_id, values, on_parent=_recorder(manifest))
        session = SweepSession(spec, manifest, sweep, resources, echo, verbose, stops)
        session.storage_need = need
        sweep.log_text(yaml.safe_dump(jsonable(spec.to_dict()), sort_keys=False), "spec.yaml")
        _run_or_record_stop(session, trials)
    return session.finish()


def _run_or_record_stop(session: SweepSession, trials: list[PlannedTrial]) -> None:
    """``session.run(trials)``; a stop signal is recorded as an interruption (see
    :meth:`SweepSession.interrupted`) and raised on, carrying the sweep folder for the resume hint."""
    try:
        session.run(trials)
    except Interrupted as stop:
        stop.sweep_dir = session.manifest.sweep_dir
        session.interrupted(stop)
        raise
    except StorageFull as full:
        full.sweep_dir = session.manifest.sweep_dir
        session.storage_full()
        raise


def resume_sweep(manifest: Manifest, *, echo: Callable[[str], None] = print, verbose: bool = False) -> SweepResult:
    """Finish a sweep whose driver died: restore each unfinished phase from Ray's state, then go on.

    Finished trials are not rerun; interrupted ones continue from their last checkpoint; MLflow keeps the
    same parent run and the same child runs (found by trial key), and epochs already logged are skipped.
    """
    from raysweep.execution.session import SweepResult, SweepSession
    from raysweep.tracking.sync import replay_storage

    data = manifest.data
    spec = validate_spec(data["spec"])
    if manifest.ended:  # nothing left to run: answer from the manifest, without Ray
        echo(f"sweep {data['sweep_id']} already {data['status']}; nothing to resume")
        return SweepResult.from_manifest(manifest)
    trials = plan(spec)
    search = manifest.phase("search")
    if search and search["trial_keys"] is not None and [t.key for t in trials] != search["trial_keys"]:
        raise ConfigError("spec", "the plan from the manifest's spec differs from the planned trials (a changed "
                                  "plugin or registry?); cannot resume this sweep")
    check_datasets(spec, trials)
    need = estimate_bytes(spec, trials)
    with connected(spec, manifest.storage_root, echo) as resources, StopSignals().installed() as stops:
        limit_http_retries()
        sweep = SweepRun.open(data["tracking_uri"], data["experiment"], data["sweep_id"], data["parent_tags"],
                              run_id=data["parent_run_id"], on_parent=_recorder(manifest))
        if sweep.run_id and sweep.run_id != data["parent_run_id"]:
            manifest.update(parent_run_id=sweep.run_id)
        session = SweepSession(spec, manifest, sweep, resources, echo, verbose, stops)
        session.storage_need = need
        if data["status"] == "interrupted":  # going on: the parent runs again until the sweep ends
            sweep.reopen()
            manifest.update(status="running")
        # Before Ray restores anything: an epoch checkpointed but never received by the killed driver is only
        # in its checkpoint, which the restored trial resumes after and Ray then overwrites.
        replay_storage(manifest, session.logger)
        session.logger.flush_all()
        _run_or_record_stop(session, trials)
    return session.finish()
