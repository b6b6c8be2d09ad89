"""The one corpus of invalid specs and overrides: each exits 2 with a one-line message naming the field,
before anything starts: no Ray, no MLflow store or run, and the storage folder absent or unchanged.

Every case is a change to one base spec (BASE). Runs the CLI in-process (`raysweep.cli.main`), so the
whole corpus takes seconds.
"""

import copy
import os
import socket
import sys

import pytest
import yaml

from raysweep.cli import main

BASE = {
    "name": "bad",
    "dataset": {"name": "gaussian", "imbalance": 10, "samples_per_class": 100},
    "model": {"name": "mlp", "width": 32},
    "train": {"epochs": 2, "batch_size": 64},
    "methods": {"ce": {}},
    "seeds": 1,
    "resources": {"cpu": 1},
}


def _closed_port() -> str:
    """127.0.0.1:P with nothing listening (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


DELETE = object()  # a change that removes the key from BASE


def method(name, **knobs):
    return {"methods": {name: knobs}}


def section(key, **values):
    return {key: {**BASE.get(key, {}), **values}}


def changed(changes: dict) -> dict:
    """BASE with ``changes`` merged in at the top level (a DELETE value removes the key)."""
    spec = {**copy.deepcopy(BASE), **{k: copy.deepcopy(v) for k, v in changes.items() if v is not DELETE}}
    return {k: v for k, v in spec.items() if changes.get(k) is not DELETE}


# (case, changes merged into BASE, --set overrides, the field the message must start with)
CASES = [
    ("tau below 0", method("cdb_w_ce", tau=-1.0), [], "methods.cdb_w_ce.tau"),
    ("tau above 100", method("cdb_w_ce", tau=101.0), [], "methods.cdb_w_ce.tau"),
    ("unknown tau variant", method("cdb_w_ce", tau="quadratic"), [], "methods.cdb_w_ce.tau"),
    ("cdb focal gamma negative", method("cdb_w_fl", gamma=-1.0), [], "methods.cdb_w_fl.gamma"),
    ("DM lambda negative", method("dm", lam=-0.1), [], "methods.dm.lam"),
    ("DM lambda above 10", method("dm", lam=11.0), [], "methods.dm.lam"),
    ("DM beta not a number", method("dm", beta="steep"), [], "methods.dm.beta"),
    ("DM beta as a list of words", method("dm", beta=["a", "b"]), [], "methods.dm.beta"),
    ("IDS c zero", method("ids", c=0.0), [], "methods.ids.c"),
    ("IDS c negative", method("ids", c=-3.0), [], "methods.ids.c"),
    ("IDS gamma of 1", method("ids", gamma=1.0), [], "methods.ids.gamma"),
    ("IDS gamma negative", method("ids", gamma=-0.5), [], "methods.ids.gamma"),
    ("Difficulty-Net H zero", method("difficulty_net", hidden=0), [], "methods.difficulty_net.hidden"),
    ("Difficulty-Net H fractional", method("difficulty_net", hidden=2.5), [], "methods.difficulty_net.hidden"),
    ("Difficulty-Net H factor too large", method("difficulty_net", hidden_factor=100.0), [],
     "methods.difficulty_net.hidden_factor"),
    ("Difficulty-Net meta lr zero", method("difficulty_net", meta_lr=0.0), [], "methods.difficulty_net.meta_lr"),
    ("MW-Net meta lr above 1", method("mwnet", meta_lr=2.0), [], "methods.mwnet.meta_lr"),
    ("GDW eta_omega negative", method("gdw", eta_omega=-1.0), [], "methods.gdw.eta_omega"),
    ("lr zero", section("train", lr=0.0), [], "train.lr"),
    ("lr above 10", section("train", lr=11.0), [], "train.lr"),
    ("lr as a word", section("train", lr="fast"), [], "train.lr"),
    ("lr override not a number", {}, ["train.lr=abc"], "train.lr"),
    ("imbalance just below 1", section("dataset", imbalance=0.99), [], "dataset.imbalance"),
    ("imbalance override 0", {}, ["dataset.imbalance=0"], "dataset.imbalance"),
    ("noise rate negative", section("dataset", noise_rate=-0.1, noise_type="uniform"), [], "dataset.noise_rate"),
    ("noise rate of 1", section("dataset", noise_rate=1.0, noise_type="uniform"), [], "dataset.noise_rate"),
    ("noise rate override 1.5", {}, ["dataset.noise_rate=1.5"], "dataset.noise_rate"),
    ("cifar10 root that does not exist",
     {"dataset": {"name": "cifar10", "root": "/nonexistent/cifar", "imbalance": 10}},
     [], "dataset.root"),
    ("trials_per_gpu zero", section("resources", trials_per_gpu=0), [], "resources.trials_per_gpu"),
    ("trials_per_gpu fractional", section("resources", trials_per_gpu=1.5), [], "resources.trials_per_gpu"),
    ("trials_per_gpu a word", section("resources", trials_per_gpu="two"), [], "resources.trials_per_gpu"),
    ("trials_per_gpu override negative", {}, ["resources.trials_per_gpu=-2"], "resources.trials_per_gpu"),
    ("unreachable cluster address", {"cluster": {"address": "CLOSED", "connect_timeout_s": 3}}, [], "cluster.address"),
    ("cluster address without a port", {"cluster": {"address": "headnode"}}, [], "cluster.address"),
    ("cluster connect timeout zero", {"cluster": {"connect_timeout_s": 0}}, [], "cluster.connect_timeout_s"),
    ("storage below a file", {"storage": "FILE/results"}, [], "storage"),
    ("storage on a read-only file system", {"storage": "/proc/raysweep-results"}, [], "storage"),
    ("plugin that is not installed", {"plugins": ["no_such_raysweep_plugin"]}, [], "plugins"),
    ("plugins as a string", {"plugins": "my_methods"}, [], "plugins"),
    ("unknown method override", {}, ["methods.cdb={}"], "methods.cdb"),
    ("reduction factor of 1", {"scheduler": {"name": "asha", "reduction_factor": 1}}, [], "scheduler.reduction_factor"),
    ("negative max_failures", {"failure": {"max_failures": -1}}, [], "failure.max_failures"),
    ("unknown failure key", {"failure": {"retries": 3}}, [], "failure.retries"),
    ("unknown top-level key", {"colour": "red"}, [], "colour"),
    ("missing name", {"name": DELETE}, [], "name"),
    ("missing dataset", {"dataset": DELETE}, [], "dataset"),
    ("missing model", {"model": DELETE}, [], "model"),
    ("unknown method", method("nosuch"), [], "methods.nosuch"),
    ("method gamma out of range", method("focal", gamma=[-1]), [], "methods.focal.gamma"),
    ("unknown method knob", method("focal", alpha=[1]), [], "methods.focal.alpha"),
    ("empty list of knob values", method("focal", gamma=[]), [], "methods.focal.gamma"),
    ("empty methods", {"methods": {}}, [], "methods"),
    ("methods as a list", {"methods": ["ce"]}, [], "methods"),
    ("unknown noise type", section("dataset", noise_type="gaussian"), [], "dataset.noise_type"),
    ("unknown dataset", {"dataset": {"name": "cifar99"}}, [], "dataset.name"),
    ("unknown dataset option", section("dataset", colour=1), [], "dataset.colour"),
    ("unknown model", {"model": "resnet999"}, [], "model.name"),
    ("zero epochs", section("train", epochs=0), [], "train.epochs"),
    ("epochs as a string", section("train", epochs="ten"), [], "train.epochs"),
    ("epochs override not a number", {}, ["train.epochs=abc"], "train.epochs"),
    ("unknown schedule", section("train", schedule="linear"), [], "train.schedule"),
    ("multistep without milestones", section("train", schedule="multistep"), [], "train.milestones"),
    ("zero seeds", {"seeds": 0}, [], "seeds"),
    ("unknown search mode", {"search": {"mode": "bayes"}}, [], "search.mode"),
    ("search on the test set", {"search": {"metric": "test_acc"}}, [], "search.metric"),
    ("unknown scheduler", {"scheduler": {"name": "pbt"}}, [], "scheduler.name"),
    ("grace period beyond epochs", {"scheduler": {"name": "asha", "grace_period": 10}}, [], "scheduler.grace_period"),
    ("median grace period beyond epochs", {"scheduler": {"name": "median", "grace_period": 3}}, [],
     "scheduler.grace_period"),
    ("hyperband reduction factor of 1", {"scheduler": {"name": "hyperband", "reduction_factor": 1}}, [],
     "scheduler.reduction_factor"),
    ("an option fifo does not have", {"scheduler": {"name": "fifo", "grace_period": 1}}, [], "scheduler.grace_period"),
    ("zero cpus", section("resources", cpu=0), [], "resources.cpu"),
    ("gpu and trials_per_gpu together", section("resources", gpu=0.5, trials_per_gpu=2), [],
     "resources.trials_per_gpu"),
    ("axis value out of range", {"axes": {"dataset.imbalance": [0.5, 10]}}, [], "axes.dataset.imbalance"),
    ("axis outside dataset/model/train", {"axes": {"foo.bar": [1]}}, [], "axes.foo.bar"),
    ("a set without a value", {}, ["novalue"], "--set"),
]


@pytest.mark.parametrize("case,changes,overrides,key", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_naming_the_field_and_leaves_nothing(case, changes, overrides, key, tmp_path, monkeypatch,
                                                               capsys):
    import ray

    monkeypatch.chdir(tmp_path)
    spec = changed(changes)
    if spec.get("cluster", {}).get("address") == "CLOSED":
        spec["cluster"]["address"] = _closed_port()
    if str(spec.get("storage", "")).startswith("FILE/"):
        (tmp_path / "FILE").write_text("a file, not a folder")
        spec["storage"] = str(tmp_path / spec["storage"])
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    before = sorted(p.name for p in tmp_path.iterdir())
    args = ["run", "spec.yaml"] + [a for o in overrides for a in ("--set", o)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"raysweep: error: {key}") and "\n" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "no store, results folder or file left"
    assert not ray.is_initialized(), "Ray must not start on bad input"


def test_a_spec_file_that_does_not_exist_exits_2(tmp_path, capsys):
    assert main(["plan", str(tmp_path / "nope.yaml")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_storage_under_a_read_only_folder(tmp_path, monkeypatch, capsys):
    if os.geteuid() == 0:
        pytest.skip("root ignores folder permissions")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({**BASE, "storage": str(locked / "results")}))
    assert main(["run", "spec.yaml"]) == 2
    assert capsys.readouterr().err.startswith("raysweep: error: storage")
    assert list(locked.iterdir()) == [] and not (tmp_path / "mlflow.db").exists()


def test_an_existing_storage_folder_is_left_unchanged_by_bad_input(tmp_path, monkeypatch, capsys):
    store = tmp_path / "results"
    (store / "older-sweep").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    spec = {**BASE, "storage": str(store), "cluster": {"address": _closed_port(), "connect_timeout_s": 3}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["run", "spec.yaml"]) == 2
    assert capsys.readouterr().err.startswith("raysweep: error: cluster.address")
    assert [p.name for p in store.iterdir()] == ["older-sweep"]


def test_resume_and_sync_of_something_that_is_not_a_sweep_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for command in ("resume", "sync"):
        assert main([command, str(tmp_path / "nothing-here")]) == 2
        assert capsys.readouterr().err.startswith("raysweep: error: sweep: no manifest.json")


def test_a_plugin_registers_a_method_the_spec_can_use(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_bad_input_plugin.py").write_text(
        "from trainables.methods import METHODS\nfrom trainables.methods.base import Method\n"
        "from trainables.params import Param\n\n@METHODS.add\nclass Scaled(Method):\n    name = 'scaled_ce_plugin'\n"
        "    description = 'CE times a factor'\n"
        "    params = {'factor': Param(1.0, (float,), low=0.0, low_open=True)}\n")
    from trainables.methods import METHODS

    # The plugin's registration is undone afterwards, so later tests see the built-in registry only.
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))
    monkeypatch.setattr(METHODS, "_descriptions", dict(METHODS._descriptions))
    monkeypatch.delitem(sys.modules, "my_bad_input_plugin", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    spec = {**BASE, "plugins": ["my_bad_input_plugin"], "methods": {"scaled_ce_plugin": {"factor": [0.5, 2.0]}}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["plan", "spec.yaml"]) == 0
    assert "2 trials (2 configurations x 1 seeds)" in capsys.readouterr().out
    assert main(["plan", "spec.yaml", "--set", "methods.scaled_ce_plugin.factor=0"]) == 2
    assert capsys.readouterr().err.startswith("raysweep: error: methods.scaled_ce_plugin.factor")
