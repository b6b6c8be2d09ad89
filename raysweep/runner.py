"""Run a planned sweep on Ray Tune: start (or join) Ray, create the MLflow parent run, fit, tabulate.

Order matters for the promise "bad input starts nothing": the spec is validated and planned before this
module is called; here storage and GPU availability are checked before any MLflow run is created.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from raysweep.plan import PlannedTrial, confirm_plan
from raysweep.provenance import provenance
from raysweep.tracking import MlflowTrialLogger, SweepRun, log_json_artifact, resolve_tracking_uri
from trainables.data import resolve_dataset
from trainables.params import ConfigError


@dataclass
class SweepResult:
    sweep_id: str
    tracking_uri: str
    experiment: str
    parent_run_id: str
    storage_dir: Path
    num_trials: int
    num_errors: int
    table_markdown: str


def check_storage(path: str) -> Path:
    """The storage folder, created if needed; an unwritable one is a ConfigError naming ``storage``."""
    root = Path(path).expanduser().resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".raysweep-write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise ConfigError("storage", f"cannot write to {root}: {err.strerror or err}") from None
    return root


def check_datasets(configs: list[Mapping[str, Any]]) -> None:
    """Run each dataset source's preflight (e.g. files present under ``root``) once per distinct config."""
    from trainables.data import DATASETS

    seen = set()
    for cfg in configs:
        key = json.dumps(cfg, sort_keys=True, default=str)
        preflight = DATASETS.get(cfg["name"]).preflight
        if key not in seen and preflight is not None:
            preflight(cfg)
        seen.add(key)


def start_ray(address: str | None) -> bool:
    """Join ``address`` (or RAY_ADDRESS) or start a local Ray with this machine's CPUs. True if we started it."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise ConfigError("cluster.address", f"cannot connect to Ray at {address!r}: {str(err).splitlines()[0]}") from None
        return False
    ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, dashboard_host="127.0.0.1",
             log_to_driver=False, configure_logging=True, logging_level="WARNING")
    return True


def trial_resources(resources: Mapping[str, Any], cluster_gpus: float, notice: Callable[[str], None]) -> tuple[dict, float | None]:
    """Ray resources per trial and the GPU memory fraction to cap, after checking the cluster has GPUs.

    An explicit ``gpu`` fraction is a demand: no GPU in the cluster is a ConfigError (Ray would leave the
    trials pending forever without a word). ``trials_per_gpu`` falls back to CPUs with a notice, unless
    ``require_gpu`` is set.
    """
    per_trial = {"cpu": resources["cpu"]}
    gpu = resources["gpu"] or (1.0 / resources["trials_per_gpu"] if resources["trials_per_gpu"] else 0.0)
    if gpu and cluster_gpus <= 0:
        if resources["gpu"] or resources["require_gpu"]:
            key = "resources.gpu" if resources["gpu"] else "resources.require_gpu"
            raise ConfigError(key, "the Ray cluster has no GPU; set resources.gpu: 0 (or use trials_per_gpu "
                                   "without require_gpu to fall back to CPUs)")
        notice("notice: no GPU in the Ray cluster; running trials_per_gpu trials on CPUs instead")
        return per_trial, None
    if gpu:
        per_trial["gpu"] = gpu
    return per_trial, (gpu or None)


def run_sweep(spec: Mapping[str, Any], trials: list[PlannedTrial], *, echo: Callable[[str], None] = print) -> SweepResult:
    """Run a validated spec: its planned ``trials`` (or Optuna's draws), then phase 2 if ``two_phase``."""
    import ray

    from analysis.tables import to_frame, to_markdown
    from raysweep.report import sweep_table

    storage = check_storage(spec["storage"])
    check_datasets([t.config["dataset"] for t in trials] or [resolve_dataset(spec["dataset"])])
    started = start_ray(spec["cluster"]["address"])
    try:
        per_trial, gpu_fraction = trial_resources(spec["resources"], ray.cluster_resources().get("GPU", 0), echo)
        slots = max(1, int(ray.cluster_resources().get("CPU", 1) // per_trial["cpu"]))
        sweep_id = f"{spec['name']}-{time.strftime('%Y%m%d-%H%M%S')}"
        tracking_uri = resolve_tracking_uri(spec["tracking"]["uri"])
        experiment = spec["tracking"]["experiment"] or spec["name"]
        sweep = SweepRun.create(tracking_uri, experiment, sweep_id, {
            **provenance(), "raysweep.spec_name": spec["name"], "raysweep.axes": json.dumps(list(spec["axes"])),
            "raysweep.metric": spec["search"]["metric"], "raysweep.direction": spec["search"]["direction"],
            "raysweep.table": json.dumps(spec["table"]), "raysweep.storage": str(storage / sweep_id),
            "raysweep.mode": spec["search"]["mode"], "raysweep.two_phase": str(spec["search"]["two_phase"]),
        })
        sweep_dir = storage / sweep_id
        sweep_dir.mkdir(parents=True, exist_ok=True)
        sweep.client.log_text(sweep.run_id, yaml.safe_dump(_jsonable(spec), sort_keys=False), "spec.yaml")
        _record_plan(sweep, sweep_dir, trials, "search")
        phase = Phase(spec, sweep, per_trial, gpu_fraction, slots, storage)
        results = phase.run(sweep_id, trials, "search")
        num_errors, num_trials = results.num_errors, len(results)
        if spec["search"]["two_phase"]:
            best = top_configs(results, spec["search"]["metric"], spec["search"]["direction"], spec["search"]["top_k"])
            echo(f"phase 2: confirming the top {len(best)} configurations with {len(spec['seeds'])} seeds: "
                 + "; ".join(t.label for t in best))
            confirm = confirm_plan(spec, best)
            _record_plan(sweep, sweep_dir, confirm, "confirm")
            results = phase.run(f"{sweep_id}-confirm", confirm, "confirm")
            num_errors, num_trials = num_errors + results.num_errors, num_trials + len(results)
        sweep.finish("FINISHED" if not num_errors else "FAILED")
    finally:
        if started:
            ray.shutdown()
    table = spec["table"]
    md = ""
    try:
        tab = sweep_table(tracking_uri, parent_run_id=sweep.run_id, rows=table["rows"], cols=table["cols"],
                          metric=table["metric"])
        md = to_markdown(tab)
        sweep.client.log_text(sweep.run_id, md, "tables/summary.md")
        sweep.client.log_text(sweep.run_id, to_frame(tab).to_csv(index=False), "tables/summary.csv")
    except KeyError as err:
        md = f"(no table: {err})"
    return SweepResult(sweep_id, tracking_uri, experiment, sweep.run_id, sweep_dir, num_trials, num_errors, md)


def _record_plan(sweep: SweepRun, sweep_dir: Path, trials: list[PlannedTrial], phase: str) -> None:
    """The phase's planned trials, beside Ray's experiment state and as a parent-run artifact."""
    record = [{"trial_key": t.key, "config_id": t.config_id, "seed": t.seed, "label": t.label,
               "config": t.config} for t in trials]
    (sweep_dir / f"plan-{phase}.json").write_text(json.dumps(record, indent=1, default=str))
    log_json_artifact(sweep.client, sweep.run_id, record, f"plan-{phase}.json")


def top_configs(results, metric: str, direction: str, k: int) -> list[PlannedTrial]:
    """The ``k`` best configurations of a phase, judged on the validation metric (never the test set).

    Trials that ran more epochs rank first (under ASHA they are the survivors), then by the metric's last
    reported value, ties going to the earlier planned trial; repeated draws of one configuration count once,
    at their best.
    """
    sign = 1.0 if direction == "max" else -1.0
    ranked: dict[str, tuple[tuple[float, float, int], PlannedTrial]] = {}
    for result in results:
        if result.error is not None or not result.metrics or metric not in result.metrics:
            continue
        trial = PlannedTrial.from_tune_config(result.config["trial"])
        score = (float(result.metrics.get("epoch", 0)), sign * float(result.metrics[metric]), -trial.index)
        if trial.config_id not in ranked or score > ranked[trial.config_id][0]:
            ranked[trial.config_id] = (score, trial)
    best = sorted(ranked.values(), key=lambda item: item[0], reverse=True)[:k]
    return [trial for _, trial in best]


class Phase:
    """Builds and fits one Tuner: planned trials as a grid of configs, or Optuna's define-by-run draws."""

    def __init__(self, spec: Mapping[str, Any], sweep: SweepRun, per_trial: dict, gpu_fraction: float | None,
                 slots: int, storage: Path) -> None:
        self.spec, self.sweep, self.per_trial = spec, sweep, per_trial
        self.gpu_fraction, self.slots, self.storage = gpu_fraction, slots, storage

    def _tune_config(self, trial: PlannedTrial) -> dict[str, Any]:
        extra = {"gpu_fraction": self.gpu_fraction} if self.gpu_fraction else {}
        return {**trial.as_tune_config(), **extra}

    def run(self, name: str, trials: list[PlannedTrial], phase: str):
        # Tune's legacy reporter lets us show the trial label instead of the whole nested config.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        from ray import tune
        from ray.tune import CLIReporter
        from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

        from trainables.tune import run_trial

        spec, search = self.spec, self.spec["search"]
        optuna_mode = phase == "search" and search["mode"] == "optuna"
        max_epochs = max([t.config["train"]["epochs"] for t in trials] + [_spec_epochs(spec)])
        scheduler = FIFOScheduler()
        if phase == "search" and spec["scheduler"]["name"] == "asha":
            scheduler = ASHAScheduler(time_attr="epoch", max_t=max_epochs, grace_period=spec["scheduler"]["grace_period"],
                                      reduction_factor=spec["scheduler"]["reduction_factor"])
        if optuna_mode:
            param_space, search_alg, num_samples = {}, self._optuna_searcher(), search["num_samples"]
        else:
            param_space = {"trial": tune.grid_search([self._tune_config(t) for t in trials])}
            search_alg, num_samples = None, 1
        # A searcher alone keeps one trial pending at a time: cap concurrency at the free slots instead.
        concurrent = self.spec["resources"]["max_concurrent"] or (self.slots if optuna_mode else None)
        tuner = tune.Tuner(
            tune.with_resources(run_trial, self.per_trial),
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=search["metric"], mode=search["direction"], scheduler=scheduler, search_alg=search_alg,
                num_samples=num_samples, reuse_actors=True, max_concurrent_trials=concurrent,
                trial_name_creator=lambda t: t.config["trial"]["trial_key"],
                trial_dirname_creator=lambda t: t.config["trial"]["trial_key"],
            ),
            run_config=tune.RunConfig(
                name=name, storage_path=str(self.storage),
                failure_config=tune.FailureConfig(max_failures=spec["failure"]["max_failures"]),
                # num_to_keep=None: keeping k checkpoints forces an experiment snapshot every k epochs.
                checkpoint_config=tune.CheckpointConfig(num_to_keep=spec["failure"]["keep_checkpoints"]),
                callbacks=[MlflowTrialLogger(self.sweep)],
                progress_reporter=CLIReporter(
                    parameter_columns={"trial/label": "config", "trial/seed": "seed"},
                    metric_columns={"epoch": "epoch", search["metric"]: search["metric"], "train_loss": "train_loss"},
                    max_report_frequency=15, sort_by_metric=False),
                verbose=1,
            ),
        )
        return tuner.fit()

    def _optuna_searcher(self):
        """OptunaSearch (TPE) over a define-by-run space: the method first, then its own sub-space."""
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        space = OptunaSpace(dict(self.spec), self.spec["seeds"][0], self.gpu_fraction)
        return OptunaSearch(space=space, metric=self.spec["search"]["metric"], mode=self.spec["search"]["direction"],
                            sampler=optuna.samplers.TPESampler(seed=self.spec["search"]["seed"]))


class OptunaSpace:
    """Define-by-run function for OptunaSearch: draws a method and its knobs, returns the resolved trial.

    A module-level class (not a closure) because Tune pickles the searcher with its experiment state.
    """

    def __init__(self, spec: Mapping[str, Any], seed: int, gpu_fraction: float | None) -> None:
        self.spec, self.seed, self.gpu_fraction = spec, seed, gpu_fraction

    def __call__(self, ot: Any) -> dict[str, Any]:
        from raysweep.plan import sampled_trial
        from search_spaces.sampling import sample

        draw = sample(ot, self.spec["methods_raw"], self.spec["search"]["tune_train"])
        trial = sampled_trial(self.spec, draw, self.seed, ot.number).as_tune_config()
        return {"trial": {**trial, **({"gpu_fraction": self.gpu_fraction} if self.gpu_fraction else {})}}


def _spec_epochs(spec: Mapping[str, Any]) -> int:
    from trainables.config import resolve_train

    return resolve_train(spec["train"])["epochs"]


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))
