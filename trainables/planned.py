"""A planned trial: one resolved trial config plus the ids that group, key and label it.

The one form a trial takes on its way: the planner makes it (``raysweep.planning``), the driver hands it to
a Tune trial inside an :class:`~trainables.tune.Envelope`, the trainable trains its ``config``, the logger
records it, phase-2 selection and sync read it back. :meth:`PlannedTrial.to_dict` and
:meth:`PlannedTrial.from_dict` are its one serialisation (the resolved config with the ids beside it: what
the Tune config, Ray's ``params.json`` and the manifest hold).

Each planned trial carries a ``config_id`` (a hash of its resolved config without the seed, so the seeds of
one configuration share it) and a readable ``label`` made of what varies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

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


__all__ = ["ID_KEYS", "PlannedTrial"]
