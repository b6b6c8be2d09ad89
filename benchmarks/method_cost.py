"""Seconds per epoch of every registered method relative to CE, measured in one run.

All methods train the same data, model and batch size; epochs are interleaved (each repeat visits every
method once, in a shuffled order) so machine noise hits all methods alike, and the median is reported.
Run: ``python -m benchmarks.method_cost [--repeats 15] [--dataset mnist1d] [--imbalance 100]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from benchmarks.common import save
from trainables.loop import Trial
from trainables.methods import METHODS


def measure(dataset: str, imbalance: float, model: str, batch_size: int, repeats: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    trials = {}
    for name in METHODS.names():
        cfg = {"method": {"name": name}, "dataset": {"name": dataset, "imbalance": imbalance},
               "model": model, "train": {"epochs": repeats + 2, "batch_size": batch_size, "device": "cpu"}, "seed": 0}
        trials[name] = Trial(cfg)
        trials[name].run_epoch()  # warm-up: first-epoch allocations and lazy initialisation
    times: dict[str, list[float]] = {name: [] for name in trials}
    order = list(trials)
    rng = random.Random(0)
    for _ in range(repeats):
        rng.shuffle(order)
        for name in order:
            start = time.perf_counter()
            trials[name].run_epoch()
            times[name].append(time.perf_counter() - start)
    ce = statistics.median(times["ce"])
    return {name: {"median_s": statistics.median(t), "ratio_to_ce": statistics.median(t) / ce,
                   "min_s": min(t), "repeats": len(t)} for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--dataset", default="mnist1d")
    parser.add_argument("--imbalance", type=float, default=100)
    parser.add_argument("--model", default="cnn1d")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    result = measure(args.dataset, args.imbalance, args.model, args.batch_size, args.repeats, args.threads)
    print(f"{'method':<18} {'s/epoch':>9} {'x CE':>6}")
    for name, r in sorted(result.items(), key=lambda kv: kv[1]["ratio_to_ce"]):
        print(f"{name:<18} {r['median_s']:9.4f} {r['ratio_to_ce']:6.2f}")
    print("saved", save("method_cost", {"settings": vars(args), "methods": result}))


if __name__ == "__main__":
    main()
