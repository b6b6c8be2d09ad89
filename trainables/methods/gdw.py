"""Generalized Data Weighting (Chen et al., NeurIPS 2021): MW-Net with class-level weights.

GDW scales each logit's gradient separately: the CE logit gradient p - e_y becomes omega * (p - e_y)
with a weight vector omega_i over the C classes per example, p clamped at 0.999 as in GDW's code
(``GGchen1997/GDW-NIPS2021`` ``main.py``). Per iteration (Algorithm 1, Eqs. 9-12, and that code):

1. stage 1: omega_i = the weighting net's output repeated C times, then the zero-mean constraint (a
   no-op unless a probability is clamped); MW-Net's virtual and meta steps with G = omega * (p - e_y) / Z;
2. stage 2, after the meta step: omega'_i = omega_i - clip(eta_omega * g_i / sum |g|, -clip, clip) with
   g = dL_meta / d omega (the intermediate gradient of the meta backward pass, so no extra cost),
   clamped to [1e-6, 1e6], and the zero-mean constraint re-imposed on the target entry;
3. real step: back-propagate omega' * (p - e_y) / Z, detached; every row sums to exactly 0.

Stage 2 starts from the stage-1 omega, the net's output *before* its meta update (``omega_from:
previous``, the paper's Eq. 11 and the code). ``omega_from: updated`` starts from the updated net's
output instead; with eta_omega = 0 that variant is MW-Net's real step. Everything else is
:class:`trainables.methods.mwnet.MWNet`; this module adds the two pure functions of the class-level
stage and overrides the three hooks of the loop.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from trainables.methods import METHODS
from trainables.methods.base import EpochEvaluation, MethodContext
from trainables.methods.mwnet import MWNet
from trainables.params import Param

P_MAX = 0.999  # probabilities are clamped here before the constraint (GDW's code), so 1 - p_t >= 1e-3
OMEGA_MIN, OMEGA_MAX = 1e-6, 1e6  # the bounds GDW's code clamps the class-level weights to


def _check_batch(omega: torch.Tensor, probs: torch.Tensor, targets: torch.Tensor) -> None:
    if omega.dim() != 2 or probs.shape != omega.shape:
        raise ValueError(f"omega and probs must both be batch x classes, got {tuple(omega.shape)} and "
                         f"{tuple(probs.shape)}")
    if targets.dim() != 1 or targets.shape[0] != omega.shape[0]:
        raise ValueError(f"targets must have one entry per row of omega ({omega.shape[0]}), got shape "
                         f"{tuple(targets.shape)}")
    if targets.dtype not in (torch.int64, torch.int32) or (len(targets) and
                                                          (targets.min() < 0 or targets.max() >= omega.shape[1])):
        raise ValueError(f"targets must be integer class indices in [0, {omega.shape[1]})")
    if len(probs) and (probs.min() < 0 or probs.max() > 1 or not torch.isfinite(probs).all()):
        raise ValueError("probs must lie in [0, 1]")


def _zero_mean_target(omega: torch.Tensor, probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """:func:`zero_mean_target` without the argument checks (no device syncs; used every training step)."""
    p = probs.clamp(max=P_MAX)
    p_t = p.gather(1, targets[:, None])
    w_t = omega.gather(1, targets[:, None])
    others = (omega * p).sum(1, keepdim=True) - w_t * p_t
    new_t = others / (1.0 - p_t)
    # An equal row whose probabilities are all below the clamp is a fixed point of the formula (p sums to 1):
    # keep it exactly. "Below", not "at most": probabilities that were clamped already read exactly P_MAX.
    fixed = (omega == omega[:, :1]).all(1, keepdim=True) & (probs < P_MAX).all(1, keepdim=True)
    return omega.scatter(1, targets[:, None], torch.where(fixed, w_t, new_t))


def zero_mean_target(omega: torch.Tensor, probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """omega with each target entry set to sum_{j != t} omega_j p_j / (1 - p_t), p clamped at 0.999.

    Then sum_j omega_j (p_j - y_j) = 0 for the clamped p, the p GDW's code uses in the gradient too: the
    manipulated gradient omega * (p - e_y) keeps CE's zero sum over the logits (GDW Eqs. 3-6), and
    omega_t acts as the instance weight. Rows whose entries are all equal and whose probabilities are
    all below 0.999 come back unchanged, exactly (for p summing to 1 that is what the formula gives; it is
    not left to rounding); with a clamped probability the formula applies (a confident example's equal
    row gets a smaller target weight, as in the code). A new tensor is returned; the inputs are not
    modified. omega, probs: batch x classes; targets: batch class indices.
    """
    _check_batch(omega, probs, targets)
    return _zero_mean_target(omega, probs, targets)


def _update_class_weights(omega: torch.Tensor, grad: torch.Tensor, eta: float, clip: float) -> torch.Tensor:
    """:func:`update_class_weights` without the argument checks (used every training step)."""
    total = grad.abs().sum()
    step = torch.where(total > 0, eta * grad / total, torch.zeros_like(grad))
    return (omega - step.clamp(-clip, clip)).clamp(OMEGA_MIN, OMEGA_MAX)


def update_class_weights(omega: torch.Tensor, grad: torch.Tensor, eta: float, clip: float = 0.2) -> torch.Tensor:
    """GDW's second-stage step: clamp(omega - clip(eta * grad / sum|grad|, -clip, clip), 1e-6, 1e6).

    The gradient is L1-normalised over the whole batch tensor (GDW's code; the paper writes a plain
    step omega - eta g), so eta is a relative step size; the clip bounds the change of each entry. An
    all-zero gradient leaves omega unchanged (up to the clamp). Shapes of omega and grad must agree.
    """
    if omega.shape != grad.shape:
        raise ValueError(f"omega and grad must have the same shape, got {tuple(omega.shape)} and {tuple(grad.shape)}")
    if not eta >= 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    if not clip > 0:
        raise ValueError(f"clip must be > 0, got {clip}")
    return _update_class_weights(omega, grad, float(eta), float(clip))


def default_eta_omega(num_classes: int) -> float:
    """GDW's README: eta_omega = 100 for CIFAR-10 and 1000 for CIFAR-100 (here: 100 classes or more)."""
    return 1000.0 if num_classes >= 100 else 100.0


@METHODS.add
class GDW(MWNet):
    name = "gdw"
    description = "Generalized Data Weighting (Chen et al. 2021): MW-Net plus class-level gradient weights"
    params = {
        # every MW-Net knob but detach_loss: GDW's code feeds the weighting net the detached loss
        **{k: v for k, v in MWNet.params.items() if k != "detach_loss"},
        "eta_omega": Param(None, (float,), low=0.0, nullable=True,
                           help="class-level step on the L1-normalised gradient; null = 100 (1000 with >= 100 "
                                "classes)"),
        "clip": Param(0.2, (float,), low=0.0, low_open=True, help="largest change of a class-level weight per step"),
        "omega_from": Param("previous", (str,), choices=("previous", "updated"),
                            help="stage-2 start: the net's output before this meta step (previous: paper Eq. 11, "
                                 "GDW's code) or after it (updated)"),
    }

    def __init__(self, hparams: Mapping[str, Any], ctx: MethodContext) -> None:
        super().__init__(hparams, ctx)
        eta = self.hparams["eta_omega"]
        self.eta_omega = default_eta_omega(ctx.num_classes) if eta is None else float(eta)

    def reads_live_loss(self) -> bool:
        return False

    def gradient_probs(self, probs: torch.Tensor) -> torch.Tensor:
        """p clamped at 0.999 (``p.data = torch.clamp(p.data, 0, 0.999)`` in GDW's code), so rows sum to 0."""
        return probs.clamp(max=P_MAX)

    def stage_one_weights(self, weights: torch.Tensor, probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """V(l) repeated over the classes, then the zero-mean constraint (differentiable in phi)."""
        return _zero_mean_target(super().stage_one_weights(weights, probs, targets), probs, targets)

    def real_step_weights(self, loss: torch.Tensor, probs: torch.Tensor, targets: torch.Tensor,
                          omega: torch.Tensor, omega_grad: torch.Tensor) -> torch.Tensor:
        """omega' = zero_mean_target(update_class_weights(omega, dL_meta/d omega)) on the real step's p."""
        if self.hparams["omega_from"] == "updated":
            omega = self.stage_one_weights(self.vnet(loss[:, None]), probs, targets)
        stepped = _update_class_weights(omega, omega_grad, self.eta_omega, self.hparams["clip"])
        return _zero_mean_target(stepped, probs, targets)

    # ---- diagnostics: where the class-level weights put the gradient on noisy examples ------------
    def _reset_stats(self) -> None:
        super()._reset_stats()
        dev = self.ctx.device
        self._stats.update(true_noisy=torch.zeros((), device=dev), other_noisy=torch.zeros((), device=dev),
                           n_other=torch.zeros((), device=dev), shift=torch.zeros((), device=dev),
                           n_entries=torch.zeros((), device=dev))

    def record(self, y: torch.Tensor, indices: torch.Tensor, omega: torch.Tensor, meta_loss: torch.Tensor) -> None:
        """Also: on noisy examples, the mean omega' of the true class and of the other non-target classes;
        and the mean |omega'_j - omega'_t| over non-target entries (how far GDW is from instance weighting)."""
        super().record(y, indices, omega, meta_loss)
        s, omega = self._stats, omega.float()
        w_t = omega.gather(1, y[:, None])
        nontarget = torch.ones_like(omega).scatter(1, y[:, None], 0.0)
        s["shift"] += ((omega - w_t).abs() * nontarget).sum()
        s["n_entries"] += nontarget.sum()
        noisy = self.noisy[indices]
        if self.has_noise:
            true_y = self.ctx.train.true_y[indices]
            true_w = omega.gather(1, true_y[:, None]).squeeze(1)
            s["true_noisy"] += (true_w * noisy).sum()
            other = nontarget.scatter(1, true_y[:, None], 0.0) * noisy[:, None]
            s["other_noisy"] += (omega * other).sum()
            s["n_other"] += other.sum()

    def on_epoch_end(self, epoch: int, evaluation: EpochEvaluation) -> dict[str, float]:
        out = super().on_epoch_end(epoch, evaluation)
        s = self._stats
        out["gdw_nontarget_shift"] = float(s["shift"] / s["n_entries"].clamp_min(1))
        if self.has_noise:
            out["gdw_omega_true_noisy"] = float(s["true_noisy"] / s["n_noisy"][1].clamp_min(1))
            out["gdw_omega_other_noisy"] = float(s["other_noisy"] / s["n_other"].clamp_min(1))
        return out
