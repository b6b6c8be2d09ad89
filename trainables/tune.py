"""The one module of ``trainables`` that knows Ray: a function trainable around :func:`trainables.loop.train`.

The driver hands every Tune trial one :class:`Envelope` (written by :meth:`Envelope.to_config`, read back by
:meth:`Envelope.from_config`, nowhere else): the planned trials, the plugins to import, the phase's storage
folder and the GPU share. Reports every epoch with a checkpoint through Ray 2.60's ``tune.report`` /
``tune.get_checkpoint`` (``ray.train.report`` makes a Tune trial error in 2.60). Resumes from the trial's
latest checkpoint, so retries after a failure, a lost node and restored sweeps continue the same
trajectory with the epoch counter continuing. Each result also names the Ray node that produced it.
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import ray
import torch
from ray import tune

from trainables.checkpoint import STATE_FILE, UnreadableCheckpoint, load_state, save_state
from trainables.loop import train
from trainables.planned import LAST_METRICS, MEMBERS, UNREADABLE, Envelope, PlannedTrial
from trainables.plugins import import_plugins

STAGING_PREFIX = ".state-"  # a checkpoint being written, inside the trial's own folder (see run_trial)


def newest_saved_state(trial_dir: Path, unreadable: list[UnreadableCheckpoint] | None = None
                       ) -> dict[str, Any] | None:
    """The most recently written readable checkpoint in a trial's storage folder, if any.

    Ray restores a trial from the checkpoint its last experiment snapshot recorded, which can be several
    epochs old after a driver crash; the checkpoint folders themselves are written at once. Newest by
    modification time (Ray may reuse a folder name after a restore); an unreadable one (a copy cut short
    by the crash, a full disk) falls back to the next, and is appended to ``unreadable``.
    """
    try:
        folders = sorted(trial_dir.glob(f"checkpoint_*/{STATE_FILE}"), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return None
    for path in folders:
        try:
            return load_state(path.parent)
        except UnreadableCheckpoint as err:  # truncated or half-copied: try the one before
            if unreadable is not None:
                unreadable.append(err)
    return None


def resume_state(checkpoint, trial_dir: Path | None) -> tuple[dict[str, Any] | None, list[UnreadableCheckpoint]]:
    """(the state to resume from, the checkpoints that could not be read on the way).

    The furthest of Ray's ``checkpoint`` (the one its experiment snapshot names) and the newest readable one
    in ``trial_dir``; an unreadable checkpoint is skipped, never fatal, and with none readable the trial
    starts from scratch (the MLflow logger skips epochs already logged, so each is still logged once).
    """
    unreadable: list[UnreadableCheckpoint] = []
    resume = None
    if checkpoint is not None:
        try:
            with checkpoint.as_directory() as directory:
                resume = load_state(directory)
        except UnreadableCheckpoint as err:
            unreadable.append(err)
    if trial_dir is not None:
        saved = newest_saved_state(trial_dir, unreadable)
        if saved is not None and (resume is None or progress(saved) > progress(resume)):
            resume = saved
    unique = list({str(u.path): u for u in unreadable}.values())
    return resume, unique


def clear_staging(folder: Path) -> None:
    """Remove checkpoint staging folders a killed worker left in ``folder`` (see run_trial's report)."""
    for stale in folder.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)


def progress(state: Mapping[str, Any]) -> int:
    """Epochs a checkpoint state holds: a trial's epoch, or the sum of a group's members' epochs."""
    return int(state["epoch"]) if "epoch" in state else sum(int(m["epoch"]) for m in state["members"])


def group_result(planned: Sequence[PlannedTrial], latest: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """What a group reports to Tune: every member's latest metrics under ``members`` (by trial key), and
    the mean over members of every metric all of them report, so the search metric (and the schedulers'
    decisions) is the members' mean: the seed mean for a group of seeds. ``epoch`` is the furthest member's."""
    members = {t.key: dict(latest[t.key]) for t in planned if t.key in latest}
    shared = set.intersection(*(set(m) for m in members.values())) if members else set()
    out: dict[str, Any] = {k: sum(float(m[k]) for m in members.values()) / len(members) for k in shared
                           if k != "non_finite_loss" and all(isinstance(m[k], (int, float)) for m in members.values())}
    out["epoch"] = max(float(m.get("epoch", 0)) for m in members.values()) if members else 0.0
    out[MEMBERS] = members
    return out


def run_trial(tune_config: dict[str, Any]) -> None:
    """Ray Tune function trainable: train the envelope's planned trial, or its group (see :class:`Envelope`)."""
    env = Envelope.from_config(tune_config)
    import_plugins(list(env.plugins))  # what they register must exist in this worker too
    gpu_fraction = env.gpu_fraction
    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    torch.set_num_threads(max(1, math.floor(cpus)))
    if gpu_fraction and torch.cuda.is_available():
        # Fractional GPUs are bookkeeping in Ray; cap this process's share of the card for real (once per
        # process, so a group's members share it).
        torch.cuda.set_per_process_memory_fraction(float(gpu_fraction))
    node_id = ray.get_runtime_context().get_node_id()

    trial_dir = Path(env.experiment_dir) / env.key if env.experiment_dir else None
    resume, unreadable = resume_state(tune.get_checkpoint(), trial_dir)
    notice = {UNREADABLE: "; ".join(f"{u.path}: {u.reason}" for u in unreadable)} if unreadable else {}
    for problem in unreadable:  # the worker's log; the driver prints the result's UNREADABLE entry
        print(f"raysweep: trial {env.key}: skipped {problem}", file=sys.stderr, flush=True)
    # Checkpoints are staged in the trial's own folder, not $TMPDIR: what a killed worker leaves there is
    # removed by the next attempt (and goes with the sweep's folder).
    staging = trial_dir or Path(tune.get_context().get_trial_dir())
    staging.mkdir(parents=True, exist_ok=True)
    clear_staging(staging)

    capped = bool(gpu_fraction and torch.cuda.is_available())

    def report(metrics: dict[str, Any], state: dict[str, Any]) -> None:
        if capped:  # evidence of the cap and of the share this trial used
            metrics = {**metrics, "gpu_memory_fraction": float(gpu_fraction),
                       "gpu_max_memory_mb": torch.cuda.max_memory_allocated() / 2**20}
        extra = {**notice, "node_id": node_id}
        notice.clear()  # reported once, with the first result after the resume
        with tempfile.TemporaryDirectory(prefix=STAGING_PREFIX, dir=staging) as directory:
            save_state({**state, LAST_METRICS: dict(metrics)}, directory)
            tune.report({**metrics, **extra}, checkpoint=tune.Checkpoint.from_directory(directory))

    last = (resume or {}).get(LAST_METRICS) or {}
    try:
        if env.grouped:
            _run_group(env, resume, last, report, node_id)
            return
        (member,) = env.members
        if resume is not None and (resume["epoch"] >= member.epochs or last.get("non_finite_loss")):
            # Restored after its last epoch (a driver crash before Ray saved the trial as finished): report
            # the final result again, so Tune and the scheduler see it; the MLflow logger skips the logged epoch.
            tune.report({**last, "node_id": node_id})
            return
        train(member.config, report=report, resume_state=resume)
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _run_group(env: Envelope, resume: Mapping[str, Any] | None, last: Mapping[str, Any], report, node_id: str) -> None:
    """Train a group with :func:`trainables.groups.group.train_group`; one Tune result per round (see group_result)."""
    from trainables.groups.group import train_group

    planned = env.members
    latest: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (last.get(MEMBERS) or {}).items()}
    if resume is not None and all(resume["ended"]):
        # Restored after every member ended: report the final result again (see run_trial).
        tune.report({**group_result(planned, latest), "node_id": node_id})
        return

    def report_round(epoch, state: dict[str, Any]) -> None:
        for index, metrics in epoch.metrics.items():
            latest[planned[index].key] = metrics
        report(group_result(planned, latest), state)

    train_group([t.config for t in planned], engine=env.engine, report=report_round, resume_state=resume)
