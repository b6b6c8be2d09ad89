"""Which model can train on which dataset, decided before anything starts.

``model: mlp`` on ``imagenet_lt`` used to pass validation, start Ray and MLflow, and fail in every trial.
:func:`check_model_on_data` builds the model on PyTorch's ``meta`` device (no memory, no compute) for the
dataset's input shape and input normalisation and runs one forward of a uint8 batch: a pair that cannot
train is a ConfigError naming ``model.name``; every pair it accepts trains (the contract test runs one
step of each).
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import torch

from trainables.data import split_inputs
from trainables.models import build_model
from trainables.params import ConfigError


def input_spec(dataset_cfg: Mapping[str, Any]) -> tuple[tuple[int, ...], Any, torch.dtype] | None:
    """(one input's shape, input_norm, dtype) of a resolved dataset config without reading its files: the
    source's ``inputs`` hook, or its data when it reads no files; None for a file source without the hook."""
    source, own, _ = split_inputs(dataset_cfg)
    if source.inputs is not None:
        shape, norm = source.inputs(own)
        return tuple(shape), norm, torch.uint8
    if source.preflight is not None:
        return None
    data = source.load(own)
    return tuple(data.x_train.shape[1:]), data.input_norm, data.x_train.dtype


def check_model_on_data(model_cfg: Mapping[str, Any], dataset_cfg: Mapping[str, Any], path: str = "model") -> None:
    """A ConfigError naming ``<path>.name`` when the resolved model cannot take the dataset's inputs."""
    spec = input_spec(dataset_cfg)
    if spec is None:
        return
    shape, norm, dtype = spec
    cfg = {**model_cfg, "input_norm": norm}
    if "bf16" in cfg:
        cfg["bf16"] = False  # no autocast on the meta device; it changes no shape
    if "weights" in cfg:
        cfg["weights"] = None  # the weights file is checked on its own (model.weights); here only the shapes
    try:
        with torch.device("meta"):
            model = build_model(cfg, shape, 2)
            model.train()
            model(torch.empty((2, *shape), dtype=dtype))
    except ConfigError as err:
        raise ConfigError(f"{path}.name", f"{model_cfg['name']} cannot train on {dataset_cfg['name']}: "
                                          f"{err.message}") from None
    except (RuntimeError, ValueError, TypeError, IndexError, NotImplementedError) as err:
        raise ConfigError(f"{path}.name", f"{model_cfg['name']} cannot train on {dataset_cfg['name']} (inputs "
                                          f"{tuple(shape)}): {str(err).splitlines()[0]}") from None


def check_pairs(trial_configs: list[Mapping[str, Any]]) -> None:
    """:func:`check_model_on_data` once per distinct (model, dataset) of resolved trial configs."""
    seen = set()
    for cfg in trial_configs:
        key = json.dumps([cfg["model"], cfg["dataset"]], sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            check_model_on_data(cfg["model"], cfg["dataset"])


__all__ = ["check_model_on_data", "check_pairs", "input_spec"]
