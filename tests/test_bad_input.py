"""The one corpus of invalid specs and overrides: each exits 2 with a one-line message naming the field,
before anything starts: no Ray, no MLflow store or run, and the storage folder absent or unchanged.

Every case is a change to one base spec (BASE): a mapping merged into it, or, for what no mapping can hold
(duplicate keys, aliases, bytes that are not text), an edit of BASE's YAML text (:class:`Text`). Runs the
CLI in-process (`raysweep.cli.main`), so the whole corpus takes seconds; each case is bounded by the test's
own timeout (:func:`_bounded.bounded`), so one that hangs again (as ``cpu: 100`` once did) fails.
"""

import copy
import os
import socket
import sys
from dataclasses import dataclass
from typing import Callable

import pytest
import yaml
from _bounded import bounded

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


@dataclass(frozen=True)
class Text:
    """A spec file that no mapping dumps to: ``edit`` turns BASE's YAML text into the file's content."""

    edit: Callable[[str], str | bytes]


def appended(text: str) -> Text:
    """BASE's YAML with ``text`` after it (e.g. a second ``train:`` block)."""
    return Text(lambda base: base + text)


def replaced(key: str, text: str) -> Text:
    """BASE's YAML without the top-level ``key``, then ``text`` (which gives ``key`` again, as raw YAML)."""
    return Text(lambda base: yaml.safe_dump({k: v for k, v in BASE.items() if k != key}, sort_keys=False) + text)


def billion_laughs(levels: int, width: int = 10) -> str:
    """``description:`` as an alias tree of width**levels leaves, written in a few hundred bytes."""
    lines = ["description:", f"  l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


# Plugins the corpus can name: written to a folder on sys.path for each case, never left in sys.modules.
PLUGINS = {
    "corpus_plugin_exits_0": "import sys\nsys.exit(0)\n",
    "corpus_plugin_exits_3": "raise SystemExit(3)\n",
    "corpus_plugin_raises": "import no_such_dependency_of_this_plugin\n",
    "corpus_plugin_bug": "METHODS = {}\nMETHODS['x'].add(1)\n",
}
MACHINE_CPUS = os.cpu_count() or 1


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
    ("unreachable cluster address", {"cluster": {"address": "{closed}", "connect_timeout_s": 3}}, [],
     "cluster.address"),
    ("cluster address without a port", {"cluster": {"address": "headnode"}}, [], "cluster.address"),
    ("cluster connect timeout zero", {"cluster": {"connect_timeout_s": 0}}, [], "cluster.connect_timeout_s"),
    ("storage below a file", {"storage": "{file}/results"}, [], "storage"),
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
    ("a model that cannot take the dataset's inputs", {"model": "resnet10"}, [], "model.name"),
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
    ("a cap on running trials under hyperband", {"scheduler": {"name": "hyperband"},
                                                 "resources": {"cpu": 1, "max_concurrent": 1}}, [],
     "resources.max_concurrent"),
    ("an option fifo does not have", {"scheduler": {"name": "fifo", "grace_period": 1}}, [], "scheduler.grace_period"),
    ("zero cpus", section("resources", cpu=0), [], "resources.cpu"),
    ("gpu and trials_per_gpu together", section("resources", gpu=0.5, trials_per_gpu=2), [],
     "resources.trials_per_gpu"),
    ("axis value out of range", {"axes": {"dataset.imbalance": [0.5, 10]}}, [], "axes.dataset.imbalance"),
    ("axis outside dataset/model/train", {"axes": {"foo.bar": [1]}}, [], "axes.foo.bar"),
    ("a set without a value", {}, ["novalue"], "--set"),
    # ---- issue 15 and beyond: YAML that a mapping cannot show ---------------------------------------------
    ("a second train block", appended("train: {epochs: 50}\n"), [], "train"),
    ("the same method twice", replaced("methods", "methods: {focal: {gamma: 1.0}, focal: {gamma: 3.0}}\n"), [],
     "methods.focal"),
    ("a dataset option twice", replaced("dataset", "dataset:\n  name: gaussian\n  imbalance: 10\n  imbalance: 100\n"),
     [], "dataset.imbalance"),
    ("a knob twice in the second block of a list",
     replaced("methods", "methods:\n  focal:\n  - {gamma: 1.0}\n  - {gamma: 2.0, gamma: 3.0}\n"), [],
     "methods.focal[1].gamma"),
    ("a duplicate inside a set value", {}, ["train={epochs: 2, epochs: 3}"], "train.epochs"),
    ("an alias tree of a million leaves", appended(billion_laughs(6)), [], "spec"),
    ("an alias that contains itself", appended("description: &d [1, *d]\n"), [], "spec"),
    ("a long string repeated by aliases", appended(
        f"description: {{s: &s {'x' * 200_000}, many: [{', '.join(['*s'] * 40)}]}}\n"), [], "spec"),
    ("twenty thousand nested brackets", appended("description: " + "[" * 20_000 + "]" * 20_000 + "\n"), [], "spec"),
    ("a binary file", Text(lambda base: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))), [], "spec"),
    ("a latin-1 file", Text(lambda base: (base + "description: caf\u00e9\n").encode("latin-1")), [], "spec"),
    ("a NUL byte in UTF-8 text", Text(lambda base: base + "description: a\x00b\n"), [], "spec"),
    ("a document that is a list", Text(lambda base: "- name: bad\n- seeds: 1\n"), [], "spec"),
    # ---- names that become paths -------------------------------------------------------------------------
    ("a 300-character name", {"name": "n" * 300}, [], "name"),
    ("name ..", {"name": ".."}, [], "name"),
    ("name with a slash", {"name": "a/b"}, [], "name"),
    ("name with a leading dot", {"name": ".hidden"}, [], "name"),
    ("name override with a control character", {}, ['name="a\\tb"'], "name"),
    ("experiment escaping two folders up", {"tracking": {"experiment": "../../escape_exp"}}, [], "tracking.experiment"),
    ("experiment with a slash", {"tracking": {"experiment": "team/ablation"}}, [], "tracking.experiment"),
    ("experiment ..", {"tracking": {"experiment": ".."}}, [], "tracking.experiment"),
    ("experiment name of 300 bytes", {"tracking": {"experiment": "\u00e9" * 150}}, [], "tracking.experiment"),
    # ---- resources Ray could never give -------------------------------------------------------------------
    ("cpu finer than Ray's resolution", section("resources", cpu=1.0e-9), [], "resources.cpu"),
    ("cpu between two steps of Ray's grid", section("resources", cpu=0.00015), [], "resources.cpu"),
    ("cpu above this machine", section("resources", cpu=float(MACHINE_CPUS + 1)), [], "resources.cpu"),
    ("cpu override of 100", {}, ["resources.cpu=100"], "resources.cpu"),
    ("gpu above one", section("resources", gpu=1.5), [], "resources.gpu"),
    ("gpu finer than Ray's resolution", section("resources", gpu=0.00001), [], "resources.gpu"),
    ("trials_per_gpu beyond Ray's resolution", section("resources", trials_per_gpu=20_000), [],
     "resources.trials_per_gpu"),
    # ---- tracking stores ---------------------------------------------------------------------------------
    ("ftp tracking store", {"tracking": {"uri": "ftp://127.0.0.1/x"}}, [], "tracking.uri"),
    ("tracking scheme nobody has", {"tracking": {"uri": "bogus://nowhere"}}, [], "tracking.uri"),
    ("s3 is an artifact store, not a tracking store", {"tracking": {"uri": "s3://bucket/mlflow"}}, [], "tracking.uri"),
    ("empty tracking uri", {"tracking": {"uri": "  "}}, [], "tracking.uri"),
    ("sqlite under /proc", {"tracking": {"uri": "sqlite:////proc/raysweep.db"}}, [], "tracking.uri"),
    ("sqlite in a folder that does not exist", {"tracking": {"uri": "sqlite:////nonexistent-raysweep/m.db"}}, [],
     "tracking.uri"),
    ("sqlite file that is a folder", {"tracking": {"uri": "sqlite:///{folder}"}}, [], "tracking.uri"),
    ("sqlite file that is not a database", {"tracking": {"uri": "sqlite:///{file}"}}, [],
     "tracking.uri"),
    ("MLflow server on a closed port", {"tracking": {"uri": "http://{closed}"}}, [], "tracking.uri"),
    ("postgres on a closed port", {"tracking": {"uri": "postgresql://raysweep@{closed}/mlflow"}}, [], "tracking.uri"),
    ("a file store without MLflow's opt-in", {"tracking": {"uri": "file:///tmp/raysweep-file-store"}}, [],
     "tracking.uri"),
    # ---- plugins that end the process or fail --------------------------------------------------------------
    ("plugin that calls sys.exit(0)", {"plugins": ["corpus_plugin_exits_0"]}, [], "plugins"),
    ("plugin that raises SystemExit(3)", {"plugins": ["corpus_plugin_exits_3"]}, [], "plugins"),
    ("plugin with a missing dependency", {"plugins": ["corpus_plugin_raises"]}, [], "plugins"),
    ("plugin with a bug", {"plugins": ["corpus_plugin_bug"]}, [], "plugins"),
    ("plugin name that is a path", {"plugins": ["../corpus_plugin_bug"]}, [], "plugins"),
    # ---- values that would pass and then fail (or do nothing) in every trial -----------------------------
    ("noise rate without a noise type", section("dataset", noise_rate=0.5), [], "dataset.noise_rate"),
    ("noise rate override without a type", {}, ["dataset.noise_rate=0.3"], "dataset.noise_rate"),
    ("noise rate axis without a type", {"axes": {"dataset.noise_rate": [0.0, 0.4]}}, [], "dataset.noise_rate"),
    ("60 examples per class: nothing left to train on", section("dataset", samples_per_class=60), [], "dataset"),
    ("meta hold-out that leaves nothing", section("dataset", samples_per_class=55), [], "dataset.meta_per_class"),
    ("test hold-out above the class size", section("dataset", test_per_class=101), [], "dataset.test_per_class"),
    ("a class-size axis value too small", {"axes": {"dataset.samples_per_class": [100, 60]}}, [], "dataset"),
    ("table metric typo", {"table": {"metric": "tset_acc"}}, [], "table.metric"),
    ("table metric of a group the split does not have", {"table": {"metric": "test_many_acc"}}, [], "table.metric"),
    ("table metric override typo", {}, ["table.metric=val_acc"], "table.metric"),
    # ---- issue 24: what a sweep may ask for, counted and sized before anything is built -------------------
    ("a billion seeds", {"seeds": 1_000_000_000}, [], "seeds"),
    ("a billion seeds by override", {}, ["seeds=1000000000"], "seeds"),
    ("200 seeds of 1000 configurations",
     {"seeds": 200, "methods": {"focal": {"gamma": [i / 100 for i in range(1000)]}}}, [], "seeds"),
    ("a grid of 10^7 configurations", method("ldam_drw", max_m=[i / 10 for i in range(100)],
                                             scale=[float(i) for i in range(1, 101)],
                                             drw_fraction=[i / 100 for i in range(100)],
                                             drw_beta=[i / 10 for i in range(10)]), [], "methods.ldam_drw"),
    ("a grid of 10^6 by two knobs",
     method("dm", lam=[i / 100 for i in range(1000)], beta=[i / 10 for i in range(1000)]), [], "methods.dm"),
    ("MW-Net weighting net of width 10^9", method("mwnet", hidden=10**9), [], "methods.mwnet.hidden"),
    ("10^5 configurations times 100 axis points", {"methods": {"focal": {"gamma": [i / 10_000 for i in range(10_000)]}},
                                                   "axes": {"dataset.imbalance": [float(i) for i in range(1, 101)]}},
     [], "axes"),
    ("random with ten million samples", {"search": {"mode": "random", "num_samples": 10_000_000}}, [],
     "search.num_samples"),
    ("optuna with ten million samples", {"search": {"mode": "optuna", "num_samples": 10_000_000}}, [],
     "search.num_samples"),
    ("ASHA reduction factor 1.000000001", {"scheduler": {"name": "asha", "reduction_factor": 1.000000001}}, [],
     "scheduler.reduction_factor"),
    ("HyperBand reduction factor 1.000000001", {"scheduler": {"name": "hyperband", "reduction_factor": 1.000000001}},
     [], "scheduler.reduction_factor"),
    ("ASHA reduction factor 1e308", {"scheduler": {"name": "asha", "reduction_factor": 1.0e308}}, [],
     "scheduler.reduction_factor"),
    ("gaussian of a billion dimensions", section("dataset", dim=1_000_000_000), [], "dataset"),
    ("gaussian of 10^9 examples per class", section("dataset", samples_per_class=1_000_000_000), [], "dataset"),
    ("gaussian dim axis with one impossible value", {"axes": {"dataset.dim": [16, 10**12]}}, [], "dataset"),
    ("an MLP of width 10^9", {"model": {"name": "mlp", "width": 1_000_000_000}}, [], "model"),
    ("mnist1d of 10^12 samples", {"dataset": {"name": "mnist1d", "num_samples": 10**12}}, [], "dataset"),
    # ---- errors that once appeared only after Ray and MLflow started -----------------------------------------
    ("cuda on a machine without a GPU", section("train", device="cuda"), [], "train.device"),
    ("cuda by override without a GPU", {}, ["train.device=cuda"], "train.device"),
    ("resnet32 on vectors", {"model": "resnet32"}, [], "model.name"),
    ("lenet5 on vectors", {"model": "lenet5"}, [], "model.name"),
    ("resnet32 on mnist1d's sequences", {"dataset": {"name": "mnist1d"}, "model": "resnet32"}, [], "model.name"),
    ("a seed above the 64-bit range", {"seeds": [0, 2**64]}, [], "seeds"),
    ("a negative seed", {"seeds": [-1]}, [], "seeds"),
    ("a dataset seed above the 64-bit range", section("dataset", seed=2**64), [], "dataset.seed"),
    ("a data_seed above the 64-bit range", section("dataset", data_seed=2**70), [], "dataset.data_seed"),
    ("a sampler seed above numpy's range", {"search": {"mode": "random", "seed": 2**40}}, [], "search.seed"),
    ("table rows key with a typo", {"methods": {"focal": {"gamma": [1.0, 2.0]}}, "table": {"rows": "focal.gamma_typo"}},
     [], "table.rows"),
    ("table cols key no configuration has", {"table": {"cols": "dataset.colour"}}, [], "table.cols"),
    ("table rows of a method the spec does not run", {"table": {"rows": "ldam.max_m"}}, [], "table.rows"),
    # ---- numbers at their extremes ---------------------------------------------------------------------------
    ("imbalance 1e308", section("dataset", imbalance=1.0e308), [], "dataset.imbalance"),
    ("imbalance a million", section("dataset", imbalance=1.0e6), [], "dataset.imbalance"),
    ("imbalance infinite", {}, ["dataset.imbalance=.inf"], "dataset.imbalance"),
    ("imbalance NaN", {}, ["dataset.imbalance=.nan"], "dataset.imbalance"),
    ("connect timeout 1e308", {"cluster": {"connect_timeout_s": 1.0e308}}, [], "cluster.connect_timeout_s"),
    ("connect timeout of a day", {"cluster": {"connect_timeout_s": 86400}}, [], "cluster.connect_timeout_s"),
    ("separation 1e300", section("dataset", separation=1.0e300), [], "dataset.separation"),
    ("batch size 2^70", section("train", batch_size=2**70), [], "train.batch_size"),
    ("warmup epochs 10^30", section("train", warmup_epochs=10**30), [], "train.warmup_epochs"),
    ("top_k 10^20", {"search": {"two_phase": True, "top_k": 10**20}}, [], "search.top_k"),
    ("max_failures 10^19", {"failure": {"max_failures": 10**19}}, [], "failure.max_failures"),
    ("focal gamma 1e308", method("focal", gamma=1.0e308), [], "methods.focal.gamma"),
    # ---- names: the same rules for every name field -----------------------------------------------------------
    ("experiment with a right-to-left override", {"tracking": {"experiment": "abl\u202eation"}}, [],
     "tracking.experiment"),
    ("experiment with a zero-width joiner", {"tracking": {"experiment": "a\u200db"}}, [], "tracking.experiment"),
    ("experiment with a tab", {"tracking": {"experiment": "a\tb"}}, [], "tracking.experiment"),
    ("name with a right-to-left override", {"name": "abl\u202eation"}, [], "name"),
    # ---- stores a sweep cannot keep ----------------------------------------------------------------------------
    ("an in-memory sqlite store", {"tracking": {"uri": "sqlite:///:memory:"}}, [], "tracking.uri"),
    ("a sqlite URI without a file", {"tracking": {"uri": "sqlite://"}}, [], "tracking.uri"),
    ("a sqlite store damaged in the middle", {"tracking": {"uri": "sqlite:///{corrupt_db}"}}, [], "tracking.uri"),
]


AS_WITHOUT_A_GPU = {"cuda on a machine without a GPU", "cuda by override without a GPU"}


def _content(changes, tmp_path) -> str | bytes:
    """The spec file of a case, placeholders filled: {closed} (127.0.0.1 and a port nothing listens on),
    {file} (a text file, not a folder or a database), {folder} (a folder), {corrupt_db} (a damaged sqlite
    database, see :func:`corrupt_sqlite`)."""
    if isinstance(changes, Text):
        content = changes.edit(yaml.safe_dump(BASE, sort_keys=False))
    else:
        content = yaml.safe_dump(changed(changes))
    if isinstance(content, bytes):
        return content
    (tmp_path / "FILE").write_text("a file, not a folder")
    (tmp_path / "FOLDER").mkdir()
    corrupt_sqlite(tmp_path / "CORRUPT.db")
    return (content.replace("{closed}", _closed_port()).replace("{file}", str(tmp_path / "FILE"))
            .replace("{folder}", str(tmp_path / "FOLDER")).replace("{corrupt_db}", str(tmp_path / "CORRUPT.db")))


def corrupt_sqlite(path) -> None:
    """A sqlite database of several pages whose header is intact and whose middle page is garbage: it opens,
    and only reading every page (``PRAGMA quick_check``) finds the damage."""
    import contextlib
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE metrics (key TEXT, value REAL)")
        db.executemany("INSERT INTO metrics VALUES (?, ?)", [(f"m{i}" * 20, float(i)) for i in range(2000)])
        db.commit()
    data = bytearray(path.read_bytes())
    page = 4096
    middle = (len(data) // page // 2) * page
    data[middle:middle + page] = bytes(range(256)) * (page // 256)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("case,changes,overrides,key", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_naming_the_field_and_leaves_nothing(case, changes, overrides, key, tmp_path, monkeypatch,
                                                               capsys):
    import ray

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    for name, body in PLUGINS.items():
        (plugins / f"{name}.py").write_text(body)
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(plugins))
    if case in AS_WITHOUT_A_GPU:  # the machine the case describes, wherever the corpus runs
        import torch

        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    content = _content(changes, tmp_path)
    (tmp_path / "spec.yaml").write_bytes(content if isinstance(content, bytes) else content.encode())
    before = sorted(p.name for p in tmp_path.iterdir())
    args = ["run", "spec.yaml"] + [a for o in overrides for a in ("--set", o)]
    with bounded(120, f"raysweep run on {case!r}"):
        assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"raysweep: error: {key}: ") and "\n" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "no store, results folder or file left"
    assert not ray.is_initialized(), "Ray must not start on bad input"
    assert not any(name in sys.modules for name in PLUGINS), "a plugin that failed is not left half-imported"


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


# ---- issue 24: inputs the spec corpus cannot hold (options, network, damaged sweep folders, stores) ------------
@pytest.mark.parametrize("args, field", [
    (["--calibrate", "--steps", "0"], "--steps"),
    (["--calibrate", "--steps", "-3"], "--steps"),
    (["--calibrate", "--steps", "100000000"], "--steps"),
    (["--calibrate", "--device", "cuda"], "--device"),
])
def test_plan_calibrate_options_are_checked_before_anything_is_timed(args, field, tmp_path, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(BASE))
    with bounded(60, f"raysweep plan {' '.join(args)}"):
        assert main(["plan", "spec.yaml", *args]) == 2
    out = capsys.readouterr()
    err = out.err.strip()
    assert err.startswith(f"raysweep: error: {field}: ") and "\n" not in err, err
    assert out.out == "", "nothing planned or timed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]


def test_download_without_a_network_is_refused_before_ray(tmp_path, monkeypatch, capsys):
    """`download: true` with the files missing: the download's server must answer now (here a closed port
    stands for a machine without a network), not in every trial after Ray started."""
    import ray
    import torchvision

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", f"https://{_closed_port()}/cifar-10-python.tar.gz")
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "cifar"
    root.mkdir()
    spec = {**BASE, "dataset": {"name": "cifar10", "root": str(root), "download": True, "imbalance": 10},
            "model": "resnet32"}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    with bounded(60, "raysweep run with download: true"):
        assert main(["run", "spec.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("raysweep: error: dataset.download: ") and "cannot be reached" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar", "spec.yaml"] and not list(root.iterdir())
    assert not ray.is_initialized()


@pytest.mark.parametrize("command", [
    ["table", "--experiment", "nothing_here"],
    ["table", "--parent", "0123"],
    ["report", "nothing_here"],
    ["report", "nothing_here", "--tracking-uri", "sqlite:///elsewhere/none.db"],
    ["ui", "--experiment", "nothing_here"],
])
def test_read_only_commands_create_no_store_and_no_folder(command, tmp_path, monkeypatch, capsys):
    """`raysweep table --experiment nothing_here` with no store once refused correctly but left ./mlflow.db."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "elsewhere").mkdir()
    with bounded(60, f"raysweep {' '.join(command)}"):
        assert main(command) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("raysweep: error: --tracking-uri: no MLflow store at ") and "\n" not in err, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["elsewhere"], "no store, report or other folder"


@pytest.mark.parametrize("damage, words", [
    (lambda m: m.pop("spec"), "no spec"),
    (lambda m: m.pop("phases"), "no phases"),
    (lambda m: (m.pop("tracking_uri"), m.pop("experiment")), "no tracking_uri, experiment"),
    (lambda m: m["phases"]["search"].pop("status"), "phase search: no status"),
    (lambda m: m.update(phases=[]), "phases has the wrong type"),
    (lambda m: m.update(sweep_id=7), "sweep_id has the wrong type"),
])
@pytest.mark.parametrize("command", ["resume", "sync"])
def test_a_manifest_that_parses_but_lacks_keys_names_the_file_and_what_is_missing(command, damage, words, tmp_path,
                                                                                  monkeypatch, capsys):
    import json

    from raysweep.tracking.manifest import Manifest

    monkeypatch.chdir(tmp_path)
    sweep_dir = tmp_path / "raysweep_results" / "bad-20260101-000000"
    sweep_dir.mkdir(parents=True)
    manifest = Manifest.new(sweep_dir, sweep_id=sweep_dir.name, spec=BASE, tracking_uri="sqlite:///m.db",
                            experiment="bad", parent_tags={})
    manifest.start_phase("search", "bad-20260101-000000", ["k1"])
    data = json.loads(manifest.path.read_text())
    damage(data)
    manifest.path.write_text(json.dumps(data))
    with bounded(60, f"raysweep {command} of a damaged manifest"):
        assert main([command, str(sweep_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"raysweep: error: sweep: {manifest.path} is damaged: ") and words in err, err
    assert "\n" not in err and not (tmp_path / "m.db").exists()


def test_plan_writes_nothing(tmp_path, monkeypatch, capsys):
    """`raysweep plan` only reads: no store, no results folder, whatever the spec names."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = {**BASE, "storage": str(tmp_path / "results"), "tracking": {"uri": f"sqlite:///{tmp_path / 'm.db'}"}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    with bounded(60, "raysweep plan"):
        assert main(["plan", "spec.yaml"]) == 0
    assert "sweep bad" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["spec.yaml"]
