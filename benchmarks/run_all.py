"""``make bench``: every CPU benchmark in one go (about 100 minutes on 2 cores), then docs/benchmarks.md.

Run it on a quiet machine: each benchmark compares variants measured in the same run, and other work on the
machine hits them unevenly. GPU benchmarks (benchmarks/gpu_groups.py) are not part of it."""

from __future__ import annotations

import subprocess
import sys

STEPS = [
    ["benchmarks.method_cost", "--repeats", "15"],
    ["benchmarks.runner_efficiency", "--trials", "16", "--trial-seconds", "20"],
    ["benchmarks.runner_efficiency", "--trials", "64", "--trial-seconds", "5"],
    ["benchmarks.trial_overhead"],
    ["benchmarks.asha_vs_grid"],
    ["benchmarks.reproduction"],
    ["benchmarks.cdb_tau_evidence"],
    ["benchmarks.fused_vs_loop", "--repeats", "9"],
    ["benchmarks.groups", "grid", "--epochs", "20", "--repeats", "1"],
    ["benchmarks.groups", "quickstart", "--repeats", "1"],
    ["benchmarks.groups", "asha", "--epochs", "20"],
    ["benchmarks.calibration"],
    ["benchmarks.image_store"],
    ["benchmarks.floor", "compare", "--spec", "perf", "--rounds", "5"],
    ["benchmarks.floor", "breakdown", "--runs", "3"],
    ["benchmarks.floor", "compare", "--spec", "grid", "--rounds", "1", "--skip", "plain Ray Tune"],
    ["benchmarks.write_report"],
]


def main() -> int:
    for module, *args in STEPS:
        print(f"== {module} {' '.join(args)}", flush=True)
        code = subprocess.call([sys.executable, "-m", module, *args])
        if code:
            print(f"{module} failed with exit code {code}", file=sys.stderr)
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
