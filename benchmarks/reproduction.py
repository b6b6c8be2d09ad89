"""Reproduction on embedded data, 3 seeds, mean +- std, in the layouts of the papers' tables.

Runs the training loop directly (no Ray: the same ``trainables.loop.train`` every trial uses) in a pool of
worker processes, one torch thread each. Sections:

- ``sanity``: CE + 1-D CNN on balanced mnist1d, against the mnist1d authors' published CNN accuracy (94%);
- ``long_tail``: every method at its defaults on mnist1d-LT, rho 10 and 100, with many/medium/few;
- ``noise``: CE, DM (lambda 0.5 / beta 12 and lambda 1 / beta 16), MW-Net, GDW and IDS on mnist1d with 20%
  and 40% symmetric noise, best and final accuracy;
- ``cdb_tau``: the CDB tau sensitivity table (tau rows x imbalance columns);
- ``dm_grid``: the DM lambda x beta table at 40% symmetric noise.

Every run uses ``dataset.val_per_class: 0``, the split these tables were first measured with (the meta set
is the validation set; no model is selected here: the tables report final and best-epoch test accuracy).

Run: ``python -m benchmarks.reproduction [--sections ...] [--methods ...] [--seeds 3] [--epochs 40] [--workers 2]``.
``--methods`` re-runs only the jobs of those methods and merges them into the existing results file, so a
change to one method does not need the whole benchmark again; the file records each partial re-run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import statistics
import time
from typing import Any

from benchmarks.common import RESULTS_DIR, save
from raysweep.tracking.provenance import git_commit

LT_METHODS = ["ce", "focal", "cb", ("cb", {"base": "focal"}), "balanced_softmax", "ldam_drw", "cdb_w_ce", "cdb_s",
              "ids", "difficulty_net", "mwnet", "gdw"]
NOISE_METHODS = ["ce", ("dm", {"lam": 0.5, "beta": 12.0}), ("dm", {"lam": 1.0, "beta": 16.0}), "mwnet", "gdw",
                 ("ids", {"gamma": 0.01})]
CDB_TAUS = [0.5, 1.0, 2.0, 5.0, "linear", "sigmoid", "sigmoid_code_cifar", "sigmoid_code_imagenet"]
DM_GRID = [(0.0, 1.0), (0.0, 4.0), (0.5, 8.0), (0.5, 12.0), (1.0, 12.0), (1.0, 16.0), (2.0, 16.0), (2.0, 20.0),
           (0.0, 0.0)]


def _method(entry) -> dict[str, Any]:
    name, hp = (entry, {}) if isinstance(entry, str) else entry
    return {"name": name, **hp}


def _label(method: dict[str, Any]) -> str:
    return " ".join([method["name"]] + [f"{k}={v}" for k, v in method.items() if k != "name"])


def trial_config(method: dict[str, Any], dataset: dict[str, Any], seed: int, epochs: int) -> dict[str, Any]:
    """The benchmark's trial: mnist1d + cnn1d, SGD 0.1 cosine, batch 128, 10 meta per class, val = meta."""
    return {"method": method, "dataset": {"name": "mnist1d", "meta_per_class": 10, "val_per_class": 0, **dataset},
            "model": "cnn1d", "seed": seed,
            "train": {"epochs": epochs, "batch_size": 128, "lr": 0.1, "schedule": "cosine", "device": "cpu"}}


def jobs(sections: list[str], seeds: int, epochs: int) -> list[dict[str, Any]]:
    """One dict per training run: section, row/column labels, and the trial config."""
    out = []

    def add(section, row, col, method, dataset):
        for seed in range(seeds):
            out.append({"section": section, "row": row, "col": col,
                        "config": trial_config(method, dataset, seed, epochs)})

    if "sanity" in sections:
        add("sanity", "ce", "balanced", {"name": "ce"}, {"imbalance": 1})
    if "long_tail" in sections:
        for entry, rho in itertools.product(LT_METHODS, [10, 100]):
            add("long_tail", _label(_method(entry)), rho, _method(entry), {"imbalance": rho})
    if "noise" in sections:
        for entry, rate in itertools.product(NOISE_METHODS, [0.2, 0.4]):
            add("noise", _label(_method(entry)), rate, _method(entry),
                {"noise_type": "symmetric", "noise_rate": rate, "meta_per_class": 20})
    if "cdb_tau" in sections:
        for tau, rho in itertools.product(CDB_TAUS, [10, 50, 100]):
            add("cdb_tau", f"tau={tau}", rho, {"name": "cdb_w_ce", "tau": tau}, {"imbalance": rho})
    if "dm_grid" in sections:
        for lam, beta in DM_GRID:
            add("dm_grid", f"lambda={lam}", f"beta={beta}", {"name": "dm", "lam": lam, "beta": beta},
                {"noise_type": "symmetric", "noise_rate": 0.4})
    return out


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    from trainables.loop import train

    torch.set_num_threads(1)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    train(job["config"], report=lambda m, s: history.append(m))
    final = history[-1]
    out = {**{k: job[k] for k in ("section", "row", "col")}, "method": job["config"]["method"]["name"],
           "seed": job["config"]["seed"], "seconds": time.perf_counter() - start, "final": final["test_acc"],
           "best": max(h["test_acc"] for h in history),
           **{g: final.get(f"test_{g}_acc") for g in ("many", "medium", "few")}}
    if "cdb_tau" in final:  # the exponent CDB used, averaged over the epochs after the first evaluation
        out["tau_mean"] = statistics.mean(h["cdb_tau"] for h in history)
    return out


def run_all(todo: list[dict[str, Any]], workers: int) -> list[dict[str, Any]]:
    """Run the jobs in a pool of ``workers`` spawned processes (one torch thread each), printing progress."""
    print(f"{len(todo)} training runs on {workers} workers")
    start = time.perf_counter()
    results = []
    with mp.get_context("spawn").Pool(workers) as pool:
        for i, r in enumerate(pool.imap_unordered(run_job, todo), 1):
            results.append(r)
            if i % 10 == 0 or i == len(todo):
                print(f"  {i}/{len(todo)} done ({time.perf_counter() - start:.0f} s)", flush=True)
    return results


def run_method(run: dict[str, Any]) -> str:
    """The method of a stored run (older files did not record it; their row labels start with it)."""
    if "method" in run:
        return run["method"]
    return {"cdb_tau": "cdb_w_ce", "dm_grid": "dm", "sanity": "ce"}.get(run["section"]) or str(run["row"]).split()[0]


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per section, per (row, col): mean and sample std (%) of final and best accuracy, and n."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for r in results:
        cell = table.setdefault(r["section"], {}).setdefault(f"{r['row']}|{r['col']}",
                                                             {"row": r["row"], "col": r["col"], "runs": []})
        cell["runs"].append(r)
    for cells in table.values():
        for cell in cells.values():
            for key in ("final", "best", "many", "medium", "few", "tau_mean"):
                scale = 1 if key == "tau_mean" else 100
                values = [scale * r[key] for r in cell["runs"] if r.get(key) is not None]
                if values:
                    std = statistics.stdev(values) if len(values) > 1 else 0.0
                    cell[key] = {"mean": statistics.mean(values), "std": std}
            cell["n"] = len(cell.pop("runs"))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", default=["sanity", "long_tail", "noise", "cdb_tau", "dm_grid"])
    parser.add_argument("--methods", nargs="+", default=None,
                        help="re-run only these methods' jobs and merge them into the existing results")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    todo = jobs(args.sections, args.seeds, args.epochs)
    previous: dict[str, Any] = {}
    if args.methods:
        todo = [j for j in todo if j["config"]["method"]["name"] in args.methods]
        path = RESULTS_DIR / "reproduction.json"
        previous = json.loads(path.read_text()) if path.exists() else {}
        same = {k: previous.get("settings", {}).get(k) for k in ("seeds", "epochs")} == {"seeds": args.seeds,
                                                                                          "epochs": args.epochs}
        if previous and not same:
            parser.error(f"--methods merges into {path}, measured with {previous['settings']}; "
                         "use the same seeds and epochs")
    start = time.perf_counter()
    results = run_all(todo, args.workers)
    wall = time.perf_counter() - start
    payload: dict[str, Any] = {"settings": vars(args), "wall_s": wall}
    if previous:
        kept = [r for r in previous["runs"]
                if not (r["section"] in args.sections and run_method(r) in args.methods)]
        results = kept + results
        reruns = previous.get("reruns", []) + [{"methods": args.methods, "sections": args.sections, "runs": len(todo),
                                                "wall_s": wall, "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                                                "git_commit": git_commit()}]
        first = {k: previous[k] for k in ("time", "git_commit", "machine", "versions")}
        payload = {"settings": previous["settings"], "wall_s": previous["wall_s"], "first_run": first,
                   "reruns": reruns}
    path = save("reproduction", {**payload, "tables": summarise(results), "runs": results})
    print("saved", path)


if __name__ == "__main__":
    main()
