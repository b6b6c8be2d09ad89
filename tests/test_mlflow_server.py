"""A real `mlflow server` (sqlite, then PostgreSQL backend) on a free loopback port: a sweep and its report
logged over HTTP, checked through the server's REST API, once after `raysweep run` alone (the experiment's
kind and saved view, the parent's headline, seed-averaged summary runs against a hand computation) and once
after `raysweep report`; MLflow's batch limits on a run with >100 params.

PostgreSQL comes from the Debian packages (`.ci/run` installs them); the test starts its own server in a
temporary folder. Outside CI (env CI unset) a machine without PostgreSQL skips that case.
"""

import json
import statistics
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from _cli import raysweep
from _procs import Tracked, start_mlflow_server

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.server]

SPEC = {
    "name": "srv",
    # 100 classes: no per-class metric keys (too many) but a per-class CSV artifact, everything else as usual.
    "dataset": {"name": "gaussian", "num_classes": 100, "imbalance": 1, "samples_per_class": 40,
                "test_per_class": 10, "meta_per_class": 5},
    "model": {"name": "mlp", "width": 32},
    "train": {"epochs": 2, "batch_size": 128},
    "methods": {"focal": {"gamma": [0.5, 2.0]}},
    "seeds": 2,
    "search": {"mode": "grid", "metric": "val_balanced_acc"},
    "resources": {"cpu": 0.5},
    "table": {"rows": "config", "metric": "test_acc"},
}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory):
    """`mlflow server` on a free loopback port with the backend of the param; artifacts proxied by it."""
    root = tmp_path_factory.mktemp(f"server-{request.param}")
    backend = (f"sqlite:///{root / 'mlflow.db'}" if request.param == "sqlite"
               else request.getfixturevalue("postgres_uri"))
    tracked = Tracked()
    try:
        url, _ = start_mlflow_server(tracked, root, backend, root / "server.log")
        yield SimpleNamespace(url=url, root=root, backend=request.param)
    finally:
        tracked.stop()


def api(url: str, path: str, body: dict | None = None) -> dict:
    """One MLflow REST call: GET with a query string, or POST with a JSON body."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{url}/api/2.0/mlflow/{path}", data=data,
                                 headers={"Content-Type": "application/json"}, method="POST" if data else "GET")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())



@pytest.fixture(scope="module")
def swept(server):
    """A small sweep with `tracking.uri` on the server, then `raysweep report` through the same server;
    ``after_run`` is what the REST API showed between the two (the experiment and its runs)."""
    (server.root / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    run = raysweep("run", "spec.yaml", "--set", f"tracking.uri={server.url}", cwd=server.root)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    after_run = SimpleNamespace(experiment=_experiment(server.url, "srv"), runs=_runs(server.url, "srv"))
    rep = raysweep("report", "srv", "--tracking-uri", server.url, "--out", "out", cwd=server.root)
    assert rep.returncode == 0, rep.stdout[-3000:] + rep.stderr[-3000:]
    return SimpleNamespace(**vars(server), after_run=after_run)


def _experiment(url: str, experiment: str) -> dict:
    return api(url, f"experiments/get-by-name?experiment_name={experiment}")["experiment"]


def _runs(url: str, experiment: str) -> list[dict]:
    exp = _experiment(url, experiment)
    return api(url, "runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 1000}).get("runs", [])


def _tags(run: dict) -> dict:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def _metrics(run: dict) -> dict[str, float]:
    return {m["key"]: m["value"] for m in run["data"].get("metrics", [])}


def _params(run: dict) -> dict[str, str]:
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


def _by_role(runs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for run in runs:
        out.setdefault(_tags(run).get("raysweep.role"), []).append(run)
    return out


def _history(url: str, run_id: str, key: str) -> dict[int, float]:
    """step -> value of one metric of one run."""
    found = api(url, f"metrics/get-history?run_id={run_id}&metric_key={key}").get("metrics", [])
    return {int(m.get("step", 0)): m["value"] for m in found}


def _artifacts(url: str, run_id: str, path: str = "") -> set[str]:
    listing = api(url, f"artifacts/list?run_id={run_id}&path={path}")
    return {f["path"] for f in listing.get("files", [])}


def test_sweep_and_report_through_the_server_rest_api(swept):
    url = swept.url
    runs = _runs(url, "srv")
    by_role = {}
    for run in runs:
        by_role.setdefault(_tags(run).get("raysweep.role"), []).append(run)
    assert len(by_role["sweep"]) == 1 and len(by_role["trial"]) == 4 and len(by_role["summary"]) == 2
    parent_id = by_role["sweep"][0]["info"]["run_id"]
    for child in by_role["trial"] + by_role["summary"]:
        assert _tags(child)["mlflow.parentRunId"] == parent_id
    trial = by_role["trial"][0]
    metric_keys = {m["key"] for m in trial["data"]["metrics"]}
    assert {"val_balanced_acc", "test_acc", "train_loss"} <= metric_keys
    assert not any(k.startswith("test_acc_class") for k in metric_keys), "100 classes: no per-class metric keys"
    params = {p["key"]: p["value"] for p in trial["data"]["params"]}
    assert params["dataset.num_classes"] == "100"
    assert {"config.json", "per_class_test_acc.csv"} <= _artifacts(url, trial["info"]["run_id"]), \
        "100 classes: the final per-class accuracy is one CSV artifact"
    assert {"spec.yaml", "plan-search.json", "report"} <= _artifacts(url, parent_id)
    assert {"report/tables", "report/plots", "report/report.html", "report/importance.csv"} \
        <= _artifacts(url, parent_id, "report")
    assert {"report/tables/main.md", "report/tables/main.tex", "report/tables/main.html"} \
        <= _artifacts(url, parent_id, "report/tables")
    assert {"report/plots/main.png", "report/plots/learning_curves_test_acc.png"} \
        <= _artifacts(url, parent_id, "report/plots")
    summary = {m["key"]: m["value"] for m in by_role["summary"][0]["data"]["metrics"]}
    assert "n_seeds" not in summary and 0 <= summary["test_acc"] <= 100, "percent, as in the tables"


def test_after_run_alone_the_ui_has_the_kind_the_view_the_headline_and_summaries(swept):
    """Issue 14: before any `raysweep report`, the experiment opens on MLflow's training-runs view with
    raysweep's saved comparison view, one summary run per configuration holds the seed mean, sample std
    (n-1) and n of its trials' final metrics and their per-epoch mean curve, and the parent run holds the
    headline of the best configuration by the search metric. `report` afterwards keeps those summary runs."""
    url, seen = swept.url, swept.after_run
    exp_tags = {t["key"]: t["value"] for t in seen.experiment.get("tags", [])}
    assert exp_tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(exp_tags["mlflow.sharedViewState.raysweep"])
    assert view["searchFilter"] == "tags.`raysweep.role` != 'trial'"
    assert [key["groupByData"] for key in view["groupBy"]["groupByKeys"]] == ["raysweep.role"]

    by_role = _by_role(seen.runs)
    assert len(by_role["sweep"]) == 1 and len(by_role["trial"]) == 4
    parent = by_role["sweep"][0]
    parent_id = parent["info"]["run_id"]
    trials: dict[str, list[dict]] = {}
    for trial in by_role["trial"]:
        trials.setdefault(_tags(trial)["raysweep.config_id"], []).append(trial)
    summaries = {_tags(run)["raysweep.config_id"]: run for run in by_role["summary"]}
    assert len(by_role["summary"]) == len(summaries) == 2 and set(summaries) == set(trials)

    for cid, summary in summaries.items():
        children, got, tags = trials[cid], _metrics(summary), _tags(summary)
        assert tags["mlflow.parentRunId"] == parent_id and tags["raysweep.n_seeds"] == "2"
        assert set(tags["raysweep.trial_runs"].split(",")) == {c["info"]["run_id"] for c in children}
        assert _params(summary)["n_seeds"] == str(len(children)) == "2" and "n_seeds" not in got
        finals = [_metrics(c) for c in children]
        keys = set.intersection(*(set(f) for f in finals))
        assert {"val_balanced_acc", "test_acc", "train_loss"} <= keys
        for key in sorted(keys):
            values = [f[key] for f in finals]
            scale = 100.0 if key.endswith("acc") else 1.0  # accuracies in percent on summary runs
            assert got[key] == pytest.approx(scale * statistics.fmean(values), rel=1e-9, abs=1e-12), key
            assert got[f"{key}_std"] == pytest.approx(scale * statistics.stdev(values), rel=1e-9, abs=1e-12), key
        params = _params(summary)
        assert params["method.gamma"] == _params(children[0])["method.gamma"] == _params(children[1])["method.gamma"]
        curves = [_history(url, c["info"]["run_id"], "test_acc") for c in children]
        steps = set(curves[0])
        assert steps == set(curves[1]) and len(steps) == SPEC["train"]["epochs"]
        curve = _history(url, summary["info"]["run_id"], "curve.test_acc")
        assert curve == pytest.approx({s: 100 * statistics.fmean(c[s] for c in curves) for s in steps}, rel=1e-9)

    # The headline: the configuration with the best seed-mean search metric, its means and stds on the parent.
    means = {cid: _metrics(run)["val_balanced_acc"] for cid, run in summaries.items()}
    tags, head = _tags(parent), _metrics(parent)
    best = tags["raysweep.best_config_id"]
    assert means[best] == max(means.values())
    assert tags["raysweep.best_config"].endswith(f"[{best}]")
    assert tags["raysweep.best_summary_run"] == summaries[best]["info"]["run_id"]
    best_metrics = _metrics(summaries[best])
    assert tags["raysweep.best_n_seeds"] == "2" and "best.n_seeds" not in head
    for name in ("val_balanced_acc", "test_acc"):
        assert head[f"best.{name}_mean"] == pytest.approx(best_metrics[name], rel=1e-9)
        assert head[f"best.{name}_std"] == pytest.approx(best_metrics[f"{name}_std"], rel=1e-9)

    # `raysweep report` afterwards created no summary run of its own: the same runs, the same headline.
    now = _by_role(_runs(url, "srv"))
    assert {r["info"]["run_id"] for r in now["summary"]} == {r["info"]["run_id"] for r in by_role["summary"]}
    assert _tags(now["sweep"][0])["raysweep.best_config_id"] == best


def test_more_than_100_params_and_1000_metrics_per_run_are_chunked(server):
    """The trial logger against the real server: 250 params, 1500 metrics in one epoch, a 700-char value."""
    from mlflow import MlflowClient

    from raysweep.tracking.mlflow_store import SweepRun
    from raysweep.tracking.trial_logger import TrialLogger, TuneCallback
    from raysweep.trials import PlannedTrial
    from trainables.planned import Envelope

    config = {"method": {"name": "focal", **{f"k{i}": i for i in range(200)}},
              "dataset": {"name": "gaussian", "note": "x" * 700, **{f"d{i}": float(i) for i in range(48)}},
              "train": {"epochs": 1}, "seed": 0}
    planned = PlannedTrial(config, "c0ffee0000", 0, "focal wide")
    sweep = SweepRun.create(server.url, "limits", "limits-1", {})
    logger = TuneCallback(TrialLogger(sweep))
    trial = SimpleNamespace(config=Envelope.of([planned]).to_config(), trial_id="t0")
    logger.on_trial_start(0, [], trial)
    result = {"epoch": 1, "timestamp": int(time.time()), **{f"m{i}": i / 1500 for i in range(1500)}}
    logger.on_trial_result(0, [], trial, result)
    logger.on_trial_complete(0, [], trial)
    TuneCallback(TrialLogger(sweep)).on_trial_start(0, [], trial)  # a resume: same run
    runs = _runs(server.url, "limits")
    children = [r for r in runs if _tags(r).get("raysweep.role") == "trial"]
    assert len(children) == 1
    run = children[0]
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert len(params) == 253 and len(params["dataset.note"]) == 500
    assert len(run["data"]["metrics"]) == 1501
    full = MlflowClient(server.url).download_artifacts(run["info"]["run_id"], "config.json", str(server.root))
    assert json.loads(Path(full).read_text())["dataset"]["note"] == "x" * 700
