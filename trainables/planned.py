"""A planned trial: one resolved trial config plus the ids that group, key and label it.

The one form a trial takes on its way: the planner makes it (``raysweep.planning``), the driver hands it to
a Tune trial inside an :class:`Envelope` (defined here, free of Ray and torch, so the planner and the driver's
modules read it without importing Ray Tune), the trainable trains its ``config``, the logger
records it, phase-2 selection and sync read it back. :meth:`PlannedTrial.to_dict` and
:meth:`PlannedTrial.from_dict` are its one serialisation (the resolved config with the ids beside it: what
the Tune config, Ray's ``params.json`` and the manifest hold).

Each planned trial carries a ``config_id`` (a hash of its resolved config without the seed, so the seeds of
one configuration share it) and a readable ``label`` made of what varies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

# The ids a planned trial adds beside its resolved config when serialised (see to_dict).
ID_KEYS = ("config_id", "label", "trial_key", "phase", "axes", "plan_index", "draw")


@dataclass(frozen=True)
class PlannedTrial:
    """One trial of the sweep: its resolved config plus the ids that group and label it."""

    config: dict[str, Any]
    config_id: str
    seed: int
    label: str  # method and its swept knobs, e.g. "focal gamma=0.5"
    axes: dict[str, Any] = field(default_factory=dict)  # this trial's values of the spec's axes
    phase: str = "search"
    index: int = 0  # position in the plan (tables keep this order)
    draw: int | None = None  # Optuna's trial number for sampled trials (a draw can repeat a configuration)

    @property
    def key(self) -> str:
        """Unique within a sweep: configuration, seed, Optuna draw and (for phase 2) the phase."""
        return (f"{self.config_id}-s{self.seed}" + ("" if self.draw is None else f"-n{self.draw}")
                + ("" if self.phase == "search" else f"-{self.phase}"))

    @property
    def epochs(self) -> int:
        return int(self.config["train"]["epochs"])

    def to_dict(self) -> dict[str, Any]:
        """The resolved config with the ids beside it (plain JSON-able data: Tune pickles and stores it)."""
        return {**self.config, "seed": self.seed, "config_id": self.config_id, "label": self.label,
                "trial_key": self.key, "phase": self.phase, "axes": self.axes, "plan_index": self.index,
                "draw": self.draw}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlannedTrial:
        """The planned trial :meth:`to_dict` wrote."""
        return cls({k: v for k, v in data.items() if k not in ID_KEYS}, data["config_id"], data["seed"],
                   data["label"], dict(data.get("axes", {})), data.get("phase", "search"), data.get("plan_index", 0),
                   data.get("draw"))


LAST_METRICS = "last_metrics"  # the reported metrics saved beside the training state in each checkpoint
ENVELOPE = "envelope"  # the one key of a Tune trial's config
MEMBERS = "members"  # a group's result: each member's metrics of the epoch, by trial key
# In the first result after a resume that skipped checkpoints: "<file>: <reason>" of each, "; "-joined (the
# driver reports it; see raysweep.trial_logger.TuneCallback).
UNREADABLE = "unreadable_checkpoints"


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


__all__ = ["ENVELOPE", "ID_KEYS", "LAST_METRICS", "MEMBERS", "UNREADABLE", "Envelope", "PlannedTrial"]
