"""Per-trial overhead: what a trial costs before its first epoch, against a steady epoch; and how much of
the bundled quickstart sweep is overhead.

Times, from the driver: ``ray.init``; fit() start -> the trial starts (actor); trial start -> first result
(imports, data build, model, first epoch and its checkpoint); then a steady epoch (median of the rest).
The demo figure is 1 - busy / (wall x slots) for ``raysweep/specs/quickstart.yaml``.
Run: ``python -m benchmarks.trial_overhead [--skip-demo]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

from benchmarks.common import save, trial_runs  # noqa: E402


def one_trial(workdir: Path) -> dict:
    import ray
    from ray import tune

    from raysweep.planning.plan import plan
    from raysweep.spec.schema import validate_spec
    from trainables.planned import ENVELOPE, Envelope
    from trainables.tune import run_trial

    marks: dict[str, list[float]] = {"start": [], "results": []}

    class Clock(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            marks["start"].append(time.perf_counter())

        def on_trial_result(self, iteration, trials, trial, result, **info):
            marks["results"].append(time.perf_counter())

    spec = validate_spec({"name": "overhead", "dataset": {"name": "mnist1d", "imbalance": 100}, "model": "cnn1d",
                          "train": {"epochs": 8}, "methods": {"ce": {}}, "resources": {"cpu": 1}})
    trials = plan(spec)
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    t_init = time.perf_counter() - t0
    try:
        tuner = tune.Tuner(tune.with_resources(run_trial, {"cpu": 1}),
                           param_space={ENVELOPE: tune.grid_search([Envelope.of([t]).to_config()[ENVELOPE]
                                                                   for t in trials])},
                           run_config=tune.RunConfig(name="overhead", storage_path=str(workdir), callbacks=[Clock()],
                                                     verbose=0))
        t_fit = time.perf_counter()
        results = tuner.fit()
    finally:
        ray.shutdown()
    epochs = list(results[0].metrics_dataframe["epoch_seconds"])
    gaps = [b - a for a, b in zip(marks["results"], marks["results"][1:], strict=False)]
    return {"ray_init_s": t_init, "fit_to_trial_start_s": marks["start"][0] - t_fit,
            "trial_start_to_first_result_s": marks["results"][0] - marks["start"][0],
            "first_epoch_compute_s": epochs[0], "steady_epoch_compute_s": statistics.median(epochs[1:]),
            "steady_result_interval_s": statistics.median(gaps)}


def demo(workdir: Path) -> dict:
    from importlib import resources

    from raysweep.execution.runner import run_sweep
    from raysweep.planning.plan import plan
    from raysweep.spec.loading import apply_overrides, load_spec_file
    from raysweep.spec.schema import validate_spec

    path = resources.files("raysweep") / "specs" / "quickstart.yaml"
    spec = validate_spec(apply_overrides(load_spec_file(str(path)), [
        f"storage={workdir / 'ray'}", f"tracking.uri=sqlite:///{workdir / 'mlflow.db'}"]))
    start = time.perf_counter()
    result = run_sweep(spec, plan(spec), echo=lambda line: None)
    wall = time.perf_counter() - start
    client, runs = trial_runs(result)
    busy = sum(m.value for r in runs for m in client.get_metric_history(r.info.run_id, "epoch_seconds"))
    slots = int(2 / spec.resources.cpu)
    return {"wall_s": wall, "busy_s": busy, "slots": slots, "trials": len(runs),
            "overhead_fraction": 1 - busy / (wall * slots)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-demo", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        single = one_trial(Path(tmp) / "one")
        print(", ".join(f"{k} {v:.2f}" for k, v in single.items()))
        sweep = None if args.skip_demo else demo(Path(tmp) / "demo")
        if sweep:
            print(f"quickstart: wall {sweep['wall_s']:.0f} s, busy {sweep['busy_s']:.0f} s over {sweep['slots']} "
                  "slots, "
                  f"overhead {100 * sweep['overhead_fraction']:.0f} %")
    print("saved", save("trial_overhead", {"single_trial": single, "demo": sweep}))


if __name__ == "__main__":
    main()
