"""Which dynamic tau should CDB default to? CE against CDB-W-CE and CDB-S with every tau variant.

mnist1d-LT at rho 10 and 100, 3 seeds, the reproduction benchmark's settings (:func:`benchmarks.reproduction.
trial_config`: cnn1d, 40 epochs SGD 0.1 cosine, batch 128, 10 meta images per class, which are also the
validation set). Rows: CE; each dynamic variant of the paper (linear, poly with p = 2, log, sigmoid with
T_M = 5) and of the released code (sigmoid_code_cifar, sigmoid_code_imagenet); and the fixed tau the code's
README (1.5) and its ImageNet-LT config (1.0) run. Each cell: final test accuracy (mean +- sample std over
seeds), and for CDB the tau it used, averaged over the epochs. Runs the loop in-process (no Ray).

Run: ``python -m benchmarks.cdb_tau_evidence [--seeds 3] [--epochs 40] [--workers 2]``.
"""

from __future__ import annotations

import argparse
import itertools
import time

from benchmarks.common import save
from benchmarks.reproduction import run_all, summarise, trial_config

TAUS = ["linear", "poly", "log", "sigmoid", "sigmoid_code_cifar", "sigmoid_code_imagenet", 1.0, 1.5]
RHOS = [10, 100]


def jobs(seeds: int, epochs: int) -> list[dict]:
    out = []
    rows = [("ce", {"name": "ce"})] + [(f"{m} tau={t}", {"name": m, "tau": t})
                                       for m, t in itertools.product(["cdb_w_ce", "cdb_s"], TAUS)]
    for (row, method), rho, seed in itertools.product(rows, RHOS, range(seeds)):
        out.append({"section": "cdb_tau_evidence", "row": row, "col": rho,
                    "config": trial_config(method, {"imbalance": rho}, seed, epochs)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    start = time.perf_counter()
    results = run_all(jobs(args.seeds, args.epochs), args.workers)
    path = save("cdb_tau_evidence", {"settings": vars(args), "wall_s": time.perf_counter() - start,
                                     "tables": summarise(results), "runs": results})
    print("saved", path)


if __name__ == "__main__":
    main()
