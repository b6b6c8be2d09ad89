"""Checks that run before anything starts (issue 15, items 3, 4, 7 and 11): resources against the cluster,
tracking stores, plugins, the dataset's split sizes and the reported metric names. No Ray, no MLflow server.
"""

import http.server
import socket
import sqlite3
import sys
import threading
from dataclasses import replace

import pytest

from raysweep.spec.resources import (
    RESOLUTION,
    RESOURCE_UNITS,
    check_fits,
    check_resolution,
    local_cluster,
    trial_resources,
)
from raysweep.tracking import store_check
from raysweep.tracking.store_check import SCHEMES, check_scheme, check_store, uri_scheme
from trainables.data import DATASETS, load_splits, resolve_dataset
from trainables.data.sizes import check_split_sizes, split_sizes
from trainables.params import ConfigError
from trainables.plugins import PluginError, import_plugins, plugin_names


def res(**values):
    """A validated ``resources`` section."""
    from raysweep.spec.sections import Resources

    return Resources.from_raw(values, "resources")


# ---- resources ----------------------------------------------------------------------------------------
def test_the_resolution_is_the_installed_rays():
    import ray._raylet
    from ray._private import ray_constants

    assert RESOURCE_UNITS == ray._raylet.RESOURCE_UNIT_SCALING
    assert RESOLUTION == ray_constants.MIN_RESOURCE_GRANULARITY


@pytest.mark.parametrize("values, field", [
    ({"cpu": 1.0e-9}, "resources.cpu"), ({"cpu": 0.00005}, "resources.cpu"), ({"cpu": 0.00015}, "resources.cpu"),
    ({"cpu": 1.23456}, "resources.cpu"), ({"gpu": 0.00001}, "resources.gpu"), ({"gpu": 0.33333333}, "resources.gpu"),
    ({"trials_per_gpu": 10001}, "resources.trials_per_gpu"),
])
def test_fractions_finer_than_rays_resolution_are_refused(values, field):
    with pytest.raises(ConfigError) as info:
        check_resolution(res(**values))
    assert info.value.path == field and "0.0001" in info.value.message


@pytest.mark.parametrize("values", [{"cpu": 0.0001}, {"cpu": 0.25}, {"cpu": 0.3}, {"cpu": 3.0}, {"cpu": 1.2345},
                                    {"gpu": 0.5}, {"gpu": 1.0}, {"gpu": 0.0001}, {"trials_per_gpu": 10000},
                                    {"trials_per_gpu": 3}])
def test_fractions_on_rays_grid_pass(values):
    check_resolution(res(**values))


NODES = [
    {"NodeID": "a", "Alive": True, "Resources": {"CPU": 2.0, "memory": 8e9, "object_store_memory": 2e9}},
    {"NodeID": "dead", "Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}},
    {"NodeID": "b", "Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0, "memory": 3e10}},
]


@pytest.mark.parametrize("per_trial", [{"cpu": 1.0}, {"cpu": 8.0}, {"cpu": 2.0, "gpu": 0.5}, {"cpu": 8.0, "gpu": 1.0},
                                       {"cpu": 0.30000000000000004}])
def test_a_demand_that_some_alive_node_holds_passes(per_trial):
    check_fits(per_trial, NODES)


def test_more_cpus_than_any_alive_node_has_names_resources_cpu_and_the_range():
    with pytest.raises(ConfigError) as info:
        check_fits({"cpu": 100.0}, NODES)
    assert info.value.path == "resources.cpu"
    assert "asks for 100 CPUs" in info.value.message and "largest node of the Ray cluster has 8" in info.value.message
    assert "allowed: 0.0001 to 8" in info.value.message  # the dead node's 64 CPUs do not count


def test_more_gpu_than_any_node_has_names_the_gpu_field():
    with pytest.raises(ConfigError) as info:
        check_fits({"cpu": 1.0, "gpu": 2.0}, NODES)
    assert info.value.path == "resources.gpu" and "has 1" in info.value.message
    with pytest.raises(ConfigError) as info:
        check_fits({"cpu": 1.0, "gpu": 0.5}, NODES[:1], gpu_field="resources.trials_per_gpu")
    assert info.value.path == "resources.trials_per_gpu" and "has 0" in info.value.message


def test_cpus_and_gpu_on_different_nodes_do_not_fit_one_trial():
    nodes = [{"Alive": True, "Resources": {"CPU": 16.0}}, {"Alive": True, "Resources": {"CPU": 2.0, "GPU": 1.0}}]
    with pytest.raises(ConfigError) as info:
        check_fits({"cpu": 4.0, "gpu": 0.5}, nodes)
    assert info.value.path == "resources.gpu"
    assert "no node of the Ray cluster has both 4 CPUs and 0.5 GPU" in info.value.message
    assert "at most 2 CPUs" in info.value.message


def test_no_alive_node_at_all():
    with pytest.raises(ConfigError) as info:
        check_fits({"cpu": 1.0}, [NODES[1]])
    assert info.value.path == "resources.cpu" and "no alive node" in info.value.message


def test_the_local_cluster_refuses_a_cpu_demand_before_ray_starts():
    check_fits({"cpu": 2.0}, local_cluster(2))
    with pytest.raises(ConfigError) as info:
        check_fits({"cpu": 100.0}, local_cluster(2))
    assert info.value.path == "resources.cpu" and "has 2" in info.value.message


def test_trial_resources_demands_a_gpu_or_falls_back_with_a_notice():
    notes = []
    with pytest.raises(ConfigError) as info:
        trial_resources(res(gpu=0.5), 0, notes.append)
    assert info.value.path == "resources.gpu"
    with pytest.raises(ConfigError) as info:
        trial_resources(res(trials_per_gpu=4, require_gpu=True), 0, notes.append)
    assert info.value.path == "resources.require_gpu"
    assert trial_resources(res(trials_per_gpu=4), 0, notes.append) == ({"cpu": 1.0}, None) and len(notes) == 1
    assert trial_resources(res(trials_per_gpu=4), 1, notes.append) == ({"cpu": 1.0, "gpu": 0.25}, 0.25)
    assert trial_resources(res(cpu=2.0), 0, notes.append) == ({"cpu": 2.0}, None)


# ---- tracking stores ------------------------------------------------------------------------------------
def test_the_schemes_are_the_installed_mlflows():
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry

    registered = set(_tracking_store_registry._registry) - {"uc", "databricks-uc"}  # model registry only
    assert set(SCHEMES) == registered


@pytest.mark.parametrize("uri", ["sqlite:///x.db", "sqlite:////tmp/x.db", "postgresql://u@h/db",
                                 "postgresql+psycopg://u:p@h:5432/db", "mysql+pymysql://h/db", "mssql+pyodbc://h/db",
                                 "http://127.0.0.1:5000", "https://mlflow.example.org", "databricks",
                                 "databricks://profile", "./mlruns", "file:///tmp/mlruns", "/abs/mlruns"])
def test_uri_scheme_dispatches_like_mlflow(uri):
    from mlflow.tracking._tracking_service.utils import _get_tracking_scheme_with_resolved_uri

    assert uri_scheme(uri) == _get_tracking_scheme_with_resolved_uri(uri)


@pytest.mark.parametrize("uri", ["ftp://127.0.0.1/x", "bogus://nowhere", "s3://bucket/path", "sqlite3:///x.db"])
def test_schemes_mlflow_cannot_track_to_are_refused(uri):
    with pytest.raises(ConfigError) as info:
        check_scheme(uri)
    assert info.value.path == "tracking.uri" and "no tracking store for the scheme" in info.value.message
    assert "sqlite, postgresql, mysql, mssql" in info.value.message


def test_a_file_store_needs_mlflows_opt_in(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    for uri in ("./mlruns", tmp_path.as_uri()):
        with pytest.raises(ConfigError) as info:
            check_scheme(uri)
        assert "MLFLOW_ALLOW_FILE_STORE=true" in info.value.message
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert check_scheme(tmp_path.as_uri()) == "file"
    check_store((tmp_path / "new" / "store").as_uri())
    assert not (tmp_path / "new").exists()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError):
        check_store(str(tmp_path / "afile" / "store"))


def test_a_plugin_scheme_is_accepted(monkeypatch):
    monkeypatch.setattr(store_check, "plugin_schemes", lambda: ("custom",))
    assert check_scheme("custom://x") == "custom"


def test_a_new_sqlite_file_in_a_writable_folder_passes_and_nothing_is_created(tmp_path):
    check_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert list(tmp_path.iterdir()) == []


def test_a_relative_sqlite_path_is_taken_from_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_store("sqlite:///mlflow.db")
    with pytest.raises(ConfigError) as info:
        check_store("sqlite:///missing/mlflow.db")
    assert "does not exist" in info.value.message


def test_an_existing_sqlite_database_passes(tmp_path):
    with sqlite3.connect(tmp_path / "m.db") as db:
        db.execute("create table t (x)")
    check_store(f"sqlite:///{tmp_path / 'm.db'}")


def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    (tmp_path / "m.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError) as info:
        check_store(f"sqlite:///{tmp_path / 'm.db'}")
    assert info.value.path == "tracking.uri" and "as a sqlite database" in info.value.message


def test_sqlite_in_proc_fails_at_once():
    with pytest.raises(ConfigError) as info:
        check_store("sqlite:////proc/raysweep.db")
    assert info.value.path == "tracking.uri" and "/proc does not take new files" in info.value.message


def test_sqlite_in_a_missing_folder_or_at_a_folder_is_refused(tmp_path):
    with pytest.raises(ConfigError) as info:
        check_store(f"sqlite:///{tmp_path / 'no' / 'm.db'}")
    assert "does not exist" in info.value.message
    (tmp_path / "d.db").mkdir()
    with pytest.raises(ConfigError) as info:
        check_store(f"sqlite:///{tmp_path / 'd.db'}")
    assert "is a folder" in info.value.message


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_http_store_on_a_closed_port_is_refused():
    port = closed_port()
    with pytest.raises(ConfigError) as info:
        check_store(f"http://127.0.0.1:{port}", timeout_s=2)
    assert info.value.path == "tracking.uri"
    assert f"no MLflow server answers at http://127.0.0.1:{port}" in info.value.message


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(self.status if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    servers = []

    def start(status):
        handler = type("H", (_Health,), {"status": status})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_an_http_store_answering_health_passes(http_server):
    check_store(http_server(200) + "/", timeout_s=5)


def test_an_http_store_answering_an_error_is_refused(http_server):
    with pytest.raises(ConfigError) as info:
        check_store(http_server(503), timeout_s=5)
    assert "answered HTTP 503" in info.value.message


@pytest.fixture
def silent_port():
    """A port that accepts TCP connections and never says a word."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock.getsockname()[1]
    sock.close()


def test_a_database_server_on_a_closed_port_is_refused():
    port = closed_port()
    with pytest.raises(ConfigError) as info:
        check_store(f"postgresql+psycopg://u:secret@127.0.0.1:{port}/db", timeout_s=2)
    assert info.value.path == "tracking.uri" and f"no postgresql server answers at 127.0.0.1:{port}" in str(info.value)
    assert "secret" not in str(info.value)


def test_a_database_that_never_answers_is_bounded(silent_port):
    with pytest.raises(ConfigError) as info:
        check_store(f"postgresql+psycopg://u:secret@127.0.0.1:{silent_port}/db", timeout_s=1)
    assert "cannot log in to" in info.value.message and "secret" not in str(info.value)


def test_a_missing_database_driver_is_named(silent_port):
    with pytest.raises(ConfigError) as info:
        check_store(f"mysql+nosuchdriver://u@127.0.0.1:{silent_port}/db", timeout_s=1)
    assert info.value.path == "tracking.uri"


def test_databricks_is_only_scheme_checked():
    check_store("databricks")


# ---- plugins ---------------------------------------------------------------------------------------------
@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("rs_plugin_")]:
        del sys.modules[name]


def write_plugin(folder, name, body):
    (folder / f"{name}.py").write_text(body)
    return name


def test_a_good_plugin_is_imported(plugin_dir):
    write_plugin(plugin_dir, "rs_plugin_ok", "LOADED = True\n")
    assert import_plugins(["rs_plugin_ok"]) == ["rs_plugin_ok"]
    assert sys.modules["rs_plugin_ok"].LOADED


@pytest.mark.parametrize("body, words", [
    ("import sys\nsys.exit(0)\n", "called sys.exit(0) on import"),
    ("import sys\nsys.exit('bye')\n", "called sys.exit('bye') on import"),
    ("raise SystemExit\n", "called sys.exit(None)"),
    ("raise RuntimeError('no GPU here\\nsecond line')\n", "RuntimeError: no GPU here"),
    ("import not_a_module_anywhere\n", "ModuleNotFoundError: No module named 'not_a_module_anywhere'"),
    ("def broken(:\n", "SyntaxError"),
])
def test_a_plugin_that_exits_or_raises_is_an_error_naming_it(plugin_dir, body, words):
    write_plugin(plugin_dir, "rs_plugin_bad", body)
    with pytest.raises(PluginError) as info:
        import_plugins(["rs_plugin_bad"])
    err = info.value
    assert isinstance(err, ConfigError) and err.path == "plugins" and err.plugin == "rs_plugin_bad"
    assert "cannot import 'rs_plugin_bad'" in err.message and words in err.message and "\n" not in str(err)
    assert "rs_plugin_bad" not in sys.modules  # a second import tries again rather than finding half a module
    with pytest.raises(PluginError):
        import_plugins(["rs_plugin_bad"])


def test_keyboard_interrupt_in_a_plugin_is_left_alone(plugin_dir):
    write_plugin(plugin_dir, "rs_plugin_int", "raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        import_plugins(["rs_plugin_int"])


def test_the_first_failing_plugin_is_named_and_the_rest_not_imported(plugin_dir):
    write_plugin(plugin_dir, "rs_plugin_a", "import sys\nsys.exit(3)\n")
    write_plugin(plugin_dir, "rs_plugin_b", "LOADED = True\n")
    with pytest.raises(PluginError) as info:
        import_plugins(["rs_plugin_a", "rs_plugin_b"])
    assert info.value.plugin == "rs_plugin_a" and "rs_plugin_b" not in sys.modules


@pytest.mark.parametrize("raw", ["my_methods", [1], ["a b"], ["../x"], [""], {"a": 1}])
def test_plugin_lists_are_module_names(raw):
    with pytest.raises(ConfigError) as info:
        plugin_names(raw)
    assert info.value.path == "plugins"


def test_no_plugins():
    assert import_plugins(None) == [] and plugin_names(["a.b", "c"]) == ["a.b", "c"]


# ---- datasets: noise and split sizes ----------------------------------------------------------------------
def test_a_noise_rate_without_a_noise_type_is_refused():
    with pytest.raises(ConfigError) as info:
        resolve_dataset({"name": "gaussian", "noise_rate": 0.5})
    assert info.value.path == "dataset.noise_rate" and "noise_type is 'none'" in info.value.message
    assert "symmetric, uniform, flip" in info.value.message
    assert resolve_dataset({"name": "gaussian", "noise_rate": 0.5, "noise_type": "flip"})["noise_rate"] == 0.5
    assert resolve_dataset({"name": "gaussian", "noise_rate": 0.0, "noise_type": "uniform"})["noise_rate"] == 0.0


def test_a_noise_rate_axis_without_a_noise_type_fails_in_the_plan():
    from raysweep.planning.plan import plan
    from raysweep.spec.schema import validate_spec

    spec = validate_spec({"name": "n", "dataset": {"name": "gaussian"}, "model": "mlp", "methods": {"ce": {}},
                          "axes": {"dataset.noise_rate": [0.0, 0.4]}})
    with pytest.raises(ConfigError) as info:
        plan(spec)
    assert info.value.path == "dataset.noise_rate"


def gaussian(**options):
    return resolve_dataset({"name": "gaussian", "imbalance": 10, **options})


def test_gaussian_with_60_per_class_fails_before_any_trial_naming_the_hold_outs():
    with pytest.raises(ConfigError) as info:
        split_sizes(gaussian(samples_per_class=60))
    err = info.value
    assert err.path == "dataset" and "class 0 has no example left to train on" in err.message
    assert "test_per_class=50" in err.message and "meta_per_class=10" in err.message


@pytest.mark.parametrize("options, field", [
    ({"samples_per_class": 55}, "dataset.meta_per_class"),
    ({"samples_per_class": 100, "test_per_class": 101}, "dataset.test_per_class"),
    ({"samples_per_class": 100, "val_per_class": 41}, "dataset.val_per_class"),
    ({"samples_per_class": 100, "n_max": 41}, "dataset.n_max"),
])
def test_each_hold_out_that_asks_too_much_is_named(options, field):
    with pytest.raises(ConfigError) as info:
        split_sizes(gaussian(**options))
    assert info.value.path == field


@pytest.mark.parametrize("raw", [
    {"name": "gaussian", "imbalance": 10, "samples_per_class": 100},
    {"name": "gaussian", "num_classes": 25, "samples_per_class": 80, "imbalance": 5, "val_per_class": 5},
    {"name": "digits", "imbalance": 20, "noise_type": "symmetric", "noise_rate": 0.3},
    {"name": "iris", "meta_per_class": 3},
    {"name": "mnist1d", "num_samples": 1000, "imbalance": 10, "noise_type": "flip", "noise_rate": 0.2},
])
def test_split_sizes_are_exactly_the_built_splits(raw):
    import numpy as np

    cfg = resolve_dataset(raw)
    sizes = split_sizes(cfg)
    splits = load_splits(cfg)
    C = splits.num_classes

    def counts(labels):
        return tuple(int(n) for n in np.bincount(labels.numpy(), minlength=C))

    assert sizes.num_classes == C
    assert sizes.train == counts(splits.train.true_y) == tuple(int(n) for n in splits.class_counts)
    assert (sizes.meta, sizes.val, sizes.test) == (counts(splits.meta.y), counts(splits.val.y), counts(splits.test.y))
    assert sizes.groups == {k: tuple(int(c) for c in v) for k, v in splits.groups.items()}
    assert sizes.noisy == splits.is_noisy == (cfg["noise_rate"] > 0)


def test_a_file_backed_source_without_a_labels_hook_is_not_loaded(tmp_path):
    cfg = resolve_dataset({"name": "cifar10", "root": str(tmp_path)})
    assert split_sizes(cfg) is None  # nothing read: the folder is empty


def test_each_source_is_loaded_once_for_many_configs(monkeypatch, tmp_path):
    monkeypatch.setenv("RAYSWEEP_DATA_CACHE", str(tmp_path))  # a machine that has built nothing yet
    source = DATASETS.get("gaussian")
    loads = []

    def counting(options):
        loads.append(dict(options))
        return source.load(options)

    monkeypatch.setitem(DATASETS._entries, "gaussian", replace(source, load=counting))
    configs = [gaussian(samples_per_class=100, imbalance=rho) for rho in (1, 10, 100)] * 2
    configs.append(gaussian(samples_per_class=120))
    out = check_split_sizes(configs)
    assert len(out) == 4 and len(loads) == 2
    with pytest.raises(ConfigError):
        check_split_sizes(configs + [gaussian(samples_per_class=60)])


def test_a_labels_hook_is_used_instead_of_load(monkeypatch):
    source = DATASETS.get("gaussian")

    def no_load(options):
        raise AssertionError("load called")

    monkeypatch.setitem(DATASETS._entries, "gaussian", replace(source, load=no_load, labels=source.load,
                                                               preflight=lambda cfg: None))
    assert split_sizes(gaussian(samples_per_class=100)).train == (40, 18, 8, 4)


# ---- reported metric names --------------------------------------------------------------------------------
def one_epoch(dataset, method="ce"):
    from trainables.loop import Trial

    trial = Trial({"method": {"name": method}, "dataset": dataset, "model": {"name": "mlp", "width": 8},
                   "train": {"epochs": 1, "batch_size": 64, "device": "cpu"}})
    return trial, trial.run_epoch()


@pytest.mark.parametrize("raw", [
    {"name": "gaussian", "imbalance": 10, "samples_per_class": 100},
    {"name": "gaussian", "imbalance": 100, "samples_per_class": 400, "noise_type": "uniform", "noise_rate": 0.4},
    {"name": "gaussian", "num_classes": 25, "samples_per_class": 80, "imbalance": 5},
])
def test_reported_metrics_are_what_an_epoch_reports(raw):
    from trainables.metrics import reported_metrics

    cfg = resolve_dataset(raw)
    sizes = split_sizes(cfg)
    _, metrics = one_epoch(cfg)
    numeric = {k for k, v in metrics.items() if not isinstance(v, list)}
    assert set(reported_metrics(sizes.num_classes, sizes.groups, sizes.noisy)) == numeric
    assert ("train_clean_acc" in numeric) == sizes.noisy
    assert ("test_class_acc" in metrics) == (sizes.num_classes > 20)


def test_summary_metrics_is_what_the_loop_evaluates():
    import numpy as np

    from trainables import loop
    from trainables.metrics import PER_CLASS_METRICS_MAX, summary_metrics

    assert PER_CLASS_METRICS_MAX == loop.PER_CLASS_METRICS_MAX
    trial, _ = one_epoch(gaussian(samples_per_class=200, noise_type="symmetric", noise_rate=0.3))
    evaluated = trial.evaluate()
    groups = {k: np.asarray(v) for k, v in trial.splits.groups.items()}
    assert summary_metrics(trial._val_class_acc, trial._test_class_acc, groups,
                           evaluated["train_clean_acc"]) == evaluated


def test_a_table_metric_typo_is_not_a_reported_name():
    from trainables.metrics import reported_metrics

    sizes = split_sizes(gaussian(samples_per_class=100))
    names = reported_metrics(sizes.num_classes, sizes.groups, sizes.noisy)
    assert "test_acc" in names and "tset_acc" not in names and "test_many_acc" not in names  # no many-shot class
