"""ResNet-32 training samples/s on one GPU: one member per process, ``trials_per_gpu`` 4 and 8 separate
processes, and fused trial groups of 4, 8 and 16 members in one process. Finishes in under 4 minutes.

Every measurement is a worker subprocess (its own CUDA context, as a Ray trial has) training on
CIFAR-shaped synthetic data already on the GPU (uint8 3x32x32 images, 10 classes, batch 128 per member):
a one-member worker runs the plain step of the training loop (forward, cross-entropy, backward, SGD with
the trial defaults lr 0.1, momentum 0.9, weight decay 5e-4); a k-member worker runs the fused engine's step
(:func:`trainables.groups.fused.stacked_forward`, :class:`~trainables.groups.fused.StackedSGD`). Concurrent workers
warm up, wait for each other, then all measure for the same ``--seconds``; their rates add up.
The figures decide ``trainables.groups.group.AUTO_ENGINE["cuda"]``.

Run: ``python -m benchmarks.gpu_groups`` on a machine with CUDA (results in benchmarks/results/gpu_groups.json);
``--tiny`` checks the script itself on CPU with small sizes (nothing saved). Without CUDA and without
``--tiny`` it exits with status 2 and a message.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 220  # stop starting new measurements after this (the whole script stays under 4 minutes)
FULL = {"batch": 128, "seconds": 8.0, "warmup": 10, "processes": [1, 4, 8], "fused": [4, 8, 16], "vmap": [8]}
TINY = {"batch": 8, "seconds": 0.5, "warmup": 1, "processes": [1, 2], "fused": [2, 3], "vmap": [2]}


# ---- worker ----------------------------------------------------------------------------------------------------
def worker(args: argparse.Namespace) -> None:
    from torch.nn import functional as F

    from trainables.groups.fused import ModelStack, StackedSGD, stacked_forward
    from trainables.models import build_model, model_params

    device = torch.device(args.device)
    torch.set_num_threads(1)
    torch.manual_seed(args.rank)
    cfg = {"name": "resnet32", **{k: p.default for k, p in model_params("resnet32").items()}, "bf16": args.bf16}
    models = [build_model(cfg, (3, 32, 32), 10).to(device).train() for _ in range(args.members)]
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4) for m in models]
    n, k, b = 4096, args.members, args.batch
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (n,), device=device)

    if k == 1:
        model, optimizer = models[0], optimizers[0]

        def step() -> None:
            idx = torch.randint(0, n, (b,), device=device)
            loss = F.cross_entropy(model(images[idx]), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    else:
        stack = ModelStack(models)
        sgd = StackedSGD(stack.params, optimizers, models)
        forward = stacked_forward(models[0], args.forward)

        def step() -> None:
            idx = torch.randint(0, n, (k, b), device=device)
            logits = forward(stack.params, stack.buffers, images[idx])
            loss = sum(F.cross_entropy(logits[m], labels[idx[m]]) for m in range(k))
            sgd.zero_grad()
            loss.backward()
            sgd.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        step()
    sync()
    if args.barrier:  # all concurrent workers start measuring together
        Path(args.barrier, f"ready_{args.rank}").touch()
        deadline = time.monotonic() + 120
        while len(list(Path(args.barrier).glob("ready_*"))) < args.peers:
            if time.monotonic() > deadline:
                raise SystemExit("gpu_groups worker: the other workers never became ready")
            time.sleep(0.01)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        step()
        steps += 1
        if steps % 5 == 0:
            sync()
    sync()
    elapsed = time.perf_counter() - start
    memory = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    print("RESULT " + json.dumps({"samples_per_s": steps * k * b / elapsed, "steps": steps, "seconds": elapsed,
                                  "max_memory_mb": memory}), flush=True)


# ---- driver ----------------------------------------------------------------------------------------------------
def run_workers(processes: int, members: int, forward: str, sizes: dict, device: str, bf16: bool) -> dict:
    """``processes`` concurrent workers of ``members`` members each; their summed samples/s."""
    with tempfile.TemporaryDirectory() as barrier:
        common = ["--worker", "--members", str(members), "--forward", forward, "--device", device,
                  "--batch", str(sizes["batch"]), "--seconds", str(sizes["seconds"]), "--warmup", str(sizes["warmup"]),
                  "--peers", str(processes), "--barrier", barrier] + (["--bf16"] if bf16 else [])
        started = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.gpu_groups", *common, "--rank", str(r)],
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for r in range(processes)]
        results = []
        try:
            for proc in procs:
                out, err = proc.communicate(timeout=200)
                lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
                if proc.returncode != 0 or not lines:
                    raise RuntimeError(f"worker failed (exit {proc.returncode}): {err.strip()[-2000:]}")
                results.append(json.loads(lines[-1][len("RESULT "):]))
        finally:  # a failed or hung worker: end the ones this call started
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    return {"processes": processes, "members_per_process": members, "forward": forward if members > 1 else "-",
            "samples_per_s": sum(r["samples_per_s"] for r in results),
            "max_memory_mb_per_process": max(r["max_memory_mb"] for r in results),
            "wall_s": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small sizes, CPU allowed: checks the script only")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast of the backbone (the bf16 model option)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for flag, kind, default in [("--members", int, 1), ("--forward", str, "fast"), ("--device", str, "cuda"),
                                ("--batch", int, 128), ("--seconds", float, 8.0), ("--warmup", int, 10),
                                ("--rank", int, 0), ("--peers", int, 1), ("--barrier", str, "")]:
        parser.add_argument(flag, type=kind, default=default, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if not torch.cuda.is_available() and not args.tiny:
        print("gpu_groups: no CUDA device is visible; run it on a GPU machine (or pass --tiny to check the "
              "script on CPU)", file=sys.stderr)
        raise SystemExit(2)
    sizes, device = (TINY, "cpu") if args.tiny else (FULL, "cuda")
    plan = ([(p, 1, "fast") for p in sizes["processes"]] + [(1, k, "fast") for k in sizes["fused"]]
            + [(1, k, "vmap") for k in sizes["vmap"]])
    started, rows, skipped = time.perf_counter(), [], []
    for processes, members, forward in plan:
        if time.perf_counter() - started > BUDGET_S:
            skipped.append({"processes": processes, "members_per_process": members, "forward": forward})
            continue
        rows.append(run_workers(processes, members, forward, sizes, device, args.bf16))
        r = rows[-1]
        print(f"{r['processes']:>2} process(es) x {r['members_per_process']:>2} member(s) {r['forward']:>5}: "
              f"{r['samples_per_s']:10.0f} samples/s  ({r['max_memory_mb_per_process']:.0f} MiB/process, "
              f"{r['wall_s']:.0f} s)", flush=True)
    one = rows[0]["samples_per_s"]
    for r in rows:
        r["x_one_member"] = r["samples_per_s"] / one
    print("\n".join(f"{r['processes']}x{r['members_per_process']} {r['forward']}: {r['x_one_member']:.2f}x one member"
                    for r in rows))
    if skipped:
        print(f"skipped (over the {BUDGET_S} s budget): {skipped}")
    print(f"total {time.perf_counter() - started:.0f} s")
    if not args.tiny:
        from benchmarks.common import save

        device_name = torch.cuda.get_device_name(0)
        print("saved", save("gpu_groups", {"device": device_name, "sizes": sizes, "bf16": args.bf16, "rows": rows,
                                           "skipped": skipped}))


if __name__ == "__main__":
    main()
