"""The ``raysweep`` command line: run, resume, sync, plan, demo, table, report, ui, list.

Every error in user input is a one-line message naming the field, and exit code 2, before anything starts.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from importlib import resources
from pathlib import Path
from typing import NoReturn, Sequence

EXIT_USAGE = 2
PRESETS_DIR = Path(__file__).resolve().parent.parent / "search_spaces" / "presets"


class UsageError(Exception):
    """Bad input that is not a spec field (a missing sweep, an unknown table key)."""


def _load(path: str, overrides: list[str]):
    """(validated spec, phase 1's planned trials) of a spec file after ``--set`` overrides."""
    from raysweep.planning.plan import plan
    from raysweep.spec.loading import apply_overrides, load_spec_file
    from raysweep.spec.schema import validate_spec

    spec = validate_spec(apply_overrides(load_spec_file(path), overrides))
    return spec, plan(spec)


MAX_CALIBRATION_STEPS = 10_000


def _check_calibration_args(args: argparse.Namespace) -> None:
    """``plan --calibrate``'s own options, checked before the spec is read or anything is timed."""
    if not 1 <= args.steps <= MAX_CALIBRATION_STEPS:
        raise UsageError(f"--steps: must be an integer in [1, {MAX_CALIBRATION_STEPS}], got {args.steps}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device: cuda, but no CUDA GPU is visible here (torch.cuda.is_available() is False); "
                             "use auto or cpu")


def cmd_plan(args: argparse.Namespace) -> int:
    from raysweep.planning.plan import describe_plan

    if args.calibrate:
        _check_calibration_args(args)
    spec, trials = _load(args.spec, args.set)
    print("\n".join(describe_plan(spec, trials)))
    print("\n".join(_memory_lines(spec, trials)))
    if args.calibrate:
        print(_calibrated(spec, trials, args.steps, args.device))
    return 0


def _memory_lines(spec, trials) -> list[str]:
    """``plan``'s memory estimate (the fit check a run makes before anything starts), or why a run would refuse."""
    from raysweep.planning.plan import memory_fit
    from trainables.params import ConfigError

    try:
        report = memory_fit(spec, trials)
    except ConfigError as err:
        return [f"memory: a run would refuse this sweep: {err}"]
    return report.lines() if report is not None else []


def _calibrated(spec, trials, steps: int, device: str) -> str:
    """``plan --calibrate``: time a few steps of each distinct (method, dataset, model), estimate wall time."""
    import math

    import torch

    from raysweep.planning.calibrate import calibrate, default_overhead
    from raysweep.planning.estimate import estimate_wall_time
    from raysweep.planning.plan import group_trials, phases, planned_slots

    if not trials:
        return (f"calibrate: mode {spec.search.mode} draws its trials while the sweep runs; nothing to time before "
                "it (estimate with a grid or random spec of the same methods)")
    res = spec.resources
    cpu_threads = max(1, math.floor(res.cpu))
    calibration = calibrate(trials, steps=steps, device=device, threads=cpu_threads)
    groups = group_trials(spec, phases(spec, spec.name)[0], trials, planned_slots(spec))
    search = spec.search
    confirmed = (search.top_k + bool(search.baseline)) * len(spec.seeds) if search.two_phase else 0
    gpu = res.gpu or (1.0 / res.trials_per_gpu if res.trials_per_gpu else 0.0)
    estimate = estimate_wall_time(
        trials, calibration, cpus=os.cpu_count() or 1, cpu_per_trial=res.cpu, gpus=torch.cuda.device_count(),
        gpu_per_trial=gpu if torch.cuda.is_available() else 0.0, max_concurrent=res.max_concurrent,
        schedule=spec.scheduler, group_size=max(g.size for g in groups), confirm_trials=confirmed,
        overhead=default_overhead())
    return estimate.describe()


def _print_result(result) -> None:
    print()
    print(result.table_markdown)
    print()
    stopped = f", {result.num_non_finite} stopped on a non-finite loss" if result.num_non_finite else ""
    print(f"{result.num_trials} trials, {result.num_errors} failed{stopped}. Ray results: {result.storage_dir}")
    if result.headline:
        print(result.headline)
    if not result.tracking_ok:
        print(f"warning: MLflow was unreachable; when it is back, backfill it with:  raysweep sync "
              f"{result.storage_dir}")
    uri = result.tracking_uri
    print(f"MLflow: experiment {result.experiment!r}, parent run {result.parent_run_id}, store {uri}")
    print(f"Compare the configurations:  raysweep ui {result.storage_dir}")
    print(f"Rebuild the table: raysweep table --experiment {result.experiment} --tracking-uri {uri}")
    print(f"Full report (tables, plots, importance): raysweep report {result.experiment} --tracking-uri {uri}")


def cmd_run(args: argparse.Namespace) -> int:
    from raysweep.execution.runner import run_sweep

    spec, trials = _load(args.spec, args.set)
    result = run_sweep(spec, trials, verbose=args.verbose)
    _print_result(result)
    return 1 if result.num_errors else 0


def cmd_resume(args: argparse.Namespace) -> int:
    """Finish a sweep whose driver was killed: same trials, same MLflow runs, nothing rerun."""
    from raysweep.execution.runner import resume_sweep
    from raysweep.tracking.manifest import Manifest

    manifest = Manifest.find(args.sweep, args.storage).complete()
    result = resume_sweep(manifest, verbose=args.verbose)
    _print_result(result)
    return 1 if result.num_errors else 0


def cmd_sync(args: argparse.Namespace) -> int:
    """Backfill MLflow from Ray's storage: missing runs and epochs only, so running it twice changes nothing."""
    from raysweep.tracking.manifest import Manifest
    from raysweep.tracking.sync import sync_sweep

    report = sync_sweep(Manifest.find(args.sweep, args.storage).complete(), tracking_uri=args.tracking_uri)
    recovered = f" ({report.epochs_recovered} recovered from checkpoints)" if report.epochs_recovered else ""
    print(f"sweep {report.sweep_id}: {report.trials} trials in Ray's storage; created {report.runs_created} runs"
          f"{' and the parent run' if report.parent_created else ''}, logged {report.epochs_logged} epochs"
          f"{recovered}, ended {report.runs_closed} runs; parent run {report.parent_run_id} in {report.tracking_uri}")
    for key, epochs in sorted(report.missing.items()):
        print(f"raysweep: error: trial {key}: epochs {epochs} are in neither Ray's results, its checkpoints nor "
              "MLflow; they cannot be recovered", file=sys.stderr)
    if report.waiting:
        print(f"raysweep: error: MLflow stopped answering; {report.waiting} trials still incomplete: run sync again",
              file=sys.stderr)
    return 0 if report.complete else 1


def cmd_demo(args: argparse.Namespace) -> int:
    spec_path = resources.files("raysweep") / "specs" / "quickstart.yaml"
    args.spec = str(spec_path)
    return cmd_run(args)


def cmd_table(args: argparse.Namespace) -> int:
    from analysis.mlflow_io import SweepNotFound
    from analysis.tables import render
    from raysweep.reporting.report import sweep_table
    from raysweep.tracking.mlflow_store import resolve_tracking_uri
    from raysweep.tracking.store_check import require_store

    if not args.experiment and not args.parent:
        raise UsageError("table: give --experiment NAME or --parent RUN_ID")
    uri = resolve_tracking_uri(args.tracking_uri)
    require_store(uri)
    try:
        table = sweep_table(uri, experiment=args.experiment,
                            parent_run_id=args.parent, rows=args.rows, cols=args.cols, metric=args.metric,
                            where=tuple(args.where), baseline=args.baseline)
    except (SweepNotFound, KeyError) as err:
        raise UsageError(str(err).strip("'\"")) from None
    print(render(table, args.format))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from analysis.mlflow_io import SweepNotFound
    from analysis.tables import render
    from raysweep.reporting.report import build_report
    from raysweep.tracking.mlflow_store import resolve_tracking_uri
    from raysweep.tracking.store_check import require_store

    uri = resolve_tracking_uri(args.tracking_uri)
    require_store(uri)
    try:
        report = build_report(uri, args.sweep, args.out, rows=args.rows, cols=args.cols, metric=args.metric,
                              others=args.others, error=args.error, log=not args.no_log, where=tuple(args.where),
                              baseline=args.baseline)
    except (SweepNotFound, KeyError) as err:
        raise UsageError(str(err).strip("'\"")) from None
    print(render(report.main, args.format))
    print()
    timing = ", ".join(f"{k} {v:.1f}s" for k, v in report.seconds.items())
    print(f"{report.num_trials} trials, {len(report.tables)} tables, {len(report.files)} files in {report.out_dir} "
          f"({timing})")
    print(f"Page: {report.out_dir / 'report.html'}")
    if not args.no_log:
        print(f"Logged to parent run {report.parent_run_id} under report/; {len(report.summary_runs)} summary runs "
              f"({report.summary_created} new or updated)")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """The MLflow UI of a sweep's store, opened on the experiment's comparison view; stops cleanly on signals."""
    from raysweep.reporting.ui import experiment_link, runs_url, serve_ui
    from raysweep.tracking.manifest import Manifest
    from raysweep.tracking.mlflow_store import limit_http_retries, resolve_tracking_uri
    from raysweep.tracking.store_check import require_store

    uri, experiment = args.tracking_uri, args.experiment
    if args.sweep:  # a sweep folder (or id) of the Ray results: its manifest names the store and experiment
        manifest = Manifest.find(args.sweep)
        if not isinstance(manifest.data.get("tracking_uri"), str):
            raise UsageError(f"sweep: {manifest.path} is damaged: no tracking_uri (the store to open)")
        uri, experiment = manifest.data["tracking_uri"], experiment or manifest.data.get("experiment")
    uri = resolve_tracking_uri(uri)
    if uri.startswith(("http://", "https://")):
        limit_http_retries()  # a server that is down must not hold the answer for minutes
        print(f"{uri} is an MLflow server: its UI is already there, open "
              f"{runs_url(uri, *experiment_link(uri, experiment))}")
        return 0
    require_store(uri, "tracking_uri" if args.sweep else "--tracking-uri")
    return serve_ui(uri, experiment, host=args.host, port=args.port, open_browser=args.open)


def cmd_list(args: argparse.Namespace) -> int:
    from trainables.data import DATASETS, dataset_params
    from trainables.methods import METHODS
    from trainables.models import MODELS, model_params
    from trainables.params import describe

    if args.what == "presets":
        import yaml

        for path in sorted(PRESETS_DIR.glob("*.yaml")):
            description = (yaml.safe_load(path.read_text()) or {}).get("description", "")
            print(f"{path.stem:<28} {description}")
        return 0
    registry, knobs = {
        "methods": (METHODS, lambda n: METHODS.get(n).params),
        "datasets": (DATASETS, dataset_params),
        "models": (MODELS, model_params),
    }[args.what]
    for name in registry.names():
        print(f"{name:<20} {registry.describe(name)}")
        if args.verbose:
            for line in describe(knobs(name)):
                print(f"    {line}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from analysis.tables import FORMATS

    parser = argparse.ArgumentParser(prog="raysweep", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def with_spec(p: argparse.ArgumentParser, spec: bool = True) -> None:
        if spec:
            p.add_argument("spec", help="sweep spec (YAML); see search_spaces/presets/ for examples")
        p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                       help="override a spec value (parsed as YAML), e.g. --set train.epochs=5")

    def with_verbose(p: argparse.ArgumentParser) -> None:
        p.add_argument("-v", "--verbose", action="store_true",
                       help="Ray Tune's full trial table instead of the one-line progress display")

    def with_table_keys(p: argparse.ArgumentParser) -> None:
        p.add_argument("--rows", help="config, method, or a dotted key such as focal.gamma (default: the spec's)")
        p.add_argument("--cols", help="a dotted key such as dataset.imbalance (default: the spec's table.cols)")
        p.add_argument("--metric", help="e.g. test_acc, val_balanced_acc, test_few_acc, best_test_acc (peak over "
                                        "epochs), selected_test_acc (at the best validation epoch); default: the "
                                        "spec's")
        p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                       help="only trials with this config value, e.g. dataset.imbalance=100 (repeatable)")
        p.add_argument("--baseline", metavar="METHOD",
                       help="compare every cell with this method at the same setting; none = off (default: the "
                            "spec's table.baseline, auto = ce when the sweep has it)")
        p.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI or sqlite:///./mlflow.db")

    def with_sweep(p: argparse.ArgumentParser) -> None:
        p.add_argument("sweep", metavar="SWEEP", help="the sweep folder under the storage path, or its sweep id")
        p.add_argument("--storage", help="where to look for a sweep id (default: raysweep_results)")

    with_spec(p := sub.add_parser("run", help="run a sweep"))
    with_verbose(p)
    p.set_defaults(func=cmd_run)
    with_sweep(p := sub.add_parser("resume", help="finish a sweep whose driver died (restores Ray's state; "
                                                  "reruns nothing)"))
    with_verbose(p)
    p.set_defaults(func=cmd_resume)
    with_sweep(p := sub.add_parser("sync", help="backfill MLflow from Ray's storage after a tracking outage"))
    p.add_argument("--tracking-uri", help="default: the store the sweep logged to (from its manifest)")
    p.set_defaults(func=cmd_sync)
    with_spec(p := sub.add_parser("plan", help="print the planned trials and their cost; runs nothing"))
    p.add_argument("--calibrate", action="store_true",
                   help="time a few steps of each (method, dataset, model) here and estimate the wall time")
    p.add_argument("--steps", type=int, default=5, help="--calibrate: training steps timed per case")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto", help="--calibrate: where to time")
    p.set_defaults(func=cmd_plan)
    with_spec(p := sub.add_parser("demo", help="run the bundled quickstart sweep (every method vs CE, mnist1d-LT)"),
              spec=False)
    with_verbose(p)
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("table", help="rebuild a seed-averaged table from MLflow alone")
    p.add_argument("--experiment", help="MLflow experiment (the newest sweep in it)")
    p.add_argument("--parent", help="the sweep's parent run id (instead of --experiment)")
    with_table_keys(p)
    p.add_argument("--format", choices=FORMATS, default="md")
    p.set_defaults(func=cmd_table)
    p = sub.add_parser("report", help="tables, plots, importance and summary runs of a sweep, from MLflow alone")
    p.add_argument("sweep", metavar="EXPERIMENT_OR_PARENT_RUN",
                   help="experiment name (its newest sweep) or parent run id")
    with_table_keys(p)
    p.add_argument("--format", choices=FORMATS, default="md",
                   help="how the main table is printed; every format is written to --out")
    p.add_argument("--others", choices=("average", "best"), default="average",
                   help="one-way tables: average the other swept factors or hold them at the best configuration")
    p.add_argument("--error", action="store_true", help="show error %% (100 - accuracy %%) instead of accuracy")
    p.add_argument("--out", help="output folder (default: raysweep_reports/SWEEP_ID)")
    p.add_argument("--no-log", action="store_true", help="write files only; log nothing to MLflow")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("ui", help="the MLflow UI on 127.0.0.1, opened on a sweep's comparison view")
    p.add_argument("sweep", nargs="?", help="a sweep's folder or id: its store and experiment")
    p.add_argument("--experiment", help="the experiment to open (default: the sweep's)")
    p.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI or sqlite:///./mlflow.db")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000, help="first port tried; the next free one is used")
    p.add_argument("--open", action="store_true", help="also open the page in a browser")
    p.set_defaults(func=cmd_ui)
    p = sub.add_parser("list", help="what is registered: methods, datasets, models, presets")
    p.add_argument("what", choices=("methods", "datasets", "models", "presets"))
    p.add_argument("-v", "--verbose", action="store_true", help="also list each entry's knobs")
    p.set_defaults(func=cmd_list)
    return parser


def _interrupted(stop) -> int:
    """The one line a stopped sweep ends with: what stopped it and how to go on; exit 128 + the signal."""
    where = getattr(stop, "sweep_dir", None)
    hint = (f"; its trials keep their checkpoints: resume with  raysweep resume {where}" if where else
            "; no trial had started")
    print(f"raysweep: interrupted by {stop.name}{hint}", file=sys.stderr, flush=True)
    return stop.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    import signal

    from raysweep.environment import apply_defaults
    from raysweep.execution.disk import StorageFull, is_no_space
    from raysweep.execution.interrupt import Interrupted
    from trainables.params import ConfigError

    apply_defaults()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except StorageFull as full:
        print(f"raysweep: error: {full.message()}", file=sys.stderr, flush=True)
        return 1
    except OSError as err:  # a full disk outside a running sweep (before it started, or while resuming)
        if not is_no_space(err):
            raise
        print(f"raysweep: error: storage: no space left on device ({err.filename or err}); free space and run the "
              "command again", file=sys.stderr, flush=True)
        return 1
    except Interrupted as stop:
        return _interrupted(stop)
    except KeyboardInterrupt:  # Ctrl-C before the sweep took the signals (validation, preflight, Ray starting)
        return _interrupted(Interrupted(signal.SIGINT))
    except ConfigError as err:
        print(f"raysweep: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as err:
        print(f"raysweep: error: {err}", file=sys.stderr)
        return EXIT_USAGE


def exit_now(code: int) -> NoReturn:
    """Leave without the interpreter's teardown, which took 2-3 s after a sweep (garbage collection of
    everything torch, Ray and MLflow built). By the time a command returns, every result is in MLflow and in
    the manifest (SweepSession.finish), a Ray started here is stopped with all its processes
    (cluster.stop_ray) and no thread of ours runs: only Python's own buffers are left to write."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def entry() -> NoReturn:
    """The ``raysweep`` command: :func:`main`, then :func:`exit_now` (an exception still exits the slow way,
    with its traceback)."""
    exit_now(main())


if __name__ == "__main__":
    entry()
