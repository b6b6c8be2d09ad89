"""Runner efficiency: sum of trial busy time / (wall time x concurrent slots), with and without MLflow.

Each trial is a real raysweep trial (the same trainable, checkpoint every epoch) whose epochs are
calibrated to about ``--trial-seconds`` of compute in all. Busy time is the time a trial spends training
and evaluating (the sum of its reported ``epoch_seconds``); everything else (actor start-up, imports, data
building, checkpoints, reporting, MLflow logging) is overhead. Ray's own release benchmark reaches about
0.87 on this measure. Run: ``python -m benchmarks.runner_efficiency [--trials 16] [--trial-seconds 20]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

from benchmarks.common import save  # noqa: E402
from raysweep.planning.plan import plan  # noqa: E402
from raysweep.spec.schema import validate_spec  # noqa: E402
from trainables.loop import Trial  # noqa: E402

DATASET = {"name": "mnist1d", "num_samples": 10000}
MODEL = {"name": "cnn1d", "channels": 64}


def calibrate(trial_seconds: float) -> tuple[int, float]:
    """Epochs giving about ``trial_seconds`` of compute, measured on one thread."""
    import torch

    torch.set_num_threads(1)
    trial = Trial({"method": {"name": "ce"}, "dataset": DATASET, "model": MODEL,
                   "train": {"epochs": 4, "device": "cpu"}, "seed": 0})
    trial.run_epoch()
    seconds = min(trial.run_epoch()["epoch_seconds"] for _ in range(2))
    return max(2, round(trial_seconds / seconds)), seconds


def run(num_trials: int, epochs: int, with_mlflow: bool, workdir: Path) -> dict:
    import ray
    from ray import tune

    from raysweep.tracking.mlflow_store import SweepRun
    from raysweep.tracking.trial_logger import TrialLogger, TuneCallback
    from trainables.planned import ENVELOPE, Envelope
    from trainables.tune import run_trial

    spec = validate_spec({"name": "bench", "dataset": DATASET, "model": MODEL, "train": {"epochs": epochs},
                          "methods": {"ce": {}}, "seeds": num_trials, "resources": {"cpu": 1}})
    trials = plan(spec)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        callbacks = []
        if with_mlflow:
            sweep = SweepRun.create(f"sqlite:///{workdir / 'mlflow.db'}", "bench", "bench", {})
            callbacks = [TuneCallback(TrialLogger(sweep))]
        tuner = tune.Tuner(
            tune.with_resources(run_trial, {"cpu": 1}),
            param_space={ENVELOPE: tune.grid_search([Envelope.of([t]).to_config()[ENVELOPE] for t in trials])},
            tune_config=tune.TuneConfig(num_samples=1, reuse_actors=True,
                                        trial_dirname_creator=lambda t: Envelope.from_config(t.config).key),
            run_config=tune.RunConfig(name=f"bench-{with_mlflow}", storage_path=str(workdir), callbacks=callbacks,
                                      verbose=0),
        )
        start = time.perf_counter()
        results = tuner.fit()
        wall = time.perf_counter() - start
    finally:
        ray.shutdown()
    busy = sum(float(r.metrics_dataframe["epoch_seconds"].sum()) for r in results)
    slots = 2
    return {"trials": num_trials, "epochs": epochs, "mlflow": with_mlflow, "wall_s": wall, "busy_s": busy,
            "slots": slots, "efficiency": busy / (wall * slots), "errors": results.num_errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[16])
    parser.add_argument("--trial-seconds", type=float, default=20.0)
    args = parser.parse_args()
    epochs, epoch_s = calibrate(args.trial_seconds)
    print(f"calibrated: {epochs} epochs of {epoch_s:.2f} s per trial")
    rows = []
    for n in args.trials:
        for with_mlflow in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                row = run(n, epochs, with_mlflow, Path(tmp))
            rows.append(row)
            print(f"{n} trials, MLflow {'on ' if with_mlflow else 'off'}: wall {row['wall_s']:.1f} s, busy "
                  f"{row['busy_s']:.1f} s, efficiency {row['efficiency']:.3f}")
    name = "runner_efficiency_" + "_".join(str(n) for n in args.trials)
    print("saved", save(name, {"settings": vars(args), "epoch_seconds": epoch_s, "runs": rows}))


if __name__ == "__main__":
    main()
