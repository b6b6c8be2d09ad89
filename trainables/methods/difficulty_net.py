"""Difficulty-Net (Sinha & Ohashi, WACV 2023), docs/METHODS.md M2.

A small MLP g_theta (C -> H -> H -> C, ReLU, sigmoid out) maps the vector A of per-class accuracies on
the balanced meta set to class difficulties d = g_theta(A) in (0, 1)^C; the model is trained with CE
weighted per class by w = C d / sum d (Eq. 4, mean 1). theta is meta-learned with the three steps of
supplementary Algorithm 1 on every iteration:

1. virtual step (Eq. 9): phi'(theta) = phi - lr * grad_phi L_train(phi, theta), kept in the graph
   (:func:`trainables.methods.meta.virtual_step`, a functional call with scratch BatchNorm buffers);
2. meta step (Eq. 10): one Adam step on theta for CE(f(x_meta; phi'), y_meta) + lambda * L_drv, where the
   driver loss L_drv = mean_c (d_c - (1 - A_c / (sum A + 1e-12)))^2 pulls d towards 1 - relative accuracy;
3. real step (Eq. 11): w recomputed with the new theta (detached), one step of the model's optimizer.

``meta_grad: driver_only`` reproduces what the released code effectively does: its weights are detached
copies, so the meta CE gives theta no gradient and theta learns from lambda * L_drv alone. In that mode
the virtual step is skipped (it could not change theta) and the method costs about as much as CE.

A is computed on the meta set (the paper's S^meta = S^val) once per epoch, after the epoch, as both
official scripts do (all zeros before the first evaluation, as in the CIFAR code); ``accuracy_update:
iteration`` recomputes it before every iteration, as Algorithm 1 line 2 literally says.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from trainables.methods import METHODS
from trainables.methods.balanced_softmax import balanced_softmax_logits
from trainables.methods.base import (
    EpochEvaluation,
    Method,
    MethodContext,
    meta_class_accuracy,
    require_positive_meta,
)
from trainables.methods.meta import current_lr, forward_with, virtual_step
from trainables.params import InactiveParamError, Param

META_GRADS = ("second_order", "driver_only")
DRIVER_EPS = 1e-12  # inside the driver target's denominator, as in the official code


def hidden_width(num_classes: int) -> int:
    """Supplementary 1.3 rule: H = 2^n with 2^(n-1) <= C < 2^n (10 -> 16, 100 -> 128, 1000 -> 1024)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    return 1 << num_classes.bit_length()


def difficulty_weights(difficulties: torch.Tensor) -> torch.Tensor:
    """Eq. 4 (as in the code): w_c = C d_c / sum_c' d_c', so the weights have mean 1. Differentiable."""
    if difficulties.dim() != 1 or difficulties.numel() == 0:
        raise ValueError(f"difficulties must be a non-empty 1-D tensor, got shape {tuple(difficulties.shape)}")
    return difficulties * (len(difficulties) / difficulties.sum())


def driver_target(class_acc: torch.Tensor) -> torch.Tensor:
    """The driver loss's target 1 - A_c / (sum_c' A_c' + 1e-12): 1 for every class while all A are 0."""
    if class_acc.dim() != 1:
        raise ValueError(f"class_acc must be 1-D, got shape {tuple(class_acc.shape)}")
    return 1.0 - class_acc / (class_acc.sum() + DRIVER_EPS)


def driver_loss(difficulties: torch.Tensor, class_acc: torch.Tensor) -> torch.Tensor:
    """L_drv = mean_c (d_c - (1 - A_c / sum A))^2 on the raw sigmoid outputs (the official MSE)."""
    if difficulties.shape != class_acc.shape:
        raise ValueError(f"difficulties {tuple(difficulties.shape)} and class_acc {tuple(class_acc.shape)} disagree")
    return F.mse_loss(difficulties, driver_target(class_acc).to(difficulties.dtype))


class DifficultyNet(nn.Module):
    """g_theta: per-class accuracies [C] -> difficulties in (0, 1)^C; MLP C -> H -> H -> C, ReLU, sigmoid."""

    def __init__(self, num_classes: int, hidden: int, bias: bool = True) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(num_classes, hidden, bias=bias), nn.ReLU(),
            nn.Linear(hidden, hidden, bias=bias), nn.ReLU(),
            nn.Linear(hidden, num_classes, bias=bias), nn.Sigmoid(),
        )

    def forward(self, class_acc: torch.Tensor) -> torch.Tensor:
        return self.layers(class_acc)


@METHODS.add
class DifficultyNetMethod(Method):
    name = "difficulty_net"
    diagnostics_prefix = "diffnet_"
    description = "Difficulty-Net (Sinha & Ohashi): meta-learned MLP val accuracies -> class weights, driver loss"
    params = {
        "hidden": Param(None, (int,), low=1, high=65536, nullable=True,
                        help="hidden width H; null = hidden_factor x the rule 2^n, 2^(n-1) <= C < 2^n"),
        "hidden_factor": Param(1.0, (float,), low=1 / 64, high=64.0,
                               help="multiplies the rule's H (grid 0.5, 1, 2, 4)"),
        "lam": Param(0.3, (float,), low=0.0, high=100.0, help="driver-loss weight lambda (0 = no driver)"),
        "meta_lr": Param(1e-3, (float,), low=0.0, high=1.0, low_open=True,
                         help="Adam lr of the Difficulty-Net (supp. 1e-3; CIFAR code 1e-5)"),
        "meta_weight_decay": Param(1e-4, (float,), low=0.0, high=1.0, help="Adam weight decay of the Difficulty-Net"),
        "meta_grad": Param("second_order", (str,), choices=META_GRADS,
                           help="second_order = the paper; driver_only = what the released code effectively does"),
        "meta_batch_size": Param(100, (int,), low=1, help="meta-set examples per meta step (CIFAR code: 100)"),
        "base_loss": Param("ce", (str,), choices=("ce", "balanced_softmax"),
                           help="weighted CE, or weighted Balanced Softmax ('+ Bal. Softmax')"),
        "mlp_bias": Param(True, (bool,), help="bias terms in the MLP (ImageNet code: yes; CIFAR code: no)"),
        "accuracy_update": Param("epoch", (str,), choices=("epoch", "iteration"),
                                 help="recompute A on the meta set after every epoch (official code) or every "
                                      "iteration"),
    }
    needs_meta = True
    fusable = False  # bi-level train_step: in a trial group its members run one after another
    meta_use = "meta-trains its Difficulty-Net on"
    relative_cost = 3.5

    @classmethod
    def check(cls, hparams: Mapping[str, Any], given: Mapping[str, Any], path: str) -> None:
        default = cls.params["hidden_factor"].default  # given at its default: a re-resolved config, fine
        if hparams["hidden"] is not None and given.get("hidden_factor", default) != default:
            raise InactiveParamError(f"{path}.hidden_factor", "only applies when hidden is null (the rule)")

    def __init__(self, hparams: Mapping[str, Any], ctx: MethodContext) -> None:
        super().__init__(hparams, ctx)
        require_positive_meta(ctx, self.name)
        hp, C = self.hparams, ctx.num_classes
        self.hidden = hp["hidden"] or max(1, round(hp["hidden_factor"] * hidden_width(C)))
        self.net = DifficultyNet(C, self.hidden, hp["mlp_bias"]).to(ctx.device)
        self.meta_optimizer = torch.optim.Adam(self.net.parameters(), lr=hp["meta_lr"],
                                               weight_decay=hp["meta_weight_decay"])
        self.class_acc = torch.zeros(C, device=ctx.device)  # A before the first evaluation (CIFAR code)
        self.class_counts = ctx.class_counts.float()
        self._stats: dict[str, torch.Tensor] = {}

    # ---- pieces of the step --------------------------------------------------------------------
    def meta_accuracy(self) -> torch.Tensor:
        """A: per-class top-1 accuracy of the current model on the whole meta set (eval mode), float32 [C]."""
        return meta_class_accuracy(self.ctx).float()

    def class_weights(self) -> torch.Tensor:
        """The current class weights C d / sum d for the current A (no graph)."""
        with torch.no_grad():
            return difficulty_weights(self.net(self.class_acc))

    def weighted_loss(self, logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """(1/b) sum_i w_{y_i} l_i with l = CE (or Balanced Softmax CE); keeps the graph of ``weights``."""
        z = logits.float()
        if self.hparams["base_loss"] == "balanced_softmax":
            z = balanced_softmax_logits(z, self.class_counts)
        return (weights[targets] * F.cross_entropy(z, targets, reduction="none")).mean()

    def meta_gradients(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                       x_meta: torch.Tensor, y_meta: torch.Tensor, lr: float,
                       keep_forward: dict[str, Any] | None = None
                       ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """Gradient of the meta objective with respect to theta (one tensor per net parameter), and its terms.

        second_order: CE(f(x_meta; phi'(theta))) + lambda L_drv(theta), phi' the differentiable virtual step;
        driver_only: lambda L_drv(theta) alone. Given ``keep_forward`` (a dict), the second-order mode leaves
        there the virtual pass's ``logits`` (graph kept) and the BatchNorm ``buffers`` it produced, so the
        real step can reuse that forward pass instead of running the model again.
        """
        hp = self.hparams
        difficulties = self.net(self.class_acc)
        drv = driver_loss(difficulties, self.class_acc)
        objective = hp["lam"] * drv
        terms = {"driver_loss": drv.detach()}
        if hp["meta_grad"] == "second_order":
            weights = difficulty_weights(difficulties)
            seen: dict[str, torch.Tensor] = {}

            def weighted(logits: torch.Tensor) -> torch.Tensor:
                seen["logits"] = logits
                return self.weighted_loss(logits, y, weights)

            theta, buffers = virtual_step(model, x, weighted, lr)
            if keep_forward is not None:  # the virtual pass ran at theta on x in train mode: a real forward's twin
                keep_forward.update(logits=seen["logits"], buffers={n: b.clone() for n, b in buffers.items()})
            meta_ce = F.cross_entropy(forward_with(model, theta, buffers, x_meta).float(), y_meta)
            objective = objective + meta_ce
            terms["meta_ce"] = meta_ce.detach()
        params = list(self.net.parameters())
        grads = torch.autograd.grad(objective, params, allow_unused=True,
                                    retain_graph=keep_forward is not None and "logits" in keep_forward)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)], terms

    # ---- hooks ---------------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        self._stats = {}

    def train_step(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                   x: torch.Tensor, y: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        if self.hparams["accuracy_update"] == "iteration":
            self.class_acc = self.meta_accuracy()
        # Eqs. 9-10: virtual step and meta step on a clean meta batch
        x_meta, y_meta = self.ctx.meta_batch(self.hparams["meta_batch_size"])
        virtual: dict[str, Any] = {}
        grads, terms = self.meta_gradients(model, x, y, x_meta, y_meta, current_lr(optimizer), keep_forward=virtual)
        self.meta_optimizer.zero_grad(set_to_none=True)
        for p, g in zip(self.net.parameters(), grads, strict=True):
            p.grad = g
        self.meta_optimizer.step()
        # Eq. 11: real step with the weights of the updated net, detached; it reuses the virtual pass's
        # logits (same theta, same batch) and leaves the BatchNorm statistics that pass produced.
        weights = self.class_weights()
        if "logits" in virtual:
            logits = virtual["logits"]
            with torch.no_grad():
                for name, buffer in model.named_buffers():
                    buffer.copy_(virtual["buffers"][name])
        else:
            logits = model(x)
        loss = self.weighted_loss(logits, y, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for key, value in terms.items():
            self._stats[key] = self._stats.get(key, 0.0) + value
        self._stats["steps"] = self._stats.get("steps", 0.0) + 1.0
        return loss.detach()

    def on_epoch_end(self, epoch: int, evaluation: EpochEvaluation) -> dict[str, float]:
        """Refresh A on the meta set for the next epoch; report the weights it gives and the meta losses."""
        if self.hparams["accuracy_update"] == "epoch":
            self.class_acc = self.meta_accuracy()
        w = self.class_weights()
        steps = float(self._stats.pop("steps", 0.0)) or 1.0
        out = {f"diffnet_{k}": float(v) / steps for k, v in self._stats.items()}
        out.update(diffnet_weight_min=float(w.min()), diffnet_weight_max=float(w.max()))
        for group, idx in self.ctx.groups.items():
            if len(idx):
                out[f"diffnet_weight_{group}"] = float(w[torch.as_tensor(idx, device=w.device)].mean())
        return out

    # ---- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"net": {k: v.clone() for k, v in self.net.state_dict().items()},
                "meta_optimizer": self.meta_optimizer.state_dict(), "class_acc": self.class_acc.clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.meta_optimizer.load_state_dict(state["meta_optimizer"])
        self.class_acc = state["class_acc"].to(self.ctx.device, torch.float32).clone()
