"""How good is ``raysweep plan --calibrate``? Its wall-time estimate against the measured wall time of the sweep.

For a small spec (mnist1d-LT, the 1-D CNN, CE, focal and CB, 2 seeds, 8 epochs, one CPU per trial), once
with FIFO and once with ASHA: run ``raysweep plan SPEC --calibrate`` and read its estimate for the spec's
scheduler, then ``raysweep run SPEC`` and time it (the whole command, interpreter start included, as a user
waits for it). Reports estimate / measured per scheduler and saves ``benchmarks/results/calibration.json``,
with the 1-minute load average before and after each case (other work on the machine slows the sweep, not
the estimate, which is calibrated before it). Run: ``python -m benchmarks.calibration [--scheduler fifo|asha|both]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from benchmarks.common import save  # noqa: E402
from raysweep.planning.estimate import parse_estimates  # noqa: E402

SPEC = {
    "name": "calibration",
    "dataset": {"name": "mnist1d", "imbalance": 100},
    "model": "cnn1d",
    "train": {"epochs": 8, "batch_size": 128},
    "methods": {"ce": {}, "focal": {"gamma": [0.5, 2.0]}, "cb": {}},
    "seeds": 2,
    "search": {"mode": "grid", "metric": "val_balanced_acc"},
    "resources": {"cpu": 1},
}
SCHEDULERS = {"fifo": {"name": "fifo"}, "asha": {"name": "asha", "grace_period": 2, "reduction_factor": 2}}


def _raysweep(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raysweep.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=3600)


def one(workdir: Path, scheduler: str) -> dict:
    """Estimate, then measure, the sweep of SPEC with ``scheduler``."""
    workdir.mkdir(parents=True)
    spec = {**SPEC, "scheduler": SCHEDULERS[scheduler], "storage": str(workdir / "ray"),
            "tracking": {"uri": f"sqlite:///{workdir / 'mlflow.db'}"}}
    (workdir / "spec.yaml").write_text(yaml.safe_dump(spec))
    load_before = os.getloadavg()[0]
    planned = _raysweep("plan", "spec.yaml", "--calibrate", cwd=workdir)
    if planned.returncode != 0:
        sys.exit(f"raysweep plan --calibrate failed:\n{planned.stderr[-2000:]}")
    estimates = parse_estimates(planned.stdout)
    case = "with early stopping" if scheduler == "asha" else "without early stopping"
    if case not in estimates:
        sys.exit(f"no '{case}' estimate in the output of plan --calibrate:\n{planned.stdout[-2000:]}")
    start = time.perf_counter()
    ran = _raysweep("run", "spec.yaml", cwd=workdir)
    measured = time.perf_counter() - start
    if ran.returncode != 0:
        sys.exit(f"raysweep run failed:\n{ran.stdout[-2000:]}\n{ran.stderr[-2000:]}")
    return {"estimate_s": estimates[case], "measured_s": measured, "ratio": estimates[case] / measured,
            "load_average_1m": {"before": load_before, "after": os.getloadavg()[0]},
            "estimates": estimates, "plan_output": planned.stdout}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scheduler", choices=("fifo", "asha", "both"), default="both")
    args = parser.parse_args()
    chosen = list(SCHEDULERS) if args.scheduler == "both" else [args.scheduler]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in chosen:
            results[name] = one(Path(tmp) / name, name)
            r = results[name]
            print(f"{name}: estimated {r['estimate_s']:.0f} s, measured {r['measured_s']:.0f} s, "
                  f"estimate / measured = {r['ratio']:.2f} (load average {r['load_average_1m']['before']:.2f} "
                  f"before, {r['load_average_1m']['after']:.2f} after)")
    print("saved", save("calibration", {"spec": SPEC, "schedulers": SCHEDULERS, "results": results}))


if __name__ == "__main__":
    main()
