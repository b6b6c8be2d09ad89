"""The floor of a sweep, and every way of running it measured against that floor in the same run.

The floor is the same planned trials (``raysweep.planning.plan.plan`` of the spec) trained through the project's own
trial API (:func:`trainables.loop.train`) in one Python process with no Ray and no MLflow, timed as a whole
process (interpreter start, imports and data build included), on one thread as a Ray trial of ``cpu: 1`` or
less trains; the N-process floor cuts the trials into N slices trained by N such processes at once.

Sub-commands:

- ``compare``: interleaved rounds (the order shuffled each round, so other users' load hits every variant
  alike) of the floor in one process and in N, ``raysweep run`` ungrouped and grouped by configurations,
  ``raysweep run`` against a Ray head started once beforehand (``cluster.address``), the plain Ray Tune
  script a user would write instead (function trainable, Ray's ``MLflowLoggerCallback``), and Ray Tune
  training nothing (``idle``: the same number of trials, one worker per core, each only importing torch and
  building its model and optimizer), started and against the running head: the lower bound of any runner that
  trains in Ray Tune's workers on this machine. Each variant's
  median wall time and its ratio to the one-process floor of the same round (median over rounds), with the
  1-minute load average before and after every run. ``--spec perf`` (default) is the 12-trial spec of
  issue 25; ``--spec grid`` is the 64-trial grid of ``benchmarks/groups.py``.
- ``train`` (internal): train one slice of a spec file's planned trials in this process.
- ``peer`` (internal): the plain Ray Tune script over a spec file's planned trials.

Targets (issue 25): the 12-trial spec at most 2.5x the floor, at most 1.5x with a running head; the 64-trial
grid at most 1.5x; the plain Ray Tune script slower than raysweep in every round.
Run: ``python -m benchmarks.floor compare [--spec perf|grid] [--rounds 5]``. Results:
``benchmarks/results/floor_<spec>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import yaml

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from benchmarks.common import save  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# The reference of issue 25: CE, focal (gamma 1, 2), CB; 3 seeds; 8 epochs; mlp on mnist1d.
PERF = {"name": "perf", "dataset": {"name": "mnist1d", "imbalance": 10, "meta_per_class": 10}, "model": "mlp",
        "train": {"epochs": 8, "batch_size": 128}, "methods": {"ce": {}, "focal": {"gamma": [1, 2]}, "cb": {}},
        "seeds": 3, "resources": {"cpu": 0.5}}


def grid_spec(epochs: int = 20) -> dict[str, Any]:
    from benchmarks.groups import grid_spec as groups_grid

    return groups_grid(epochs, "none")


SPECS = {"perf": lambda: dict(PERF), "grid": grid_spec}
HEAD_MARK = "RAYSWEEP_BENCH_HEAD"  # set in the environment of the Ray head this benchmark starts
# Ray 2.60 turns token auth on once ~/.ray/auth_token exists: the head and every driver need the same mode, and
# the same token. A fresh machine has no ~/.ray/auth_token (and `ray start` does not create one), so this
# process's head and drivers share a token of their own, passed in the environment.
HEAD_ENV = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


# ---- the floor ----------------------------------------------------------------------------------------------
def planned(spec_file: str) -> list[dict[str, Any]]:
    """The spec file's planned trials, as the trainable receives them."""
    from raysweep.planning.plan import plan
    from raysweep.spec.loading import load_spec_file
    from raysweep.spec.schema import validate_spec

    return [t.to_dict() for t in plan(validate_spec(load_spec_file(spec_file)))]


def train_slice(args: argparse.Namespace) -> None:
    """Train every ``parts``-th planned trial from ``part`` on, one after another, in this process."""
    import torch

    from trainables.loop import train

    if args.threads:
        torch.set_num_threads(args.threads)
    trials = planned(args.spec)[args.part::args.parts]
    for config in trials:
        train(config)
    print(f"trained {len(trials)} trials")


def env_with_repo() -> dict[str, str]:
    """This environment with the repository on the path (the peer's trainable imports ``benchmarks``)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def floor_run(spec_file: Path, processes: int, threads: int | None) -> float:
    """Wall seconds of ``processes`` whole Python processes training the spec's trials (started together)."""
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.floor", "train", str(spec_file), "--part", str(i),
                               "--parts", str(processes), *(["--threads", str(threads)] if threads else [])],
                              cwd=spec_file.parent, env=env_with_repo(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for i in range(processes)]
    errors = [(p.wait(), p.stderr.read()) for p in procs]
    wall = time.perf_counter() - start
    for code, err in errors:
        if code:
            raise RuntimeError(f"floor process exited {code}:\n{err[-3000:]}")
    return wall


# ---- the plain Ray Tune script -------------------------------------------------------------------------------
def peer_trainable(config: dict[str, Any]) -> None:
    from ray import tune

    from trainables.loop import train

    train(config["trial"], report=lambda metrics, state: tune.report(metrics))


def peer(args: argparse.Namespace) -> None:
    """What a user writes instead of raysweep: a grid over the planned trials, Ray's MLflow callback."""
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    from raysweep.spec.loading import load_spec_file
    from raysweep.spec.schema import validate_spec

    cpu = validate_spec(load_spec_file(args.spec)).resources.cpu
    tuner = tune.Tuner(
        tune.with_resources(peer_trainable, {"cpu": cpu}),
        param_space={"trial": tune.grid_search(planned(args.spec))},
        tune_config=tune.TuneConfig(metric="val_balanced_acc", mode="max"),
        run_config=tune.RunConfig(name="peer", storage_path=str(Path("ray").resolve()), verbose=0,
                                  callbacks=[MLflowLoggerCallback(tracking_uri=f"sqlite:///{Path('mlflow.db').resolve()}",
                                                                  experiment_name="peer", save_artifact=False)]))
    results = tuner.fit()
    print(f"{len(results)} trials, {results.num_errors} failed")


# ---- Ray Tune doing nothing: the lower bound of any runner that trains in Ray Tune's workers --------------
def idle_trainable(config: dict[str, Any]) -> None:
    """What every training process pays before its first step, and nothing more: torch, the trial's model and
    its SGD optimizer (whose first use imports torch._dynamo), then one report."""
    import torch
    from ray import tune

    from trainables.data import DATASETS
    from trainables.models import build_model

    dataset = config["trial"]["dataset"]
    source = DATASETS.get(dataset["name"])
    shape, _, classes = source.shape({k: dataset[k] for k in source.params})
    model = build_model(config["trial"]["model"], tuple(shape), classes)
    torch.optim.SGD(model.parameters(), lr=0.1)
    tune.report({"done": 1})


def idle(args: argparse.Namespace) -> None:
    """One Tune trial per planned trial, each only :func:`idle_trainable`, one worker per core and actors
    reused (as raysweep runs single-threaded trials); Ray started (or ``--address`` joined) and stopped; no
    MLflow, no checkpoint."""
    import ray
    from ray import tune

    from raysweep.execution.cluster import loopback_only

    cores = os.cpu_count() or 1
    if args.address:  # joined on loopback, as raysweep joins it (Ray would wait on the machine's outward IP)
        with loopback_only():
            ray.init(address=args.address, log_to_driver=False, logging_level="WARNING")
    else:
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    tuner = tune.Tuner(
        tune.with_resources(idle_trainable, {"cpu": 1}),
        param_space={"trial": tune.grid_search(planned(args.spec))},
        tune_config=tune.TuneConfig(max_concurrent_trials=cores, reuse_actors=True),
        run_config=tune.RunConfig(name="idle", storage_path=str(Path("ray").resolve()), verbose=0))
    results = tuner.fit()
    ray.shutdown()
    print(f"{len(results)} trials, {results.num_errors} failed")


# ---- a Ray head kept running (the fast path for iterating) -------------------------------------------------
@contextlib.contextmanager
def ray_head(cpus: int) -> Iterator[str]:
    """``ray start --head`` on 127.0.0.1 with its own temp folder (other users' ``address: auto`` must not find
    it; short, as Ray's socket paths must be); yields its address; every process it started is ended by pid
    (found by an environment mark)."""
    import shutil
    import socket

    from raysweep.execution.cluster import OWNER_ENV, marked_processes

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mark, folder = uuid.uuid4().hex, tempfile.mkdtemp(prefix="rsh-", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k != OWNER_ENV}  # a head nobody's shutdown may end
    env = {**env, **HEAD_ENV, HEAD_MARK: mark, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    started = subprocess.run([str(Path(sys.executable).parent / "ray"), "start", "--head", "--port", str(port),
                              "--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus), "--include-dashboard",
                              "false", "--disable-usage-stats", "--temp-dir", folder], env=env, capture_output=True,
                             text=True)
    try:
        if started.returncode:
            raise RuntimeError(f"ray start --head exited {started.returncode}:\n{started.stderr[-3000:]}")
        yield f"127.0.0.1:{port}"
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in marked_processes(HEAD_MARK, mark):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 15
            while marked_processes(HEAD_MARK, mark) and time.monotonic() < deadline:
                time.sleep(0.2)
        shutil.rmtree(folder, ignore_errors=True)


# ---- where a sweep's wall time goes -------------------------------------------------------------------------
def breakdown_run(args: argparse.Namespace) -> None:
    """(internal) ``raysweep run`` of a spec file in this process with a clock on each stage; prints JSON with
    wall-clock stamps (time.time()), then exits the way the command does."""
    import json

    started = time.time()
    import raysweep.cli  # noqa: F401 - the driver's imports, as the command pays them
    import raysweep.execution.runner as runner
    from raysweep.execution import preflight
    from raysweep.planning.plan import plan
    from raysweep.spec.loading import load_spec_file
    from raysweep.spec.schema import validate_spec

    stamps: dict[str, float] = {"python_started_by": started, "imports_done": time.time()}

    def clocked(owner, name: str, label: str):  # the first call's start and end
        real = getattr(owner, name)

        def wrapper(*a, **kw):
            stamps.setdefault(f"{label}_start", time.time())
            try:
                return real(*a, **kw)
            finally:
                stamps.setdefault(f"{label}_end", time.time())
        setattr(owner, name, wrapper)

    clocked(runner, "check_datasets", "preflight_datasets")
    clocked(preflight, "start_ray", "ray_init")
    clocked(preflight, "stop_ray", "ray_shutdown")
    from raysweep.tracking import mlflow_store

    clocked(mlflow_store, "open_client", "store_open")  # the thread's open (MLflow's import, the schema)
    real_open = runner.open_in_background

    def opening(uri):
        thread = real_open(uri)
        join = thread.join

        def joined(*a):
            waited = time.time()
            join(*a)
            stamps["store_join_wait_s"] = time.time() - waited
        thread.join = joined
        return thread
    runner.open_in_background = opening
    from raysweep.execution.session import SweepSession
    from raysweep.tracking.trial_logger import TuneCallback

    clocked(SweepSession, "run", "tune_fit")
    clocked(SweepSession, "finish", "finish")
    real_result = TuneCallback.on_trial_result

    def on_result(self, *a, **kw):
        stamps.setdefault("first_result", time.time())
        stamps["last_result"] = time.time()
        return real_result(self, *a, **kw)
    TuneCallback.on_trial_result = on_result
    spec = validate_spec(load_spec_file(args.spec))
    result = runner.run_sweep(spec, plan(spec), echo=lambda line: None)
    stamps["returned"] = time.time()
    print(json.dumps({"stamps": stamps, "trials": result.num_trials, "errors": result.num_errors}), flush=True)
    raysweep.cli.exit_now(0)


def breakdown(spec_file: Path) -> dict[str, float]:
    """Seconds of each stage of one ``raysweep run`` of ``spec_file`` (a fresh process, timed from outside)."""
    import json

    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "benchmarks.floor", "breakdown-run", spec_file.name],
                          cwd=spec_file.parent, capture_output=True, text=True, env=env_with_repo(),
                          timeout=TIMED_BOUND_S)
    end = time.time()
    if proc.returncode:
        raise RuntimeError(f"breakdown exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    s = json.loads(proc.stdout.strip().splitlines()[-1])["stamps"]
    return {
        "interpreter_start_s": s["python_started_by"] - start,
        "driver_imports_s": s["imports_done"] - s["python_started_by"],
        "validate_plan_footprint_s": s["preflight_datasets_start"] - s["imports_done"],
        "preflight_datasets_s": s["preflight_datasets_end"] - s["preflight_datasets_start"],
        "other_checks_s": s["ray_init_start"] - s["preflight_datasets_end"],
        "ray_init_s": s["ray_init_end"] - s["ray_init_start"],
        "store_open_beside_ray_s": s["store_open_end"] - s["store_open_start"],
        "store_join_wait_s": s["store_join_wait_s"],
        "ray_up_to_fit_s": s["tune_fit_start"] - s["ray_init_end"],  # sweep folder, MLflow parent run, Tune's import
        "fit_to_first_result_s": s["first_result"] - s["tune_fit_start"],
        "first_to_last_result_s": s["last_result"] - s["first_result"],
        "last_result_to_fit_end_s": s["tune_fit_end"] - s["last_result"],
        "finish_table_summaries_s": s["finish_end"] - s["finish_start"],
        "ray_shutdown_s": s["ray_shutdown_end"] - s["ray_shutdown_start"],
        "exit_s": end - s["returned"],
        "total_s": end - start,
    }


# ---- the comparison -----------------------------------------------------------------------------------------
TIMED_BOUND_S = 900  # a variant that hangs fails the benchmark instead


def timed(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env or env_with_repo(),
                          timeout=TIMED_BOUND_S)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall


def raysweep_cmd(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "raysweep.cli", "run", "spec.yaml", *[a for o in overrides for a in ("--set", o)]]


def variants(cores: int, threads: int, head: str | None) -> dict[str, Any]:
    """Variant name -> a function of a fresh working folder (holding spec.yaml) returning its wall seconds."""
    spec_in = lambda w: w / "spec.yaml"  # noqa: E731
    out = {
        # one thread per process, as each Ray trial of cpu <= 1 trains: torch's default (a thread per core)
        # spin-waits on a loaded machine (212 s against 34 s in one measured round at load 16)
        "floor": lambda w: floor_run(spec_in(w), 1, threads),
        f"floor, {cores} processes": lambda w: floor_run(spec_in(w), cores, threads),
        "raysweep, ungrouped": lambda w: timed(raysweep_cmd("execution.group=none"), w),
        "raysweep, grouped by configs": lambda w: timed(raysweep_cmd("execution.group=configs"), w),
        "plain Ray Tune script": lambda w: timed([sys.executable, "-m", "benchmarks.floor", "peer", "spec.yaml"], w),
        "Ray Tune training nothing": lambda w: timed([sys.executable, "-m", "benchmarks.floor", "idle", "spec.yaml"],
                                                     w),
    }
    if head:
        out["raysweep, grouped by configs, running head"] = lambda w: timed(
            raysweep_cmd("execution.group=configs", f"cluster.address={head}"), w, {**env_with_repo(), **HEAD_ENV})
        out["Ray Tune training nothing, running head"] = lambda w: timed(
            [sys.executable, "-m", "benchmarks.floor", "idle", "spec.yaml", "--address", head], w,
            {**env_with_repo(), **HEAD_ENV})
    return out


def compare(args: argparse.Namespace) -> None:
    spec = SPECS[args.spec]()
    if args.epochs:
        spec["train"]["epochs"] = args.epochs
    cores = os.cpu_count() or 1
    threads = max(1, math.floor(spec["resources"]["cpu"]))
    rows: dict[str, list[dict[str, Any]]] = {}
    rng = random.Random(0)
    with tempfile.TemporaryDirectory(prefix="floor-") as tmp, \
            (ray_head(cores) if not args.no_head else contextlib.nullcontext()) as head:
        todo = {k: v for k, v in variants(cores, threads, head).items()
                if not any(k.startswith(prefix) for prefix in args.skip)}
        for name in todo:
            rows[name] = []
        # the data cache of a fresh machine is built by the first run; every variant then finds it
        for round_ in range(args.rounds):
            order = list(todo)
            rng.shuffle(order)
            for i, name in enumerate(order):
                workdir = Path(tmp) / f"{round_}-{i}"
                workdir.mkdir()
                (workdir / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
                load = os.getloadavg()[0]
                wall = todo[name](workdir)
                rows[name].append({"round": round_, "wall_s": wall, "load_1m": [load, os.getloadavg()[0]]})
                print(f"round {round_} {name}: {wall:.1f} s (load {load:.1f} -> {os.getloadavg()[0]:.1f})",
                      flush=True)
    floor_by_round = {r["round"]: r["wall_s"] for r in rows["floor"]}
    summary = {}
    for name, runs in rows.items():
        ratios = [r["wall_s"] / floor_by_round[r["round"]] for r in runs]
        summary[name] = {"median_wall_s": statistics.median(r["wall_s"] for r in runs),
                         "ratio_to_floor_median": statistics.median(ratios), "ratio_to_floor_range": [min(ratios),
                                                                                                     max(ratios)],
                         "median_load_1m": statistics.median(r["load_1m"][0] for r in runs)}
        print(f"{name}: median {summary[name]['median_wall_s']:.1f} s, {summary[name]['ratio_to_floor_median']:.2f}x "
              f"the floor ({min(ratios):.2f}-{max(ratios):.2f}), load {summary[name]['median_load_1m']:.1f}")
    peer_slower = "plain Ray Tune script" in rows and all(
        p["wall_s"] > max(r["wall_s"] for n, rs in rows.items() if n.startswith("raysweep") for r in rs
                          if r["round"] == p["round"]) for p in rows["plain Ray Tune script"])
    print(f"plain Ray Tune script slower than every raysweep variant in every round: {peer_slower}")
    settings = {"name": args.spec, "spec": spec, "rounds": args.rounds, "cores": cores,
                "threads_per_floor_process": threads}
    print("saved", save(f"floor_{args.spec}", {"settings": settings, "runs": rows, "summary": summary,
                                                 "peer_slower_every_round": peer_slower}))


def breakdowns(args: argparse.Namespace) -> None:
    spec = SPECS[args.spec]()
    runs = []
    with tempfile.TemporaryDirectory(prefix="floor-breakdown-") as tmp:
        for i in range(args.runs):
            workdir = Path(tmp) / str(i)
            workdir.mkdir()
            (workdir / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
            load = os.getloadavg()[0]
            row = {**breakdown(workdir / "spec.yaml"), "load_1m": load}
            runs.append(row)
            print(f"run {i}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()), flush=True)
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print("median: " + ", ".join(f"{k} {v:.2f}" for k, v in median.items()))
    print("saved", save(f"floor_breakdown_{args.spec}", {"settings": {"spec": spec, "runs": args.runs},
                                                          "runs": runs, "median": median}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("compare", help="interleaved rounds of every variant against the floor")
    p.add_argument("--spec", choices=sorted(SPECS), default="perf")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--epochs", type=int, help="override the spec's epochs")
    p.add_argument("--no-head", action="store_true", help="skip the running-head variant")
    p.add_argument("--skip", nargs="*", default=[], metavar="VARIANT",
                   help="variants to leave out, by the start of their name (e.g. 'plain Ray Tune')")
    p = sub.add_parser("train", help="(internal) train a slice of a spec file's planned trials in this process")
    p.add_argument("spec")
    p.add_argument("--part", type=int, default=0)
    p.add_argument("--parts", type=int, default=1)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p = sub.add_parser("peer", help="(internal) the plain Ray Tune script over a spec file's planned trials")
    p.add_argument("spec")
    p = sub.add_parser("idle", help="(internal) Ray Tune training nothing over a spec file's planned trials")
    p.add_argument("spec")
    p.add_argument("--address", help="a running Ray head to join")
    p = sub.add_parser("breakdown", help="where one raysweep run of the spec goes, stage by stage (median of runs)")
    p.add_argument("--spec", choices=sorted(SPECS), default="perf")
    p.add_argument("--runs", type=int, default=3)
    p = sub.add_parser("breakdown-run", help="(internal) one clocked raysweep run of a spec file")
    p.add_argument("spec")
    args = parser.parse_args()
    {"compare": compare, "train": train_slice, "peer": peer, "idle": idle, "breakdown": breakdowns,
     "breakdown-run": breakdown_run}[args.command](args)


if __name__ == "__main__":
    main()
