"""A sweep of several methods whose knobs share names (focal, CB and IDS have a gamma; CB and DM a beta),
as a tidy frame and as a real MLflow store (the runner's tags and params, written with MlflowClient, no Ray).

Each method sits in its own accuracy band, 0.1 apart, so a table cell that pooled two methods would show it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

BASE = {"ce": 0.50, "focal": 0.60, "cb": 0.70, "dm": 0.40, "ids": 0.30}
CONFIGS = ([("ce", {})] + [("focal", {"gamma": g}) for g in (0.5, 2.0)]
           + [("cb", {"gamma": g, "beta": b}) for g in (0.5, 2.0) for b in (0.9, 0.99)]
           + [("dm", {"beta": b}) for b in (0.5, 2.0)] + [("ids", {"gamma": g}) for g in (0.1, 0.2)])
IMBALANCES = (10, 100)
SEEDS = (0, 1)
EPOCHS = 3
SELECTION = "Configurations were selected on the validation split (val_balanced_acc); the test split was not used."
SELECTION_WARNING = "The validation split holds 5 examples per class: the selection is noisy."


def acc(method: str, knobs: dict, imbalance: int, seed: int) -> float:
    knob_effect = 0.01 * knobs.get("gamma", 0) + 0.02 * knobs.get("beta", 0)
    return BASE[method] + knob_effect - 0.0001 * imbalance + 0.001 * seed


def label(method: str, knobs: dict) -> str:
    return " ".join([method] + [f"{k}={v}" for k, v in knobs.items()])


def tidy_frame() -> pd.DataFrame:
    """One row per trial. IDS with gamma=0.2 errored before its first epoch (no metrics)."""
    rows = []
    for method, knobs in CONFIGS:
        for imbalance in IMBALANCES:
            for seed in SEEDS:
                value = acc(method, knobs, imbalance, seed)
                if method == "ids" and knobs["gamma"] == 0.2:
                    value = math.nan
                rows.append({"method": method, "label": label(method, knobs), "seed": seed,
                             "config_id": f"{label(method, knobs)} {imbalance}", "stop_reason": "completed",
                             "method.name": method, "dataset.imbalance": imbalance, "train.epochs": 4,
                             **{f"method.{k}": v for k, v in knobs.items()},
                             "metric.test_acc": value, "metric.val_balanced_acc": value + 0.01})
    return pd.DataFrame(rows)


def curve(final: float, metric: str) -> list[float]:
    """Per-epoch values ending at ``final``: val rises steadily; test peaks at epoch 2 (best != final)."""
    if metric == "val_balanced_acc":
        return [final - 0.02 * (EPOCHS - e) for e in range(1, EPOCHS + 1)]
    return [final - 0.03, final + 0.015, final]


def wobble(method: str, seed: int) -> float:
    """A fixed per-(method, seed) offset in [-0.01, 0.01], so paired differences have a spread."""
    return 0.005 * ((7 * seed + sum(map(ord, method))) % 5 - 2)


def write_store(root: Path, methods: tuple[str, ...] = ("ce", "focal", "cb", "dm"), seeds: tuple[int, ...] = SEEDS,
                wobbly: bool = False) -> tuple[str, str]:
    """A finished sweep in ``root/mlflow.db``: (tracking uri, parent run id). Every trial has 3 epochs
    except DM beta=0.5, imbalance 100, seed 1, stopped by the scheduler after epoch 1. ``wobbly`` adds
    :func:`wobble` to every trial's accuracies."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("multi", artifact_location=(root / "mlartifacts").as_uri())
    parent = client.create_run(exp, run_name="multi-1", tags={
        "raysweep.role": "sweep", "raysweep.sweep_id": "multi-1", "raysweep.metric": "val_balanced_acc",
        "raysweep.direction": "max", "raysweep.axes": json.dumps(["dataset.imbalance"]),
        "raysweep.table": json.dumps({"rows": "config", "cols": "dataset.imbalance", "metric": "test_acc"}),
        "raysweep.selection": SELECTION, "raysweep.selection_warning": SELECTION_WARNING}).info.run_id
    index = 0
    for method, knobs in CONFIGS:
        if method not in methods:
            continue
        for imbalance in IMBALANCES:
            cid = f"{method}-{'-'.join(str(v) for v in knobs.values())}-{imbalance}"
            for seed in seeds:
                stopped = method == "dm" and knobs["beta"] == 0.5 and imbalance == 100 and seed == 1
                epochs = 1 if stopped else EPOCHS
                final = acc(method, knobs, imbalance, seed) + (wobble(method, seed) if wobbly else 0.0)
                run = client.create_run(exp, run_name=f"{cid}-s{seed}", tags={
                    "mlflow.parentRunId": parent, "raysweep.role": "trial", "raysweep.trial_key": f"{cid}-s{seed}",
                    "raysweep.config_id": cid, "raysweep.seed": str(seed), "raysweep.method": method,
                    "raysweep.label": label(method, knobs), "raysweep.phase": "search",
                    "raysweep.plan_index": str(index), "raysweep.epochs_run": str(epochs),
                    "raysweep.stop_reason": "stopped by the scheduler at epoch 1" if stopped else "completed"})
                params = {"method.name": method, "dataset.name": "gaussian", "dataset.imbalance": imbalance,
                          "train.epochs": EPOCHS, "seed": seed, **{f"method.{k}": v for k, v in knobs.items()}}
                metrics = [Metric(m, v, 1000 + e, e) for m, offset in (("val_balanced_acc", 0.01), ("test_acc", 0.0))
                           for e, v in enumerate(curve(final + offset, m)[:epochs], start=1)]
                metrics.append(Metric("train_loss", 1.0 - final, 1000, epochs))
                client.log_batch(run.info.run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()])
                client.set_terminated(run.info.run_id, "FINISHED")
                index += 1
    client.set_terminated(parent, "FINISHED")
    return uri, parent
