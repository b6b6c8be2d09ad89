"""The Method protocol: what a re-weighting / re-sampling method may change in the one training loop.

The loop (:func:`trainables.loop.train`) calls these hooks, in this order::

    method = MethodCls(hparams, ctx)           # ctx: class counts, the meta set, device, RNG, predict()
    model options <- MethodCls.model_options(hparams)   # before the model is built (e.g. LDAM's cosine head)
    method.setup(model, optimizer)              # once, after the model and optimizer exist (and before a resume)
    for epoch in range(start, epochs):
        method.on_epoch_start(epoch)            # e.g. IDS refreshes difficulty, LDAM-DRW switches weights on
        weights = method.sample_weights(epoch)  # None = uniform shuffle; else N draws with replacement
        for x, y, idx in batches:
            loss = method.train_step(model, optimizer, x, y, idx)   # default: forward, self.loss, backward, step
        diagnostics = method.on_epoch_end(epoch, evaluation)       # e.g. CDB reads per-class val accuracy
    method.state_dict() / load_state_dict()     # everything an exact resume needs

A method overrides only what it changes: a loss-only method overrides :meth:`Method.loss`; a sampler
overrides :meth:`Method.sample_weights`; a bi-level meta method overrides :meth:`Method.train_step`.

Which data a method learns from is declared, not inferred: every method learns from the training split;
a method with ``needs_meta`` also learns from the balanced meta split (MW-Net, GDW and Difficulty-Net
meta-train on it; CDB sets its class weights from its per-class accuracy on it), reads it only through
``ctx.meta`` and never sees the validation split, which is reserved for model selection
(:func:`Method.learns_from`; :mod:`trainables.selection` turns this into the protocol's ``val_per_class``).
Hyperparameters are declared in ``params`` (see :mod:`trainables.params`); that declaration is the single
source the spec validator and the search spaces check against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

import numpy as np
import torch
from torch import nn

from trainables.data.protocol import Split
from trainables.metrics import class_accuracy
from trainables.params import ConfigError, Param, resolve


@dataclass
class MethodContext:
    """What a method may know about the trial. Tensors live on ``device``."""

    num_classes: int
    class_counts: torch.Tensor  # float32 [C]: training-label counts per class (what a method can observe)
    train: Split
    meta: Split
    device: torch.device
    epochs: int
    batch_size: int
    generator: torch.Generator  # the trial's sampling RNG; the loop checkpoints its state
    # Eval-mode class probabilities of the current model for a batch of inputs (no grad, batched).
    predict: Callable[[torch.Tensor], torch.Tensor]
    groups: Mapping[str, np.ndarray] = field(default_factory=dict)  # many/medium/few class indices

    def meta_batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A random batch of the clean meta set, drawn with the trial's generator."""
        n = len(self.meta)
        idx = torch.randperm(n, generator=self.generator)[: min(size, n)].to(self.device)
        return self.meta.x[idx], self.meta.y[idx]


@dataclass
class EpochEvaluation:
    """What the loop measured after an epoch: per-class accuracies on the balanced sets, and the metrics."""

    val_class_acc: torch.Tensor
    test_class_acc: torch.Tensor
    metrics: Mapping[str, float]


class Method:
    """Base class: plain cross-entropy training. Subclasses override the hooks they change."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    params: ClassVar[dict[str, Param]] = {}
    # True: the method learns from the meta set (meta-trains on it or sets its weights from it), so it needs
    # meta_per_class > 0 and model selection needs a separate validation set to be fair (trainables.selection).
    needs_meta: ClassVar[bool] = False
    meta_use: ClassVar[str] = ""  # how, for messages: "<name> <meta_use> the meta set"
    relative_cost: ClassVar[float] = 1.0  # epoch cost relative to CE, for `raysweep plan` estimates
    # What the names of the diagnostics :meth:`on_epoch_end` reports start with ("" = the method's name + "_"),
    # so a spec's table.metric can be checked before a sweep (see :meth:`reports`).
    diagnostics_prefix: ClassVar[str] = ""
    # The fused trial-group engine (trainables.groups.fused) may train members of this method in one stacked
    # forward/backward: it calls only ``loss`` per member per batch (never ``train_step``), so a method
    # is fusable when it keeps the default ``train_step`` and its ``loss`` draws from no global RNG.
    # Non-fusable methods run in a group one member after another (the loop engine).
    fusable: ClassVar[bool] = True

    def __init__(self, hparams: Mapping[str, Any], ctx: MethodContext) -> None:
        self.hparams = dict(hparams)
        self.ctx = ctx

    # ---- configuration -------------------------------------------------------------------------
    @classmethod
    def learns_from(cls) -> tuple[str, ...]:
        """The splits whose data the trained model depends on: ("train",) or ("train", "meta").

        The validation split is never among them: the loop only evaluates on it.
        """
        return ("train", "meta") if cls.needs_meta else ("train",)

    @classmethod
    def resolve_params(cls, raw: Mapping[str, Any] | None, path: str = "method") -> dict[str, Any]:
        """Validate hyperparameters, fill defaults, then run the cross-field :meth:`check`."""
        hp = resolve(cls.params, raw, path)
        # A knob "given" at its default is indistinguishable from one left out; this keeps resolving an
        # already-resolved config (the loop re-validates every planned trial) idempotent.
        given = {k: v for k, v in (raw or {}).items() if hp[k] != cls.params[k].default}
        cls.check(hp, given, path)
        return hp

    @classmethod
    def check(cls, hparams: Mapping[str, Any], given: Mapping[str, Any], path: str) -> None:
        """Cross-field constraints (e.g. a conditional knob set without its parent). Raise ConfigError.

        ``given`` holds the knobs the user set to a value other than their default.
        """

    @classmethod
    def reports(cls, metric: str) -> bool:
        """Whether ``metric`` is one of this method's own per-epoch diagnostics (by its prefix)."""
        return metric.startswith(cls.diagnostics_prefix or f"{cls.name}_")

    @classmethod
    def acts_from_epoch(cls, hparams: Mapping[str, Any], epochs: int) -> int:
        """First epoch (0-based) at which the method differs from its base loss (e.g. LDAM-DRW's deferred
        re-weighting). ``raysweep plan`` warns when an ASHA grace period ends before it."""
        return 0

    @classmethod
    def model_options(cls, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """Model config overrides this method needs (e.g. ``{"normed_classifier": True}``)."""
        return {}

    # ---- hooks ---------------------------------------------------------------------------------
    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Called once after the model and optimizer exist, before any checkpoint is loaded."""

    def on_epoch_start(self, epoch: int) -> None:
        """Called before the epoch's batches are drawn (epochs count from 0)."""

    def sample_weights(self, epoch: int) -> torch.Tensor | None:
        """Per-instance sampling probabilities over the training set, or None for a uniform shuffle."""
        return None

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The scalar training loss of a batch (its value is what gets logged as ``train_loss``)."""
        return nn.functional.cross_entropy(logits, targets)

    def train_step(
        self, model: nn.Module, optimizer: torch.optim.Optimizer,
        x: torch.Tensor, y: torch.Tensor, indices: torch.Tensor,
    ) -> torch.Tensor:
        """One optimisation step on a batch; returns the detached loss to log."""
        logits = model(x)
        loss = self.loss(logits, y, indices)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    def on_epoch_end(self, epoch: int, evaluation: EpochEvaluation) -> dict[str, float]:
        """Called after evaluation; returns method diagnostics to report (numbers only)."""
        return {}

    # ---- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything an exact resume needs (tensors, numbers, nested state dicts)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state:
            raise ValueError(f"{self.name}: unexpected method state keys {sorted(state)}")


def require_positive_meta(ctx: MethodContext, method: str) -> None:
    """Methods that learn from the meta set call this in __init__: they cannot run without one."""
    if len(ctx.meta) == 0:
        raise ConfigError("dataset.meta_per_class", f"method {method!r} needs a meta set; set it > 0")


def meta_class_accuracy(ctx: MethodContext) -> torch.Tensor:
    """Per-class top-1 accuracy of the current model on the whole meta set (eval mode, no grad), float64 [C]."""
    pred = ctx.predict(ctx.meta.x).argmax(1)
    return class_accuracy(pred, ctx.meta.y, ctx.num_classes)
