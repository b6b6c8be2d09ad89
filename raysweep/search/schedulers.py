"""Trial schedulers by name: the ``scheduler`` section of a spec, its Ray scheduler, and its plan text.

An entry declares its own options (``params``, validated like every other knob), builds Ray's scheduler
on the reported ``epoch`` (never ``training_iteration``, which restarts semantics on resume), and tells
``raysweep plan`` where it may stop trials. Adding a scheduler is adding one class here.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping

from trainables.params import ConfigError, Param, resolve
from trainables.registry import Registry

TIME_ATTR = "epoch"


class Scheduler:
    """A named Ray Tune scheduler with validated options; subclasses override what differs."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    params: ClassVar[dict[str, Param]] = {}
    stops_early: ClassVar[bool] = True  # False: every trial runs to its last epoch
    # True: a milestone is decided once every trial of its bracket has reached it, so every trial must exist
    # (running or pending) from the start; a trial generator that creates one only when another ends (Tune's,
    # under max_concurrent_trials: a paused trial still counts) would fill a bracket one trial at a time.
    synchronous: ClassVar[bool] = False
    first_stop_name: ClassVar[str] = "the grace period"  # what plan calls the first epoch a trial can stop at

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = dict(options)

    def check(self, epochs: int) -> None:
        """Cross-field rules once the spec's ``train.epochs`` is known; raise ConfigError."""

    def build(self, metric: str, mode: str, max_epochs: int):
        """The Ray scheduler for a phase whose longest trial runs ``max_epochs``."""
        raise NotImplementedError

    def rungs(self, max_epochs: int) -> list[float]:
        """The epochs at which a trial may be stopped (empty when nothing is stopped)."""
        return []

    def first_stop(self, max_epochs: int) -> float | None:
        """The first epoch after which a trial may be stopped (None: never)."""
        if "grace_period" in self.options:
            return self.options["grace_period"]
        return min(self.rungs(max_epochs), default=None)

    def stops(self, max_epochs: int) -> list[tuple[float, float]]:
        """(epoch, share of the trials reaching it that go on) where trials may stop: what a wall-time
        estimate assumes (successive halving keeps 1/reduction_factor per rung; median stopping about half
        once, after the grace period)."""
        return []

    def describe(self, max_epochs: int) -> str:
        """One line for ``raysweep plan``."""
        return f"{self.name}: every trial runs to its last epoch"


SCHEDULERS: Registry[type[Scheduler]] = Registry("scheduler")


def resolve_scheduler(raw: Mapping[str, Any] | None, epochs: int, path: str = "scheduler") -> Scheduler:
    """Validate a ``scheduler`` section (``name`` plus that scheduler's options) against train.epochs."""
    raw = dict(raw or {})
    name = raw.pop("name", "fifo")
    if name not in SCHEDULERS:
        raise ConfigError(f"{path}.name", f"unknown scheduler {name!r}; allowed: {', '.join(SCHEDULERS.names())}")
    cls = SCHEDULERS.get(name)
    scheduler = cls(resolve(cls.params, raw, path))
    scheduler.check(epochs)
    return scheduler


def reduction_factor_param(default: float, help: str = "") -> Param:
    """A successive-halving factor: above 1 by a margin (1.000000001 made the rung and bracket counts, a log
    in its base, explode past memory), at most 100 (everything stops at the first rung)."""
    return Param(default, (float,), low=1.1, high=100.0, help=help)


def asha_rungs(first: float, factor: float, max_epochs: float) -> list[float]:
    """``first * factor^k`` below ``max_epochs``: where Ray's ASHA places its milestones."""
    rungs, k = [], 0
    while (milestone := first * factor ** k) < max_epochs:
        rungs.append(int(milestone) if float(milestone).is_integer() else milestone)
        k += 1
    return rungs


def _grace(help_text: str) -> Param:
    return Param(1, (int,), low=1, help=help_text)


def _check_grace(scheduler: Scheduler, epochs: int) -> None:
    grace = scheduler.options["grace_period"]
    if grace > epochs:
        raise ConfigError("scheduler.grace_period", f"must be <= train.epochs ({epochs}), got {grace}")


@SCHEDULERS.add
class Fifo(Scheduler):
    name = "fifo"
    description = "no early stopping: every trial runs to its last epoch"
    stops_early = False

    def first_stop(self, max_epochs: int) -> float | None:
        return None

    def build(self, metric: str, mode: str, max_epochs: int):
        from ray.tune.schedulers import FIFOScheduler

        return FIFOScheduler()


@SCHEDULERS.add
class Asha(Scheduler):
    name = "asha"
    description = "asynchronous successive halving: at each rung keep the top 1/reduction_factor"
    params = {"grace_period": _grace("epochs before a trial can be stopped"),
              "reduction_factor": reduction_factor_param(2.0)}

    def check(self, epochs: int) -> None:
        _check_grace(self, epochs)

    def build(self, metric: str, mode: str, max_epochs: int):
        from ray.tune.schedulers import ASHAScheduler

        return ASHAScheduler(time_attr=TIME_ATTR, max_t=max_epochs, grace_period=self.options["grace_period"],
                             reduction_factor=self.options["reduction_factor"])

    def rungs(self, max_epochs: int) -> list[float]:
        return asha_rungs(self.options["grace_period"], self.options["reduction_factor"], max_epochs)

    def stops(self, max_epochs: int) -> list[tuple[float, float]]:
        return [(r, 1.0 / self.options["reduction_factor"]) for r in self.rungs(max_epochs)]

    def describe(self, max_epochs: int) -> str:
        return (f"ASHA rungs at epochs {self.rungs(max_epochs) or '(none)'} (max {max_epochs}); keeps the top "
                f"1/{self.options['reduction_factor']:g} at each")


@SCHEDULERS.add
class HyperBand(Scheduler):
    name = "hyperband"
    synchronous = True
    description = "synchronous HyperBand: brackets of successive halving, trials paused at each milestone"
    first_stop_name = "its first milestone"
    params = {"reduction_factor": reduction_factor_param(3.0, "eta: 1/eta survive a milestone")}

    def build(self, metric: str, mode: str, max_epochs: int):
        from ray.tune.schedulers import HyperBandScheduler

        return HyperBandScheduler(time_attr=TIME_ATTR, max_t=max_epochs,
                                  reduction_factor=self.options["reduction_factor"])

    def rungs(self, max_epochs: int) -> list[float]:
        eta = self.options["reduction_factor"]
        s_max = int(math.log(max_epochs) / math.log(eta) + 1e-9)
        return sorted({max(1, round(max_epochs * eta ** -s)) for s in range(1, s_max + 1)})

    def stops(self, max_epochs: int) -> list[tuple[float, float]]:
        return [(r, 1.0 / self.options["reduction_factor"]) for r in self.rungs(max_epochs)]

    def describe(self, max_epochs: int) -> str:
        return (f"HyperBand (eta {self.options['reduction_factor']:g}, max {max_epochs} epochs): milestones at epochs "
                f"{self.rungs(max_epochs) or '(none)'}; trials are paused there and 1/eta go on")


@SCHEDULERS.add
class MedianStopping(Scheduler):
    name = "median"
    description = "median stopping rule: stop a trial whose best so far is below the median of the others' means"
    params = {"grace_period": _grace("epochs before a trial can be stopped"),
              "min_samples_required": Param(3, (int,), low=1, help="trials that must have reported before any stop")}

    def check(self, epochs: int) -> None:
        _check_grace(self, epochs)

    def build(self, metric: str, mode: str, max_epochs: int):
        from ray.tune.schedulers import MedianStoppingRule

        return MedianStoppingRule(time_attr=TIME_ATTR, grace_period=self.options["grace_period"],
                                  min_samples_required=self.options["min_samples_required"])

    def rungs(self, max_epochs: int) -> list[float]:
        return list(range(self.options["grace_period"], max_epochs))

    def stops(self, max_epochs: int) -> list[tuple[float, float]]:
        grace = self.options["grace_period"]
        return [(grace, 0.5)] if grace < max_epochs else []

    def describe(self, max_epochs: int) -> str:
        return (f"median stopping from epoch {self.options['grace_period']} (once "
                f"{self.options['min_samples_required']} trials have reported): below-median trials stop")
