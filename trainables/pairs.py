"""Which model can train on which dataset, decided before anything starts.

``model: mlp`` on ``imagenet_lt`` used to pass validation, start Ray and MLflow, and fail in every trial.
:func:`check_model_on_data` builds the model on PyTorch's ``meta`` device (no memory, no compute) for the
dataset's input shape and input normalisation and runs one forward of a uint8 batch: a pair that cannot
train is a ConfigError naming ``model.name``; every pair it accepts trains (the contract test runs one
step of each).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ModelFootprint:
    """What a model costs per trial, measured on the meta device (float32).

    ``state_bytes``: weights, gradients and SGD momentum (3 x parameters). ``train_bytes_per_sample``: every
    layer's output, kept for the backward pass. ``eval_bytes_per_sample``: the largest (input + output) of one
    layer, the peak of a no-grad forward (ResNet-10's first convolution at 224 px: 3.2 MB a sample).
    """

    params: int
    state_bytes: int
    train_bytes_per_sample: int
    eval_bytes_per_sample: int


def model_footprint(model_cfg: Mapping[str, Any], shape: tuple[int, ...], norm: Any,
                    dtype: torch.dtype = torch.uint8, num_classes: int = 2) -> ModelFootprint:
    """The :class:`ModelFootprint` of a resolved model config on inputs of ``shape`` (one forward on meta)."""
    cfg = {**model_cfg, "input_norm": norm}
    for key, off in (("bf16", False), ("weights", None)):
        if key in cfg:
            cfg[key] = off
    outputs: list[int] = []
    peaks: list[int] = []

    def hook(module: torch.nn.Module, inputs: tuple, output: Any) -> None:
        if isinstance(output, torch.Tensor) and not list(module.children()):
            size = output[0].numel() * 4  # one sample's
            outputs.append(size)
            first = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
            peaks.append(size + (first[0].numel() * 4 if first is not None and first.dim() else 0))

    with torch.device("meta"):
        model = build_model(cfg, shape, num_classes)
        handles = [m.register_forward_hook(hook) for m in model.modules()]
        model(torch.empty((2, *shape), dtype=dtype))  # 2: BatchNorm refuses one sample in training mode
    for handle in handles:
        handle.remove()
    params = sum(p.numel() for p in model.parameters())
    return ModelFootprint(params, 3 * 4 * params, sum(outputs), max(peaks, default=0))


def check_pairs(trial_configs: list[Mapping[str, Any]]) -> None:
    """:func:`check_model_on_data` once per distinct (model, dataset) of resolved trial configs."""
    seen = set()
    for cfg in trial_configs:
        key = json.dumps([cfg["model"], cfg["dataset"]], sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            check_model_on_data(cfg["model"], cfg["dataset"])


__all__ = ["ModelFootprint", "check_model_on_data", "check_pairs", "input_spec", "model_footprint"]
