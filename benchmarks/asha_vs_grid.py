"""ASHA versus the full grid on a CDB tau x learning-rate sweep (mnist1d-LT, rho 100, one seed).

Reports, for each: the best validation accuracy found (final value of the best trial), the test accuracy
of that trial, and the trial-epochs spent; and, from the full grid's learning curves, the Spearman rank
correlation between each ASHA rung's validation accuracy and the final one (how much a rung's ranking
predicts the end). Run: ``python -m benchmarks.asha_vs_grid [--epochs 20]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from benchmarks.common import save, trial_runs  # noqa: E402

TAUS = [0.5, 1.0, 2.0, "sigmoid"]
LRS = [0.02, 0.05, 0.1, 0.2]


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def sweep(scheduler: dict, epochs: int, workdir: Path) -> dict:
    from raysweep.execution.runner import run_sweep
    from raysweep.planning.plan import plan
    from raysweep.spec.schema import validate_spec

    spec = validate_spec({
        "name": f"asha-vs-grid-{scheduler['name']}", "dataset": {"name": "mnist1d", "imbalance": 100},
        "model": "cnn1d", "train": {"epochs": epochs}, "methods": {"cdb_w_ce": {"tau": TAUS}},
        "axes": {"train.lr": LRS}, "seeds": 1, "scheduler": scheduler, "resources": {"cpu": 0.5},
        "storage": str(workdir / "ray"), "tracking": {"uri": f"sqlite:///{workdir / 'mlflow.db'}"},
    })
    start = time.perf_counter()
    result = run_sweep(spec, plan(spec), echo=lambda line: None)
    wall = time.perf_counter() - start
    client, runs = trial_runs(result)
    curves = {r.info.run_id: sorted((m.step, m.value)
                                    for m in client.get_metric_history(r.info.run_id, "val_balanced_acc"))
              for r in runs}
    best = max(runs, key=lambda r: (int(r.data.tags["raysweep.epochs_run"]), r.data.metrics["val_balanced_acc"]))
    return {"scheduler": scheduler, "wall_s": wall, "trials": len(runs),
            "trial_epochs": sum(int(r.data.tags["raysweep.epochs_run"]) for r in runs),
            "best_label": best.data.tags["raysweep.label"] + f" lr={best.data.params['train.lr']}",
            "best_val": best.data.metrics["val_balanced_acc"], "best_test": best.data.metrics["test_acc"],
            "curves": {rid: [v for _, v in c] for rid, c in curves.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--grace", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        grid = sweep({"name": "fifo"}, args.epochs, Path(tmp) / "grid")
        asha = sweep({"name": "asha", "grace_period": args.grace, "reduction_factor": 2}, args.epochs,
                     Path(tmp) / "asha")
    finals = [c[-1] for c in grid["curves"].values()]
    rungs, r = [], args.grace
    while r < args.epochs:
        rungs.append(r)
        r *= 2
    correlation = {r: spearman([c[r - 1] for c in grid["curves"].values()], finals) for r in rungs}
    for run in (grid, asha):
        run.pop("curves")
        print(f"{run['scheduler']['name']}: best val {run['best_val']:.3f} (test {run['best_test']:.3f}, "
              f"{run['best_label']}), {run['trial_epochs']} trial-epochs, wall {run['wall_s']:.0f} s")
    print("rank correlation of val accuracy at each rung with the final:",
          ", ".join(f"epoch {r}: {c:.2f}" for r, c in correlation.items()))
    print("saved", save("asha_vs_grid", {"settings": vars(args), "grid": grid, "asha": asha,
                                         "rung_rank_correlation": correlation}))


if __name__ == "__main__":
    main()
