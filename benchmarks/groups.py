"""Trial groups on 2 CPUs: wall time of grouped against ungrouped sweeps, each run as a user runs it.

Sub-commands (every sweep is a ``raysweep run`` subprocess, timed from start to exit, Ray start-up and the
final table included):

- ``grid``: a 64-trial FIFO grid on mnist1d-LT (CDB-W-CE tau x imbalance x 4 seeds) ungrouped, grouped by
  configurations and grouped by seeds, and in the same run the peer a user would write instead: the same
  grid as a plain Ray Tune script (``peer``), measured in one run. Targets: grouped at least 4x faster than
  ungrouped; raysweep ungrouped within 10 % of the peer's wall time.
- ``quickstart``: ``raysweep/specs/quickstart.yaml`` as it was before trial groups (two-phase, ASHA in phase
  1, ungrouped) against the groupings it can use, one of them what ships now. Target: at least 2x.
- ``asha``: ASHA with 3 seeds per configuration in one group (one phase, the seed mean decides) against
  two-phase ungrouped (ASHA on one seed, then the top k with 3 seeds) at about equal trial-epochs: which
  configuration each chooses, its seed-mean test accuracy, and the wall time.
- ``peer``: the plain Ray Tune script of ``grid`` on its own (what ``grid`` times).

Run: ``python -m benchmarks.groups grid [--epochs 20] [--repeats 2]``, ``... quickstart``, ``... asha``.
Results: ``benchmarks/results/groups_<sub-command>.json``.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from benchmarks.common import save  # noqa: E402

TAUS = [0.5, 1.0, 2.0, "sigmoid_code_cifar"]
IMBALANCES = [10, 20, 50, 100]
SEEDS = 4
ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "raysweep" / "specs" / "quickstart.yaml"


def dataset(imbalance: float | None = None) -> dict[str, Any]:
    return {"name": "mnist1d", **({"imbalance": imbalance} if imbalance is not None else {}), "meta_per_class": 10}


# ---- running a sweep as a user does -----------------------------------------------------------------------
def timed(cmd: list[str], cwd: Path) -> tuple[float, str, tuple[float, float]]:
    """(wall seconds, stdout, 1-min load average before and after) of a command that must succeed."""
    load = os.getloadavg()[0]
    start = time.perf_counter()
    # the repository on the path: the peer's function trainable runs `benchmarks.groups` in a fresh folder
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall, proc.stdout, (load, os.getloadavg()[0])


def raysweep_run(spec: dict[str, Any], workdir: Path, *overrides: str) -> dict[str, Any]:
    """``raysweep run`` of ``spec`` in a fresh ``workdir``: its wall time and what MLflow holds afterwards."""
    workdir.mkdir(parents=True)
    (workdir / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    sets = [a for o in overrides for a in ("--set", o)]
    wall, out, load = timed([sys.executable, "-m", "raysweep.cli", "run", "spec.yaml", *sets], workdir)
    return {"wall_s": wall, "load_1m": load, **tracked(workdir, spec["name"], out)}


def tracked(workdir: Path, experiment: str, out: str) -> dict[str, Any]:
    """Trial runs, trial-epochs and the headline (best configuration, seed means) of the one sweep in workdir."""
    from mlflow import MlflowClient

    from analysis import mlflow_tags as tags
    from raysweep.reporting.summaries import display_scale

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], tags.role_filter(tags.TRIAL), max_results=5000)
    (parent,) = client.search_runs([exp.experiment_id], tags.role_filter(tags.SWEEP))
    # The headline's seed means and stds (accuracies in percent there); the results JSON keeps fractions.
    best = {k[len(tags.HEADLINE_PREFIX):]: v / display_scale(re.sub(r"_(mean|std)$", "", k))
            for k, v in parent.data.metrics.items()
            if k.startswith(tags.HEADLINE_PREFIX) and k.endswith(("_mean", "_std"))}
    phases = sorted({r.data.tags[tags.PHASE] for r in runs})
    busy = sum(m.value for r in runs for m in client.get_metric_history(r.info.run_id, "epoch_seconds"))
    return {"trials": len(runs), "groups": len({r.data.tags.get(tags.GROUP, r.info.run_id) for r in runs}),
            "trial_epochs": sum(int(r.data.tags[tags.EPOCHS_RUN]) for r in runs), "busy_s": busy,
            "trial_epochs_by_phase": {p: sum(int(r.data.tags[tags.EPOCHS_RUN]) for r in runs
                                             if r.data.tags[tags.PHASE] == p) for p in phases},
            "best_config": parent.data.tags.get(tags.BEST_CONFIG), "best": best,
            "summary": next((ln for ln in out.splitlines() if " trials, " in ln and " failed" in ln), "")}


# ---- (a) + (d): the 64-trial grid ---------------------------------------------------------------------------
def grid_spec(epochs: int, group: str) -> dict[str, Any]:
    return {"name": f"grid-{group}", "dataset": dataset(), "model": "cnn1d", "train": {"epochs": epochs},
            "methods": {"cdb_w_ce": {"tau": TAUS}}, "axes": {"dataset.imbalance": IMBALANCES}, "seeds": SEEDS,
            "resources": {"cpu": 1}, "execution": {"group": group, "max_members": 16},
            "table": {"rows": "config", "cols": "dataset.imbalance", "metric": "test_acc"}}


def peer_trainable(config: dict[str, Any]) -> None:
    """A user's function trainable around the same training loop: one trial, a Tune result per epoch."""
    from ray import tune

    from trainables.loop import train

    trial = {"method": {"name": "cdb_w_ce", "tau": config["tau"]}, "dataset": dataset(config["imbalance"]),
             "model": "cnn1d", "seed": config["seed"], "train": {"epochs": config["epochs"]}}
    train(trial, report=lambda metrics, state: tune.report(metrics))


def peer(args: argparse.Namespace) -> None:
    """The plain Ray Tune script: ``tune.Tuner`` over a grid, Ray's ``MLflowLoggerCallback``."""
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    space = {"tau": tune.grid_search(TAUS), "imbalance": tune.grid_search(IMBALANCES),
             "seed": tune.grid_search(list(range(SEEDS))), "epochs": args.epochs}
    tuner = tune.Tuner(
        tune.with_resources(peer_trainable, {"cpu": 1}), param_space=space,
        tune_config=tune.TuneConfig(metric="val_balanced_acc", mode="max", reuse_actors=args.reuse_actors),
        run_config=tune.RunConfig(name="peer", storage_path=str(Path(args.workdir).resolve() / "ray"), verbose=0,
                                  callbacks=[MLflowLoggerCallback(tracking_uri=args.tracking_uri,
                                                                  experiment_name="peer", save_artifact=False)]))
    results = tuner.fit()
    best = results.get_best_result()
    print(f"{len(results)} trials, {results.num_errors} failed; best {best.config}: {best.metrics['test_acc']:.4f}")


def peer_run(epochs: int, workdir: Path, reuse_actors: bool) -> dict[str, Any]:
    from mlflow import MlflowClient

    workdir.mkdir(parents=True)
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    wall, out, load = timed([sys.executable, "-m", "benchmarks.groups", "peer", "--epochs", str(epochs),
                             "--workdir", str(workdir), "--tracking-uri", uri]
                            + (["--reuse-actors"] if reuse_actors else []), workdir)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("peer").experiment_id], max_results=5000)
    epochs_logged = sum(len(client.get_metric_history(r.info.run_id, "epoch")) for r in runs)
    return {"wall_s": wall, "load_1m": load, "trials": len(runs), "trial_epochs": epochs_logged,
            "summary": out.strip().splitlines()[-1]}


def grid(args: argparse.Namespace) -> None:
    # The peer as a user writes it (Tune's defaults: a new actor per trial), and with reuse_actors=True as
    # raysweep sets it.
    variants = {"ungrouped": "none", "grouped_configs": "configs", "grouped_seeds": "seeds", "peer": False,
                "peer_reuse_actors": True}
    rows: dict[str, list[dict]] = {name: [] for name in variants}
    rng = random.Random(0)
    with tempfile.TemporaryDirectory(prefix="groups-grid-") as tmp:
        for repeat in range(args.repeats):
            order = list(variants)
            rng.shuffle(order)  # machine noise (other users) hits every variant alike
            for name in order:
                workdir = Path(tmp) / f"{name}-{repeat}"
                row = (peer_run(args.epochs, workdir, variants[name]) if isinstance(variants[name], bool)
                       else raysweep_run(grid_spec(args.epochs, variants[name]), workdir))
                rows[name].append(row)
                print(f"repeat {repeat} {name}: wall {row['wall_s']:.1f} s, {row['trials']} trials, "
                      f"{row['trial_epochs']} trial-epochs (load {row['load_1m'][0]:.1f} -> {row['load_1m'][1]:.1f})",
                      flush=True)
    wall = {name: statistics.median(r["wall_s"] for r in runs) for name, runs in rows.items()}
    ratios = {"ungrouped_over_grouped_configs": wall["ungrouped"] / wall["grouped_configs"],
              "ungrouped_over_grouped_seeds": wall["ungrouped"] / wall["grouped_seeds"],
              "ungrouped_over_peer": wall["ungrouped"] / wall["peer"],
              "ungrouped_over_peer_reuse_actors": wall["ungrouped"] / wall["peer_reuse_actors"],
              "peer_over_grouped_configs": wall["peer"] / wall["grouped_configs"],
              "peer_reuse_actors_over_grouped_configs": wall["peer_reuse_actors"] / wall["grouped_configs"]}
    print(", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    settings = {"epochs": args.epochs, "repeats": args.repeats, "taus": TAUS, "imbalances": IMBALANCES,
                "seeds": SEEDS, "model": "cnn1d", "cpu_per_trial": 1, "max_members": 16}
    print("saved", save("groups_grid", {"settings": settings, "runs": rows, "median_wall_s": wall,
                                        "ratios": ratios}))


# ---- (b) the quickstart ---------------------------------------------------------------------------------------
# Every variant spelled out (not relative to the shipped file): the quickstart before trial groups was the first.
TWO_PHASE = ["search.two_phase=true", "search.top_k=4", "search.baseline=ce"]
BEFORE_GROUPS = "two-phase (ASHA on seed 0, top 4 + CE on 2 seeds), ungrouped"
QUICKSTART_VARIANTS = {
    BEFORE_GROUPS: [*TWO_PHASE, "execution.group=none"],
    "two-phase, configurations grouped in phase 2": [*TWO_PHASE, "execution.group=configs"],
    "one phase, ASHA on the seed mean, seeds grouped (shipped)": ["search.two_phase=false", "execution.group=seeds"],
    "one phase, FIFO grid, configurations grouped": ["search.two_phase=false", "scheduler={name: fifo}",
                                                     "execution.group=configs"],
}


def quickstart(args: argparse.Namespace) -> None:
    spec = yaml.safe_load(QUICKSTART.read_text())
    rows: dict[str, list[dict]] = {name: [] for name in QUICKSTART_VARIANTS}
    rng = random.Random(0)
    with tempfile.TemporaryDirectory(prefix="groups-quickstart-") as tmp:
        for repeat in range(args.repeats):
            order = list(QUICKSTART_VARIANTS)
            rng.shuffle(order)
            for i, name in enumerate(order):
                row = raysweep_run(spec, Path(tmp) / f"{repeat}-{i}", *QUICKSTART_VARIANTS[name])
                rows[name].append(row)
                print(f"repeat {repeat} {name}: wall {row['wall_s']:.1f} s, {row['trials']} trials in "
                      f"{row['groups']} Ray trials, {row['trial_epochs']} trial-epochs; {row['best_config']} "
                      f"test {100 * row['best'].get('test_acc_mean', float('nan')):.1f}", flush=True)
    wall = {name: statistics.median(r["wall_s"] for r in runs) for name, runs in rows.items()}
    before = wall[BEFORE_GROUPS]
    ratios = {name: before / w for name, w in wall.items()}
    print("speed-up over the quickstart before trial groups:", ", ".join(f"{k}: {v:.2f}" for k, v in ratios.items()))
    print("saved", save("groups_quickstart", {"settings": {"repeats": args.repeats, "variants": QUICKSTART_VARIANTS},
                                              "runs": rows, "median_wall_s": wall, "speedup": ratios}))


# ---- (c) ASHA on the seed mean against two-phase -------------------------------------------------------------
def asha_spec(epochs: int, two_phase: bool, top_k: int) -> dict[str, Any]:
    return {"name": "asha-two-phase" if two_phase else "asha-seed-groups", "dataset": dataset(100),
            "model": "cnn1d", "train": {"epochs": epochs}, "methods": {"cdb_w_ce": {"tau": TAUS}},
            "axes": {"train.lr": [0.02, 0.05, 0.1, 0.2]}, "seeds": 3,
            "search": {"metric": "val_balanced_acc", "two_phase": two_phase, "top_k": top_k},
            "scheduler": {"name": "asha", "grace_period": 2, "reduction_factor": 2}, "resources": {"cpu": 1},
            "execution": {"group": "none" if two_phase else "seeds"}}


def asha(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="groups-asha-") as tmp:
        grouped = raysweep_run(asha_spec(args.epochs, False, 1), Path(tmp) / "grouped")
        # Equal trial-epochs: phase 1 of two-phase is the same ASHA on one seed (about a third of the grouped
        # search's epochs), so phase 2 gets the other two thirds: top_k configurations x 3 seeds x epochs.
        top_k = max(1, round(2 * grouped["trial_epochs"] / (9 * args.epochs)))
        two_phase = raysweep_run(asha_spec(args.epochs, True, top_k), Path(tmp) / "two_phase")
    for name, row in (("grouped", grouped), ("two-phase", two_phase)):
        print(f"{name}: wall {row['wall_s']:.1f} s, {row['trial_epochs']} trial-epochs, chose {row['best_config']}: "
              f"val {100 * row['best']['val_balanced_acc_mean']:.2f}, test {100 * row['best']['test_acc_mean']:.2f} "
              f"± {100 * row['best']['test_acc_std']:.2f}", flush=True)
    settings = {"epochs": args.epochs, "grid": "cdb_w_ce tau x lr (16 configurations), mnist1d-LT rho 100, cnn1d",
                "seeds": 3, "grace_period": 2, "reduction_factor": 2, "top_k": top_k}
    print("saved", save("groups_asha", {"settings": settings, "grouped": grouped, "two_phase": two_phase,
                                        "speedup": two_phase["wall_s"] / grouped["wall_s"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("grid", help="(a) + (d): the 64-trial grid, ungrouped, grouped and as a plain Tune script")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--repeats", type=int, default=2)
    p = sub.add_parser("quickstart", help="(b): the quickstart as shipped against its groupings")
    p.add_argument("--repeats", type=int, default=1)
    p = sub.add_parser("asha", help="(c): ASHA on the seed mean of 3 seeds against two-phase")
    p.add_argument("--epochs", type=int, default=20)
    p = sub.add_parser("peer", help="the plain Ray Tune script of `grid` (timed by `grid`)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--workdir", required=True)
    p.add_argument("--tracking-uri", required=True)
    p.add_argument("--reuse-actors", action="store_true", help="Tune's reuse_actors (default off, as in Tune)")
    args = parser.parse_args()
    {"grid": grid, "quickstart": quickstart, "asha": asha, "peer": peer}[args.command](args)


if __name__ == "__main__":
    main()
