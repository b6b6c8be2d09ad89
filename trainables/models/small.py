"""Small models for the embedded datasets: an MLP for any input and a 1-D CNN for mnist1d."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from trainables.data.inputs import InputNorm
from trainables.models import MODELS, ModelSpec, classifier_head
from trainables.params import Param


class MLP(nn.Module):
    """The data path's input conversion -> Flatten -> [Linear -> BatchNorm -> ReLU] x depth -> classifier."""

    def __init__(self, in_features: int, num_classes: int, width: int, depth: int, normed: bool,
                 input_norm: Sequence[Sequence[float]] | None = None) -> None:
        super().__init__()
        self.input = InputNorm(input_norm)
        layers: list[nn.Module] = [nn.Flatten()]
        d = in_features
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.BatchNorm1d(width), nn.ReLU()]
            d = width
        self.features = nn.Sequential(*layers)
        self.classifier = classifier_head(d, num_classes, normed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.input(x)))


class CNN1D(nn.Module):
    """The mnist1d-style 1-D CNN: three conv blocks (BatchNorm, ReLU), global average pool, classifier."""

    def __init__(self, length: int, num_classes: int, channels: int, normed: bool) -> None:
        super().__init__()
        self.input = InputNorm(None)
        c = channels
        self.features = nn.Sequential(
            nn.Conv1d(1, c, 5, stride=2, padding=2), nn.BatchNorm1d(c), nn.ReLU(),
            nn.Conv1d(c, c, 3, stride=2, padding=1), nn.BatchNorm1d(c), nn.ReLU(),
            nn.Conv1d(c, c, 3, stride=2, padding=1), nn.BatchNorm1d(c), nn.ReLU(),
            nn.AdaptiveAvgPool1d(1), nn.Flatten(),
        )
        self.classifier = classifier_head(c, num_classes, normed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input(x)
        if x.dim() == 2:
            x = x.unsqueeze(1)
        return self.classifier(self.features(x))


def _mlp(input_shape: tuple[int, ...], num_classes: int, cfg: Mapping[str, Any]) -> nn.Module:
    return MLP(math.prod(input_shape), num_classes, cfg["width"], cfg["depth"], cfg["normed_classifier"],
               cfg.get("input_norm"))


def _cnn1d(input_shape: tuple[int, ...], num_classes: int, cfg: Mapping[str, Any]) -> nn.Module:
    return CNN1D(input_shape[-1], num_classes, cfg["channels"], cfg["normed_classifier"])


MODELS.add(ModelSpec("mlp", "multi-layer perceptron with BatchNorm, any input (flattened)", _mlp,
                     {"width": Param(128, (int,), low=1), "depth": Param(2, (int,), low=1, high=16)}))
MODELS.add(ModelSpec("cnn1d", "1-D CNN for sequence inputs such as mnist1d (3 conv blocks + GAP)", _cnn1d,
                     {"channels": Param(32, (int,), low=1)}))
