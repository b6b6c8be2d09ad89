"""MW-Net (Shu et al., NeurIPS 2019): a small net maps each example's loss to its weight, meta-learned.

The weighting net V(l; phi) (1 -> 100 -> 1, ReLU, sigmoid) reads the per-sample CE loss. Each iteration
runs the three-step bi-level loop:

1. virtual step: theta'(phi) = theta - lr * grad_theta sum_i w_i CE_i / Z, kept in the graph
   (:func:`trainables.methods.meta.virtual_step`; scratch BatchNorm buffers);
2. meta step: CE of f(x_meta; theta') on a clean meta batch, back-propagated to phi, one optimiser step;
3. real step: theta <- SGD with the weights of the updated net, detached. It back-propagates through
   the virtual step's forward pass (same theta, same batch, train mode) instead of running a second
   one, and copies the BatchNorm statistics that pass left in its scratch buffers into the model.

Z is the batch size (``norm: mean``, ``MW-Net.py`` and GDW's ``--mode mw-net``) or the batch sum of the
weights (``norm: sum``, the class-imbalance code ``meta-weight-net-class-imbalance.py``).

``detach_loss`` (default true) feeds V the detached loss in the virtual step, as the paper and
``MW-Net.py`` do: theta' depends on theta only through CE. The class-imbalance code feeds V the live
loss (``vnet(cost_v)``), so its virtual step also differentiates V(CE(theta)) and the normaliser with
respect to theta; ``detach_loss: false`` is that form (its meta-gradient on phi is about twice as large).

Every weighted loss with a detached input is expressed through its gradient with respect to the logits,
G = omega * (p - e_y) / Z with class-level weights omega (batch x classes); MW-Net's omega is the
instance weight repeated over the classes, so G is exactly the gradient of sum_i w_i CE_i / Z.
GDW (:mod:`trainables.methods.gdw`) subclasses this class and changes how the probabilities in G, the
virtual step's omega and the real step's omega are made, so the two share every line of the loop.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from trainables.methods import METHODS
from trainables.methods.base import EpochEvaluation, Method, MethodContext, require_positive_meta
from trainables.methods.meta import current_lr, forward_with, virtual_step
from trainables.params import Param

NORMS = ("mean", "sum")


class WeightNet(nn.Module):
    """V(l; phi): per-sample loss (batch x 1) -> weight in (0, 1), an MLP 1 -> hidden -> 1 with a sigmoid."""

    def __init__(self, hidden: int = 100) -> None:
        super().__init__()
        self.hidden = nn.Linear(1, hidden)
        self.out = nn.Linear(hidden, 1)

    def forward(self, loss: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(F.relu(self.hidden(loss))))


def _target_entries(omega: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """omega_{i, y_i}: the instance weights (batch x 1 omega is already one weight per example)."""
    return omega[:, 0] if omega.shape[1] == 1 else omega.gather(1, targets[:, None]).squeeze(1)


def weight_normaliser(omega: torch.Tensor, targets: torch.Tensor, norm: str) -> torch.Tensor:
    """Z of a batch: its size (``mean``) or the sum of the instance weights omega_{i, y_i} (``sum``).

    The target entry is the instance weight for MW-Net (all entries are equal) and for GDW (Eq. 6 of
    the GDW paper: omega_t scales the whole example). A zero sum falls back to 1, as in MW-Net's code.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if norm == "mean":
        return omega.new_tensor(float(omega.shape[0]))
    total = _target_entries(omega, targets).sum()
    return torch.where(total > 0, total, torch.ones_like(total))


def weighted_logit_grad(omega: torch.Tensor, probs: torch.Tensor, targets: torch.Tensor, norm: str) -> torch.Tensor:
    """The class-weighted CE gradient with respect to the logits: omega * (p - e_y) / Z (batch x classes).

    ``omega`` may be batch x 1 (instance weights) or batch x classes; it keeps its graph, so the result
    is differentiable in the weighting parameters (the virtual step needs that).
    """
    if probs.dim() != 2 or targets.shape != probs.shape[:1]:
        raise ValueError(f"probs must be batch x classes and targets batch, got {tuple(probs.shape)} and "
                         f"{tuple(targets.shape)}")
    if omega.dim() != 2 or omega.shape[0] != probs.shape[0] or omega.shape[1] not in (1, probs.shape[1]):
        raise ValueError(f"omega must be batch x 1 or batch x classes for probs {tuple(probs.shape)}, got "
                         f"{tuple(omega.shape)}")
    onehot = F.one_hot(targets, probs.shape[1]).to(probs.dtype)
    return omega * (probs - onehot) / weight_normaliser(omega, targets, norm)


@METHODS.add
class MWNet(Method):
    name = "mwnet"
    description = "Meta-Weight-Net (Shu et al. 2019): meta-learned loss -> weight net, virtual/meta/real step"
    params = {
        "meta_lr": Param(1e-3, (float,), low=0.0, high=1.0, low_open=True,
                         help="weighting-net lr (papers: 1e-3 noise with Adam, 1e-5 long-tailed with SGD)"),
        "meta_weight_decay": Param(1e-4, (float,), low=0.0, high=1.0, help="weighting-net weight decay"),
        "meta_optimizer": Param("adam", (str,), choices=("adam", "sgd"),
                                help="adam (MW-Net noise code, GDW) or sgd (momentum 0.9, Nesterov; MW-Net LT code)"),
        "meta_batch_size": Param(100, (int,), low=1, help="meta-set examples per meta step"),
        "hidden": Param(100, (int,), low=1, high=65536, help="hidden width of the weighting net"),
        "norm": Param("mean", (str,), choices=NORMS, help="divide the weighted loss by the batch size or the weights' "
                                                          "sum"),
        "detach_loss": Param(True, (bool,), help="virtual step: V reads the detached loss (paper, MW-Net.py); "
                                                 "false = the live loss (class-imbalance code)"),
    }
    needs_meta = True
    fusable = False  # bi-level train_step: in a trial group its members run one after another
    meta_use = "meta-trains its weighting net on"
    relative_cost = 3.0  # measured 2.7-3.1x CE per epoch (docs/methods/meta_weighting.md)

    def __init__(self, hparams: Mapping[str, Any], ctx: MethodContext) -> None:
        super().__init__(hparams, ctx)
        require_positive_meta(ctx, self.name)
        hp = self.hparams
        self.vnet = WeightNet(hp["hidden"]).to(ctx.device)
        if hp["meta_optimizer"] == "adam":
            self.meta_optimizer: torch.optim.Optimizer = torch.optim.Adam(
                self.vnet.parameters(), lr=hp["meta_lr"], weight_decay=hp["meta_weight_decay"])
        else:
            self.meta_optimizer = torch.optim.SGD(
                self.vnet.parameters(), lr=hp["meta_lr"], momentum=0.9, nesterov=True,
                weight_decay=hp["meta_weight_decay"])
        self.noisy = ctx.train.y != ctx.train.true_y  # per training example: is its label corrupted
        self.has_noise = bool(self.noisy.any())
        self._stats: dict[str, torch.Tensor] = {}
        self._reset_stats()

    # ---- the three-step loop -------------------------------------------------------------------
    def train_step(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                   x: torch.Tensor, y: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        norm = self.hparams["norm"]
        seen: dict[str, torch.Tensor] = {}

        def weighted_surrogate(logits: torch.Tensor) -> torch.Tensor:
            seen["logits"], z = logits, logits.detach().float()
            seen["ce"] = F.cross_entropy(z, y, reduction="none")
            seen["probs"] = self.gradient_probs(z.softmax(1))
            if self.reads_live_loss():
                # The class-imbalance code: V reads the live loss, so theta' also moves through V and Z.
                ce = F.cross_entropy(logits.float(), y, reduction="none")
                seen["omega"] = self.vnet(ce[:, None])
                return (seen["omega"][:, 0] * ce).sum() / weight_normaliser(seen["omega"], y, norm)
            # Its gradient in the logits is G(phi) = omega(phi) * (p - e_y) / Z, i.e. that of sum w CE / Z.
            seen["omega"] = self.stage_one_weights(self.vnet(seen["ce"][:, None]), seen["probs"], y)
            return (weighted_logit_grad(seen["omega"], seen["probs"], y, norm) * logits.float()).sum()

        # 1. virtual step (same lr as the model's optimizer; no momentum or weight decay, as in the papers)
        theta, buffers = virtual_step(model, x, weighted_surrogate, current_lr(optimizer))
        # Its forward pass ran at theta on this batch in train mode: the real step reuses its graph, and the
        # BatchNorm statistics it left in the scratch buffers are exactly what a real forward would leave.
        after_forward = {n: b.clone() for n, b in buffers.items()}
        # 2. meta step on a clean meta batch; also keep dL_meta/d omega (GDW's second stage reads it)
        xm, ym = self.ctx.meta_batch(self.hparams["meta_batch_size"])
        meta_loss = F.cross_entropy(forward_with(model, theta, buffers, xm).float(), ym)
        phi = list(self.vnet.parameters())
        *phi_grads, omega_grad = torch.autograd.grad(meta_loss, phi + [seen["omega"]])
        self.meta_optimizer.zero_grad(set_to_none=True)
        for p, g in zip(phi, phi_grads, strict=True):
            p.grad = g
        self.meta_optimizer.step()
        del theta, buffers
        # 3. real step with the new weights, detached (the loss and probs at theta are the virtual pass's)
        with torch.no_grad():
            omega = self.real_step_weights(seen["ce"], seen["probs"], y, seen["omega"].detach(), omega_grad)
            grad = weighted_logit_grad(omega, seen["probs"], y, norm)
            for n, b in model.named_buffers():
                b.copy_(after_forward[n])
        optimizer.zero_grad(set_to_none=True)
        seen["logits"].backward(grad.to(seen["logits"].dtype))
        optimizer.step()
        with torch.no_grad():
            instance = _target_entries(omega, y)
            self.record(y, indices, omega, meta_loss.detach())
            return (instance * seen["ce"]).sum() / weight_normaliser(omega, y, norm)

    def reads_live_loss(self) -> bool:
        """Whether V reads the non-detached loss in the virtual step (``detach_loss: false``)."""
        return not self.hparams["detach_loss"]

    def gradient_probs(self, probs: torch.Tensor) -> torch.Tensor:
        """The probabilities p in the logit gradient omega * (p - e_y): the softmax itself (CE's gradient).

        GDW clamps them at 0.999, as its code does.
        """
        return probs

    def stage_one_weights(self, weights: torch.Tensor, probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The virtual step's omega: the weighting net's output (batch x 1) repeated over the classes.

        Keeps the graph to phi. GDW also applies its zero-mean constraint here, as its code does.
        """
        return weights.expand(-1, probs.shape[1])

    def real_step_weights(self, loss: torch.Tensor, probs: torch.Tensor, targets: torch.Tensor,
                          omega: torch.Tensor, omega_grad: torch.Tensor) -> torch.Tensor:
        """omega for the real step: the updated weighting net's output on the same losses, per class.

        ``omega`` (the virtual step's weights) and ``omega_grad`` (dL_meta/d omega) are unused here;
        GDW overrides this to take its class-level step from them.
        """
        return self.vnet(loss[:, None]).expand(-1, probs.shape[1])

    # ---- diagnostics ---------------------------------------------------------------------------
    def _reset_stats(self) -> None:
        C, dev = self.ctx.num_classes, self.ctx.device
        self._stats = {"w_class": torch.zeros(C, device=dev), "n_class": torch.zeros(C, device=dev),
                       "w_noisy": torch.zeros(2, device=dev), "n_noisy": torch.zeros(2, device=dev),
                       "meta_loss": torch.zeros((), device=dev), "steps": torch.zeros((), device=dev)}

    def record(self, y: torch.Tensor, indices: torch.Tensor, omega: torch.Tensor, meta_loss: torch.Tensor) -> None:
        """Accumulate the real step's instance weights by class and by clean / noisy label (no syncs)."""
        s, w = self._stats, _target_entries(omega, y).float()
        s["w_class"].index_add_(0, y, w)
        s["n_class"].index_add_(0, y, torch.ones_like(w))
        noisy = self.noisy[indices].long()
        s["w_noisy"].index_add_(0, noisy, w)
        s["n_noisy"].index_add_(0, noisy, torch.ones_like(w))
        s["meta_loss"] += meta_loss.float()
        s["steps"] += 1

    def on_epoch_start(self, epoch: int) -> None:
        self._reset_stats()

    def on_epoch_end(self, epoch: int, evaluation: EpochEvaluation) -> dict[str, float]:
        """Mean instance weight overall, per shot group and on clean vs noisy labels; mean meta loss."""
        s, pre = self._stats, self.name
        out = {f"{pre}_meta_loss": float(s["meta_loss"] / s["steps"].clamp_min(1)),
               f"{pre}_w_mean": float(s["w_class"].sum() / s["n_class"].sum().clamp_min(1))}
        for group, classes in self.ctx.groups.items():
            idx = torch.as_tensor(classes, dtype=torch.long, device=self.ctx.device)
            if len(idx) and float(s["n_class"][idx].sum()) > 0:
                out[f"{pre}_w_{group}"] = float(s["w_class"][idx].sum() / s["n_class"][idx].sum())
        if self.has_noise:
            mean = s["w_noisy"] / s["n_noisy"].clamp_min(1)
            out[f"{pre}_w_clean"], out[f"{pre}_w_noisy"] = float(mean[0]), float(mean[1])
        return out

    # ---- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"vnet": dict(self.vnet.state_dict()), "meta_optimizer": self.meta_optimizer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if set(state) != {"vnet", "meta_optimizer"}:
            raise ValueError(f"{self.name}: expected state keys ['meta_optimizer', 'vnet'], got {sorted(state)}")
        self.vnet.load_state_dict(state["vnet"])
        self.meta_optimizer.load_state_dict(state["meta_optimizer"])
