"""Paper-scale image data on one node: memory of 1, 2 and 4 concurrent trials sharing one decoded store, the
cold start of 4 trials starting together, images/s of the store against the stream loader, and the
extrapolation to ImageNet-LT, Places-LT, iNaturalist 2018 and Clothing1M, measured in one run.

The data set is synthetic and ImageNet-LT-shaped: ``--classes`` classes (>= 100) with a long tail
(n_c = floor(n_max (1/rho)^(c/(C-1)))), 375 x 500 JPEGs of smooth random texture, a val list (5 a class)
and a test list (10 a class). Each "trial" is a process doing what a trial's data path does: ``load_splits(
resolve_dataset(cfg))``, then one epoch of training batches (``Trial.batch``'s gather with the papers'
RandomResizedCrop + flip, batch 128) and the test set's evaluation views. The parent samples every trial's
PSS (proportional set size: shared pages divided among their sharers, so the trials' sum is the machine's
total) and private (anonymous) memory from ``/proc/<pid>/smaps_rollup`` every 0.1 s; each trial also reports
its runtime's (interpreter, torch, raysweep, after imports) so the data's share is the difference.
Run: ``python -m benchmarks.image_store [--classes 100] [--n-max 80] [--rho 40]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import save

BOUND_S = 1800
REPO = Path(__file__).resolve().parent.parent
# (name, training images, val + test images) of the real datasets at the defaults
REAL = [("ImageNet-LT", 115_846, 20_000 + 50_000), ("Places-LT", 62_500, 7_300 + 36_500),
        ("iNaturalist 2018", 437_513, 24_426), ("Clothing1M", 1_037_497, 14_313 + 10_526)]


def write_dataset(root: Path, classes: int, n_max: int, rho: float, seed: int = 0) -> dict[str, int]:
    """The synthetic ImageNet-LT-shaped JPEG set under ``root``; returns each list's length."""
    from PIL import Image

    from trainables.data.protocol import long_tail_counts

    rng = np.random.default_rng(seed)
    counts = {"train": long_tail_counts(n_max, classes, rho), "val": [5] * classes, "test": [10] * classes}
    for split, per_class in counts.items():
        lines = []
        for c, n in enumerate(per_class):
            folder = root / split / f"n{c:05d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                small = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)  # upsampled: JPEG-like smoothness
                image = Image.fromarray(small).resize((500, 375), Image.BICUBIC)
                image.save(folder / f"{i}.jpg", quality=90)
                lines.append(f"{split}/n{c:05d}/{i}.jpg {c}")
        (root / f"ImageNet_LT_{split}.txt").write_text("\n".join(lines) + "\n")
    return {split: sum(per_class) for split, per_class in counts.items()}


def dataset_cfg(root: Path, cache: Path, loader: str = "store") -> dict:
    return {"name": "imagenet_lt", "root": str(root), "cache_dir": str(cache), "loader": loader,
            "meta_per_class": 2}


def memory(pid: int) -> dict[str, int]:
    """Pss and private (anonymous + private file-backed) bytes of a process."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as handle:
        for line in handle:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                fields[parts[0][:-1]] = int(parts[1]) * 1024
    return {"pss": fields.get("Pss", 0), "anonymous": fields.get("Anonymous", 0)}


def trial_main(args: argparse.Namespace) -> None:
    """One trial's data path, then hold until released (so the parent can read its steady memory)."""
    import torch

    from trainables.data import load_splits, resolve_dataset
    from trainables.data.augment import PaperCrop
    from trainables.data.image_store import gather_batch

    torch.set_num_threads(1)
    PaperCrop(224).crops([np.zeros((3, 256, 341), np.uint8)] * 8, torch.Generator())  # torch's first-use buffers
    runtime = memory(os.getpid())  # the interpreter, torch and raysweep: what any trial process costs
    started = time.perf_counter()
    splits = load_splits(resolve_dataset(json.loads(args.cfg)))
    loaded = time.perf_counter() - started
    generator = torch.Generator().manual_seed(0)
    batches = torch.randperm(len(splits.train), generator=generator).split(128)
    splits.train.x.prefetch(batches)
    epoch_started = time.perf_counter()
    for idx in batches:
        gather_batch(splits.train.x, idx, splits.augment, generator)
    train_s = time.perf_counter() - epoch_started
    for i in range(0, len(splits.test), 256):
        splits.test.x[i:i + 256]
    Path(args.status).write_text(json.dumps({"runtime": runtime, "load_s": loaded, "train_epoch_s": train_s,
                                             "images_per_s": len(splits.train) / train_s}))
    deadline = time.monotonic() + BOUND_S
    while not Path(args.release).exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def run_trials(n: int, cfg: dict, work: Path, tag: str) -> dict:
    """Start ``n`` trials together, sample their memory until all are done, then release them."""
    release = work / f"release-{tag}"
    statuses = [work / f"status-{tag}-{i}" for i in range(n)]
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.image_store", "trial", "--cfg", json.dumps(cfg),
                               "--status", str(s), "--release", str(release)], cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)}) for s in statuses]
    peak = {p.pid: {"pss": 0, "anonymous": 0} for p in procs}
    peak_total = 0
    try:
        deadline = time.monotonic() + BOUND_S
        while not all(s.exists() for s in statuses):
            if any(p.poll() not in (None, 0) for p in procs) or time.monotonic() > deadline:
                raise RuntimeError(f"a trial of {tag} failed or timed out")
            sample = {p.pid: memory(p.pid) for p in procs if p.poll() is None}
            for pid, m in sample.items():
                peak[pid] = {k: max(peak[pid][k], v) for k, v in m.items()}
            peak_total = max(peak_total, sum(m["pss"] for m in sample.values()))
            time.sleep(0.1)
        wall = time.perf_counter() - started
        steady = {p.pid: memory(p.pid) for p in procs}
    finally:
        release.write_text("go")
        for p in procs:
            p.wait(BOUND_S)
    results = [json.loads(s.read_text()) for s in statuses]
    runtime = {p.pid: r["runtime"] for p, r in zip(procs, results, strict=True)}
    return {"trials": n, "wall_s": wall, "steady_pss_total": sum(m["pss"] for m in steady.values()),
            "runtime_pss_total": sum(r["pss"] for r in runtime.values()),
            "data_steady_pss_total": sum(steady[pid]["pss"] - runtime[pid]["pss"] for pid in runtime),
            "data_peak_private_per_trial": [peak[pid]["anonymous"] - runtime[pid]["anonymous"] for pid in runtime],
            "peak_pss_total": peak_total, "steady_pss_per_trial": [m["pss"] for m in steady.values()],
            "peak_pss_per_trial": [m["pss"] for m in peak.values()],
            "steady_private_per_trial": [m["anonymous"] for m in steady.values()],
            "peak_private_per_trial": [m["anonymous"] for m in peak.values()],
            "load_s": [r["load_s"] for r in results], "images_per_s": [r["images_per_s"] for r in results]}


def store_bytes(cache: Path) -> dict[str, int]:
    """Bytes of each built store (pixels.npy) under the cache, by split."""
    return {folder.name.split("-")[1]: (folder / "pixels.npy").stat().st_size
            for folder in cache.iterdir() if folder.is_dir() and ".tmp-" not in folder.name}


def extrapolate(measured: dict, counts: dict[str, int], stores: dict[str, int]) -> list[dict]:
    """Per real dataset: the node's stores at the measured bytes per image, a trial's private bytes (the
    measured data-private peak, which is bound by the batch, not the data set, plus 16 bytes of index and
    label per image), and core-minutes at the measured rates."""
    per_train = stores["train"] / counts["train"]
    per_eval = (stores["val"] + stores["test"]) / (counts["val"] + counts["test"])
    batch_bound = max(max(m["data_peak_private_per_trial"]) for m in measured["memory"])
    old_factor = 2.0  # the old path: decoded 224 squares, held twice per trial (the measurement)
    rows = []
    for name, n_train, n_eval in REAL:
        store = n_train * per_train + n_eval * per_eval
        private = batch_bound + 16 * (n_train + n_eval)
        old = old_factor * (n_train + n_eval) * 3 * 224 * 224
        rows.append({"dataset": name, "train_images": n_train, "eval_images": n_eval, "store_gb": store / 1e9,
                     "private_per_trial_gb": private / 1e9, "node_4_trials_gb": (store + 4 * private) / 1e9,
                     "old_per_trial_peak_gb": old / 1e9, "old_4_trials_gb": 4 * old / 1e9,
                     "cold_build_core_min": (n_train + n_eval) / measured["decode_images_per_core_s"] / 60,
                     "epoch_store_core_min": n_train / measured["store_images_per_s"] / 60,
                     "epoch_stream_core_min": n_train / measured["stream_images_per_s"] / 60})
    return rows


def measure(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="image-store-bench-"))
    root, cache = work / "data", work / "cache"
    started = time.perf_counter()
    counts = write_dataset(root, args.classes, args.n_max, args.rho)
    print(f"dataset: {counts} in {time.perf_counter() - started:.0f} s", flush=True)
    cold = run_trials(4, dataset_cfg(root, cache), work, "cold")  # one builds (1 decode thread), three wait
    builds = len([f for f in cache.iterdir() if f.is_dir()])
    stores = store_bytes(cache)
    print(f"cold start: {cold['wall_s']:.1f} s, {builds} stores, {sum(stores.values()) / 1e6:.0f} MB", flush=True)
    warm = [run_trials(n, dataset_cfg(root, cache), work, f"warm{n}") for n in (1, 2, 4)]
    for m in warm:
        print(f"{m['trials']} trial(s): machine PSS {m['peak_pss_total'] / 1e6:.0f} MB peak, "
              f"{m['steady_pss_total'] / 1e6:.0f} MB steady, of which data {m['data_steady_pss_total'] / 1e6:.0f} MB "
              f"(runtime {m['runtime_pss_total'] / 1e6:.0f} MB); data-private per trial "
              f"{max(m['data_peak_private_per_trial']) / 1e6:.0f} MB peak", flush=True)
    stream = run_trials(1, dataset_cfg(root, cache, "stream"), work, "stream")
    n_images = sum(counts.values())
    slowest_load = max(cold["load_s"])
    out = {"classes": args.classes, "counts": counts, "store_bytes": stores, "stores_built": builds,
           "cold_start": cold, "memory": warm,
           "stream": stream, "decode_images_per_core_s": n_images / slowest_load,
           "store_images_per_s": warm[0]["images_per_s"][0], "stream_images_per_s": stream["images_per_s"][0],
           "load_average": os.getloadavg()}
    out["ratio_4_to_1"] = warm[2]["peak_pss_total"] / warm[0]["peak_pss_total"]
    out["data_ratio_4_to_1"] = warm[2]["data_steady_pss_total"] / warm[0]["data_steady_pss_total"]
    out["private_fraction_of_store"] = max(max(m["data_peak_private_per_trial"]) for m in warm) / sum(stores.values())
    out["extrapolation"] = extrapolate(out, counts, stores)
    shutil.rmtree(work, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    trial = sub.add_parser("trial", help="internal: one trial process")
    trial.add_argument("--cfg", required=True)
    trial.add_argument("--status", required=True)
    trial.add_argument("--release", required=True)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--n-max", type=int, default=80)
    parser.add_argument("--rho", type=float, default=40.0)
    args = parser.parse_args()
    if args.command == "trial":
        trial_main(args)
        return
    result = measure(args)
    print(json.dumps({k: v for k, v in result.items() if k in ("ratio_4_to_1", "data_ratio_4_to_1",
                                                               "private_fraction_of_store",
                                                               "store_images_per_s", "stream_images_per_s",
                                                               "decode_images_per_core_s", "load_average")},
                     indent=1))
    print(save("image_store", result))


if __name__ == "__main__":
    main()
