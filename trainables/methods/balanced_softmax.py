"""Balanced Softmax (Ren et al., NeurIPS 2020): cross-entropy on the logits shifted by log class counts.

Training minimises -log(n_y e^{z_y} / sum_j n_j e^{z_j}) = CE(z + log n, y), which undoes the label-prior
shift of a long-tailed training set; class frequencies n_c / N give the same loss (the shift is common to
all classes). At test time the plain argmax of z is used, which is what the loop evaluates.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch.nn import functional as F

from trainables.methods import METHODS
from trainables.methods.base import Method, MethodContext


def balanced_softmax_logits(logits: torch.Tensor, class_counts: torch.Tensor) -> torch.Tensor:
    """``logits + log(class_counts)``, broadcast over the last (class) dimension, in the logits' dtype.

    ``class_counts`` [C] holds non-negative counts (or frequencies); a class with count 0 gets logit -inf,
    i.e. probability 0 under the training softmax.
    """
    if class_counts.dim() != 1 or logits.dim() < 1 or logits.shape[-1] != class_counts.shape[0]:
        raise ValueError(f"class_counts [C] must match the logits' last dimension, "
                         f"got {tuple(class_counts.shape)} and {tuple(logits.shape)}")
    if bool((class_counts < 0).any()) or not bool(torch.isfinite(class_counts).all()):
        raise ValueError("class_counts must be finite and non-negative")
    return logits + torch.log(class_counts.to(device=logits.device, dtype=torch.float32)).to(logits.dtype)


@METHODS.add
class BalancedSoftmax(Method):
    name = "balanced_softmax"
    description = "Balanced Softmax (Ren et al.): CE on z + log n_c in training, plain argmax at test"

    def __init__(self, hparams: Mapping[str, Any], ctx: MethodContext) -> None:
        super().__init__(hparams, ctx)
        self.class_counts = ctx.class_counts.float()

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(balanced_softmax_logits(logits.float(), self.class_counts), targets)
