"""Contract tests over every registered search space, in the style of the method contract tests: each
space names a registered method, its paper grid expands to valid configurations, and 100 draws of its
define-by-run sampler resolve and validate against the method's own declaration."""

import optuna
import pytest

from search_spaces import SPACES
from search_spaces.grid import expand_method
from search_spaces.sampling import sample_method
from trainables.methods import METHODS

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_every_space_names_a_registered_method():
    assert SPACES.names() and set(SPACES.names()) <= set(METHODS.names())


def test_every_method_with_knobs_has_a_space():
    """A method with knobs but no space would silently have nothing to tune in random and Optuna search."""
    assert [m for m in METHODS.names() if METHODS.get(m).params and m not in SPACES] == []


@pytest.mark.parametrize("method", SPACES.names())
def test_the_paper_grid_expands_to_valid_distinct_configurations(method):
    grid = SPACES.get(method).grid
    assert grid, f"{method} has no paper grid"
    configs = expand_method(method, grid, f"methods.{method}")
    assert len(configs) >= 2 and len({tuple(sorted(c.items())) for c in configs}) == len(configs)
    for config in configs:
        assert METHODS.get(method).resolve_params(config, f"methods.{method}") == config


@pytest.mark.parametrize("method", [m for m in SPACES.names() if SPACES.get(m).suggest is not None])
def test_draws_resolve_and_validate(method):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(100):
        trial = study.ask()
        draw = sample_method(trial, method, {})
        resolved = METHODS.get(method).resolve_params(draw, f"methods.{method}")
        assert set(draw) <= set(resolved)
        assert all(name.startswith(f"{method}.") for name in trial.params), "knobs are namespaced by method"
        seen.add(tuple(sorted(resolved.items())))
        study.tell(trial, 0.0)
    assert len(seen) > 1, "the space must vary something"
