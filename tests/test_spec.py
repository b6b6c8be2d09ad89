"""Spec validation: every invalid spec exits 2 with a one-line message naming its key; nothing starts."""

import copy

import pytest
import yaml

from raysweep.cli import main
from raysweep.plan import plan
from raysweep.spec import apply_overrides, validate_spec

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
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return spec


_DELETE = object()

INVALID = [
    ("unknown top-level key", _with("colour", "red"), "colour"),
    ("missing name", _with("name", _DELETE), "name"),
    ("unknown method", _with("methods.nosuch", {}), "methods.nosuch"),
    ("method gamma out of range", _with("methods.focal.gamma", [-1]), "methods.focal.gamma"),
    ("unknown method knob", _with("methods.focal.alpha", [1]), "methods.focal.alpha"),
    ("imbalance below 1", _with("dataset.imbalance", 0.5), "dataset.imbalance"),
    ("noise rate of 1", _with("dataset.noise_rate", 1.0), "dataset.noise_rate"),
    ("unknown noise type", _with("dataset.noise_type", "gaussian"), "dataset.noise_type"),
    ("unknown dataset", _with("dataset.name", "cifar99"), "dataset.name"),
    ("unknown dataset option", _with("dataset.colour", 1), "dataset.colour"),
    ("unknown model", _with("model", "resnet999"), "model.name"),
    ("zero epochs", _with("train.epochs", 0), "train.epochs"),
    ("negative lr", _with("train.lr", -0.1), "train.lr"),
    ("unknown schedule", _with("train.schedule", "linear"), "train.schedule"),
    ("multistep without milestones", _with("train.schedule", "multistep"), "train.milestones"),
    ("epochs as a string", _with("train.epochs", "ten"), "train.epochs"),
    ("zero seeds", _with("seeds", 0), "seeds"),
    ("unknown search mode", _with("search.mode", "bayes"), "search.mode"),
    ("search on the test set", _with("search.metric", "test_acc"), "search.metric"),
    ("unknown scheduler", _with("scheduler.name", "hyperband"), "scheduler.name"),
    ("grace period beyond epochs", _with("scheduler.grace_period", 10), "scheduler.grace_period"),
    ("zero cpus", _with("resources.cpu", 0), "resources.cpu"),
    ("fractional trials_per_gpu", _with("resources.trials_per_gpu", 0.5), "resources.trials_per_gpu"),
    ("axis value out of range", _with("axes", {"dataset.imbalance": [0.5, 10]}), "axes.dataset.imbalance"),
    ("axis outside dataset/model/train", _with("axes", {"foo.bar": [1]}), "axes.foo.bar"),
    ("empty methods", _with("methods", {}), "methods"),
    ("methods as a list", _with("methods", ["ce"]), "methods"),
    ("unknown failure key", _with("failure", {"retries": 3}), "failure.retries"),
]


@pytest.mark.parametrize("case,spec,key", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_spec_exits_2_naming_the_key(case, spec, key, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"raysweep: error: {key}") and "\n" not in err, err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "raysweep_results").exists()


def test_invalid_override_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert main(["plan", str(path), "--set", "train.epochs=abc"]) == 2
    assert "train.epochs" in capsys.readouterr().err
    assert main(["plan", str(path), "--set", "novalue"]) == 2
    assert "--set" in capsys.readouterr().err


def test_missing_spec_file_exits_2(tmp_path, capsys):
    assert main(["plan", str(tmp_path / "nope.yaml")]) == 2
    assert "file not found" in capsys.readouterr().err


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
