"""The fixed cost of a sweep (issue 25): what the driver and the workers import, the generated-data cache
keyed by its source's config, the exit, and the worker count."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from _cli import raysweep_cmd

BOUND_S = 120


def imported_after(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after ``statement``."""
    out = subprocess.run([sys.executable, "-c", f"{statement}\nimport sys\nprint('\\n'.join(sys.modules))"],
                         capture_output=True, text=True, check=True, timeout=300)
    return set(out.stdout.split())


@pytest.mark.process
def test_driver_and_worker_do_not_import_the_compiler_stack_or_torchvision():
    """torchvision (and torch._dynamo through torchvision.ops) costs about 3 s a process; only an
    AutoAugment operation needs it."""
    modules = imported_after("import raysweep.cli, raysweep.execution.runner, trainables.tune, trainables.loop")
    assert not {m for m in modules if m == "torchvision" or m.startswith(("torchvision.", "torch._dynamo"))}


@pytest.mark.process
def test_the_preflight_imports_neither_ray_tune_nor_the_compiler_stack():
    """Validating, planning and every pre-Ray check of a small sweep: Ray Tune (1.2 s) is imported once Ray
    has started, and a small model is probed on the CPU, not on the meta device whose first forward imports
    torch._dynamo (1.4 s)."""
    modules = imported_after(
        "from raysweep.spec.schema import validate_spec\n"
        "from raysweep.planning.plan import plan\n"
        "from raysweep.execution.footprint import check_footprint\n"
        "from raysweep.execution.preflight import check_datasets\n"
        f"spec = validate_spec({SMALL!r})\n"
        "trials = plan(spec)\n"
        "check_footprint(spec, trials)\n"
        "check_datasets(spec, trials)")
    assert "torch" in modules  # the checks did run a model
    assert not {m for m in modules if m == "ray.tune" or m.startswith(("ray.tune.", "torch._dynamo"))}


def test_small_models_are_probed_on_the_cpu_large_ones_on_meta_and_both_measure_the_same(monkeypatch):
    import torch

    from trainables import pairs
    from trainables.models import resolve_model

    mlp = resolve_model({"name": "mlp"})
    before = torch.get_rng_state()
    small = pairs.probe_model(mlp, (40,), 10)
    assert next(small.parameters()).device.type == "cpu"
    assert torch.equal(torch.get_rng_state(), before)  # building it drew nothing from the global RNG
    large = pairs.probe_model(resolve_model({"name": "resnet10"}), (3, 224, 224), 10)
    assert next(large.parameters()).device.type == "meta"
    assert pairs.probe_batch(large, (3, 224, 224), torch.uint8).device.type == "meta"

    on_cpu = pairs.model_footprint(mlp, (40,), None, torch.float32, 10)
    monkeypatch.setattr(pairs, "CPU_PROBE_WEIGHTS", 0)
    assert next(pairs.probe_model(mlp, (40,), 10).parameters()).device.type == "meta"
    assert pairs.model_footprint(mlp, (40,), None, torch.float32, 10) == on_cpu


def test_autoaugment_policies_are_torchvisions():
    from torchvision.transforms import AutoAugmentPolicy

    from trainables.data.augment import POLICIES

    assert sorted(POLICIES) == sorted(p.value for p in AutoAugmentPolicy)


# ---- generated and embedded sources: built once per machine, keyed by the source's own config -------------
def _counting_source(log: str):
    """A cached source whose every real build appends a line to ``log``."""
    import numpy as np
    import torch

    from trainables.data import DatasetSource
    from trainables.data.protocol import SourceData

    def load(options):
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()} {options['seed']}\n")
        rng = np.random.default_rng(options["seed"])
        return SourceData(x_train=torch.as_tensor(rng.normal(size=(40, 3)), dtype=torch.float32),
                          y_train=np.repeat(np.arange(4), 10), num_classes=4)

    return DatasetSource("counting", "a test source", load, cache=("numpy",))


def _load_in_child(root: str, log: str, start, out) -> None:
    from trainables.data import load_source

    os.environ["RAYSWEEP_DATA_CACHE"] = root
    start.wait(BOUND_S)
    out.put(load_source(_counting_source(log), {"seed": 7}).x_train.sum().item())


def test_a_different_config_never_reuses_a_build_and_the_protocol_never_rebuilds(tmp_path, monkeypatch):
    import torch

    from trainables.data import DATASETS, load_source, load_splits, resolve_dataset, split_inputs

    monkeypatch.setenv("RAYSWEEP_DATA_CACHE", str(tmp_path / "cache"))
    log = tmp_path / "builds.log"
    source = _counting_source(str(log))
    first, other, again = (load_source(source, {"seed": s}) for s in (1, 2, 1))
    assert [line.split()[1] for line in log.read_text().splitlines()] == ["1", "2"]  # seed 1 found the second time
    assert torch.equal(first.x_train, again.x_train) and not torch.equal(first.x_train, other.x_train)
    assert torch.equal(first.x_train, source.load({"seed": 1}).x_train)  # the cache holds what load returns

    # mnist1d: one build per own config (num_samples, seed), whatever the protocol's imbalance
    mnist1d = DATASETS.get("mnist1d")
    configs = [resolve_dataset({"name": "mnist1d", "num_samples": 400, "imbalance": rho}) for rho in (1, 10, 100)]
    configs.append(resolve_dataset({"name": "mnist1d", "num_samples": 400, "seed": 5}))
    for cfg in configs:
        load_splits(cfg)
    folders = sorted(p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith("source-mnist1d-")
                     and p.is_dir())
    assert len(folders) == 2  # seeds 42 and 5; the three imbalances share one raw build
    own = split_inputs(configs[0])[1]
    cached, fresh = load_source(mnist1d, own), mnist1d.load(own)
    assert torch.equal(cached.x_test, fresh.x_test) and (cached.y_test == fresh.y_test).all()


def test_the_preflight_reads_a_generated_source_through_the_machine_cache(tmp_path, monkeypatch):
    """The model/data pair check and the memory estimate once built mnist1d each (1.5-3 s a build, twice a
    preflight) instead of reading the cache every trial reads."""
    from raysweep.execution.footprint import check_footprint
    from raysweep.execution.preflight import check_datasets
    from raysweep.planning.plan import plan
    from raysweep.spec.schema import validate_spec
    from trainables.data import DATASETS

    monkeypatch.setenv("RAYSWEEP_DATA_CACHE", str(tmp_path / "cache"))
    log = tmp_path / "builds.log"
    gaussian = DATASETS.get("gaussian")
    real = gaussian.load

    def counting(options):
        with open(log, "a") as handle:
            handle.write("built\n")
        return real(options)

    monkeypatch.setitem(gaussian.__dict__, "load", counting)  # a frozen dataclass: its field, for this test
    spec = validate_spec(SMALL)
    trials = plan(spec)
    for _ in range(2):  # the second preflight, as a second sweep's, finds the build
        check_footprint(spec, trials)
        check_datasets(spec, trials)
    assert log.read_text().splitlines() == ["built"]


@pytest.mark.process
def test_processes_asking_together_build_a_source_once(tmp_path):
    ctx = multiprocessing.get_context("fork")
    start, out, log = ctx.Event(), ctx.Queue(), str(tmp_path / "builds.log")
    procs = [ctx.Process(target=_load_in_child, args=(str(tmp_path / "cache"), log, start, out)) for _ in range(3)]
    for proc in procs:
        proc.start()
    start.set()
    sums = {out.get(timeout=BOUND_S) for _ in procs}
    for proc in procs:
        proc.join(BOUND_S)
        assert proc.exitcode == 0
    assert len(Path(log).read_text().splitlines()) == 1
    assert len(sums) == 1


# ---- one small sweep run as a user runs it: its workers, its exit, what it leaves behind --------------------
SMALL = {"name": "fixed-cost", "dataset": {"name": "gaussian", "samples_per_class": 100}, "model": "mlp",
         "train": {"epochs": 3, "batch_size": 64}, "methods": {"ce": {}, "focal": {"gamma": [1, 2]}}, "seeds": 2,
         "resources": {"cpu": 0.5}, "execution": {"group": "none"}}
MARK = "RAYSWEEP_TEST_SWEEP"  # in the environment of `raysweep run` and so of every process it starts


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """(folder, the plan's output, the run's output, the processes carrying its mark when it returned)."""
    root = tmp_path_factory.mktemp("fixed-cost")
    (root / "spec.yaml").write_text(yaml.safe_dump(SMALL))
    planned = subprocess.run(raysweep_cmd("plan", "spec.yaml"), cwd=root, capture_output=True, text=True,
                             timeout=BOUND_S, check=True).stdout
    token = uuid.uuid4().hex
    proc = subprocess.run(raysweep_cmd("run", "spec.yaml"), cwd=root, capture_output=True, text=True, timeout=600,
                          env={**os.environ, MARK: token})
    from raysweep.execution.cluster import marked_processes

    left = marked_processes(MARK, token)  # at once: the driver's exit is the promise
    for pid in left:  # never leave them to other tests
        os.kill(pid, 9)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root, planned, proc.stdout, left


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.process
def test_no_ray_process_of_the_sweep_is_left_when_run_returns(finished_sweep):
    assert finished_sweep[3] == []


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.process
def test_the_worker_count_never_exceeds_what_plan_says(finished_sweep):
    """Every result Ray kept names the worker process that produced it (Tune's ``pid``)."""
    root, planned, _, _ = finished_sweep
    said = int(re.search(r"workers: at most (\d+) worker processes", planned).group(1))
    assert said == min(os.cpu_count(), 6)  # cpu 0.5 on this machine's cores: one single-threaded trial per core
    results = list((root / "raysweep_results").glob("*/*/result.json"))
    assert len(results) == 6
    pids = {json.loads(line)["pid"] for path in results for line in path.read_text().splitlines() if line.strip()}
    assert 1 <= len(pids) <= said


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.process
def test_the_exit_flushes_every_run_and_the_manifest_first(finished_sweep):
    from mlflow import MlflowClient

    from analysis import mlflow_tags as tags
    from raysweep.tracking.manifest import Manifest

    root, _, out, _ = finished_sweep
    (sweep_dir,) = (root / "raysweep_results").iterdir()
    assert Manifest.find(str(sweep_dir)).data["status"] == "finished"
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(SMALL["name"]).experiment_id
    trials = client.search_runs([experiment], tags.role_filter(tags.TRIAL))
    (parent,) = client.search_runs([experiment], tags.role_filter(tags.SWEEP))
    assert len(trials) == 6 and parent.info.status == "FINISHED"
    assert {r.info.status for r in trials} == {"FINISHED"}
    assert all(len(client.get_metric_history(r.info.run_id, "epoch")) == 3 for r in trials)
    assert "6 trials, 0 failed" in out and out.rstrip().splitlines()[-1].startswith("Full report")


# ---- the fast path: a Ray head kept running ----------------------------------------------------------------
def test_loopback_addresses_are_told_from_others():
    from raysweep.execution.cluster import on_loopback

    assert on_loopback("127.0.0.1:6379") and on_loopback("localhost:6379") and on_loopback("ray://127.0.0.1:10001")
    assert not on_loopback("10.1.2.3:6379") and not on_loopback("head.example.org:6379")


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.process
def test_a_sweep_joins_a_running_loopback_head_and_leaves_it_running(tmp_path):
    """The documented fast path: `ray start --head --node-ip-address 127.0.0.1` once, then sweeps with
    cluster.address. Ray once turned 127.0.0.1 into the outward IP and the driver waited forever."""
    from benchmarks.floor import HEAD_ENV, ray_head

    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({**SMALL, "seeds": 1, "methods": {"ce": {}}}))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    with ray_head(2) as address:
        for _ in range(2):  # the head outlives each sweep
            proc = subprocess.run(raysweep_cmd("run", "spec.yaml", "--set", f"cluster.address={address}"),
                                  cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**env, **HEAD_ENV})
            assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
            assert "1 trials, 0 failed" in proc.stdout
