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
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import ray
import torch
from ray import tune

from trainables.checkpoint import STATE_FILE, load_state, save_state
from trainables.loop import train
from trainables.planned import PlannedTrial
from trainables.plugins import import_plugins

LAST_METRICS = "last_metrics"  # the reported metrics saved beside the training state in each checkpoint
ENVELOPE = "envelope"  # the one key of a Tune trial's config
MEMBERS = "members"  # a group's result: each member's metrics of the epoch, by trial key


@dataclass(frozen=True)
class Envelope:
    """What the driver hands one Tune trial.

    ``members`` are the planned trials it trains: one, or a group trained in this one process; ``key``
    names the Tune trial and its folder; ``experiment_dir`` is the phase's folder in the storage path (its
    checkpoints let a restored trial continue from its newest epoch); ``gpu_fraction`` is the share of a
    GPU to cap this process's CUDA memory at; ``engine`` how a group trains (loop, fused or auto).
    :meth:`to_config` and :meth:`from_config` are its one serialisation into a Tune config and back.
    """

    key: str
    label: str  # what progress displays show
    members: tuple[PlannedTrial, ...]
    plugins: tuple[str, ...] = ()
    experiment_dir: str | None = None
    gpu_fraction: float | None = None
    engine: str = "auto"

    @classmethod
    def of(cls, members: Sequence[PlannedTrial], plugins: Sequence[str] = (), experiment_dir: str | None = None,
           gpu_fraction: float | None = None, engine: str = "auto") -> Envelope:
        """The envelope of ``members``: its key is the member's trial key, or for a group the first member's
        plus a count; its label the members' common label and seeds."""
        first = members[0].key
        key = first if len(members) == 1 else f"{first}+{len(members) - 1}"
        labels = list(dict.fromkeys(m.label for m in members))
        seeds = ",".join(str(m.seed) for m in members)
        label = f"{labels[0]} s{seeds}" if len(labels) == 1 else f"{len(labels)} configurations, {len(members)} members"
        return cls(key, label, tuple(members), tuple(plugins), experiment_dir, gpu_fraction, engine)

    @property
    def grouped(self) -> bool:
        return len(self.members) > 1

    def to_config(self) -> dict[str, Any]:
        """The Tune config ``{ENVELOPE: ...}`` of this envelope, as plain data (Tune stores and pickles it)."""
        return {ENVELOPE: {"key": self.key, "label": self.label, "members": [m.to_dict() for m in self.members],
                           "plugins": list(self.plugins), "experiment_dir": self.experiment_dir,
                           "gpu_fraction": self.gpu_fraction, "engine": self.engine}}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Envelope:
        """The envelope in a Tune trial's config ``{ENVELOPE: ...}`` (or in its saved ``params.json``)."""
        data = config[ENVELOPE]
        return cls(data["key"], data["label"], tuple(PlannedTrial.from_dict(m) for m in data["members"]),
                   tuple(data.get("plugins") or ()), data.get("experiment_dir"), data.get("gpu_fraction"),
                   data.get("engine", "auto"))


def newest_saved_state(trial_dir: Path) -> dict[str, Any] | None:
    """The most recently written readable checkpoint in a trial's storage folder, if any.

    Ray restores a trial from the checkpoint its last experiment snapshot recorded, which can be several
    epochs old after a driver crash; the checkpoint folders themselves are written at once. Newest by
    modification time (Ray may reuse a folder name after a restore); an unreadable one (a copy cut short
    by the crash) falls back to the next.
    """
    try:
        folders = sorted(trial_dir.glob(f"checkpoint_*/{STATE_FILE}"), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return None
    for path in folders:
        try:
            return load_state(path.parent)
        except Exception:  # truncated or half-copied: try the one before
            continue
    return None


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

    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            resume = load_state(directory)
    if env.experiment_dir:
        saved = newest_saved_state(Path(env.experiment_dir) / env.key)
        if saved is not None and (resume is None or progress(saved) > progress(resume)):
            resume = saved

    capped = bool(gpu_fraction and torch.cuda.is_available())

    def report(metrics: dict[str, Any], state: dict[str, Any]) -> None:
        if capped:  # evidence of the cap and of the share this trial used
            metrics = {**metrics, "gpu_memory_fraction": float(gpu_fraction),
                       "gpu_max_memory_mb": torch.cuda.max_memory_allocated() / 2**20}
        with tempfile.TemporaryDirectory() as directory:
            save_state({**state, LAST_METRICS: dict(metrics)}, directory)
            tune.report({**metrics, "node_id": node_id}, checkpoint=tune.Checkpoint.from_directory(directory))

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
