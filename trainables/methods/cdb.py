"""Class-wise difficulty-based methods (Sinha, Ohashi & Nakamura, IJCV 2022): CDB-W-CE, CDB-W-FL, CDB-S.

After every epoch the per-class accuracy A_c on the balanced meta set (the paper's validation set) gives
the class difficulty d_c = 1 - A_c and the class weights w_c = d_c^tau (docs/METHODS.md M3/M4). The next
epoch uses them:

- ``cdb_w_ce``: loss w_y * CE (paper Eq. 12);
- ``cdb_w_fl``: loss w_y * softmax focal (Eq. 14, with the gradient of that loss). The released code has
  no working CDB-W-FL: ``CIFAR-LT/losses/focal_loss.py`` detaches p_t in (1 - p_t)^gamma (the same value,
  a different gradient) and, like ``ImageNet-LT/loss/FocalLoss.py`` (a sigmoid one-vs-all focal), reads
  undefined names (``reduction``, ``size_average``), so neither runs as released;
- ``cdb_s``: plain CE, classes drawn with probability w_c / sum w (Eq. 15), instances uniformly inside a
  class, N draws per epoch with replacement.

tau is a fixed number or a dynamic variant computed from the performance bias (Eq. 5):
``linear`` (Eq. 7), ``poly`` (Eq. 8), ``log`` (Eq. 9 with its sign corrected so tau increases with the
bias), ``sigmoid`` (Eq. 10, T_M = 5), and the released code's two forms ``sigmoid_code_cifar`` (tau =
sigmoid(max A / (min A + eps)), in (0.5, 1); ``hitachi-rd-cv/CDB-loss`` ``CIFAR-LT/losses/cdb_loss.py``,
the default ``--tau dynamic`` of its ``cifar_train.py``, and the EGTEA code) and ``sigmoid_code_imagenet``
(tau = 2 sigmoid(max A / (min A + eps) - 1), in (0, 2); ``ImageNet-LT/loss/CDBSoftmaxLoss.py``).

The default is ``sigmoid_code_cifar``: the dynamic tau the released CIFAR code runs (Eq. 10 with T_M = 5
is in no released file), and on mnist1d-LT the best dynamic variant for CDB-W-CE and CDB-S at rho 10 and
100, where Eq. 10 saturates at tau = 5 (docs/methods/class_difficulty.md has the numbers). Before the
first evaluation every weight is 1 (the official code initialises the difficulty to ones), so epoch 1 is
plain CE / focal and CDB-S starts class-balanced.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping

import torch
from torch.nn import functional as F

from trainables.methods import METHODS
from trainables.methods.base import EpochEvaluation, Method, meta_class_accuracy, require_positive_meta
from trainables.methods.focal import focal_loss
from trainables.params import InactiveParamError, Param

PAPER_VARIANTS = ("linear", "poly", "log", "sigmoid")
CODE_VARIANTS = ("sigmoid_code_cifar", "sigmoid_code_imagenet")
TAU_VARIANTS = PAPER_VARIANTS + CODE_VARIANTS
REDUCTIONS = ("mean", "weighted_mean")


def _check_class_acc(class_acc: torch.Tensor) -> torch.Tensor:
    acc = torch.as_tensor(class_acc)
    if acc.dim() != 1 or acc.numel() == 0:
        raise ValueError("class_acc must be a non-empty 1-D tensor of per-class accuracies, got shape "
                         f"{tuple(acc.shape)}")
    if torch.isnan(acc).any():
        raise ValueError("class_acc contains NaN: some class has no validation examples "
                         "(set dataset.meta_per_class > 0)")
    if (acc < 0).any() or (acc > 1).any():
        raise ValueError(f"class accuracies must lie in [0, 1], got min {float(acc.min())}, max {float(acc.max())}")
    return acc


def _check_eps(eps: float) -> None:
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps must be in (0, 1), got {eps}")


def _accuracy_ratio(class_acc: torch.Tensor, eps: float) -> float:
    """max_c A_c / (min_c A_c + eps): the quantity inside Eq. 5 (and the official code's 'bias')."""
    acc = _check_class_acc(class_acc)
    _check_eps(eps)
    return float(acc.max()) / (float(acc.min()) + eps)


def performance_bias(class_acc: torch.Tensor, eps: float = 0.01) -> float:
    """Paper Eq. 5: bias = max(max_c A_c / (min_c A_c + eps) - 1, 0), in [0, 1/eps - 1].

    0 when every class is equally accurate; the bound B_M = 1/eps - 1 is reached when some class has
    accuracy 1 and another 0.
    """
    return max(_accuracy_ratio(class_acc, eps) - 1.0, 0.0)


def dynamic_tau(bias: float, variant: str, t_max: float = 5.0, eps: float = 0.01, p: int = 2) -> float:
    """tau = f(bias) for one of the dynamic variants (B_M = 1/eps - 1, T_M = ``t_max``).

    - ``linear``:  T_M * bias / B_M                              (Eq. 7)
    - ``poly``:    T_M * (bias / B_M)^p, integer p >= 2           (Eq. 8)
    - ``log``:     T_M * log(1 + bias) / log(1 + B_M)             (Eq. 9, sign corrected)
    - ``sigmoid``: T_M * (2 sigmoid(bias) - 1)                     (Eq. 10)
    - ``sigmoid_code_cifar``:    sigmoid(bias + 1)   (official CIFAR/EGTEA code; T_M unused)
    - ``sigmoid_code_imagenet``: 2 sigmoid(bias)     (official ImageNet-LT code; T_M unused)

    The paper variants take the Eq. 5 bias in [0, B_M]. The code variants are defined on the code's
    unclamped bias max/(min + eps) - 1, which can be as low as -1 (see :func:`cdb_class_weights`).
    """
    if variant not in TAU_VARIANTS:
        raise ValueError(f"unknown tau variant {variant!r}; allowed: {', '.join(TAU_VARIANTS)}")
    _check_eps(eps)
    bias = float(bias)
    b_max = 1.0 / eps - 1.0
    if variant in CODE_VARIANTS:
        if not -1.0 <= bias <= b_max + 1e-9:
            raise ValueError(f"bias must be in [-1, {b_max:g}] for {variant}, got {bias}")
        return _sigmoid(bias + 1.0) if variant == "sigmoid_code_cifar" else 2.0 * _sigmoid(bias)
    if not 0.0 <= bias <= b_max + 1e-9:
        raise ValueError(f"bias must be in [0, B_M = 1/eps - 1 = {b_max:g}], got {bias}")
    if t_max < 0:
        raise ValueError(f"t_max must be >= 0, got {t_max}")
    if variant == "linear":
        return t_max * bias / b_max
    if variant == "poly":
        if isinstance(p, bool) or not isinstance(p, int) or p < 2:
            raise ValueError(f"poly needs an integer p >= 2 (p = 1 is the linear variant), got {p!r}")
        return t_max * (bias / b_max) ** p
    if variant == "log":
        return t_max * math.log1p(bias) / math.log1p(b_max)
    return t_max * (2.0 * _sigmoid(bias) - 1.0)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def resolve_tau(class_acc: torch.Tensor, tau: float | str, *, eps: float = 0.01, t_max: float = 5.0,
                p: int = 2) -> float:
    """The exponent tau for these accuracies: ``tau`` itself if it is a number, else its variant's value."""
    if isinstance(tau, str):
        if tau not in TAU_VARIANTS:
            raise ValueError(f"unknown tau variant {tau!r}; allowed: a number >= 0 or {', '.join(TAU_VARIANTS)}")
        if tau in CODE_VARIANTS:  # the code's bias is not clamped at 0
            return dynamic_tau(_accuracy_ratio(class_acc, eps) - 1.0, tau, t_max, eps, p)
        return dynamic_tau(performance_bias(class_acc, eps), tau, t_max, eps, p)
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau < 0:
        raise ValueError(f"tau must be a number >= 0 or one of {', '.join(TAU_VARIANTS)}, got {tau!r}")
    _check_class_acc(class_acc)
    return float(tau)


def cdb_class_weights(
    class_acc: torch.Tensor, tau: float | str, *, eps: float = 0.01, t_max: float = 5.0, p: int = 2,
    normalize: bool = True, floor: float = 0.0,
) -> torch.Tensor:
    """Class weights w_c = d_c^tau with d_c = max(1 - A_c, floor) (paper Eq. 4).

    ``tau`` is a number >= 0 or a variant name (see :func:`dynamic_tau`). With ``normalize`` the weights
    are rescaled to mean 1 (sum C), as every official script does; if every weight is 0 (all classes
    perfectly classified and tau > 0) the normalised weights are all 1, the limit of equal difficulties.
    ``floor`` (default 0, the paper) keeps a perfectly classified class from getting weight 0.
    Returns a float tensor on the device of ``class_acc`` (float64 input stays float64).
    """
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"floor must be in [0, 1], got {floor}")
    t = resolve_tau(class_acc, tau, eps=eps, t_max=t_max, p=p)
    acc = torch.as_tensor(class_acc)
    acc = acc if acc.is_floating_point() else acc.double()
    weights = (1.0 - acc).clamp_min(floor) ** t
    if not normalize:
        return weights
    total = weights.sum()
    if total <= 0:
        return torch.ones_like(weights)
    return weights / total * len(weights)


def class_sampling_probs(class_weights: torch.Tensor, class_counts: torch.Tensor) -> torch.Tensor:
    """CDB-S class probabilities P_c = w_c / sum w over the classes that have training examples.

    Uniform over those classes when every weight is 0.
    """
    present = class_counts > 0
    w = torch.where(present, class_weights.double(), torch.zeros_like(class_weights, dtype=torch.float64))
    if w.sum() <= 0:
        w = present.double()
    return w / w.sum()


def instance_sampling_probs(class_probs: torch.Tensor, labels: torch.Tensor,
                            class_counts: torch.Tensor) -> torch.Tensor:
    """Per-instance probabilities P_{y_i} / n_{y_i}: classes drawn by P, instances uniformly inside a class."""
    if class_probs.shape != class_counts.shape:
        raise ValueError(f"class_probs {tuple(class_probs.shape)} and class_counts {tuple(class_counts.shape)} "
                         "disagree")
    per_instance = class_probs.double() / class_counts.double().clamp_min(1)
    return per_instance[labels]


class _CDB(Method):
    """Shared machinery: tau, the class-weight vector, its per-epoch refresh and checkpointing.

    CDB learns from the meta set (``needs_meta``): its weights are a function of the per-class accuracy
    on those images, so selecting a model on the same images would favour it. It reads them through
    ``ctx.meta``; the validation split stays for model selection (with ``val_per_class: 0`` the two are
    the same images, the CDB code's protocol: it also keeps the checkpoint with the best accuracy there).
    """

    needs_meta: ClassVar[bool] = True
    meta_use: ClassVar[str] = "sets its class weights from its per-class accuracy on"
    relative_cost: ClassVar[float] = 1.05
    diagnostics_prefix: ClassVar[str] = "cdb_"  # cdb_tau, cdb_bias, cdb_weight_*, cdb_mass_* for all three
    params: ClassVar[dict[str, Param]] = {
        "tau": Param("sigmoid_code_cifar", (float, str), low=0.0, high=100.0, choices=TAU_VARIANTS,
                     help="fixed exponent (paper grid 0.5, 1, 1.5, 2, 5) or a dynamic variant; default: the "
                          "CDB CIFAR code's dynamic tau"),
        "p": Param(2, (int,), low=2, high=10, help="poly only: degree of the polynomial variant"),
        "t_max": Param(5.0, (float,), low=0.0, high=100.0, help="T_M, cap of the paper's dynamic variants"),
        "eps": Param(0.01, (float,), low=0.0, high=1.0, low_open=True, high_open=True,
                     help="bias smoothing of Eq. 5 (dynamic tau only); B_M = 1/eps - 1"),
        "normalize": Param(True, (bool,), help="rescale the weights to mean 1 (official code); false = raw d^tau"),
        "floor": Param(0.0, (float,), low=0.0, high=1.0, help="minimum difficulty (0 = paper: a perfect class gets "
                                                              "weight 0)"),
    }

    @classmethod
    def check(cls, hparams: Mapping[str, Any], given: Mapping[str, Any], path: str) -> None:
        """p only with poly, t_max only with the paper's dynamic variants, eps only with a dynamic tau.

        An inactive knob given at its default passes, so re-resolving a resolved config is a no-op.
        """
        tau = hparams["tau"]
        active = {"p": tau == "poly", "t_max": tau in PAPER_VARIANTS, "eps": isinstance(tau, str)}
        needs = {"p": "tau = 'poly'", "t_max": f"tau in {', '.join(PAPER_VARIANTS)}", "eps": "a dynamic tau"}
        for knob, on in active.items():
            if not on and knob in given and given[knob] != cls.params[knob].default:
                raise InactiveParamError(f"{path}.{knob}", f"only applies with {needs[knob]}, got tau = {tau!r}")

    def __init__(self, hparams: Mapping[str, Any], ctx: Any) -> None:
        super().__init__(hparams, ctx)
        require_positive_meta(ctx, self.name)
        self.class_weights = torch.ones(ctx.num_classes, device=ctx.device)
        self.tau = 0.0  # before the first evaluation the weights are uniform, which is what tau = 0 gives
        self.bias = 0.0
        self.updates = 0

    def on_epoch_end(self, epoch: int, evaluation: EpochEvaluation) -> dict[str, float]:
        """Refresh the weights from this epoch's per-class accuracy on the meta set; the next epoch uses them."""
        return self.update_weights(meta_class_accuracy(self.ctx))

    def update_weights(self, acc: torch.Tensor) -> dict[str, float]:
        """Set tau, the bias and the class weights from per-class accuracies ``acc`` [C]; return diagnostics."""
        hp = self.hparams
        self.bias = performance_bias(acc, hp["eps"])
        self.tau = resolve_tau(acc, hp["tau"], eps=hp["eps"], t_max=hp["t_max"], p=hp["p"])
        self.class_weights = cdb_class_weights(
            acc, self.tau, normalize=hp["normalize"], floor=hp["floor"]).float().to(self.ctx.device)
        self.updates += 1
        out = {"cdb_tau": self.tau, "cdb_bias": self.bias,
               "cdb_weight_min": float(self.class_weights.min()), "cdb_weight_max": float(self.class_weights.max())}
        for group, idx in self.ctx.groups.items():
            if len(idx):
                members = torch.as_tensor(idx, device=self.ctx.device)
                out[f"cdb_weight_{group}"] = float(self.class_weights[members].mean())
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"class_weights": self.class_weights.clone(), "tau": self.tau, "bias": self.bias,
                "updates": self.updates}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.class_weights = state["class_weights"].to(self.ctx.device, torch.float32).clone()
        self.tau, self.bias, self.updates = float(state["tau"]), float(state["bias"]), int(state["updates"])


class _CDBWeighted(_CDB):
    """CDB-W: a per-sample loss times the class weight of the sample's label, reduced over the batch."""

    params: ClassVar[dict[str, Param]] = {
        **_CDB.params,
        "reduction": Param("mean", (str,), choices=REDUCTIONS,
                           help="mean = (1/B) sum w_y l (CIFAR code); weighted_mean = sum w_y l / sum w_y (ImageNet "
                                "code)"),
    }

    def per_sample_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The unweighted loss of each sample (subclasses: CE or focal)."""
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        w = self.class_weights[targets]
        weighted = w * self.per_sample_loss(logits, targets)
        if self.hparams["reduction"] == "mean":
            return weighted.mean()
        return weighted.sum() / w.sum().clamp_min(1e-12)


@METHODS.add
class CDBWeightedCE(_CDBWeighted):
    name = "cdb_w_ce"
    description = "CDB-W-CE: CE weighted by class difficulty (1 - val acc)^tau, fixed or dynamic tau (Sinha et al.)"

    def per_sample_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), targets, reduction="none")


@METHODS.add
class CDBWeightedFocal(_CDBWeighted):
    name = "cdb_w_fl"
    description = "CDB-W-FL: softmax focal loss weighted by class difficulty (1 - val acc)^tau (Sinha et al.)"
    params = {**_CDBWeighted.params,
              "gamma": Param(1.0, (float,), low=0.0, high=10.0, help="focal focusing parameter; 0 = CDB-W-CE")}

    def per_sample_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return focal_loss(logits, targets, self.hparams["gamma"], reduction="none")


@METHODS.add
class CDBSampling(_CDB):
    name = "cdb_s"
    description = "CDB-S: plain CE, classes sampled with probability proportional to (1 - val acc)^tau (Sinha et al.)"
    params = {**_CDB.params,
              "first_epoch": Param("class_balanced", (str,), choices=("class_balanced", "instance_uniform"),
                                   help="sampling before the first evaluation: equal class probabilities (d = 1) or a "
                                        "plain shuffle")}

    def sample_weights(self, epoch: int) -> torch.Tensor | None:
        if self.updates == 0 and self.hparams["first_epoch"] == "instance_uniform":
            return None
        counts = self.ctx.class_counts
        probs = class_sampling_probs(self.class_weights, counts)
        return instance_sampling_probs(probs, self.ctx.train.y, counts)

    def update_weights(self, acc: torch.Tensor) -> dict[str, float]:
        out = super().update_weights(acc)
        probs = class_sampling_probs(self.class_weights, self.ctx.class_counts)
        for group, idx in self.ctx.groups.items():
            if len(idx):
                out[f"cdb_mass_{group}"] = float(probs[torch.as_tensor(idx, device=probs.device)].sum())
        return out
