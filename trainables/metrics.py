"""Evaluation: per-class accuracy on a split and the summary metrics derived from it."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn


@torch.no_grad()
def predict_probs(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Eval-mode softmax probabilities for ``x`` in batches; restores the model's train/eval mode."""
    was_training = model.training
    model.eval()
    out = torch.cat([torch.softmax(model(x[i : i + batch_size]).float(), dim=1)
                     for i in range(0, len(x), batch_size)]) if len(x) else torch.empty(0)
    model.train(was_training)
    return out


def class_accuracy(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Accuracy of each class (float64 [C]); NaN for a class with no examples."""
    correct = torch.bincount(y[pred == y], minlength=num_classes).double()
    total = torch.bincount(y, minlength=num_classes).double()
    return torch.where(total > 0, correct / total.clamp_min(1), torch.full_like(total, float("nan")))


def balanced_accuracy(class_acc: torch.Tensor) -> float:
    """Mean per-class accuracy over the classes present."""
    return float(torch.nanmean(class_acc))


def group_accuracy(class_acc: torch.Tensor, groups: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Mean accuracy of each many/medium/few group; groups with no class are left out."""
    return {name: float(torch.nanmean(class_acc[torch.as_tensor(idx, dtype=torch.long)]))
            for name, idx in groups.items() if len(idx)}
