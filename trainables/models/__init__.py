"""Models, registered by name. Each takes (input_shape, num_classes, options) and returns an nn.Module.

Every model ends in :func:`classifier_head`, so the ``normed_classifier`` option (LDAM's cosine
classifier) works the same way for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from trainables.params import Param, resolve, resolve_named
from trainables.registry import Registry, discover


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: ``build(input_shape, num_classes, options)`` plus its own options.

    Registered with ``MODELS.add(ModelSpec(name, description, build, params))`` in a module of this package.
    """

    name: str
    description: str
    build: Callable[[tuple[int, ...], int, Mapping[str, Any]], nn.Module]
    params: Mapping[str, Param] = field(default_factory=dict)


MODELS: Registry[ModelSpec] = Registry("model")

COMMON_MODEL_PARAMS: dict[str, Param] = {
    "normed_classifier": Param(False, (bool,), help="cosine classifier (LDAM); methods may switch it on"),
}


class NormedLinear(nn.Module):
    """Cosine classifier: logits = normalize(x) @ normalize(W) (LDAM's ``use_norm=True``)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features).uniform_(-1, 1))
        self.weight.data.renorm_(2, 1, 1e-5).mul_(1e5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=0)


def classifier_head(in_features: int, num_classes: int, normed: bool) -> nn.Module:
    return NormedLinear(in_features, num_classes) if normed else nn.Linear(in_features, num_classes)


def model_params(name: str) -> dict[str, Param]:
    return {**COMMON_MODEL_PARAMS, **MODELS.get(name).params}


def resolve_model(raw: Any, path: str = "model") -> dict[str, Any]:
    """Validate a model section: a bare name or ``{name: ..., options...}``."""
    return resolve_named(raw, path, MODELS.names(), "model",
                         lambda name, options, where: resolve(model_params(name), options, where))


def build_model(cfg: Mapping[str, Any], input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Instantiate the model a resolved model config names."""
    return MODELS.get(cfg["name"]).build(input_shape, num_classes, cfg)


discover(__name__, __path__)  # every module of this package registers its models (after MODELS exists)

__all__ = ["MODELS", "ModelSpec", "NormedLinear", "build_model", "classifier_head", "model_params", "resolve_model"]
