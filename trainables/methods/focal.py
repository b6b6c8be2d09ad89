"""Focal loss (Lin et al.), two forms.

- :func:`focal_loss`, softmax: -(1 - p_y)^gamma log p_y per example (the ``focal`` method; LDAM-DRW's and
  CDB's repositories use this form);
- :func:`sigmoid_focal_loss`, one-vs-all sigmoid: sum over classes of (1 - p_t)^gamma BCE(z_j, y_j), the
  form Cui et al.'s class-balanced focal loss uses (``cb`` with ``base: focal``).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from trainables.methods import METHODS
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


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-example sum_j (1 - p_t,j)^gamma BCE-with-logits(z_j, y_j), p = sigmoid(z), y one-hot (float32 [B]).

    p_t,j is p_j for the target class and 1 - p_j for the others. The modulating factor is computed as
    exp(-gamma y z - gamma log(1 + e^-z)), the numerically stable form of Cui et al.'s
    ``focal_loss`` (``richardaecn/class-balanced-loss`` ``src/cifar_main.py``), and is not detached.
    gamma = 0 is the one-vs-all sigmoid cross-entropy.
    """
    if gamma < 0:
        raise ValueError(f"focal gamma must be >= 0, got {gamma}")
    z = logits.float()
    onehot = F.one_hot(targets, z.shape[1]).to(z.dtype)
    bce = F.binary_cross_entropy_with_logits(z, onehot, reduction="none")
    if gamma == 0:
        return bce.sum(1)
    modulator = torch.exp(-gamma * (onehot * z + F.softplus(-z)))
    return (modulator * bce).sum(1)


@METHODS.add
class Focal(Method):
    name = "focal"
    description = "focal loss -(1-p_y)^gamma log p_y (Lin et al.); gamma grid 0.5, 1, 2"
    params = {"gamma": Param(1.0, (float,), low=0.0, high=10.0, help="focusing parameter; 0 = CE")}

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return focal_loss(logits, targets, self.hparams["gamma"])
