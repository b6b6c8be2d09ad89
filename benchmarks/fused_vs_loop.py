"""Trial-group engines on CPU: samples/s of the fused engine (hand-fused and vmap forwards) against the loop
engine, for k members of one configuration (seeds 0..k-1), measured in one run.

A round is one epoch of every member, evaluation included (both engines evaluate each member with its
own model, so evaluation costs the same); ``train_*`` figures subtract the members' measured evaluation
time and compare the training passes alone. Rounds are interleaved (each repeat visits every model, k
and engine once, in a shuffled order) so machine noise hits all alike; medians are reported.
Run: ``python -m benchmarks.fused_vs_loop [--repeats 7] [--ks 1 2 4 8 16] [--models cnn1d mlp]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from benchmarks.common import save
from trainables.groups.group import TrialGroup

ENGINES = {"loop": ("loop", "auto"), "fused": ("fused", "fast"), "fused_vmap": ("fused", "vmap")}


def member_configs(model: str, k: int, args: argparse.Namespace) -> list[dict]:
    return [{"method": {"name": args.method}, "dataset": {"name": args.dataset, "imbalance": args.imbalance},
             "model": model, "seed": seed,
             "train": {"epochs": args.repeats + 2, "batch_size": args.batch_size, "device": "cpu"}}
            for seed in range(k)]


def evaluation_seconds(group: TrialGroup) -> float:
    """Time to evaluate every member once (what a round spends outside its training pass)."""
    start = time.perf_counter()
    for member in group.members:
        member.trial.evaluate()
    return time.perf_counter() - start


def measure(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    groups = {}
    for model in args.models:
        for k in args.ks:
            for name, (engine, forward) in ENGINES.items():
                group = TrialGroup(member_configs(model, k, args), engine=engine, forward=forward)
                group.run_round()  # warm-up: first-epoch allocations, lazy initialisation
                groups[model, k, name] = group
    rounds: dict[tuple, list[float]] = {key: [] for key in groups}
    evals: dict[tuple, list[float]] = {key: [] for key in groups}
    order = list(groups)
    rng = random.Random(0)
    for _ in range(args.repeats):
        rng.shuffle(order)
        for key in order:
            start = time.perf_counter()
            groups[key].run_round()
            rounds[key].append(time.perf_counter() - start)
            evals[key].append(evaluation_seconds(groups[key]))
    out: dict[str, dict] = {}
    for model in args.models:
        n_train = len(groups[model, args.ks[0], "loop"].members[0].trial.train_set)
        out[model] = {"train_examples": n_train, "k": {}}
        for k in args.ks:
            row = {}
            for name in ENGINES:
                seconds = statistics.median(rounds[model, k, name])
                train = seconds - statistics.median(evals[model, k, name])
                row[name] = {"round_s": seconds, "samples_per_s": k * n_train / seconds,
                             "train_s": train, "train_samples_per_s": k * n_train / train,
                             "min_round_s": min(rounds[model, k, name])}
            for name in ("fused", "fused_vmap"):
                row[f"{name}_speedup"] = row["loop"]["round_s"] / row[name]["round_s"]
                row[f"{name}_train_speedup"] = row["loop"]["train_s"] / row[name]["train_s"]
            out[model]["k"][str(k)] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--models", nargs="+", default=["cnn1d", "mlp"])
    parser.add_argument("--method", default="ce")
    parser.add_argument("--dataset", default="mnist1d")
    parser.add_argument("--imbalance", type=float, default=100)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    result = measure(args)
    print(f"{'model':<6} {'k':>3} {'loop s/round':>12} {'fused':>8} {'vmap':>8} {'fused x':>8} {'vmap x':>7} "
          f"{'train fused x':>13} {'train vmap x':>12}")
    for model, entry in result.items():
        for k, row in entry["k"].items():
            print(f"{model:<6} {k:>3} {row['loop']['round_s']:12.3f} {row['fused']['round_s']:8.3f} "
                  f"{row['fused_vmap']['round_s']:8.3f} {row['fused_speedup']:8.2f} {row['fused_vmap_speedup']:7.2f} "
                  f"{row['fused_train_speedup']:13.2f} {row['fused_vmap_train_speedup']:12.2f}")
    print("saved", save("fused_vs_loop", {"settings": vars(args), "models": result}))


if __name__ == "__main__":
    main()
