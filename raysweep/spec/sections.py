"""The sections of a spec with fixed keys, each a frozen dataclass whose fields are declared by their
:class:`~trainables.params.Param` (the one place a key's default, range and help are written).

:mod:`raysweep.spec.schema` validates them in its table of sections and holds them in the typed :class:`Spec`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from raysweep.search.modes import MODES
from trainables.params import ConfigError, Param, resolve

SEARCH_METRICS = {"val_balanced_acc": "max", "train_loss": "min"}  # never a test metric: no test-set selection


def mapping(value: Any, key: str) -> dict[str, Any]:
    """A section as written: a mapping (null = empty), or a ConfigError naming it."""
    value = value or {}
    if not isinstance(value, dict):
        raise ConfigError(key, f"must be a mapping, got {value!r}")
    return value


def knob(default: Any, types: tuple[type, ...] = (float,), **declaration: Any) -> Any:
    """A section field declared by its :class:`Param` (the one place its default and range are written)."""
    return field(default=default, metadata={"param": Param(default, types, **declaration)})


class Section:
    """A spec section with fixed keys: a frozen dataclass whose fields are declared with :func:`knob`."""

    @classmethod
    def params(cls) -> dict[str, Param]:
        return {f.name: f.metadata["param"] for f in fields(cls)}

    @classmethod
    def from_raw(cls, raw: Any, path: str):
        return cls(**resolve(cls.params(), mapping(raw, path), path))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Search(Section):
    mode: str = knob("grid", (str,), choices=MODES.names)  # read when a spec is validated: plugins can add modes
    metric: str = knob("val_balanced_acc", (str,), choices=tuple(SEARCH_METRICS))
    direction: str | None = knob(None, (str,), choices=("max", "min"), nullable=True,
                                 help="null = the metric's natural one")
    num_samples: int = knob(8, (int,), low=1, help="random: configurations per method; optuna: trials in all")
    seed: int = knob(0, (int,), low=0, help="random/optuna: sampler seed")
    tune_train: bool = knob(False, (bool,), help="random/optuna: also sample train.lr and train.weight_decay")
    base: dict | None = knob(None, (dict,), nullable=True,
                             help="ofat: base value of every factor (method.knob or axis key)")
    two_phase: bool = knob(False, (bool,), help="search with the first seed, then rerun the top_k with all seeds")
    top_k: int = knob(3, (int,), low=1, help="two_phase: configurations confirmed in phase 2")
    baseline: str | None = knob(None, (str,), nullable=True,
                                help="two_phase: this method's best configuration is always confirmed too (e.g. ce)")


@dataclass(frozen=True)
class Resources(Section):
    cpu: float = knob(1.0, (float,), low=0.0, low_open=True, help="CPUs per trial (fractions pack trials)")
    gpu: float = knob(0.0, (float,), low=0.0, high=1.0, help="GPU fraction per trial; demands a GPU")
    trials_per_gpu: int | None = knob(None, (int,), low=1, nullable=True, help="k trials share each GPU (gpu = 1/k)")
    require_gpu: bool = knob(False, (bool,), help="trials_per_gpu on a GPU-less cluster: fail instead of CPU fallback")
    max_concurrent: int | None = knob(None, (int,), low=1, nullable=True)


@dataclass(frozen=True)
class Tracking(Section):
    uri: str | None = knob(None, (str,), nullable=True, help="MLflow tracking URI; null = sqlite file ./mlflow.db")
    experiment: str | None = knob(None, (str,), nullable=True, help="null = the spec's name")


@dataclass(frozen=True)
class Failure(Section):
    max_failures: int = knob(1, (int,), low=0, help="retries of a failed trial from its checkpoint")
    keep_checkpoints: int | None = knob(None, (int,), low=1, nullable=True,
                                        help="null keeps every epoch's checkpoint; k keeps the last k "
                                             "(forces Ray snapshots)")


@dataclass(frozen=True)
class Table(Section):
    rows: str = knob("config", (str,), help="config, method, or a dotted config key such as method.gamma")
    cols: str | None = knob(None, (str,), nullable=True, help="a dotted config key such as dataset.imbalance")
    metric: str = knob("test_acc", (str,))
    baseline: str | None = knob("auto", (str,), nullable=True,
                                help="method every cell is compared with at the same setting; auto = ce when the "
                                     "sweep has it; null = no comparison")
    test: str = knob("paired_t", (str,), choices=("paired_t", "permutation"),
                     help="paired_t: two-sided paired t-test; permutation: exact sign-flip test on the differences")
    correction: str = knob("holm", (str,), choices=("holm", "bh", "none"),
                           help="multiple-testing correction over a table's comparisons (and within a column for "
                                "the tied best)")
    alpha: float = knob(0.05, (float,), low=0.0, high=1.0, low_open=True, high_open=True,
                        help="significance level of the marks and the tied-best set")


@dataclass(frozen=True)
class Cluster(Section):
    address: str | None = knob(None, (str,), nullable=True,
                               help="an existing Ray cluster (host:port or auto); null = RAY_ADDRESS, else start "
                                    "one on this machine")
    connect_timeout_s: float = knob(10.0, (float,), low=0.0, low_open=True,
                                    help="give up on an unreachable cluster.address after this many seconds")
    storage_check: bool = knob(True, (bool,), help="before any trial, check every node can read the storage folder")


@dataclass(frozen=True)
class Execution(Section):
    group: str = knob("none", (str,), choices=("none", "seeds", "configs"),
                      help="train several planned trials in one Ray trial: the seeds of a configuration, or "
                           "configurations that share dataset, model, batch size and epochs (FIFO phases)")
    max_members: int = knob(16, (int,), low=1, high=1024, help="members of one group at most")
    engine: str = knob("auto", (str,), choices=("auto", "fused", "loop"),
                       help="loop: members one after another; fused: one stacked forward/backward; auto: the "
                            "faster for the device")
