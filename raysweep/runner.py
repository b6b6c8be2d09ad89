"""Run a planned sweep on Ray Tune: start (or join) Ray, create the MLflow parent run, fit, tabulate.

Order matters for the promise "bad input starts nothing": the spec is validated and planned before this
module is called; here storage and GPU availability are checked before any MLflow run is created.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from raysweep.cluster import check_storage_on_nodes, start_ray
from raysweep.manifest import Manifest
from raysweep.plan import PlannedTrial, confirm_plan
from raysweep.spec import spec_epochs
from raysweep.provenance import provenance
from raysweep.tracking import MlflowTrialLogger, SweepRun, limit_http_retries, resolve_tracking_uri
from trainables.data import resolve_dataset
from trainables.params import ConfigError


@dataclass
class SweepResult:
    sweep_id: str
    tracking_uri: str
    experiment: str
    parent_run_id: str | None
    storage_dir: Path
    num_trials: int
    num_errors: int
    table_markdown: str
    num_non_finite: int = 0
    tracking_ok: bool = True  # False: MLflow was unreachable at the end; `raysweep sync` backfills it


def check_storage(path: str) -> Path:
    """The resolved storage folder after checking it can be written; leaves nothing behind.

    An unwritable folder (a file in the way, no permission, a read-only file system) is a ConfigError
    naming ``storage``. Folders missing on the way are created for the probe and removed again: bad input
    elsewhere must not leave an empty results folder behind.
    """
    root = Path(path).expanduser().resolve()
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError("storage", f"cannot write to {root}: {existing} is a file, not a folder")
    created: list[Path] = []
    try:
        for folder in reversed([root, *root.parents]):
            if not folder.exists():
                folder.mkdir()
                created.append(folder)
        fd, probe = tempfile.mkstemp(prefix=".raysweep-write-test-", dir=root)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ConfigError("storage", f"cannot write to {root}: {err.strerror or err}") from None
    finally:
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()
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


@dataclass
class Session:
    """What both a new sweep and a resumed one need once Ray is up and the MLflow parent is known."""

    spec: Mapping[str, Any]
    manifest: Manifest
    sweep: SweepRun
    phase: "Phase"
    echo: Callable[[str], None]


def _connect(spec: Mapping[str, Any], storage: Path, echo: Callable[[str], None]) -> tuple[bool, dict, float | None, int]:
    """Start or join Ray and run the cluster preflights; (started here, per-trial resources, gpu fraction, slots)."""
    import ray

    started = start_ray(spec["cluster"]["address"], spec["cluster"]["connect_timeout_s"])
    try:
        per_trial, gpu_fraction = trial_resources(spec["resources"], ray.cluster_resources().get("GPU", 0), echo)
        if not started and spec["cluster"]["storage_check"]:
            created = not storage.exists()
            storage.mkdir(parents=True, exist_ok=True)
            try:
                check_storage_on_nodes(storage)
            except ConfigError:
                if created:
                    with contextlib.suppress(OSError):
                        storage.rmdir()
                raise
    except BaseException:
        ray.shutdown()  # stops a Ray started here; only disconnects from a cluster joined
        raise
    slots = max(1, int(ray.cluster_resources().get("CPU", 1) // per_trial["cpu"]))
    return started, per_trial, gpu_fraction, slots


def run_sweep(spec: Mapping[str, Any], trials: list[PlannedTrial], *, echo: Callable[[str], None] = print,
              raw_spec: Mapping[str, Any] | None = None) -> SweepResult:
    """Run a validated spec: its planned ``trials`` (or Optuna's draws), then phase 2 if ``two_phase``.

    ``raw_spec`` (the spec as written, after overrides) goes into the manifest for ``raysweep resume``;
    by default the validated spec is stored, which validates to the same sweep.
    """
    import ray

    storage = check_storage(spec["storage"])
    check_datasets([t.config["dataset"] for t in trials] or [resolve_dataset(spec["dataset"])])
    started, per_trial, gpu_fraction, slots = _connect(spec, storage, echo)
    try:
        limit_http_retries()
        sweep_id = f"{spec['name']}-{time.strftime('%Y%m%d-%H%M%S')}"
        tracking_uri = resolve_tracking_uri(spec["tracking"]["uri"])
        experiment = spec["tracking"]["experiment"] or spec["name"]
        sweep_dir = storage / sweep_id
        tags = {
            **provenance(), "raysweep.spec_name": spec["name"], "raysweep.axes": json.dumps(list(spec["axes"])),
            "raysweep.metric": spec["search"]["metric"], "raysweep.direction": spec["search"]["direction"],
            "raysweep.table": json.dumps(spec["table"]), "raysweep.storage": str(sweep_dir),
            "raysweep.mode": spec["search"]["mode"], "raysweep.two_phase": str(spec["search"]["two_phase"]),
        }
        sweep_dir.mkdir(parents=True, exist_ok=True)
        manifest = Manifest.new(sweep_dir, sweep_id=sweep_id, spec=_jsonable(_manifest_spec(spec, raw_spec)),
                                tracking_uri=tracking_uri, experiment=experiment,
                                parent_tags={k: str(v) for k, v in tags.items()})
        manifest.save()
        sweep = SweepRun.open(tracking_uri, experiment, sweep_id, tags)
        manifest.update(parent_run_id=sweep.run_id)
        # The store may answer only later (an outage, a concurrent first write): record the id then.
        sweep.on_parent = lambda run_id: manifest.update(parent_run_id=run_id)
        sweep.log_text(yaml.safe_dump(_jsonable(spec), sort_keys=False), "spec.yaml")
        session = Session(spec, manifest, sweep, Phase(spec, sweep, per_trial, gpu_fraction, slots, storage), echo)
        num_trials, num_errors, num_non_finite = _drive(session, trials, restore=False)
    finally:
        ray.shutdown()
    return _finish(session, num_trials, num_errors, num_non_finite)


def resume_sweep(manifest: Manifest, *, echo: Callable[[str], None] = print) -> SweepResult:
    """Finish a sweep whose driver died: restore each unfinished phase from Ray's state, then go on.

    Finished trials are not rerun; interrupted ones continue from their last checkpoint; MLflow keeps the
    same parent run and the same child runs (found by trial key), and epochs already logged are skipped.
    """
    import ray

    from raysweep.plan import plan
    from raysweep.spec import validate_spec

    data = manifest.data
    spec = validate_spec(data["spec"])
    if data["status"] != "running":
        echo(f"sweep {data['sweep_id']} already {data['status']}; nothing to resume")
    trials = plan(spec)
    search = manifest.phase("search")
    if search and search["trial_keys"] is not None and [t.key for t in trials] != search["trial_keys"]:
        raise ConfigError("spec", "the plan from the manifest's spec differs from the planned trials (a changed "
                                  "plugin or registry?); cannot resume this sweep")
    storage = manifest.storage_root
    check_datasets([t.config["dataset"] for t in trials] or [resolve_dataset(spec["dataset"])])
    started, per_trial, gpu_fraction, slots = _connect(spec, storage, echo)
    try:
        limit_http_retries()
        sweep = SweepRun.open(data["tracking_uri"], data["experiment"], data["sweep_id"], data["parent_tags"],
                              run_id=data["parent_run_id"])
        if sweep.run_id and sweep.run_id != data["parent_run_id"]:
            manifest.update(parent_run_id=sweep.run_id)
        sweep.on_parent = lambda run_id: manifest.update(parent_run_id=run_id)
        session = Session(spec, manifest, sweep, Phase(spec, sweep, per_trial, gpu_fraction, slots, storage), echo)
        num_trials, num_errors, num_non_finite = _drive(session, trials, restore=True)
    finally:
        ray.shutdown()
    return _finish(session, num_trials, num_errors, num_non_finite)


def _drive(session: Session, trials: list[PlannedTrial], restore: bool) -> tuple[int, int, int]:
    """Run (or restore) every phase the manifest has not finished; totals over both phases."""
    spec, manifest, phase, echo = session.spec, session.manifest, session.phase, session.echo
    sweep_id = manifest.data["sweep_id"]
    optuna_mode = spec["search"]["mode"] == "optuna"
    stages = [("search", sweep_id, trials)]
    if spec["search"]["two_phase"]:
        stages.append(("confirm", f"{sweep_id}-confirm", None))
    for name, experiment, planned in stages:
        record = manifest.phase(name)
        if record and record["status"] == "finished":
            continue
        if planned is None:  # phase 2: the top-k of phase 1, kept in the manifest
            best = [PlannedTrial.from_tune_config(c) for c in manifest.data["top_k"]]
            echo(f"phase 2: confirming {len(best)} configurations with {len(spec['seeds'])} seeds: "
                 + "; ".join(t.label for t in best))
            planned = confirm_plan(spec, best)
        if record is None:
            manifest.start_phase(name, experiment, None if (optuna_mode and name == "search") else [t.key for t in planned])
            _record_plan(session.sweep, manifest.sweep_dir, planned, name)
        results = phase.run(experiment, planned, name, restore=restore and record is not None)
        non_finite = sum(1 for r in results if (r.metrics or {}).get("non_finite_loss"))
        if name == "search" and spec["search"]["two_phase"]:
            best = top_configs(results, spec["search"]["metric"], spec["search"]["direction"], spec["search"]["top_k"],
                               spec["search"]["baseline"])
            manifest.update(top_k=[_jsonable(t.as_tune_config()) for t in best])
        manifest.finish_phase(name, len(results), results.num_errors, non_finite)
    phases = manifest.data["phases"].values()
    totals = tuple(sum(p[k] or 0 for p in phases) for k in ("num_trials", "num_errors", "num_non_finite"))
    manifest.update(status="finished" if not totals[1] else "failed")
    return totals


def _finish(session: Session, num_trials: int, num_errors: int, num_non_finite: int) -> SweepResult:
    """End the parent run and build the summary table (from MLflow), unless MLflow is unreachable."""
    from analysis.tables import to_frame, to_markdown
    from raysweep.report import sweep_table

    spec, sweep, manifest = session.spec, session.sweep, session.manifest
    session.phase.logger_flush()
    finished = sweep.finish("FINISHED" if not num_errors else "FAILED")
    tracking_uri, experiment = sweep.tracking_uri, sweep.experiment
    sweep_id, sweep_dir = manifest.data["sweep_id"], manifest.sweep_dir
    if sweep.run_id and manifest.data["parent_run_id"] != sweep.run_id:
        manifest.update(parent_run_id=sweep.run_id)
    if not finished or session.phase.waiting:
        md = (f"(no table: MLflow at {tracking_uri} was unreachable; every result is in {sweep_dir}. "
              f"When it is back: raysweep sync {sweep_dir})")
        return SweepResult(sweep_id, tracking_uri, experiment, sweep.run_id, sweep_dir, num_trials, num_errors, md,
                           num_non_finite, tracking_ok=False)
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
    return SweepResult(sweep_id, tracking_uri, experiment, sweep.run_id, sweep_dir, num_trials, num_errors, md,
                       num_non_finite)


def _record_plan(sweep: SweepRun, sweep_dir: Path, trials: list[PlannedTrial], phase: str) -> None:
    """The phase's planned trials, beside Ray's experiment state and as a parent-run artifact."""
    record = [{"trial_key": t.key, "config_id": t.config_id, "seed": t.seed, "label": t.label,
               "config": t.config} for t in trials]
    (sweep_dir / f"plan-{phase}.json").write_text(json.dumps(record, indent=1, default=str))
    sweep.log_text(json.dumps(record, indent=2, sort_keys=True, default=str), f"plan-{phase}.json")


def top_configs(results, metric: str, direction: str, k: int, baseline: str | None = None) -> list[PlannedTrial]:
    """The ``k`` best configurations of a phase, judged on the validation metric (never the test set).

    Trials that ran more epochs rank first (under ASHA they are the survivors), then by the metric's last
    reported value, ties going to the earlier planned trial; repeated draws of one configuration count once,
    at their best. With a ``baseline`` method, its best configuration is added when the top k lack it, so
    phase 2 always has the reference to compare against.
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
    ordered = [trial for _, trial in sorted(ranked.values(), key=lambda item: item[0], reverse=True)]
    best = ordered[:k]
    if baseline and not any(t.config["method"]["name"] == baseline for t in best):
        best += [t for t in ordered if t.config["method"]["name"] == baseline][:1]
    return best


class Phase:
    """Builds and fits one Tuner: planned trials as a grid of configs, or Optuna's define-by-run draws.

    ``run(..., restore=True)`` restores the phase's Ray experiment instead (after a driver crash), with
    the same trainable and resources, resuming unfinished and errored trials from their checkpoints.
    """

    def __init__(self, spec: Mapping[str, Any], sweep: SweepRun, per_trial: dict, gpu_fraction: float | None,
                 slots: int, storage: Path) -> None:
        self.spec, self.sweep, self.per_trial = spec, sweep, per_trial
        self.gpu_fraction, self.slots, self.storage = gpu_fraction, slots, storage
        self.loggers: list[MlflowTrialLogger] = []

    @property
    def waiting(self) -> int:
        """Trials whose MLflow logging is still incomplete (the store was unreachable)."""
        return sum(logger.flush_all() for logger in self.loggers) if self.loggers else 0

    def logger_flush(self) -> None:
        for logger in self.loggers:
            logger.flush_all()

    def _tune_config(self, trial: PlannedTrial) -> dict[str, Any]:
        extra = {"gpu_fraction": self.gpu_fraction} if self.gpu_fraction else {}
        return {**trial.as_tune_config(), **extra}

    def _trainable(self):
        from ray import tune

        from trainables.tune import run_trial

        return tune.with_resources(run_trial, self.per_trial)

    def run(self, name: str, trials: list[PlannedTrial], phase: str, restore: bool = False):
        # Tune's legacy reporter lets us show the trial label instead of the whole nested config.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        from ray import tune

        path = self.storage / name
        if restore and tune.Tuner.can_restore(str(path)):
            tuner = tune.Tuner.restore(str(path), trainable=self._trainable(), resume_errored=True)
            # Tune unpickles its callbacks with the experiment; log through this session's store connection.
            for callback in tuner._local_tuner.get_run_config().callbacks or []:
                if isinstance(callback, MlflowTrialLogger):
                    callback.sweep = self.sweep
                    self.loggers.append(callback)
            return tuner.fit()
        return self._tuner(name, trials, phase).fit()

    def _tuner(self, name: str, trials: list[PlannedTrial], phase: str):
        from ray import tune
        from ray.tune import CLIReporter
        from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

        spec, search = self.spec, self.spec["search"]
        optuna_mode = phase == "search" and search["mode"] == "optuna"
        max_epochs = max([t.config["train"]["epochs"] for t in trials] + [spec_epochs(spec)])
        scheduler = FIFOScheduler()
        if phase == "search" and spec["scheduler"]["name"] == "asha":
            scheduler = ASHAScheduler(time_attr="epoch", max_t=max_epochs, grace_period=spec["scheduler"]["grace_period"],
                                      reduction_factor=spec["scheduler"]["reduction_factor"])
        if optuna_mode:
            param_space, search_alg, num_samples = {}, self._optuna_searcher(name), search["num_samples"]
        else:
            param_space = {"trial": tune.grid_search([self._tune_config(t) for t in trials]),
                           "plugins": list(spec.get("plugins") or []), "experiment_dir": str(self.storage / name)}
            search_alg, num_samples = None, 1
        # A searcher alone keeps one trial pending at a time: cap concurrency at the free slots instead.
        concurrent = self.spec["resources"]["max_concurrent"] or (self.slots if optuna_mode else None)
        logger = MlflowTrialLogger(self.sweep)
        self.loggers.append(logger)
        return tune.Tuner(
            self._trainable(),
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
                callbacks=[logger],
                progress_reporter=CLIReporter(
                    parameter_columns={"trial/label": "config", "trial/seed": "seed"},
                    metric_columns={"epoch": "epoch", search["metric"]: search["metric"], "train_loss": "train_loss"},
                    max_report_frequency=15, sort_by_metric=False),
                verbose=1,
            ),
        )

    def _optuna_searcher(self, name: str):
        """OptunaSearch (TPE) over a define-by-run space: the method first, then its own sub-space."""
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        space = OptunaSpace(dict(self.spec), self.spec["seeds"][0], self.gpu_fraction, list(self.spec.get("plugins") or []),
                            str(self.storage / name))
        return OptunaSearch(space=space, metric=self.spec["search"]["metric"], mode=self.spec["search"]["direction"],
                            sampler=optuna.samplers.TPESampler(seed=self.spec["search"]["seed"]))


class OptunaSpace:
    """Define-by-run function for OptunaSearch: draws a method and its knobs, returns the resolved trial.

    A module-level class (not a closure) because Tune pickles the searcher with its experiment state.
    """

    def __init__(self, spec: Mapping[str, Any], seed: int, gpu_fraction: float | None,
                 plugins: list[str] | None = None, experiment_dir: str | None = None) -> None:
        self.spec, self.seed, self.gpu_fraction, self.plugins = spec, seed, gpu_fraction, plugins or []
        self.experiment_dir = experiment_dir

    def __call__(self, ot: Any) -> dict[str, Any]:
        from raysweep.plan import sampled_trial
        from search_spaces.sampling import sample

        draw = sample(ot, self.spec["methods_raw"], self.spec["search"]["tune_train"])
        trial = sampled_trial(self.spec, draw, self.seed, ot.number).as_tune_config()
        return {"trial": {**trial, **({"gpu_fraction": self.gpu_fraction} if self.gpu_fraction else {})},
                "plugins": self.plugins, "experiment_dir": self.experiment_dir}


def _manifest_spec(spec: Mapping[str, Any], raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """The spec to re-validate on resume: as written if given, else the validated one in input form."""
    if raw is not None:
        return dict(raw)
    keep = ("name", "description", "dataset", "model", "train", "axes", "seeds", "search", "scheduler",
            "resources", "tracking", "storage", "failure", "table", "cluster", "plugins")
    return {**{k: spec[k] for k in keep if k in spec}, "methods": spec["methods_raw"]}


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))
