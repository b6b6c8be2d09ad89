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

from raysweep.plan import PlannedTrial
from raysweep.provenance import provenance
from raysweep.tracking import MlflowTrialLogger, SweepRun, log_json_artifact, resolve_tracking_uri
from trainables.params import ConfigError

PLAN_FILE = "raysweep_plan.json"


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
    """Run every planned trial of a validated spec and return where the results are."""
    # Tune's legacy reporter lets us show the trial label instead of the whole nested config.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray
    from ray import tune
    from ray.tune import CLIReporter
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from analysis.tables import to_frame, to_markdown
    from raysweep.report import sweep_table
    from trainables.tune import run_trial

    storage = check_storage(spec["storage"])
    started = start_ray(spec["cluster"]["address"])
    try:
        per_trial, gpu_fraction = trial_resources(spec["resources"], ray.cluster_resources().get("GPU", 0), echo)
        sweep_id = f"{spec['name']}-{time.strftime('%Y%m%d-%H%M%S')}"
        tracking_uri = resolve_tracking_uri(spec["tracking"]["uri"])
        experiment = spec["tracking"]["experiment"] or spec["name"]
        sweep = SweepRun.create(tracking_uri, experiment, sweep_id, {
            **provenance(), "raysweep.spec_name": spec["name"], "raysweep.axes": json.dumps(list(spec["axes"])),
            "raysweep.metric": spec["search"]["metric"], "raysweep.direction": spec["search"]["direction"],
            "raysweep.table": json.dumps(spec["table"]), "raysweep.storage": str(storage / sweep_id),
        })
        plan_record = [{"trial_key": t.key, "config_id": t.config_id, "seed": t.seed, "label": t.label,
                        "config": t.config} for t in trials]
        (storage / sweep_id).mkdir(parents=True, exist_ok=True)
        (storage / sweep_id / PLAN_FILE).write_text(json.dumps(
            {"sweep_id": sweep_id, "parent_run_id": sweep.run_id, "tracking_uri": tracking_uri,
             "experiment": experiment, "trials": plan_record}, indent=1, default=str))
        sweep.client.log_text(sweep.run_id, yaml.safe_dump(_jsonable(spec), sort_keys=False), "spec.yaml")
        log_json_artifact(sweep.client, sweep.run_id, plan_record, "plan.json")

        scheduler = FIFOScheduler()
        if spec["scheduler"]["name"] == "asha":
            scheduler = ASHAScheduler(time_attr="epoch", max_t=max(t.config["train"]["epochs"] for t in trials), grace_period=spec["scheduler"]["grace_period"],
                reduction_factor=spec["scheduler"]["reduction_factor"])
        configs = [{**t.as_tune_config(), **({"gpu_fraction": gpu_fraction} if gpu_fraction else {})} for t in trials]
        tuner = tune.Tuner(
            tune.with_resources(run_trial, per_trial),
            param_space={"trial": tune.grid_search(configs)},
            tune_config=tune.TuneConfig(
                metric=spec["search"]["metric"], mode=spec["search"]["direction"], scheduler=scheduler,
                num_samples=1, reuse_actors=True, max_concurrent_trials=spec["resources"]["max_concurrent"],
                trial_name_creator=lambda t: t.config["trial"]["trial_key"],
                trial_dirname_creator=lambda t: t.config["trial"]["trial_key"],
            ),
            run_config=tune.RunConfig(
                name=sweep_id, storage_path=str(storage),
                failure_config=tune.FailureConfig(max_failures=spec["failure"]["max_failures"]),
                # num_to_keep=None: keeping k checkpoints forces an experiment snapshot every k epochs.
                checkpoint_config=tune.CheckpointConfig(num_to_keep=spec["failure"]["keep_checkpoints"]),
                callbacks=[MlflowTrialLogger(sweep, {t.key: t for t in trials})],
                progress_reporter=CLIReporter(
                    parameter_columns={"trial/label": "config", "trial/seed": "seed"},
                    metric_columns={"epoch": "epoch", spec["search"]["metric"]: spec["search"]["metric"],
                                    "train_loss": "train_loss"},
                    max_report_frequency=15, sort_by_metric=False),
                verbose=1,
            ),
        )
        results = tuner.fit()
        num_errors = results.num_errors
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
    return SweepResult(sweep_id, tracking_uri, experiment, sweep.run_id, storage / sweep_id, len(trials), num_errors, md)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))
