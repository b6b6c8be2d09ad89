"""Search modes by name: how the ``search.mode`` of a spec turns into configurations or a Ray searcher.

Every mode has one contract: :meth:`SearchMode.check` validates the spec's methods for the mode,
:meth:`SearchMode.points` expands the configurations to run (modes that sample while the sweep runs
return none and build a Ray searcher in :meth:`SearchMode.searcher` instead), and
:meth:`SearchMode.describe` says what ``raysweep plan`` prints. Adding a mode is adding one class here.
Two-phase search composes with any mode (see :mod:`raysweep.planning.plan`).
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Mapping, Protocol, Sequence

from raysweep.trials import PlannedTrial, fmt, relative_cost, sampled_trial, trial_epochs
from search_spaces import space_for
from search_spaces.ablation import ofat
from search_spaces.grid import dedupe
from search_spaces.sampling import sample, sample_method
from trainables.methods import METHODS
from trainables.params import ConfigError
from trainables.registry import Registry

Point = tuple[str, dict[str, Any], dict[str, Any]]  # (method, its hyperparameters, axis values)

# What a mode reads of a spec, as protocols: search sits below spec (the spec validates ``search.mode`` against
# this registry, so a plugin's mode is accepted), so it cannot import the spec's classes.


class Search(Protocol):
    """The ``search`` section (raysweep.spec.sections.Search) as a mode reads it."""

    mode: str
    metric: str
    direction: str
    num_samples: int
    seed: int
    tune_train: bool
    base: Mapping[str, Any] | None


class Spec(Protocol):
    """A validated spec (raysweep.spec.schema.Spec) as a mode reads it."""

    search: Search
    axes: Mapping[str, list[Any]]
    epochs: int

    @property
    def methods_written(self) -> Mapping[str, Any]: ...

    @property
    def methods_expanded(self) -> Mapping[str, list[dict[str, Any]]]: ...

    def axis_points(self) -> list[dict[str, Any]]: ...

    def sections(self) -> dict[str, Any]: ...


TrialConfig = Callable[[Sequence[PlannedTrial]], dict[str, Any]]  # members -> one Tune config (execution.tuner)


class SearchMode:
    """A named way to choose the configurations of phase 1."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    samples_while_running: ClassVar[bool] = False  # True: no trial list before the sweep; a Ray searcher draws

    def check(self, search: Search, methods_written: Mapping[str, Any]) -> None:
        """Mode-specific rules on the spec's ``methods`` (as written) and ``search``; raise ConfigError."""

    def points(self, spec: Spec) -> list[Point]:
        """Every configuration to run, in a stable order (seeds are added by the planner)."""
        return [(method, hp, axes) for method, configs in spec.methods_expanded.items()
                for hp in configs for axes in spec.axis_points()]

    def searcher(self, spec: Spec, trial_config: TrialConfig, seeds: Sequence[int]):
        """The Ray searcher of a sampling mode (None: the planned trials run as a grid); each draw runs
        with every one of ``seeds`` in one Tune trial."""
        return None

    def describe(self, spec: Spec, trials: list[PlannedTrial]) -> list[str]:
        """``raysweep plan``'s lines about the planned trials."""
        width = max(len(t.label) for t in trials)
        lines = []
        for t in trials:
            axes = " ".join(f"{k}={v}" for k, v in t.axes.items())
            lines.append(f"  {t.key}  {t.label:<{width}}  seed={t.seed}  {axes}".rstrip())
        configs, seeds = len({t.config_id for t in trials}), len({t.seed for t in trials})
        lines.append(f"{len(trials)} trials ({configs} configurations x {seeds} seeds), {trial_epochs(trials)} "
                     f"trial-epochs, cost about {relative_cost(trials):.0f} CE-epochs")
        return lines


MODES: Registry[type[SearchMode]] = Registry("search mode")


@MODES.add
class Grid(SearchMode):
    name = "grid"
    description = "the full factorial of the listed values, conditional knobs expanded to valid combinations"


@MODES.add
class Ofat(SearchMode):
    name = "ofat"
    description = "one factor at a time around search.base: 1 + sum(values - 1) configurations"

    def check(self, search: Search, methods_written: Mapping[str, Any]) -> None:
        if not search.base:
            raise ConfigError("search.base", "mode ofat needs a base value for every swept factor, "
                                             "e.g. base: {cdb_w_ce.tau: 1, dataset.imbalance: 100}")
        for name, values in methods_written.items():
            if values is not None and not isinstance(values, dict):
                raise ConfigError(f"methods.{name}", "mode ofat takes one mapping of knob -> values per method")

    def points(self, spec: Spec) -> list[Point]:
        """Per method, its swept knobs (``method.knob``) and the spec's axes are the factors."""
        base = spec.search.base
        swept = {m: {f"{m}.{k}": v for k, v in raw.items() if isinstance(v, list)}
                 for m, raw in spec.methods_written.items()}
        known = set(spec.axes).union(*(set(f) for f in swept.values()))
        unknown = sorted(set(base) - known)
        if unknown:
            raise ConfigError(f"search.base.{unknown[0]}",
                              f"is not a swept factor; factors: {', '.join(sorted(known)) or '(none)'}")
        out = []
        for method, raw in spec.methods_written.items():
            fixed = {k: v for k, v in raw.items() if not isinstance(v, list)}
            factors = {**swept[method], **spec.axes}
            for point in ofat(factors, {k: v for k, v in base.items() if k in factors}):
                hp = {**fixed, **{k.split(".", 1)[1]: v for k, v in point.items() if k in swept[method]}}
                out.append((method, hp, {k: v for k, v in point.items() if k in spec.axes}))
        return out


class _Sampled(SearchMode):
    """Shared rules of the modes that sample each method's registered space."""

    def check(self, search: Search, methods_written: Mapping[str, Any]) -> None:
        for name, values in methods_written.items():
            path = f"methods.{name}"
            if not isinstance(values, dict) or any(isinstance(v, list) for v in values.values()):
                raise ConfigError(path, f"mode {self.name} samples the method's space: give single values to fix "
                                        "knobs, not lists, blocks or 'paper'")
            if METHODS.get(name).params and space_for(name).suggest is None:
                raise ConfigError(path, "has a grid-only search space; use mode grid or ofat")


@MODES.add
class Random(_Sampled):
    name = "random"
    description = "num_samples draws per method from its registered space (single values in the spec stay fixed)"

    def points(self, spec: Spec) -> list[Point]:
        """Optuna's RandomSampler (seeded by ``search.seed``) over each method's define-by-run space."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        out = []
        for name, fixed in spec.methods_written.items():
            study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=spec.search.seed))
            samples = []
            for _ in range(spec.search.num_samples):
                trial = study.ask()
                samples.append(METHODS.get(name).resolve_params(sample_method(trial, name, fixed), f"methods.{name}"))
                study.tell(trial, 0.0)
            # a space with few knobs can draw the same configuration twice
            out += [(name, hp, axes) for hp in dedupe(samples) for axes in spec.axis_points()]
        return out


@MODES.add
class Optuna(_Sampled):
    name = "optuna"
    description = "Optuna TPE through Ray Tune's OptunaSearch, define-by-run: the method first, then its knobs"
    samples_while_running = True

    def check(self, search: Search, methods_written: Mapping[str, Any]) -> None:
        super().check(search, methods_written)
        sampled = any(METHODS.get(name).params for name in methods_written)
        if not (sampled or len(methods_written) > 1 or search.tune_train):
            raise ConfigError("search.mode", "optuna has nothing to sample: add a method with knobs, a second "
                                             "method, or search.tune_train: true")

    def points(self, spec: Spec) -> list[Point]:
        return []

    def searcher(self, spec: Spec, trial_config: TrialConfig, seeds: Sequence[int]):
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        space = OptunaSpace(spec.sections(), dict(spec.methods_written), spec.search.tune_train, tuple(seeds),
                            trial_config)
        return OptunaSearch(space=space, metric=spec.search.metric, mode=spec.search.direction,
                            sampler=optuna.samplers.TPESampler(seed=spec.search.seed))

    def describe(self, spec: Spec, trials: list[PlannedTrial]) -> list[str]:
        lines = [f"optuna (TPE, seed {spec.search.seed}): {spec.search.num_samples} trials drawn while the sweep "
                 "runs from"]
        for name, fixed in spec.methods_written.items():
            knobs = ", ".join(f"{k}={fmt(v)}" for k, v in fixed.items()) or (
                "its registered space" if METHODS.get(name).params else "no knobs")
            lines.append(f"  {name}: {knobs}" + (" (fixed; the rest sampled)" if fixed else ""))
        if spec.search.tune_train:
            lines.append("  train.lr and train.weight_decay sampled (log-uniform)")
        epochs = spec.epochs
        cost = max(METHODS.get(m).relative_cost for m in spec.methods_written)
        lines.append(f"at most {spec.search.num_samples * epochs} trial-epochs, cost at most about "
                     f"{spec.search.num_samples * epochs * cost:.0f} CE-epochs")
        return lines


class OptunaSpace:
    """Define-by-run function for OptunaSearch: draws a method and its knobs, returns the trial's Tune config.

    A module-level class (not a closure) because Tune pickles the searcher with its experiment state.
    """

    def __init__(self, sections: Mapping[str, Any], methods: Mapping[str, Any], tune_train: bool,
                 seeds: tuple[int, ...], trial_config: TrialConfig) -> None:
        self.sections, self.methods, self.tune_train, self.seeds = sections, methods, tune_train, seeds
        self.trial_config = trial_config

    def __call__(self, ot: Any) -> dict[str, Any]:
        draw = sample(ot, self.methods, self.tune_train)
        draws = [sampled_trial(self.sections, list(self.methods), draw, seed, ot.number) for seed in self.seeds]
        return self.trial_config(draws)
