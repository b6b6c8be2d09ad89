"""``raysweep sync``: backfill MLflow from Ray's storage after a tracking outage (or a lost store).

Ray keeps every reported result of a trial in ``<storage>/<experiment>/<trial_key>/result.json`` and each
trial's status in the experiment state, whatever happened to MLflow. Sync replays those results through
the same logger the sweep uses, which reuses child runs found by ``raysweep.trial_key`` and skips epochs
already logged, so it creates only what is missing, and running it twice changes nothing.

``result.json`` can have gaps: Ray writes it from the driver, so a driver killed mid-sweep loses the lines
it had not flushed (one trial held epochs [1, 2, 3, 4, 7, 8, 9, 10]). Every checkpoint a trial writes
carries that epoch's reported metrics too (``trainables.tune.LAST_METRICS``), so sync recovers the
missing epochs from ``<trial>/checkpoint_*/state.pt``. An epoch found in neither (its checkpoint pruned by
``failure.keep_checkpoints``, or cut short) and not already in the store is reported in
``SyncReport.missing``, and the sync is then incomplete.

A driver killed before a trial's first result reached it leaves that trial without ``params.json`` (the
driver writes it with the first result) but with checkpoints: its config comes from the experiment state
then. ``raysweep resume`` replays the storage the same way (:func:`replay_storage`) before Ray restores
anything, because the restored trial continues after its newest checkpoint and Ray writes the next one
into the same folder: an epoch the killed driver never received would otherwise be lost for good.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from analysis import mlflow_tags as tags
from raysweep.tracking.manifest import Manifest
from raysweep.tracking.mlflow_store import SweepRun, TrackingUnavailable, get_or_create_experiment, limit_http_retries
from raysweep.tracking.trial_logger import TrialLogger, error_reason
from trainables.checkpoint import STATE_FILE, load_state
from trainables.params import ConfigError
from trainables.planned import ENVELOPE, LAST_METRICS, MEMBERS, Envelope


@dataclass
class SyncReport:
    sweep_id: str
    tracking_uri: str
    parent_run_id: str | None
    parent_created: bool
    trials: int
    runs_created: int
    epochs_logged: int
    runs_closed: int
    waiting: int  # trials still incomplete in MLflow (the store stopped answering during the sync)
    epochs_recovered: int = 0  # epochs missing from result.json, logged from the trial's checkpoints
    # trial key -> epochs (of 1..its last one) in neither result.json, a checkpoint nor the store
    missing: dict[str, list[int]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Everything Ray's storage holds is in MLflow, and it holds every epoch the trials ran."""
        return not self.waiting and not self.missing


@dataclass
class TrialHistory:
    """A trial's results, one per epoch in order, merged from result.json and its checkpoints."""

    results: list[dict[str, Any]]
    recovered: list[int]  # epochs that came from checkpoints
    missing: list[int]  # epochs up to the last one known that neither source has


def _trial_states(experiment_dir: Path) -> list[dict[str, Any]]:
    """Every trial's state in the newest readable experiment state file of a phase's Ray experiment folder.

    A state file cut short (a full disk, a crash mid-write) is passed over for an older one, or for none:
    the trials' own folders (params.json, checkpoints, result.json) still say what they did."""
    for path in sorted(experiment_dir.glob("experiment_state-*.json"), reverse=True):
        try:
            data = json.loads(path.read_text())
            return [json.loads(entry[0]) if isinstance(entry, list) else entry for entry in data.get("trial_data", [])]
        except (OSError, ValueError, TypeError, AttributeError, IndexError):
            continue
    return []


def trial_statuses(experiment_dir: Path) -> dict[str, str]:
    """Ray trial id -> status (TERMINATED, ERROR, RUNNING, ...) from the newest experiment state file."""
    return {state["trial_id"]: state["status"] for state in _trial_states(experiment_dir)}


@dataclass(frozen=True)
class StoredTrial:
    """One Tune trial in Ray's storage: its folder, its config (holding the envelope) and Ray's trial id."""

    folder: Path
    config: dict[str, Any]
    ray_id: str


def stored_trials(experiment_dir: Path) -> list[StoredTrial]:
    """The trials of a phase's Ray experiment folder, by folder name: from each trial's params.json, or,
    where it is missing, from the newest experiment state. The driver writes params.json with a trial's
    first result, so a driver killed before that leaves a trial with checkpoints and no params.json."""
    found: dict[str, StoredTrial] = {}
    for state in _trial_states(experiment_dir):
        folder = experiment_dir / str(state.get("relative_logdir", ""))
        config = state.get("config")
        if folder != experiment_dir and folder.is_dir() and isinstance(config, dict) and ENVELOPE in config:
            found[folder.name] = StoredTrial(folder, config, str(state.get("trial_id", "")))
    for params in experiment_dir.glob("*/params.json"):
        try:
            saved = json.loads(params.read_text())
        except (OSError, ValueError):  # cut short: the experiment state (if readable) has the config too
            continue
        if isinstance(saved, dict) and ENVELOPE in saved:
            known = found.get(params.parent.name)
            found[params.parent.name] = StoredTrial(params.parent, saved, known.ray_id if known else "")
    return [found[name] for name in sorted(found)]


def read_results(trial_dir: Path) -> list[dict[str, Any]]:
    """The results a trial reported, in order (one JSON object per line of result.json)."""
    path = trial_dir / "result.json"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except ValueError:  # a line cut short by a crash
                continue
    return out


def result_epoch(result: Mapping[str, Any]) -> int:
    """The epoch a result reports (as the MLflow logger reads it: ``epoch``, else Ray's iteration)."""
    return int(result.get("epoch", result.get("training_iteration", 0)))


def checkpoint_results(trial_dir: Path) -> dict[int, dict[str, Any]]:
    """Epoch -> the metrics reported that epoch, from every readable ``checkpoint_*/state.pt`` of a trial.

    The checkpoint's modification time stands in for the result's timestamp. An unreadable checkpoint (cut
    short by a crash) is skipped; of two checkpoints of one epoch (a retried trial), the first is kept.
    """
    out: dict[int, dict[str, Any]] = {}
    for path in sorted(Path(trial_dir).glob(f"checkpoint_*/{STATE_FILE}")):
        try:
            state = load_state(path.parent)
            stamp = int(path.stat().st_mtime)
        except Exception:  # truncated or half-copied
            continue
        metrics = state.get(LAST_METRICS)
        if not isinstance(metrics, dict):
            continue
        epoch = state.get("epoch", metrics.get("epoch"))
        if isinstance(epoch, (int, float)) and int(epoch) >= 1:
            out.setdefault(int(epoch), {"timestamp": stamp, **metrics, "epoch": float(epoch)})
    return out


def trial_history(trial_dir: Path, planned_epochs: int | None = None) -> TrialHistory:
    """The trial's results with gaps in result.json filled from its checkpoints (see the module docstring).

    Checkpoints are read only when result.json may be incomplete: it has a gap, or its last epoch is short
    of ``planned_epochs`` without a non-finite stop (None: always read them).
    """
    by_epoch: dict[int, dict[str, Any]] = {}
    for result in read_results(trial_dir):
        by_epoch.setdefault(result_epoch(result), result)  # a result re-reported after a restore is dropped
    by_epoch.pop(0, None)
    last = max(by_epoch, default=0)
    stopped = bool(by_epoch.get(last, {}).get("non_finite_loss"))
    gapless = len(by_epoch) == last
    recovered: list[int] = []
    if planned_epochs is None or not gapless or (last < planned_epochs and not stopped):
        for epoch, result in checkpoint_results(trial_dir).items():
            if epoch not in by_epoch:
                by_epoch[epoch] = result
                recovered.append(epoch)
    last = max(by_epoch, default=0)
    missing = [e for e in range(1, last + 1) if e not in by_epoch]
    return TrialHistory([by_epoch[e] for e in sorted(by_epoch)], sorted(recovered), missing)


def member_gaps(results: list[dict[str, Any]], key: str) -> list[int]:
    """Epochs 1..its last that one member of a group has in none of the group's results (each round's
    result holds every member's latest metrics under ``members``, with the member's own epoch)."""
    have = {result_epoch(m) for r in results if isinstance(m := (r.get(MEMBERS) or {}).get(key), dict)}
    have.discard(0)
    return [e for e in range(1, max(have, default=0) + 1) if e not in have]


def sync_sweep(manifest: Manifest, tracking_uri: str | None = None) -> SyncReport:
    """Log every trial of the sweep's phases that MLflow lacks; see the module docstring."""
    data = manifest.data
    limit_http_retries()
    uri = tracking_uri or data["tracking_uri"]
    sweep = SweepRun(uri, data["experiment"], data["sweep_id"], data["parent_tags"], run_id=data["parent_run_id"])
    parent_created = False
    try:
        if sweep.run_id is not None and not _run_exists(sweep):
            sweep.run_id = None  # recorded, but not in this store: find it by its sweep id or create it
        if sweep.run_id is None:
            before = _parent_exists(sweep)
            sweep.parent()
            parent_created = not before
    except TrackingUnavailable:
        raise ConfigError("tracking.uri", f"MLflow at {uri} does not answer; start it (or give --tracking-uri) "
                                          "and run sync again") from None
    if parent_created:
        sweep.log_text(yaml.safe_dump(data["spec"], sort_keys=False), "spec.yaml")
        for plan_file in sorted(manifest.sweep_dir.glob("plan-*.json")):
            sweep.log_text(plan_file.read_text(), plan_file.name)
    if data["parent_run_id"] != sweep.run_id and tracking_uri in (None, data["tracking_uri"]):
        manifest.update(parent_run_id=sweep.run_id)

    logger = TrialLogger(sweep)
    replay = replay_storage(manifest, logger)
    waiting = logger.flush_all()
    missing = replay.missing(logger)
    if data["status"] in ("finished", "failed"):
        sweep.finish("FINISHED" if data["status"] == "finished" else "FAILED")
    return SyncReport(data["sweep_id"], uri, sweep.run_id, parent_created, replay.trials, logger.runs_created,
                      logger.epochs_logged, logger.runs_closed, waiting, replay.recovered, missing)


@dataclass
class Replay:
    """What :func:`replay_storage` queued: trials seen, epochs taken from checkpoints, and the epochs Ray's
    storage lacks per trial key (missing for good only where the store lacks them too: :meth:`missing`)."""

    trials: int
    recovered: int
    gaps: dict[str, list[int]]

    def missing(self, logger: TrialLogger) -> dict[str, list[int]]:
        """Trial key -> epochs in neither Ray's storage nor the store, once ``logger`` has flushed (an epoch the
        live logger sent before the driver died is not lost); unknown while the store does not answer."""
        return {key: lost for key, epochs in self.gaps.items()
                if (lost := [e for e in epochs if e not in (logger.trials[key].logged or set())])}


def replay_storage(manifest: Manifest, logger: TrialLogger) -> Replay:
    """Queue in ``logger`` every result Ray's storage holds for the sweep's phases (result.json, gaps filled
    from the checkpoints) and each trial's end as Ray recorded it; the caller flushes.

    ``raysweep sync`` replays into a fresh logger; ``raysweep resume`` into its session's, after the restored
    phases ran: a driver SIGKILLed between a trial's checkpoint and its result reaching the driver leaves
    that epoch out of result.json and MLflow, while the trial resumes after it from the checkpoint on disk.
    The logger skips what the store already has, so replaying twice changes nothing.
    """
    trials = recovered = 0
    gaps: dict[str, list[int]] = {}  # trial key -> epochs Ray's storage lacks
    for phase in manifest.data["phases"].values():
        experiment_dir = manifest.storage_root / phase["experiment"]
        statuses = trial_statuses(experiment_dir)
        for stored in stored_trials(experiment_dir):
            env = Envelope.from_config(stored.config)
            planned = max(m.epochs for m in env.members)
            history = trial_history(stored.folder, planned or None)
            ray_id = next((r["trial_id"] for r in reversed(history.results) if r.get("trial_id")), stored.ray_id)
            logs = logger.track_envelope(env, ray_id)
            trials += len(logs)
            recovered += len(history.recovered)
            for member in env.members:
                lacking = member_gaps(history.results, member.key) if env.grouped else history.missing
                if lacking:
                    gaps[member.key] = lacking
            for result in history.results:
                logger.add_trial_result(logs, result)
            status = statuses.get(ray_id)
            for log in logs:
                if status == "TERMINATED":
                    logger.end(log, "FINISHED")
                elif status == "ERROR":
                    logger.end(log, "FAILED", error_reason(stored.folder / "error.txt"))
    return Replay(trials, recovered, gaps)


def _run_exists(sweep: SweepRun) -> bool:
    """Whether the recorded parent run is in this store (a 'does not exist' answer is not an outage)."""
    from mlflow.exceptions import MlflowException

    try:
        sweep.client.get_run(sweep.run_id)
        return True
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise TrackingUnavailable(sweep.tracking_uri) from err
    except Exception as err:
        raise TrackingUnavailable(sweep.tracking_uri) from err


def _parent_exists(sweep: SweepRun) -> bool:
    exp = sweep.call(get_or_create_experiment, sweep.client, sweep.experiment, sweep.tracking_uri)
    found = sweep.call(sweep.client.search_runs, [exp], tags.sweep_filter(sweep.sweep_id), max_results=1)
    return bool(found)
