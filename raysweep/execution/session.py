"""One sweep in one driver process: its phases run (or restored) on Ray, logged to MLflow, kept in the manifest.

Both a new sweep and a resumed one build a :class:`SweepSession` once Ray is up and the MLflow parent is
known (:mod:`raysweep.execution.runner` does that), then call :meth:`SweepSession.run` and :meth:`SweepSession.finish`.
The crash-recovery invariants live here, each in one place:

- a phase the manifest records as finished is never run again; one it records as started is restored
  from Ray's experiment state (finished trials are not rerun, interrupted ones continue from their
  checkpoint), never planned anew;
- phase 2's configurations are chosen once, when phase 1 finishes, and kept in the manifest, so a resumed
  sweep confirms exactly what the crashed one chose;
- every trial logs through one idempotent :class:`~raysweep.tracking.trial_logger.TrialLogger` keyed by trial key,
  so neither a restore nor ``raysweep sync`` duplicates a run or an epoch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from raysweep.execution.preflight import TrialResources
from raysweep.execution.tuner import build_tuner, restore_tuner
from raysweep.planning.plan import Phase, confirm_plan, member_results, phases, top_configs
from raysweep.spec.schema import Spec
from raysweep.tracking.manifest import Manifest
from raysweep.tracking.mlflow_store import SweepRun
from raysweep.tracking.trial_logger import TrialLogger, TuneCallback
from raysweep.trials import PlannedTrial


@dataclass
class SweepResult:
    sweep_id: str
    tracking_uri: str
    experiment: str
    parent_run_id: str | None
    storage_dir: Path
    num_trials: int
    num_errors: int
    table_markdown: str
    num_non_finite: int = 0
    tracking_ok: bool = True  # False: MLflow was unreachable at the end; `raysweep sync` backfills it
    headline: str = ""  # the best configuration and its seed means, once the summary runs exist

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> SweepResult:
        """What the manifest of an ended sweep says (for a resume that has nothing to do)."""
        data = manifest.data
        num_trials, num_errors, num_non_finite = manifest.totals()
        return cls(data["sweep_id"], data["tracking_uri"], data["experiment"], data["parent_run_id"],
                   manifest.sweep_dir, num_trials, num_errors, "(nothing rerun: see the sweep's parent run for its "
                   "table, or raysweep table)", num_non_finite)


def jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


class SweepSession:
    """A sweep's phases, its MLflow logger and its manifest, for as long as this driver runs it."""

    def __init__(self, spec: Spec, manifest: Manifest, sweep: SweepRun, resources: TrialResources,
                 echo: Callable[[str], None], verbose: bool = False) -> None:
        self.spec, self.manifest, self.sweep, self.resources, self.echo = spec, manifest, sweep, resources, echo
        self.verbose = verbose
        self.storage = manifest.storage_root
        self.logger = TrialLogger(sweep)
        self.callback = TuneCallback(self.logger)

    @property
    def sweep_id(self) -> str:
        return self.manifest.data["sweep_id"]

    def run(self, trials: list[PlannedTrial]) -> None:
        """Run every phase the manifest has not finished (phase 1's planned ``trials`` first)."""
        try:
            for phase in phases(self.spec, self.sweep_id):
                record = self.manifest.phase(phase.name)
                if record is not None and record["status"] == "finished":
                    continue
                planned = trials if not phase.name == "confirm" else self._confirmed()
                if record is None:
                    sampled = self.spec.mode.samples_while_running and phase.early_stopping
                    keys = None if sampled else [t.key for t in planned]
                    self.manifest.start_phase(phase.name, phase.experiment, keys)
                    self._record_plan(phase, planned)
                    results = self._new_tuner(phase, planned).fit()
                else:
                    results = self._restore_or_rebuild(phase, planned).fit()
                self._phase_done(phase, results)
        finally:
            self.logger.flush_all()
        totals = self.manifest.totals()
        self.manifest.update(status="finished" if not totals[1] else "failed")

    def _confirmed(self) -> list[PlannedTrial]:
        best = [PlannedTrial.from_dict(c) for c in self.manifest.data["top_k"]]
        self.echo(f"phase 2: confirming {len(best)} configurations with {len(self.spec.seeds)} seeds: "
                  + "; ".join(t.label for t in best))
        return confirm_plan(self.spec, best)

    def _restore_or_rebuild(self, phase: Phase, planned: list[PlannedTrial]):
        """The started phase from Ray's saved state; started but never saved by Ray: built anew (same keys)."""
        return restore_tuner(phase, self.storage, self.resources) or self._new_tuner(phase, planned)

    def _new_tuner(self, phase: Phase, planned: list[PlannedTrial]):
        return build_tuner(self.spec, phase, planned, self.storage, self.resources, self.callback, self.verbose)

    def _phase_done(self, phase: Phase, results) -> None:
        members = list(member_results(results))
        non_finite = sum(1 for _, metrics, _ in members if metrics.get("non_finite_loss"))
        errors = sum(1 for _, _, errored in members if errored)
        if phase.name == "search" and self.spec.search.two_phase:
            search = self.spec.search
            best = top_configs(results, search.metric, search.direction, search.top_k, search.baseline)
            self.manifest.update(top_k=[jsonable(t.to_dict()) for t in best])
        self.manifest.finish_phase(phase.name, len(members), errors, non_finite)

    def _record_plan(self, phase: Phase, trials: list[PlannedTrial]) -> None:
        """The phase's planned trials, beside Ray's experiment state and as a parent-run artifact."""
        record = [{"trial_key": t.key, "config_id": t.config_id, "seed": t.seed, "label": t.label,
                   "config": t.config} for t in trials]
        (self.manifest.sweep_dir / f"plan-{phase.name}.json").write_text(json.dumps(record, indent=1, default=str))
        self.sweep.log_text(json.dumps(record, indent=2, sort_keys=True, default=str), f"plan-{phase.name}.json")

    def finish(self) -> SweepResult:
        """End the parent run and build the summary table (from MLflow), unless MLflow is unreachable."""
        from analysis.tables import to_frame, to_markdown
        from raysweep.reporting.report import sweep_table
        from raysweep.reporting.summaries import summarize_sweep

        TuneCallback.detach(self.sweep_id)
        num_trials, num_errors, num_non_finite = self.manifest.totals()
        sweep, manifest = self.sweep, self.manifest
        waiting = self.logger.flush_all()
        finished = sweep.finish("FINISHED" if not num_errors else "FAILED")
        if sweep.run_id and manifest.data["parent_run_id"] != sweep.run_id:
            manifest.update(parent_run_id=sweep.run_id)
        result = SweepResult(self.sweep_id, sweep.tracking_uri, sweep.experiment, sweep.run_id, manifest.sweep_dir,
                             num_trials, num_errors, "", num_non_finite)
        if not finished or waiting:
            result.tracking_ok = False
            result.table_markdown = (f"(no table: MLflow at {sweep.tracking_uri} was unreachable; every result is in "
                                     f"{manifest.sweep_dir}. When it is back: raysweep sync {manifest.sweep_dir})")
            return result
        table = self.spec.table
        try:
            tab = sweep_table(sweep.tracking_uri, parent_run_id=sweep.run_id, rows=table.rows, cols=table.cols,
                              metric=table.metric)
            result.table_markdown = to_markdown(tab)
            sweep.client.log_text(sweep.run_id, result.table_markdown, "tables/summary.md")
            sweep.client.log_text(sweep.run_id, to_frame(tab).to_csv(index=False), "tables/summary.csv")
        except KeyError as err:
            result.table_markdown = f"(no table: {err})"
            return result
        try:
            result.headline = summarize_sweep(sweep.tracking_uri, sweep.run_id).describe()
        except Exception as err:  # noqa: BLE001 - summaries are a convenience; `raysweep report` makes them too
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            result.headline = f"(no summary runs yet: {first}; `raysweep report` creates them)"
        return result
