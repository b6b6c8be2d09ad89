"""The fixed cost of a sweep (issue 25): what the driver and the workers import, the generated-data cache
keyed by its source's config, the exit, and the worker count."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

BOUND_S = 120


def imported_after(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after ``statement``."""
    out = subprocess.run([sys.executable, "-c", f"{statement}\nimport sys\nprint('\\n'.join(sys.modules))"],
                         capture_output=True, text=True, check=True, timeout=300)
    return set(out.stdout.split())


def test_driver_and_worker_do_not_import_the_compiler_stack_or_torchvision():
    """torchvision (and torch._dynamo through torchvision.ops) costs about 3 s a process; only an
    AutoAugment operation needs it."""
    modules = imported_after("import raysweep.cli, raysweep.runner, trainables.tune, trainables.loop")
    assert not {m for m in modules if m == "torchvision" or m.startswith(("torchvision.", "torch._dynamo"))}


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
