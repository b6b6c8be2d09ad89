"""Focal loss (Lin et al.): L = -(1 - p_y)^gamma log p_y, softmax version, mean over the batch."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from trainables.methods import register
from trainables.methods.base import Method
from trainables.params import Param


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float, reduction: str = "mean") -> torch.Tensor:
    """Per-sample -(1 - p_y)^gamma log p_y, reduced by ``reduction`` ("mean", "sum" or "none").

    gamma = 0 is exactly cross-entropy.
    """
    if gamma < 0:
        raise ValueError(f"focal gamma must be >= 0, got {gamma}")
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, targets[:, None]).squeeze(1)
    per_sample = -((1.0 - log_p.exp()).clamp_min(0.0) ** gamma) * log_p
    if reduction == "none":
        return per_sample
    return per_sample.sum() if reduction == "sum" else per_sample.mean()


@register
class Focal(Method):
    name = "focal"
    description = "focal loss -(1-p_y)^gamma log p_y (Lin et al.); gamma grid 0.5, 1, 2"
    params = {"gamma": Param(1.0, (float,), low=0.0, high=10.0, help="focusing parameter; 0 = CE")}

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return focal_loss(logits, targets, self.hparams["gamma"])
