"""LDAM-DRW (Cao et al., NeurIPS 2019; code kaidic/LDAM-DRW): label-distribution-aware margins plus
deferred re-weighting.

The model gets a cosine ("normed") classifier. The loss is CE(s * (z - m_y e_y), y): the target logit is
lowered by a class margin m_c = max_m * n_c^(-1/4) / max_c' n_c'^(-1/4) (rarer classes get larger margins)
and everything is scaled by s = 30. Deferred re-weighting (DRW): per-class CE weights are 1 until epoch
``drw_start = floor(drw_fraction * epochs)`` (0-based; 160 of 200 in the paper) and the class-balanced
effective-number weights with beta 0.9999 from then on, passed as ``weight=`` to CE, whose mean is the
weighted mean sum_i w_{y_i} l_i / sum_i w_{y_i}, as in the official code.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch.nn import functional as F

from trainables.methods import METHODS
from trainables.methods.base import EpochEvaluation, Method, MethodContext
from trainables.methods.cb import checked_counts, effective_number_weights
from trainables.params import Param


def ldam_margins(class_counts: torch.Tensor, max_m: float = 0.5) -> torch.Tensor:
    """Per-class margins max_m * n_c^(-1/4) / max_c' n_c'^(-1/4) (float32 [C]; the rarest class gets max_m).

    ``class_counts`` [C] non-negative, at least one positive; a class with no examples gets ``max_m`` (its
    margin is never used: no training example carries that label).
    """
    if not (math.isfinite(max_m) and max_m > 0):
        raise ValueError(f"max_m must be a positive number, got {max_m!r}")
    n = checked_counts(class_counts)
    present = n > 0
    inv_root4 = torch.where(present, n.clamp_min(1e-300).pow(-0.25), torch.zeros_like(n))
    margins = inv_root4 * (max_m / inv_root4.max())
    return torch.where(present, margins, torch.full_like(n, max_m)).float()


def ldam_logits(logits: torch.Tensor, targets: torch.Tensor, margins: torch.Tensor, scale: float) -> torch.Tensor:
    """s * (z - m_y e_y): the scaled logits with the target entry lowered by its class margin (float32)."""
    shifted = logits.float().scatter_add(1, targets[:, None], -margins[targets][:, None])
    return scale * shifted


@METHODS.add
class LDAMDRW(Method):
    name = "ldam_drw"
    description = "LDAM margins n_c^(-1/4), scale 30, cosine classifier, CB re-weighting deferred to the last epochs"
    params = {
        "max_m": Param(0.5, (float,), low=0.0, high=10.0, low_open=True, help="largest margin (rarest class)"),
        "scale": Param(30.0, (float,), low=0.0, high=1000.0, low_open=True, help="logit scale s"),
        "drw_fraction": Param(0.8, (float,), low=0.0, high=1.0,
                              help="re-weighting starts at epoch floor(fraction * epochs); 1 = never (plain LDAM)"),
        "drw_beta": Param(0.9999, (float,), low=0.0, high=1.0, high_open=True,
                          help="effective-number beta of the deferred class weights"),
    }

    @classmethod
    def model_options(cls, hparams: Mapping[str, Any]) -> dict[str, Any]:
        return {"normed_classifier": True}

    @classmethod
    def acts_from_epoch(cls, hparams: Mapping[str, Any], epochs: int) -> int:
        """The deferred re-weighting starts at epoch floor(drw_fraction * epochs) (0-based)."""
        return math.floor(hparams["drw_fraction"] * epochs)

    def __init__(self, hparams: Mapping[str, Any], ctx: MethodContext) -> None:
        super().__init__(hparams, ctx)
        self.margins = ldam_margins(ctx.class_counts, self.hparams["max_m"]).to(ctx.device)
        self.drw_start = self.acts_from_epoch(self.hparams, ctx.epochs)
        self.drw_weights = effective_number_weights(ctx.class_counts, self.hparams["drw_beta"]).to(ctx.device)
        self.class_weights: torch.Tensor | None = None

    def on_epoch_start(self, epoch: int) -> None:
        self.class_weights = self.drw_weights if epoch >= self.drw_start else None

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        z = ldam_logits(logits, targets, self.margins, self.hparams["scale"])
        return F.cross_entropy(z, targets, weight=self.class_weights)

    def on_epoch_end(self, epoch: int, evaluation: EpochEvaluation) -> dict[str, float]:
        """``ldam_drw_active``: 1 in the epochs trained with the deferred class weights."""
        return {"ldam_drw_active": float(self.class_weights is not None)}
