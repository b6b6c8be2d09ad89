"""The Tuner factory: one phase of a sweep as a Ray Tune experiment, built new or restored after a crash.

A phase's planned trials run as a grid of envelopes (one per trial, see :mod:`trainables.tune`); a
sampling mode's searcher draws them instead. The scheduler comes from the spec's scheduler entry (only
phase 1 stops early), the MLflow logging from the session's :class:`~raysweep.tracking.trial_logger.TuneCallback`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from raysweep.execution.preflight import TrialResources
from raysweep.execution.progress import SweepProgress
from raysweep.planning.plan import Phase, group_trials, grouping
from raysweep.search.schedulers import SCHEDULERS
from raysweep.spec.schema import Spec
from raysweep.tracking.trial_logger import TuneCallback
from raysweep.trials import PlannedTrial
from trainables.planned import ENVELOPE, Envelope
from trainables.tune import run_trial


@dataclass(frozen=True)
class TrialConfig:
    """Turns planned trials (one, or a group) into one Tune config ``{ENVELOPE: ...}``.

    Picklable: Optuna's space holds one.
    """

    plugins: tuple[str, ...]
    experiment_dir: str
    gpu_fraction: float | None
    engine: str

    def __call__(self, members: Sequence[PlannedTrial]) -> dict[str, Any]:
        return Envelope.of(members, self.plugins, self.experiment_dir, self.gpu_fraction, self.engine).to_config()


def quiet_tune() -> list:
    """The result loggers a sweep keeps: Ray's JSON log only (``raysweep sync`` and resume read result.json).

    Tune adds a CSV and a tensorboardX logger to every experiment unless ``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS``
    is 1 (Ray 2.60: ray.tune.utils.callback._create_default_callbacks); nothing reads them, and tensorboardX
    cost about 1.8 CPU-seconds of the driver per 1,280 results.
    """
    from ray.tune.logger import JsonLoggerCallback

    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    return [JsonLoggerCallback()]


def _trainable(resources: TrialResources):
    from ray import tune

    return tune.with_resources(run_trial, resources.per_trial)


def _trial_key(trial) -> str:
    return Envelope.from_config(trial.config).key


def progress_reporter(spec: Spec, total: int | None, verbose: bool):
    """One live progress display (plain lines when not a terminal), or with ``verbose`` Ray's full table."""
    from ray.tune import CLIReporter

    if not verbose:
        return SweepProgress(metric=spec.search.metric, mode=spec.search.direction, total=total)
    return CLIReporter(parameter_columns={"envelope/label": "config"},
                       metric_columns={"epoch": "epoch", spec.search.metric: spec.search.metric,
                                       "train_loss": "train_loss"},
                       max_report_frequency=15, sort_by_metric=False)


def build_tuner(spec: Spec, phase: Phase, trials: list[PlannedTrial], storage: Path, resources: TrialResources,
                callback: TuneCallback, verbose: bool = False):
    """A new Tuner for ``phase``: its planned ``trials`` (in groups, see plan.group_trials), or the mode's
    searcher when it samples."""
    # Tune's new output engine ignores progress reporters; the legacy one shows ours (or its own table).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    from ray import tune

    search = spec.search
    to_config = TrialConfig(spec.plugins, str(storage / phase.experiment), resources.gpu_fraction,
                            spec.execution.engine)
    sampling = phase.early_stopping and spec.mode.samples_while_running
    max_epochs = max([t.config["train"]["epochs"] for t in trials] + [spec.epochs])
    scheduler = spec.scheduler if phase.early_stopping else SCHEDULERS.get("fifo")({})
    if sampling:
        seeds = spec.phase_seeds(phase.name) if grouping(spec, phase) == "seeds" else spec.seeds[:1]
        param_space, search_alg = {}, spec.mode.searcher(spec, to_config, seeds)
        num_samples = search.num_samples
    else:
        slots = min(resources.slots, spec.resources.max_concurrent or resources.slots)
        groups = group_trials(spec, phase, trials, slots)
        param_space = {ENVELOPE: tune.grid_search([to_config(g.members)[ENVELOPE] for g in groups])}
        search_alg, num_samples = None, 1
    total = num_samples if sampling else len(groups)
    # The slots: a searcher alone keeps one trial pending at a time, and Ray alone would pack fractional-CPU
    # trials into more worker processes than cores (raysweep.spec.resources.concurrent_trials). Not under a
    # synchronous scheduler's grid: Tune's capped generator would create a trial only when another ends, and
    # fill each HyperBand bracket one trial at a time; there every trial is created at once, and Ray's
    # resources (preflight.connected asks for whole cores) hold them to the slots.
    concurrent = min(resources.slots, spec.resources.max_concurrent or resources.slots)
    if spec.scheduler.synchronous and phase.early_stopping and not sampling:
        concurrent = None
    return tune.Tuner(
        _trainable(resources),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=search.metric, mode=search.direction, scheduler=scheduler.build(search.metric, search.direction,
                                                                                   max_epochs),
            search_alg=search_alg, num_samples=num_samples, reuse_actors=True, max_concurrent_trials=concurrent,
            trial_name_creator=_trial_key, trial_dirname_creator=_trial_key,
        ),
        run_config=tune.RunConfig(
            name=phase.experiment, storage_path=str(storage),
            failure_config=tune.FailureConfig(max_failures=spec.failure.max_failures),
            # num_to_keep=None: keeping k checkpoints forces an experiment snapshot every k epochs.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.failure.keep_checkpoints),
            callbacks=[callback, *quiet_tune()],
            progress_reporter=progress_reporter(spec, total, verbose),
            verbose=1,
        ),
    )


def restore_tuner(phase: Phase, storage: Path, resources: TrialResources, echo=print):
    """The phase's Tuner restored from Ray's saved experiment state, or None when there is none to restore
    or it cannot be read (cut short by a full disk or a crash mid-write: the caller rebuilds the phase).

    Unfinished and errored trials resume from their checkpoints with the same trainable and resources;
    the restored callbacks log through the session's logger (see TuneCallback).
    """
    from ray import tune

    quiet_tune()  # the restored run config keeps its JSON logger; Tune must not add the others again
    path = str((storage / phase.experiment).resolve())  # Ray's restore needs an absolute path or a URI
    if not tune.Tuner.can_restore(path):
        return None
    # Ray reads its state file only inside fit(), and one cut short then starts the phase afresh from a
    # param space it did not keep: read it here first.
    problem = unreadable_state(Path(path))
    if problem is None:
        try:
            return tune.Tuner.restore(path, trainable=_trainable(resources), resume_errored=True)
        except Exception as err:  # EOFError, pickle errors of a truncated tuner.pkl
            problem = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:200]}"
    echo(f"warning: Ray's experiment state in {path} is unreadable ({problem}); rebuilding the phase from the "
         "sweep's manifest and the trials' checkpoints")
    for state in Path(path).glob("experiment_state-*.json"):  # else Ray would read it again
        state.rename(state.with_name(f"unreadable-{state.name}"))
    return None


def unreadable_state(experiment_dir: Path) -> str | None:
    """What is wrong with the newest experiment state file Ray would restore from, or None if it parses."""
    import json

    states = sorted(experiment_dir.glob("experiment_state-*.json"))
    if not states:
        return None
    try:
        data = json.loads(states[-1].read_text())
    except (OSError, ValueError) as err:
        return f"{states[-1].name}: {type(err).__name__}: {err}"
    return None if isinstance(data, dict) and "trial_data" in data else f"{states[-1].name}: no trial_data"
