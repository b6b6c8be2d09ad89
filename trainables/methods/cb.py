"""Class-balanced loss (Cui et al., CVPR 2019): class weights from the effective number of samples.

E_n = (1 - beta^n) / (1 - beta) is the expected volume covered by n samples; each class is weighted by
1 / E_{n_c}, normalised so that the weights have mean 1 over the C classes (sum C, the papers' and the
official code's convention). beta = 0 gives no re-weighting; beta -> 1 approaches inverse frequency.
The loss is (1 / B) sum_i w_{y_i} base_i, the reduction of Cui et al.'s ``src/cifar_main.py`` for all
three of its losses (``richardaecn/class-balanced-loss``), with base_i one of

- ``ce``: softmax cross-entropy (their ``softmax``);
- ``sigmoid``: one-vs-all sigmoid cross-entropy summed over the classes (their ``sigmoid``);
- ``focal``: their focal loss, the sigmoid one-vs-all focal summed over the classes, alpha = w_y
  (:func:`trainables.methods.focal.sigmoid_focal_loss`);
- ``softmax_focal``: the softmax focal loss -(1 - p_y)^gamma log p_y (not Cui et al.'s; the ``focal``
  method's form, kept as a named option).

LDAM-DRW reuses the weights with beta 0.9999.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch.nn import functional as F

from trainables.methods import METHODS
from trainables.methods.base import Method, MethodContext
from trainables.methods.focal import focal_loss, sigmoid_focal_loss
from trainables.params import InactiveParamError, Param

BASES = ("ce", "sigmoid", "focal", "softmax_focal")
FOCAL_BASES = ("focal", "softmax_focal")


def checked_counts(class_counts: torch.Tensor) -> torch.Tensor:
    """``class_counts`` as float64, after checking it is 1-D, finite, non-negative and not all zero."""
    if class_counts.dim() != 1 or class_counts.numel() == 0:
        raise ValueError("class_counts must be a non-empty 1-D tensor [classes], got shape "
                         f"{tuple(class_counts.shape)}")
    n = class_counts.detach().double()
    if not bool(torch.isfinite(n).all()) or bool((n < 0).any()) or not bool((n > 0).any()):
        raise ValueError("class_counts must be finite, non-negative and not all zero")
    return n


def effective_number_weights(class_counts: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-class weights (1 - beta) / (1 - beta^n_c), scaled to mean 1 over all classes (float32 [C]).

    ``class_counts`` [C] holds non-negative counts (any numeric dtype), at least one positive; ``beta`` is
    in [0, 1). A class with no examples gets weight 0 (no example of it can be weighted; the official code
    would divide by zero). Computed in float64 so beta = 0.9999 keeps its precision.
    """
    beta = float(beta)
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"effective-number beta must be in [0, 1), got {beta!r}")
    n = checked_counts(class_counts)
    present = n > 0
    effective = (1.0 - torch.pow(torch.full_like(n, beta), n)) / (1.0 - beta)
    raw = torch.where(present, 1.0 / torch.where(present, effective, torch.ones_like(n)), torch.zeros_like(n))
    return (raw * (len(n) / raw.sum())).float()


@METHODS.add
class ClassBalanced(Method):
    name = "cb"
    description = "class-balanced loss (Cui et al.): softmax CE, sigmoid CE or sigmoid focal times 1/effective number"
    params = {
        "beta": Param(0.9999, (float,), low=0.0, high=1.0, high_open=True,
                      help="effective-number beta (paper grid 0.9, 0.99, 0.999, 0.9999); 0 = unweighted"),
        "base": Param("ce", (str,), choices=BASES,
                      help="softmax CE, sigmoid CE, Cui et al.'s sigmoid focal, or a softmax focal"),
        "gamma": Param(1.0, (float,), low=0.0, high=10.0, help="focal gamma; only with base focal or softmax_focal"),
    }

    @classmethod
    def check(cls, hparams: Mapping[str, Any], given: Mapping[str, Any], path: str) -> None:
        if hparams["base"] not in FOCAL_BASES and "gamma" in given:
            raise InactiveParamError(f"{path}.gamma", "is only used with base 'focal' or 'softmax_focal'")

    def __init__(self, hparams: Mapping[str, Any], ctx: MethodContext) -> None:
        super().__init__(hparams, ctx)
        self.class_weights = effective_number_weights(ctx.class_counts, self.hparams["beta"]).to(ctx.device)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        base = self.hparams["base"]
        if base == "focal":
            per_sample = sigmoid_focal_loss(logits, targets, self.hparams["gamma"])
        elif base == "sigmoid":
            per_sample = sigmoid_focal_loss(logits, targets, 0.0)
        elif base == "softmax_focal":
            per_sample = focal_loss(logits, targets, self.hparams["gamma"], reduction="none")
        else:
            per_sample = F.cross_entropy(logits.float(), targets, reduction="none")
        return (self.class_weights[targets] * per_sample).mean()

