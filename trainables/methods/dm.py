"""Derivative Manipulation (DM; Wang et al., arXiv 1905.11233): a hand-designed logit gradient.

DM keeps the cross-entropy *direction* p - e_y and replaces its per-example magnitude by an emphasis
density w_i = exp(beta * p_i^lambda * (1 - p_i)), normalised over the mini-batch::

    dL/dz_i = (w_i / sum_j w_j) * (p_i - e_{y_i}) / (2 (1 - p_i) + 1e-6)

so example i's gradient has L1 norm w_i / sum_j w_j (up to the 1e-6) and a batch always carries a total
gradient mass of one. lambda moves the emphasis mode psi = lambda / (lambda + 1) (0: hardest examples
first); beta sets the spread (0: all examples alike; negative: easy examples first). The normalisation by
the batch sum (not the batch mean, no integral) is what the authors' Caffe layer does (docs/METHODS.md M5).

The training loss is built with detached coefficients: its gradient with respect to the logits is exactly
:func:`dm_logit_grad`, and its value is the layer's forward value sum_i (w_i / sum w) CE_i, which is what
gets logged (the surrogate whose gradient is right has no meaning as a number). Everything is computed in
float32 whatever the model's dtype; the weights are a softmax of beta p^lambda (1 - p), so no beta
overflows.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch.nn import functional as F

from trainables.methods import METHODS
from trainables.methods.base import EpochEvaluation, Method, MethodContext
from trainables.params import InactiveParamError, Param

DENOMINATOR_EPS = 1e-6  # the official layer's 2 (1 - p) + 1e-6


def _check_emphasis(lam: float, beta: float) -> None:
    if not math.isfinite(lam) or lam < 0:
        raise ValueError(f"DM lambda must be a finite number >= 0, got {lam}")
    if not math.isfinite(beta):
        raise ValueError(f"DM beta must be a finite number, got {beta}")


def dm_weights(p_true: torch.Tensor, lam: float, beta: float) -> torch.Tensor:
    """Normalised emphasis w_i / sum_j w_j of a batch, w_i = exp(beta * p_i^lam * (1 - p_i)).

    ``p_true`` holds each example's probability of its (annotated) label, shape [B], values in [0, 1].
    Returns float32 [B] summing to 1. ``lam = 0`` gives exp(beta (1 - p)) (0^0 = 1); ``beta = 0`` gives
    uniform weights 1/B.
    """
    _check_emphasis(lam, beta)
    if p_true.dim() != 1 or p_true.numel() == 0:
        raise ValueError(f"p_true must be a non-empty 1-D tensor [batch], got shape {tuple(p_true.shape)}")
    p = p_true.detach().float()
    if not bool(((p >= 0) & (p <= 1)).all()):
        raise ValueError("p_true must hold probabilities in [0, 1]")
    return _emphasis(p, lam, beta)


def _emphasis(p: torch.Tensor, lam: float, beta: float) -> torch.Tensor:
    """dm_weights without the checks (the training hot path: no host-device synchronisation)."""
    # softmax(beta * e) == exp(beta * e) / sum exp(beta * e), without overflow for any beta.
    return torch.softmax(beta * p.pow(lam) * (1.0 - p), dim=0)


def _check_batch(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.dim() != 2 or targets.dim() != 1 or logits.shape[0] != targets.shape[0] or logits.shape[0] == 0:
        raise ValueError(f"need logits [batch, classes] and targets [batch] with the same non-zero batch, "
                         f"got {tuple(logits.shape)} and {tuple(targets.shape)}")
    if targets.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"targets must be integer class indices, got dtype {targets.dtype}")
    if bool(((targets < 0) | (targets >= logits.shape[1])).any()):
        raise ValueError(f"targets must lie in [0, {logits.shape[1]})")


def _coefficients(p_y: torch.Tensor, lam: float, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalised weights w/sum w, per-example scale a_i of the CE gradient), from detached p_y [B]."""
    weights = _emphasis(p_y, lam, beta)
    return weights, weights / (2.0 * (1.0 - p_y) + DENOMINATOR_EPS)


def dm_logit_grad(logits: torch.Tensor, targets: torch.Tensor, lam: float, beta: float) -> torch.Tensor:
    """DM's gradient with respect to the logits: a_i (p_i - e_{y_i}), a_i = (w_i/sum w) / (2(1 - p_i) + 1e-6).

    ``logits`` [B, C] (any float dtype), ``targets`` [B] class indices; returns float32 [B, C].
    """
    _check_emphasis(lam, beta)
    _check_batch(logits, targets)
    p = torch.softmax(logits.detach().float(), dim=1)
    _, scale = _coefficients(p.gather(1, targets[:, None].long()).squeeze(1), lam, beta)
    return scale[:, None] * (p - F.one_hot(targets.long(), logits.shape[1]).float())


def dm_loss(logits: torch.Tensor, targets: torch.Tensor, lam: float, beta: float
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, normalised weights): the loss's value is sum_i (w_i/sum w) CE_i, its logit gradient dm_logit_grad.

    The surrogate sum_i a_i CE_i (a_i detached) has gradient a_i (p_i - e_y); the returned tensor carries
    the forward value exactly and the surrogate's gradient: value.detach() + (surrogate - surrogate.detach()).
    Only lam and beta are checked here (gather rejects out-of-range targets), to keep the step free of syncs.
    """
    _check_emphasis(lam, beta)
    z = logits.float()
    ce = -F.log_softmax(z, dim=1).gather(1, targets[:, None].long()).squeeze(1)  # d ce / dz = p - e_y
    # p_y from the softmax, as the authors' layer takes it (exp(-ce) rounds 1 - p differently when p -> 1)
    p_y = torch.softmax(z.detach(), dim=1).gather(1, targets[:, None].long()).squeeze(1)
    weights, scale = _coefficients(p_y, lam, beta)
    surrogate = (scale * ce).sum()
    value = (weights * ce.detach()).sum()
    return value + (surrogate - surrogate.detach()), weights


def weight_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of normalised weights; log(B) when all are equal."""
    return -(weights * weights.clamp_min(1e-30).log()).sum()


@METHODS.add
class DerivativeManipulation(Method):
    name = "dm"
    description = "Derivative Manipulation: CE direction, magnitude exp(beta p^lam (1-p)) normalised per batch"
    params = {
        "lam": Param(0.5, (float,), low=0.0, high=10.0,
                     help="emphasis mode psi = lam/(lam+1); 0 = hardest first (paper grid 0, 0.5, 1, 2)"),
        "beta": Param(12.0, (float,), low=-100.0, high=100.0,
                      help="emphasis spread; 0 = all examples alike, < 0 favours easy examples"),
    }

    @classmethod
    def check(cls, hparams: Mapping[str, Any], given: Mapping[str, Any], path: str) -> None:
        if hparams["beta"] == 0 and "lam" in given and hparams["lam"] != 0:
            raise InactiveParamError(f"{path}.lam", "has no effect when beta = 0 (all weights equal); "
                                                    "the beta = 0 control is written with lam 0 or without lam")

    @classmethod
    def resolve_params(cls, raw: Mapping[str, Any] | None, path: str = "method") -> dict[str, Any]:
        """As the base class, and the beta = 0 control always resolves to lam = 0 (one configuration)."""
        hp = super().resolve_params(raw, path)
        if hp["beta"] == 0:
            hp["lam"] = 0.0
        return hp

    def __init__(self, hparams: Mapping[str, Any], ctx: MethodContext) -> None:
        super().__init__(hparams, ctx)
        self._entropy_sum = torch.zeros((), device=ctx.device)
        self._batches = 0

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        loss, weights = dm_loss(logits, targets, self.hparams["lam"], self.hparams["beta"])
        self._entropy_sum += weight_entropy(weights)
        self._batches += 1
        return loss

    def on_epoch_end(self, epoch: int, evaluation: EpochEvaluation) -> dict[str, float]:
        """``dm_weight_entropy``: the batches' mean weight entropy in nats (log(batch size) = uniform)."""
        out = {"dm_weight_entropy": float(self._entropy_sum) / max(self._batches, 1)}
        self._entropy_sum.zero_()
        self._batches = 0
        return out
