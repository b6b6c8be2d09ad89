"""Which model can train on which dataset, decided before anything starts.

``model: mlp`` on ``imagenet_lt`` used to pass validation, start Ray and MLflow, and fail in every trial.
:func:`check_model_on_data` builds the model for the dataset's input shape and input normalisation and runs
one forward of a batch of 2 (see :func:`probe_model` for where): a pair that cannot train is a ConfigError
naming ``model.name``; every pair it accepts trains (the contract test runs one step of each).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from trainables.data import load_source, split_inputs
from trainables.models import build_model
from trainables.params import ConfigError


def input_spec(dataset_cfg: Mapping[str, Any]) -> tuple[tuple[int, ...], Any, torch.dtype] | None:
    """(one input's shape, input_norm, dtype) of a resolved dataset config without reading its files: the
    source's ``inputs`` hook, or its data when it reads no files (a generated source from the machine's cache,
    as the trials load it: building mnist1d here cost 1.5-3 s per call, twice a preflight); None for a file
    source without the hook."""
    source, own, _ = split_inputs(dataset_cfg)
    if source.inputs is not None:
        shape, norm = source.inputs(own)
        return tuple(shape), norm, torch.uint8
    if source.preflight is not None:
        return None
    data = load_source(source, own)
    return tuple(data.x_train.shape[1:]), data.input_norm, data.x_train.dtype


# A model this small on inputs this small is probed on the CPU for real: building it and one forward of 2
# samples take 3-300 ms, while the meta device's first forward imports torch's compiler stack (its Python
# kernels are wrapped in torch._dynamo.disable): 1.4 s on a quiet 2-core machine, in every preflight.
CPU_PROBE_WEIGHTS = 25_000_000  # 100 MB of float32: ResNet-50 on 32 px
CPU_PROBE_INPUT_VALUES = 3 * 64 * 64
PROBE_OFF = {"bf16": False, "weights": None}  # model options a probe runs without (see probe_model)


def probe_model(model_cfg: Mapping[str, Any], shape: tuple[int, ...], num_classes: int) -> torch.nn.Module:
    """The resolved model built where one forward of 2 samples is cheapest: on the CPU when it has at most
    ``CPU_PROBE_WEIGHTS`` weights and its inputs at most ``CPU_PROBE_INPUT_VALUES`` values (the global RNG left
    as it was), else on the meta device (no memory, no compute). Feed it :func:`probe_batch`.

    The probe has no ``bf16`` autocast and no ``weights`` file (both change no shape; the weights file is
    checked on its own, as ``model.weights``)."""
    cfg = {**model_cfg, **{key: off for key, off in PROBE_OFF.items() if key in model_cfg}}
    with torch.device("meta"):
        model = build_model(cfg, shape, num_classes)
    if math.prod(shape) > CPU_PROBE_INPUT_VALUES or sum(p.numel() for p in model.parameters()) > CPU_PROBE_WEIGHTS:
        return model
    with torch.random.fork_rng(devices=[]):
        return build_model(cfg, shape, num_classes)


def probe_batch(model: torch.nn.Module, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A batch of 2 zeros of ``shape`` on the device of :func:`probe_model`'s model (2: BatchNorm refuses one
    sample in training mode)."""
    device = next(iter(model.parameters()), torch.empty(0)).device
    return torch.zeros((2, *shape), dtype=dtype, device=device)


def check_model_on_data(model_cfg: Mapping[str, Any], dataset_cfg: Mapping[str, Any], path: str = "model") -> None:
    """A ConfigError naming ``<path>.name`` when the resolved model cannot take the dataset's inputs."""
    spec = input_spec(dataset_cfg)
    if spec is None:
        return
    shape, norm, dtype = spec
    try:
        model = probe_model({**model_cfg, "input_norm": norm}, shape, 2)
        model.train()(probe_batch(model, shape, dtype))
    except ConfigError as err:
        raise ConfigError(f"{path}.name", f"{model_cfg['name']} cannot train on {dataset_cfg['name']}: "
                                          f"{err.message}") from None
    except (RuntimeError, ValueError, TypeError, IndexError, NotImplementedError) as err:
        raise ConfigError(f"{path}.name", f"{model_cfg['name']} cannot train on {dataset_cfg['name']} (inputs "
                                          f"{tuple(shape)}): {str(err).splitlines()[0]}") from None


@dataclass(frozen=True)
class ModelFootprint:
    """What a model costs per trial, measured in one forward of :func:`probe_model` (float32).

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
    """The :class:`ModelFootprint` of a resolved model config on inputs of ``shape`` (one forward of
    :func:`probe_model`)."""
    outputs: list[int] = []
    peaks: list[int] = []

    def hook(module: torch.nn.Module, inputs: tuple, output: Any) -> None:
        if isinstance(output, torch.Tensor) and not list(module.children()):
            size = output[0].numel() * 4  # one sample's
            outputs.append(size)
            first = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
            peaks.append(size + (first[0].numel() * 4 if first is not None and first.dim() else 0))

    model = probe_model({**model_cfg, "input_norm": norm}, shape, num_classes)
    handles = [m.register_forward_hook(hook) for m in model.modules()]
    model(probe_batch(model, shape, dtype))
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


__all__ = ["ModelFootprint", "check_model_on_data", "check_pairs", "input_spec", "model_footprint", "probe_batch",
           "probe_model"]
