"""Valid specs: overrides, planning (counts, stable config ids), random mode, and `raysweep plan`'s text.
Invalid specs are in the one bad-input corpus, tests/test_bad_input.py."""

import copy

import yaml

from raysweep.cli import main
from raysweep.planning.plan import plan
from raysweep.spec.loading import apply_overrides
from raysweep.spec.schema import validate_spec

BASE = {
    "name": "t",
    "dataset": {"name": "gaussian", "imbalance": 10},
    "model": "mlp",
    "train": {"epochs": 4, "batch_size": 64, "lr": 0.1},
    "methods": {"ce": {}, "focal": {"gamma": [0.5, 2]}},
    "seeds": 2,
    "search": {"mode": "grid", "metric": "val_balanced_acc"},
    "scheduler": {"name": "asha", "grace_period": 2},
    "resources": {"cpu": 1},
}


def _with(path: str, value):
    spec = copy.deepcopy(BASE)
    node = spec
    keys = path.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    return spec


def test_overrides_reach_nested_keys_and_parse_yaml():
    spec = apply_overrides(BASE, ["train.epochs=7", "methods.focal.gamma=[1, 3]", "model.width=16"])
    assert spec["train"]["epochs"] == 7 and spec["methods"]["focal"]["gamma"] == [1, 3]
    assert spec["model"] == {"name": "mlp", "width": 16}
    assert BASE["train"]["epochs"] == 4, "overrides must not modify the original"


def test_plan_counts_configs_seeds_and_shares_config_ids_across_seeds():
    trials = plan(validate_spec(_with("axes", {"train.lr": [0.05, 0.1]})))
    assert len(trials) == (1 + 2) * 2 * 2
    by_config = {}
    for t in trials:
        by_config.setdefault(t.config_id, set()).add(t.seed)
    assert all(seeds == {0, 1} for seeds in by_config.values()) and len(by_config) == 6
    assert len({t.key for t in trials}) == len(trials)
    again = plan(validate_spec(_with("axes", {"train.lr": [0.05, 0.1]})))
    assert [t.key for t in again] == [t.key for t in trials], "config ids must be stable across runs"
    labels = {t.label for t in trials}
    assert labels == {"ce", "focal gamma=0.5", "focal gamma=2"}


def test_random_mode_samples_within_the_space_and_fixes_scalars():
    spec = validate_spec({**_with("methods", {"focal": {}}), "search": {"mode": "random", "num_samples": 5}})
    gammas = [t.config["method"]["gamma"] for t in plan(spec) if t.seed == 0]
    assert len(gammas) == 5 and all(0 <= g <= 5 for g in gammas)
    fixed = validate_spec({**_with("methods", {"focal": {"gamma": 2}}), "search": {"mode": "random"}})
    assert {t.config["method"]["gamma"] for t in plan(fixed)} == {2.0}


def test_plan_command_prints_trials_and_count(tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "6 trials (3 configurations x 2 seeds), 24 trial-epochs" in out
    assert "ASHA rungs at epochs [2]" in out
