"""Trial groups: k member trials (the seeds of one configuration, or several configurations) in one process.

``train_group(member_configs, engine=..., report=..., resume_state=...)`` trains every member to its own
``train.epochs`` and, after every round (each live member one epoch), calls ``report(epoch, state)``:
``epoch.metrics[i]`` is exactly the dict :meth:`Trial.run_epoch` returns for member i's epoch, and
``epoch.ended`` names the members that left the group with that epoch and why (``completed``,
``non_finite_loss``, or ``stopped`` when an earlier ``report`` returned their indices). ``state`` holds
every member's full checkpoint (:meth:`TrialGroup.state_dict`; live tensors, so save or copy it inside
``report``); passing a saved one back as ``resume_state`` continues each member from its own last epoch
on its own trajectory, so members may be at different epochs.

Engines:

- ``loop``: the members one after another, each epoch by the member's own :meth:`Trial.run_epoch`. Every
  method; the metrics equal the ungrouped trial's exactly.
- ``fused``: the members of a fusable method (``Method.fusable``) that share dataset, model, batch size
  and device train in one stacked forward/backward per step (:mod:`trainables.groups.fused`); equal to the
  ungrouped trials up to float32 rounding. Other members (the bi-level methods) run as in ``loop``.
- ``auto``: what measured fastest on the device (:data:`AUTO_ENGINE`).

Each member's global torch RNG state is its own: the group swaps it in around everything the member does,
so sharing a process changes no member's random stream. Members that share a dataset share one copy of
it on the device.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch

from trainables.config import TRIAL_KEYS, resolve_trial
from trainables.data import load_splits
from trainables.groups.fused import fused_train_pass, stacked_forward
from trainables.loop import DeviceSplits, Trial, pick_device, splits_on
from trainables.methods import METHODS, Method
from trainables.params import ConfigError

ENGINES = ("auto", "loop", "fused")
# engine "auto" per device type. CPU: benchmarks/results/fused_vs_loop.json (mnist1d-LT, 1 thread, k 1-16)
# measured the hand-fused engine at 0.82-1.6x the loop's samples/s for cnn1d and mlp, varying from run to run
# (grouped convolutions and BatchNorm over k x C channels are slower per element on CPU); that is too little
# to give up the loop's bit-exact trajectories. CUDA: not measured yet (benchmarks/gpu_groups.py measures
# it); set it to "fused" when a fused group there beats one member per process as HFTA reports.
AUTO_ENGINE = {"cpu": "loop", "cuda": "loop"}
COMPLETED, NON_FINITE, STOPPED = "completed", "non_finite_loss", "stopped"


@dataclass
class GroupEpoch:
    """One round of a group: each member that trained, the metrics of its epoch; who left and why."""

    metrics: dict[int, dict[str, Any]] = field(default_factory=dict)
    ended: dict[int, str] = field(default_factory=dict)


# report(epoch, state) -> indices of members to stop now (or None)
GroupReporter = Callable[[GroupEpoch, dict[str, Any]], Iterable[int] | None]


def fuses(method: type[Method]) -> bool:
    """Whether the fused engine can train this method: declared ``fusable`` and the default train step."""
    return method.fusable and method.train_step is Method.train_step


class _Member:
    """A member: its trial (None once it has ended), or its final state, and its own global RNG state."""

    def __init__(self, index: int, config: dict[str, Any], device: torch.device) -> None:
        self.index, self.config, self.device = index, config, device
        self.trial: Trial | None = None
        self.ended: str | None = None
        self.saved: dict[str, Any] | None = None  # the state of a member that has ended
        self.last: dict[str, Any] = {}
        self._rng: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def _rng_now(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return torch.get_rng_state(), cuda

    def _set_rng(self, rng: tuple[torch.Tensor, torch.Tensor | None]) -> None:
        torch.set_rng_state(rng[0])
        if rng[1] is not None:
            torch.cuda.set_rng_state(rng[1], self.device)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """The global RNG is this member's inside the block (a trial's construction seeds it)."""
        outer = self._rng_now()
        if self._rng is not None:
            self._set_rng(self._rng)
        try:
            yield
        finally:
            self._rng = self._rng_now()
            self._set_rng(outer)

    def state(self) -> dict[str, Any]:
        if self.trial is None:
            assert self.saved is not None
            return self.saved
        with self.active():
            return self.trial.state_dict()

    def end(self, reason: str) -> None:
        self.ended = reason

    def release(self) -> None:
        """Keep a copy of an ended member's final state and let its trial go."""
        if self.ended is not None and self.trial is not None:
            self.saved = copy.deepcopy(self.state())
            self.trial = None


class _LoopUnit:
    def __init__(self, member: _Member) -> None:
        self.members = [member]

    def run_epoch(self) -> dict[int, dict[str, Any]]:
        member = self.members[0]
        with member.active():
            return {member.index: member.trial.run_epoch()}


class _FusedUnit:
    """Members trained in one stacked forward/backward; each begins and ends its epoch as its own trial."""

    def __init__(self, members: list[_Member], forward: str) -> None:
        self.members = members
        self.forward = stacked_forward(members[0].trial.model, forward)

    def run_epoch(self) -> dict[int, dict[str, Any]]:
        live = [m for m in self.members if m.ended is None]
        started = time.perf_counter()
        plans = []
        for m in live:
            with m.active():
                plans.append(m.trial.begin_epoch())
        losses = fused_train_pass([m.trial for m in live], [batches for _, batches in plans], self.forward)
        train_seconds = time.perf_counter() - started
        out = {}
        for m, (lr, _), loss in zip(live, plans, losses, strict=True):
            with m.active():  # epoch_seconds: the shared training pass plus this member's own evaluation
                out[m.index] = m.trial.end_epoch(loss, lr, time.perf_counter() - train_seconds)
        return out


def _fused_key(config: Mapping[str, Any], device: torch.device) -> str:
    """Members with equal keys can be stacked: same data, same architecture, same batches."""
    method = config["method"]
    options = METHODS.get(method["name"]).model_options({k: v for k, v in method.items() if k != "name"})
    return json.dumps([config["dataset"], {**config["model"], **options}, config["train"]["batch_size"], str(device)],
                      sort_keys=True, default=str)


class TrialGroup:
    """The members of a group and the units that train them (one per loop member, one per fused stack)."""

    def __init__(self, member_configs: Sequence[Mapping[str, Any]], *, engine: str = "auto",
                 resume_state: Mapping[str, Any] | None = None, forward: str = "auto") -> None:
        if engine not in ENGINES:
            raise ConfigError("engine", f"must be one of {', '.join(ENGINES)}, got {engine!r}")
        if not member_configs:
            raise ConfigError("members", "a trial group needs at least one member")
        configs = [resolve_trial(c) for c in member_configs]
        saved = self._check_resume(configs, resume_state)
        self.members = [_Member(i, c, pick_device(c["train"]["device"])) for i, c in enumerate(configs)]
        data: dict[tuple[str, str], DeviceSplits] = {}
        for member, state in zip(self.members, saved, strict=True):
            if state is not None and (state["ended"] or state["epoch"] >= member.config["train"]["epochs"]):
                member.saved, member.ended = state["trial"], state["ended"] or COMPLETED
                continue
            key = (json.dumps(member.config["dataset"], sort_keys=True), str(member.device))
            if key not in data:
                data[key] = splits_on(load_splits(member.config["dataset"]), member.device)
            with member.active():
                member.trial = Trial(member.config, data=data[key])
                if state is not None:
                    member.trial.load_state_dict(state["trial"])
        self.engine = AUTO_ENGINE[self.members[0].device.type] if engine == "auto" else engine
        self.units = self._plan(forward)

    @staticmethod
    def _check_resume(configs: list[dict[str, Any]], resume_state: Mapping[str, Any] | None) -> list[dict | None]:
        if resume_state is None:
            return [None] * len(configs)
        members, ended = resume_state["members"], resume_state["ended"]
        if len(members) != len(configs):
            raise ValueError(f"the resume state holds {len(members)} members, the group has {len(configs)}")
        for i, (state, config) in enumerate(zip(members, configs, strict=True)):
            if {k: state["config"][k] for k in TRIAL_KEYS} != {k: config[k] for k in TRIAL_KEYS}:
                raise ValueError(f"the resume state's member {i} was saved for a different trial config")
        return [{"trial": s, "ended": e, "epoch": int(s["epoch"])} for s, e in zip(members, ended, strict=True)]

    def _plan(self, forward: str) -> list[_LoopUnit | _FusedUnit]:
        live = [m for m in self.members if m.ended is None]
        if self.engine == "loop":
            return [_LoopUnit(m) for m in live]
        stacks: dict[str, list[_Member]] = {}
        units: list[_LoopUnit | _FusedUnit] = []
        for m in live:
            if fuses(METHODS.get(m.config["method"]["name"])):
                stacks.setdefault(_fused_key(m.config, m.device), []).append(m)
            else:
                units.append(_LoopUnit(m))
        return [_FusedUnit(members, forward) for members in stacks.values()] + units

    def layout(self) -> list[tuple[str, list[int]]]:
        """How the live members train: ``("fused", indices)`` per stack, ``("loop", [index])`` per other member."""
        return [("fused" if isinstance(u, _FusedUnit) else "loop", [m.index for m in u.members if m.ended is None])
                for u in self.units if any(m.ended is None for m in u.members)]

    # ---- running -------------------------------------------------------------------------------
    def live(self) -> bool:
        return any(m.ended is None for m in self.members)

    def run_round(self) -> GroupEpoch:
        """Every live member trains one epoch; members that complete or diverge leave the group."""
        epoch = GroupEpoch()
        for unit in self.units:
            if any(m.ended is None for m in unit.members):
                epoch.metrics.update(unit.run_epoch())
        epoch.metrics = dict(sorted(epoch.metrics.items()))
        for index, metrics in epoch.metrics.items():
            member = self.members[index]
            member.last = metrics
            if metrics.get("non_finite_loss"):
                member.end(NON_FINITE)
            elif member.trial.epoch >= member.config["train"]["epochs"]:
                member.end(COMPLETED)
            if member.ended is not None:
                epoch.ended[index] = member.ended
        return epoch

    def stop(self, indices: Iterable[int]) -> None:
        """Stop live members (e.g. a scheduler's decision); they keep their last state."""
        for i in indices:
            if self.members[i].ended is None:
                self.members[i].end(STOPPED)

    def release_ended(self) -> None:
        for m in self.members:
            m.release()

    def state_dict(self) -> dict[str, Any]:
        """Every member's full checkpoint (the trial's own state) and whether and why it has ended."""
        return {"members": [m.state() for m in self.members], "ended": [m.ended for m in self.members]}


def train_group(member_configs: Sequence[Mapping[str, Any]], *, engine: str = "auto",
                report: GroupReporter | None = None, resume_state: Mapping[str, Any] | None = None,
                forward: str = "auto") -> list[dict[str, Any]]:
    """Train every member to its ``train.epochs`` (continuing from ``resume_state``); return each member's
    last metrics ({} for a member that had already ended). ``forward`` picks the fused engine's stacked
    forward (``auto``, ``fast``, ``vmap``; see :func:`trainables.groups.fused.stacked_forward`)."""
    group = TrialGroup(member_configs, engine=engine, resume_state=resume_state, forward=forward)
    while group.live():
        epoch = group.run_round()
        if report is not None:
            group.stop(report(epoch, group.state_dict()) or ())
        group.release_ended()
    return [m.last for m in group.members]
