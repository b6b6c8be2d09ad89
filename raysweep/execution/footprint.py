"""What a sweep's trials will allocate and run, checked before Ray starts: bytes against this machine's
memory, the model against the dataset's input shape, the training device against what is here.

``dataset: {name: gaussian, dim: 1000000000}`` once failed with a 29.8 GiB allocation traceback, an MLP of
width 10^9 took the machine down, ``resnet32`` on a vector dataset and ``train.device: cuda`` without a GPU
failed in every trial after Ray and MLflow had started. Here each distinct (dataset, model) of the planned
trials is sized from its declared shape (``DatasetSource.shape``: nothing is loaded), the model is built on
PyTorch's meta device (no memory) and one batch shape is run through it; each problem is a ConfigError
naming the field, in well under a second.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

from raysweep.spec.schema import Spec
from raysweep.trials import PlannedTrial
from trainables.data import DATASETS, resolve_dataset
from trainables.models import build_model, resolve_model
from trainables.params import ConfigError

BYTES_PER_VALUE = 4  # float32 inputs and weights
# A trial holds each weight about four times: the weights, their gradients, SGD's momentum and the copy
# the meta-learning methods (MW-Net, GDW, Difficulty-Net) take per step.
TRAINING_COPIES = 4


def machine_memory() -> int:
    """This machine's physical memory in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def distinct_cases(spec: Spec, trials: list[PlannedTrial]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The distinct resolved (dataset, model) pairs of the planned trials (of the spec itself when a sampling
    mode draws its trials while it runs)."""
    pairs = [(t.config["dataset"], t.config["model"]) for t in trials] or \
        [(resolve_dataset(spec.dataset), resolve_model(spec.model))]
    seen: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for dataset, model in pairs:
        seen.setdefault(json.dumps([dataset, model], sort_keys=True, default=str), (dataset, model))
    return list(seen.values())


def check_footprint(spec: Spec, trials: list[PlannedTrial], memory: int | None = None) -> None:
    """Every distinct (dataset, model): the dataset's bytes and the model's training bytes fit ``memory``
    (default: this machine's), and the model takes the dataset's input shape; else a ConfigError."""
    memory = memory or machine_memory()
    for dataset, model in distinct_cases(spec, trials):
        source = DATASETS.get(dataset["name"])
        if source.shape is None:
            continue
        shape, examples, classes = source.shape({k: dataset[k] for k in source.params})
        data_bytes = examples * math.prod(shape) * BYTES_PER_VALUE
        if data_bytes > memory:
            raise ConfigError("dataset", f"{dataset['name']} of {examples:,} examples of shape {tuple(shape)} needs "
                                         f"about {gib(data_bytes)} as float32; this machine has {gib(memory)}")
        check_model(model, dataset["name"], tuple(shape), classes, memory)


def meta_model(model_cfg: Mapping[str, Any], shape: tuple[int, ...], classes: int):
    """The model built on the meta device (no memory), or None when it cannot be built there (e.g. it loads
    weights); the model's own refusal of the input shape is raised."""
    import torch

    try:
        with torch.device("meta"):
            return build_model(model_cfg, shape, classes)
    except ConfigError:  # the model's own check of the input shape
        raise
    except Exception:  # not ours to judge
        return None


def case_weights(dataset: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> int | None:
    """The number of weights of ``model_cfg`` on ``dataset`` (resolved sections), None when unknown."""
    source = DATASETS.get(dataset["name"])
    if source.shape is None:
        return None
    shape, _, classes = source.shape({k: dataset[k] for k in source.params})
    model = meta_model(model_cfg, tuple(shape), classes)
    return None if model is None else sum(p.numel() for p in model.parameters())


def check_model(model_cfg: Mapping[str, Any], dataset: str, shape: tuple[int, ...], classes: int, memory: int
                ) -> None:
    """Build the model on the meta device, size it, and run one batch of ``shape`` through it (where
    :func:`trainables.pairs.probe_model` says: on the CPU when it is small)."""
    from trainables.pairs import probe_batch, probe_model

    model = meta_model(model_cfg, shape, classes)
    if model is None:
        return
    weights = sum(p.numel() for p in model.parameters())
    need = weights * BYTES_PER_VALUE * TRAINING_COPIES
    if need > memory:
        raise ConfigError("model", f"{model_cfg['name']} has {weights:,} weights: training it needs about {gib(need)}; "
                                   f"this machine has {gib(memory)}")
    try:
        model = probe_model(model_cfg, shape, classes)
        model.train()(probe_batch(model, shape))
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        if "meta" in first.lower() or "device" in first.lower():  # an op the meta device lacks: not a misfit
            return
        raise ConfigError("model", f"{model_cfg['name']} does not take {dataset}'s inputs of shape {shape} "
                                   f"({first}); pick a model for that input (raysweep list models)") from None


def check_device(spec: Spec, trials: list[PlannedTrial]) -> None:
    """``train.device: cuda`` on a machine (a local Ray) without a CUDA GPU: refused before Ray starts."""
    if spec.cluster.address or os.environ.get("RAY_ADDRESS"):
        return  # the GPUs are the cluster's: the resources preflight checks them once Ray is up
    wanted = {t.config["train"]["device"] for t in trials} or {spec.train.get("device", "auto")}
    if "cuda" in wanted:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("train.device", "is 'cuda' but no CUDA GPU is visible here (torch.cuda.is_available() "
                                              "is False); use auto or cpu")
