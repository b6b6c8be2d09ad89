"""The search engine: conditional grids, one-factor-at-a-time ablations, Optuna draws, presets."""

from pathlib import Path

import optuna
import pytest

from raysweep.cli import main
from raysweep.planning.plan import plan
from raysweep.spec.schema import validate_spec
from search_spaces import space_for
from search_spaces.ablation import ofat
from search_spaces.grid import expand_method
from search_spaces.methods.dm import BETA_GRID, beta_range
from search_spaces.sampling import sample
from trainables.params import ConfigError
from trainables.planned import Envelope

PRESETS = sorted(Path(__file__).resolve().parent.parent.glob("search_spaces/presets/*.yaml"))

BASE = {
    "name": "s", "dataset": {"name": "gaussian", "imbalance": 10}, "model": "mlp",
    "train": {"epochs": 2}, "seeds": 2,
}


def _spec(**kw):
    return validate_spec({**BASE, **kw})


def test_dm_paper_grid_is_exactly_the_valid_lambda_beta_pairs():
    configs = expand_method("dm", space_for("dm").grid, "methods.dm")
    pairs = [(c["lam"], c["beta"]) for c in configs]
    expected = [(lam, beta) for lam, betas in BETA_GRID.items() for beta in betas] + [(0.0, 0.0)]
    assert pairs == expected and len(pairs) == 17 and len(set(pairs)) == 17


def test_cdb_grid_sets_p_only_with_poly_and_drops_inactive_combinations():
    configs = expand_method("cdb_w_ce", [{"tau": [1.0, "sigmoid", "poly"], "p": [2, 3]}], "methods.cdb_w_ce")
    combos = [(c["tau"], c["p"]) for c in configs]
    default_p = configs[0]["p"]
    assert combos == [(1.0, default_p), ("sigmoid", default_p), ("poly", 2), ("poly", 3)]
    with pytest.raises(ConfigError, match="methods.cdb_w_ce.p"):
        expand_method("cdb_w_ce", [{"tau": [1.0], "p": [3]}], "methods.cdb_w_ce")


def test_ofat_runs_the_base_once_and_each_factor_alone():
    points = ofat({"a": [1, 2, 3], "b": [10, 20]}, {"a": 2, "b": 10})
    assert points == [{"a": 2, "b": 10}, {"a": 1, "b": 10}, {"a": 3, "b": 10}, {"a": 2, "b": 20}]
    with pytest.raises(ConfigError, match="search.base.b"):
        ofat({"a": [1], "b": [2]}, {"a": 1})
    with pytest.raises(ConfigError, match="search.base.a"):
        ofat({"a": [1, 2]}, {"a": 5})


def test_ofat_plan_counts_base_plus_values_minus_one_per_factor():
    spec = _spec(methods={"focal": {"gamma": [0.5, 1, 2]}},
                 axes={"dataset.imbalance": [1, 10, 100], "train.lr": [0.05, 0.1]},
                 search={"mode": "ofat", "base": {"focal.gamma": 1, "dataset.imbalance": 10, "train.lr": 0.1}})
    trials = plan(spec)
    assert len({t.config_id for t in trials}) == 1 + 2 + 2 + 1
    assert len(trials) == 6 * 2 and len({t.key for t in trials}) == 12


@pytest.mark.parametrize("bad,key", [
    ({"search": {"mode": "ofat"}}, "search.base"),
    ({"search": {"mode": "ofat", "base": {"focal.gamma": 1, "focal.nope": 2}}}, "search.base.focal.nope"),
    ({"search": {"mode": "optuna"}, "methods": {"ce": {}}}, "search.mode"),
    ({"search": {"mode": "optuna"}, "methods": {"dm": "paper"}}, "methods.dm"),
    ({"search": {"mode": "random"}, "methods": {"focal": {"gamma": [1, 2]}}}, "methods.focal"),
])
def test_modes_that_cannot_run_are_rejected(bad, key):
    raw = {**BASE, "methods": {"focal": {"gamma": [0.5, 1]}}, **bad}
    with pytest.raises(ConfigError) as err:
        plan(validate_spec(raw))
    assert err.value.path == key


def test_optuna_draws_respect_the_conditional_structure():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    methods = {"dm": {}, "cdb_w_ce": {}, "focal": {}}
    seen = set()
    for _ in range(300):
        trial = study.ask()
        draw = sample(trial, methods, tune_train=True)
        study.tell(trial, 0.0)
        hp, seen = draw["hparams"], seen | {draw["method"]}
        assert set(trial.params) >= {f"{draw['method']}.{k}" for k in ("lam", "beta") if k in hp}
        if draw["method"] == "dm":
            low, high = beta_range(hp["lam"])
            assert low <= hp["beta"] <= high
        if draw["method"] == "cdb_w_ce":
            assert ("p" in hp) == (hp["tau"] == "poly")
            assert not any(k.startswith("cdb_w_ce.p") for k in trial.params) or hp["tau"] == "poly"
        assert 1e-3 <= draw["train"]["lr"] <= 0.5
    assert seen == set(methods)


def test_two_phase_plans_phase_one_with_the_first_seed_only():
    spec = _spec(methods={"focal": {"gamma": [0.5, 1, 2]}}, seeds=[3, 4, 5], search={"two_phase": True, "top_k": 2})
    assert {t.seed for t in plan(spec)} == {3}


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_preset_plans(preset, capsys):
    assert main(["plan", str(preset)]) == 0, capsys.readouterr().err
    assert "trials" in capsys.readouterr().out


class _Result:
    """The part of a Ray Tune Result that top_configs reads."""

    def __init__(self, trial, epoch, val):
        self.config = Envelope.of([trial]).to_config()
        self.metrics = {"epoch": epoch, "val_balanced_acc": val}
        self.error = None


def test_top_configs_rank_survivors_then_validation_and_add_the_baseline():
    from raysweep.planning.plan import top_configs

    spec = _spec(methods={"ce": {}, "focal": {"gamma": [0.5, 1, 2]}}, seeds=1)
    ce, f05, f1, f2 = plan(spec)
    results = [_Result(ce, 2, 0.9), _Result(f05, 4, 0.5), _Result(f1, 4, 0.7), _Result(f2, 2, 0.95)]
    assert [t.label for t in top_configs(results, "val_balanced_acc", "max", 2)] == ["focal gamma=1", "focal gamma=0.5"]
    with_ce = top_configs(results, "val_balanced_acc", "max", 2, baseline="ce")
    assert [t.label for t in with_ce] == ["focal gamma=1", "focal gamma=0.5", "ce"]
    lowest = top_configs(results, "val_balanced_acc", "min", 1, baseline="focal")
    assert [t.label for t in lowest] == ["focal gamma=0.5"]


def test_baseline_must_be_one_of_the_spec_methods():
    with pytest.raises(ConfigError) as err:
        _spec(methods={"focal": {}}, search={"two_phase": True, "baseline": "ce"})
    assert err.value.path == "search.baseline"


def test_asha_rungs_follow_rays_geometric_milestones():
    from raysweep.search.schedulers import asha_rungs

    assert asha_rungs(4, 2, 20) == [4, 8, 16]
    assert asha_rungs(5, 2, 20) == [5, 10]
    assert asha_rungs(1, 1.5, 4) == [1, 1.5, 2.25, 3.375]  # a fractional factor used to loop forever here
    assert asha_rungs(10, 3, 10) == []


def test_a_search_mode_registered_after_import_is_accepted_at_validation(monkeypatch):
    """``search.mode``'s allowed values are the registry's when a spec is validated, so a plugin's mode works."""
    from raysweep.search.modes import MODES, SearchMode

    class EveryOther(SearchMode):
        name = "every_other"
        description = "every second configuration of the grid (a plugin's mode)"

        def points(self, spec):
            return super().points(spec)[::2]

    with pytest.raises(ConfigError, match="search.mode: must be one of 'grid', 'ofat', 'optuna', 'random'"):
        _spec(methods={"focal": {"gamma": [0.5, 1, 2, 3]}}, search={"mode": "every_other"})
    monkeypatch.setitem(MODES._entries, "every_other", EveryOther)
    monkeypatch.setitem(MODES._descriptions, "every_other", EveryOther.description)
    trials = plan(_spec(methods={"focal": {"gamma": [0.5, 1, 2, 3]}}, search={"mode": "every_other"}))
    assert sorted({t.config["method"]["gamma"] for t in trials}) == [0.5, 2.0]
