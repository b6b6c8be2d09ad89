"""Instance-difficulty sampling (Yu et al., CVPR 2022), docs/METHODS.md M1.

Plain CE; the training set is re-sampled every epoch with per-instance probabilities that grow with how
much the model has *unlearned* each instance. After each epoch the whole training set is predicted (eval
mode, no augmentation); the change of each prediction since the previous epoch is split into a learning
part dl and an unlearning part du (PSI terms, each >= 0); running sums U = sum du, L = sum dl give the
difficulty D = (c + U) / (c + L) (D_0 = 1), and the next epoch draws N instances with replacement with
probabilities D / sum D after zeroing the top int(gamma N) of them (the paper's noise truncation).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import nn

from trainables.methods import METHODS
from trainables.methods.base import EpochEvaluation, Method
from trainables.params import Param

PROB_FLOOR = 1e-8  # probabilities are clamped here before the log ratio (docs/METHODS.md M1: >= 1e-8)
NOISE_TOP_FRACTION = 0.01  # the noise-detection diagnostic looks at the top 1% of difficulties


def prediction_change(
    p_prev: torch.Tensor, p_curr: torch.Tensor, targets: torch.Tensor, *, floor: float = PROB_FLOOR,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split each instance's PSI prediction change into (du, dl), both >= 0, per instance.

    With delta_j = p_curr_j - p_prev_j and l_j = ln(p_curr_j / p_prev_j) (probabilities clamped to
    ``floor``), every term delta_j l_j is >= 0. Learning (dl): the target term when its probability rose,
    plus the other-class terms whose probability fell. Unlearning (du): the target term when it fell,
    plus the other-class terms that rose. du + dl = sum_j delta_j l_j (the PSI / Jeffreys divergence).
    """
    if p_prev.dim() != 2 or p_prev.shape != p_curr.shape:
        raise ValueError(f"p_prev and p_curr must both be [N, C], got {tuple(p_prev.shape)} and {tuple(p_curr.shape)}")
    if targets.dim() != 1 or len(targets) != len(p_curr):
        raise ValueError(f"targets must be [N] with N = {len(p_curr)}, got {tuple(targets.shape)}")
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= p_curr.shape[1]):
        raise ValueError(f"targets must be class indices in [0, {p_curr.shape[1]})")
    if ((p_prev < 0) | (p_prev > 1) | (p_curr < 0) | (p_curr > 1)).any():
        raise ValueError("probabilities must lie in [0, 1]")
    prev, curr = p_prev.clamp_min(floor), p_curr.clamp_min(floor)
    delta = curr - prev
    terms = delta * (curr.log() - prev.log())
    is_target = torch.zeros_like(delta, dtype=torch.bool)
    is_target[torch.arange(len(targets), device=targets.device), targets] = True
    unlearn = torch.where(is_target, delta < 0, delta > 0)
    du = torch.where(unlearn, terms, torch.zeros_like(terms)).sum(1)
    dl = torch.where(~unlearn, terms, torch.zeros_like(terms)).sum(1)
    return du, dl


def difficulty(sum_du: torch.Tensor, sum_dl: torch.Tensor, c: float) -> torch.Tensor:
    """Paper Eq. 4: D = (c + sum du) / (c + sum dl); c > 0 is a pseudo-count (larger c, smoother D)."""
    if not (isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) and c > 0):
        raise ValueError(f"c must be a number > 0, got {c!r}")
    if sum_du.shape != sum_dl.shape:
        raise ValueError(f"sum_du {tuple(sum_du.shape)} and sum_dl {tuple(sum_dl.shape)} must have the same shape")
    if (sum_du < 0).any() or (sum_dl < 0).any():
        raise ValueError("sum_du and sum_dl are sums of non-negative terms; got a negative entry")
    return (c + sum_du) / (c + sum_dl)


def truncation_count(n: int, gamma: float) -> int:
    """int(gamma * n), guarded against float rounding (0.29 * 100 counts as 29, not 28)."""
    return int(math.floor(gamma * n + 1e-9))


def truncate_top(weights: torch.Tensor, gamma: float) -> torch.Tensor:
    """Paper Algorithm 2: zero the top int(gamma N) weights, then renormalise to sum 1.

    gamma = 0 only renormalises. Among tied weights, which ones are zeroed is unspecified (torch.topk).
    """
    if not (isinstance(gamma, (int, float)) and not isinstance(gamma, bool) and 0.0 <= gamma < 1.0):
        raise ValueError(f"gamma must be in [0, 1), got {gamma!r}")
    if weights.dim() != 1 or weights.numel() == 0:
        raise ValueError(f"weights must be a non-empty 1-D tensor, got shape {tuple(weights.shape)}")
    if (weights < 0).any() or not torch.isfinite(weights).all():
        raise ValueError("weights must be finite and >= 0")
    out = weights.clone()
    n = truncation_count(len(out), gamma)
    if n > 0:
        out[torch.topk(out, n).indices] = 0
    total = out.sum()
    if total <= 0:
        raise ValueError("no weight mass is left after truncation")
    return out / total


@METHODS.add
class InstanceDifficultySampling(Method):
    name = "ids"
    description = "instance-difficulty sampling: resample by D = (c + sum unlearning)/(c + sum learning) (Yu et al.)"
    params = {
        "c": Param(10.0, (float,), low=0.0, low_open=True, high=1e6, help="prior pseudo-count; larger = smoother D "
                                                                          "(grid 0.1, 1, 10)"),
        "gamma": Param(0.001, (float,), low=0.0, high=1.0, high_open=True,
                       help="assumed noise rate: the top int(gamma N) weights are zeroed (paper range [0, 0.001])"),
        "init_pred": Param("uniform", (str,), choices=("uniform", "init_net"),
                           help="p_0: uniform 1/C, or the untrained network's predictions"),
    }
    relative_cost = 1.3

    def __init__(self, hparams: Mapping[str, Any], ctx: Any) -> None:
        super().__init__(hparams, ctx)
        n, C = len(ctx.train), ctx.num_classes
        self.p_prev = torch.full((n, C), 1.0 / C, device=ctx.device)
        self.sum_du = torch.zeros(n, device=ctx.device, dtype=torch.float64)
        self.sum_dl = torch.zeros(n, device=ctx.device, dtype=torch.float64)
        self.updates = 0

    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        if self.hparams["init_pred"] == "init_net":
            self.p_prev = self.ctx.predict(self.ctx.train.x).float()

    # ---- weights -------------------------------------------------------------------------------
    def difficulties(self) -> torch.Tensor:
        """Current D of every training instance (all 1 before the first update)."""
        return difficulty(self.sum_du, self.sum_dl, self.hparams["c"])

    def weights(self) -> torch.Tensor:
        """Sampling probabilities for the next epoch: D / sum D after truncation; uniform before any update.

        Truncation waits for the first update: with D_0 = 1 every weight ties, and zeroing arbitrary
        instances would discard clean data for no reason.
        """
        n = len(self.sum_du)
        if self.updates == 0:
            return torch.full((n,), 1.0 / n, device=self.sum_du.device, dtype=torch.float64)
        return truncate_top(self.difficulties(), self.hparams["gamma"])

    def sample_weights(self, epoch: int) -> torch.Tensor:
        return self.weights()

    # ---- per-epoch update ----------------------------------------------------------------------
    def on_epoch_end(self, epoch: int, evaluation: EpochEvaluation) -> dict[str, float]:
        """Predict the whole training set, accumulate (du, dl), refresh D; report where the mass goes."""
        train = self.ctx.train
        p_curr = self.ctx.predict(train.x).float()
        du, dl = prediction_change(self.p_prev, p_curr, train.y)
        self.sum_du += du.double()
        self.sum_dl += dl.double()
        self.p_prev = p_curr
        self.updates += 1
        return self.diagnostics()

    def diagnostics(self) -> dict[str, float]:
        """Sampling mass per many/medium/few group, the largest weight relative to uniform, and, when
        labels are noisy, the fraction of truly mislabelled instances among the top 1% of D."""
        train, w = self.ctx.train, self.weights()
        out = {"ids_max_weight_x_n": float(w.max()) * len(w)}
        mass = torch.zeros(self.ctx.num_classes, dtype=torch.float64, device=w.device).index_add_(0, train.y, w)
        for group, idx in self.ctx.groups.items():
            out[f"ids_mass_{group}"] = float(mass[torch.as_tensor(idx, dtype=torch.long, device=w.device)].sum())
        noisy = train.y != train.true_y
        if bool(noisy.any()):
            k = max(1, int(NOISE_TOP_FRACTION * len(w)))
            top = torch.topk(self.difficulties(), k).indices
            out["ids_noise_top1pct"] = float(noisy[top].double().mean())
            out["ids_noise_rate"] = float(noisy.double().mean())
        return out

    # ---- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"p_prev": self.p_prev.clone(), "sum_du": self.sum_du.clone(), "sum_dl": self.sum_dl.clone(),
                "updates": self.updates}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        dev = self.ctx.device
        self.p_prev = state["p_prev"].to(dev, torch.float32).clone()
        self.sum_du = state["sum_du"].to(dev, torch.float64).clone()
        self.sum_dl = state["sum_dl"].to(dev, torch.float64).clone()
        self.updates = int(state["updates"])
