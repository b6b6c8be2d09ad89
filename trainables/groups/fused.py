"""The fused trial-group engine: k members' training batches through one stacked forward/backward per step.

Between epochs every member is an ordinary :class:`trainables.loop.Trial` (its model, optimizer, method
and RNG are the source of truth: evaluation, checkpoints and resume are the trial's own). For one epoch
of training, :func:`fused_train_pass` stacks the members' parameters, BatchNorm buffers and momentum
buffers, runs each step as

    x[k, B, ...] (member m's own batch and augmentation) -> logits[k, B, C] = forward(params, buffers, x)
    loss = sum_m method_m.loss(logits[m], y_m, idx_m)      # each member's own loss and class weights
    backward; StackedSGD step                               # each member's own lr, momentum, weight decay

and writes everything back into the members. Members never mix: every stacked operation is per member
(grouped convolutions, BatchNorm per channel, batched matrix products), so the gradient of the summed
loss in member m's slice is member m's own gradient, and a member whose loss turns NaN harms no other.

Two forwards: the hand-fused fast path of :mod:`trainables.groups.stacked` for models built of the
module types it translates, and ``torch.func.vmap`` over ``functional_call`` for any other model (the
stacked BatchNorm running statistics are batched buffers, which vmap updates in place per member).
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from trainables.groups.stacked import StackedForward, Tensors, fast_forward
from trainables.loop import Trial

FORWARDS = ("auto", "fast", "vmap")


def vmap_forward(model: nn.Module) -> StackedForward:
    """The generic stacked training forward: ``model``'s own forward, vmapped over the members."""
    template = copy.deepcopy(model).train()

    def one(params: Tensors, buffers: Tensors, x: torch.Tensor) -> torch.Tensor:
        return functional_call(template, (params, buffers), (x,))

    return vmap(one)


def stacked_forward(model: nn.Module, kind: str = "auto") -> StackedForward:
    """The stacked forward for members shaped like ``model``: ``fast`` (hand-fused), ``vmap``, or ``auto``
    (hand-fused when the model is built only of translated modules, else vmap)."""
    if kind not in FORWARDS:
        raise ValueError(f"forward must be one of {', '.join(FORWARDS)}, got {kind!r}")
    if kind != "vmap":
        fast = fast_forward(copy.deepcopy(model).train())
        if fast is not None:
            return fast
        if kind == "fast":
            raise ValueError(f"no hand-fused forward for {type(model).__name__}: it has a module the fast path "
                             "does not translate (use vmap)")
    return vmap_forward(model)


class ModelStack:
    """The parameters (leaf tensors, [k, *shape]) and buffers of k same-architecture models, stacked."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        first = models[0]
        shapes = {n: p.shape for n, p in first.state_dict(keep_vars=True).items()}
        for model in models[1:]:
            if {n: p.shape for n, p in model.state_dict(keep_vars=True).items()} != shapes:
                raise ValueError("fused members need the same architecture (parameter names and shapes)")
        with torch.no_grad():
            self.params = {n: torch.stack([dict(m.named_parameters())[n] for m in models]).requires_grad_()
                           for n, _ in first.named_parameters()}
            self.buffers = {n: torch.stack([dict(m.named_buffers())[n] for m in models])
                            for n, _ in first.named_buffers()}

    @torch.no_grad()
    def write_back(self, models: Sequence[nn.Module]) -> None:
        for m, model in enumerate(models):
            for n, p in model.named_parameters():
                p.copy_(self.params[n][m])
            for n, b in model.named_buffers():
                b.copy_(self.buffers[n][m])


class StackedSGD:
    """``torch.optim.SGD`` (dampening 0) over stacked parameters, with each member's own hyperparameters.

    Per member m, exactly SGD's update: g = grad + wd_m p; buf = momentum_m buf + g (buf = g at the first
    step, which a zero buffer gives); p -= lr_m (g + momentum_m buf if nesterov_m else buf). The lr is
    read from each member's optimizer when the stack is made, i.e. once per epoch, as its scheduler sets it.
    """

    def __init__(self, params: dict[str, torch.Tensor], optimizers: Sequence[torch.optim.Optimizer],
                 models: Sequence[nn.Module]) -> None:
        groups = []
        for opt in optimizers:
            if not isinstance(opt, torch.optim.SGD) or len(opt.param_groups) != 1:
                raise ValueError("the fused engine steps members whose optimizer is SGD with one parameter group")
            group = opt.param_groups[0]
            if group["dampening"] != 0 or group["maximize"]:
                raise ValueError("the fused engine's SGD supports dampening 0 and maximize False only")
            groups.append(group)
        self.params = params
        device = next(iter(params.values())).device

        def per_member(key: str) -> torch.Tensor:
            return torch.tensor([float(g[key]) for g in groups], device=device)

        self.neg_lr, self.weight_decay = -per_member("lr"), per_member("weight_decay")
        self.momentum = per_member("momentum")
        self.nesterov = torch.tensor([bool(g["nesterov"]) for g in groups], device=device)
        self.any_nesterov = any(g["nesterov"] for g in groups)
        self.uses_momentum = [g["momentum"] != 0 for g in groups]
        self.any_weight_decay = any(g["weight_decay"] != 0 for g in groups)
        with torch.no_grad():
            self.momentum_buffers = {
                name: torch.stack([_momentum_buffer(opt, dict(model.named_parameters())[name])
                                   for opt, model in zip(optimizers, models, strict=True)])
                for name in params} if any(self.uses_momentum) else {}

    def _per_member(self, values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return values.view(-1, *([1] * (like.dim() - 1)))

    @torch.no_grad()
    def step(self) -> None:
        for name, p in self.params.items():
            g = p.grad
            if self.any_weight_decay:
                g = g.addcmul(p, self._per_member(self.weight_decay, p))
            if self.momentum_buffers:
                momentum = self._per_member(self.momentum, p)
                buf = self.momentum_buffers[name].mul_(momentum).add_(g)
                if self.any_nesterov:
                    g = torch.where(self._per_member(self.nesterov, p), g.addcmul(buf, momentum), buf)
                else:
                    g = buf
            p.addcmul_(g, self._per_member(self.neg_lr, p))

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None

    @torch.no_grad()
    def write_back(self, optimizers: Sequence[torch.optim.Optimizer], models: Sequence[nn.Module]) -> None:
        """Each member's momentum buffers into its optimizer's state (SGD keeps none with momentum 0)."""
        for m, (opt, model) in enumerate(zip(optimizers, models, strict=True)):
            opt._opt_called = True  # it did step, through the stack: tells its LR scheduler (no false warning)
            if not self.uses_momentum[m]:
                continue
            for name, p in model.named_parameters():
                opt.state[p]["momentum_buffer"] = self.momentum_buffers[name][m].clone()


def _momentum_buffer(optimizer: torch.optim.Optimizer, p: torch.Tensor) -> torch.Tensor:
    buf = optimizer.state.get(p, {}).get("momentum_buffer")
    return torch.zeros_like(p) if buf is None else buf


def fused_train_pass(trials: Sequence[Trial], batches: Sequence[Sequence[torch.Tensor]],
                     forward: StackedForward) -> list[float]:
    """Train each trial on its own epoch of index ``batches``, all members in one forward/backward per step.

    The trials must have begun their epoch (:meth:`Trial.begin_epoch` gave ``batches``) and their methods
    must train through ``Method.loss`` (``fusable``). Returns each member's mean training loss, as
    :meth:`Trial.run_epoch` computes it; the trials' models and optimizer states hold the result.
    """
    if len({len(b) for b in batches}) != 1 or any(len({len(i) for i in step}) != 1
                                                  for step in zip(*batches, strict=True)):
        raise ValueError("fused members need the same number and sizes of batches (same training set and batch size)")
    models = [t.model for t in trials]
    stack = ModelStack(models)
    sgd = StackedSGD(stack.params, [t.optimizer for t in trials], models)
    totals, count = torch.zeros(len(trials), device=trials[0].device), 0
    for step in zip(*batches, strict=True):
        parts = [t.batch(idx) for t, idx in zip(trials, step, strict=True)]
        logits = forward(stack.params, stack.buffers, torch.stack([x for x, _, _ in parts]))
        losses = torch.stack([t.method.loss(logits[m], y, idx)
                              for m, (t, (_, y, idx)) in enumerate(zip(trials, parts, strict=True))])
        sgd.zero_grad()
        losses.sum().backward()
        sgd.step()
        totals += losses.detach().float() * len(step[0])
        count += len(step[0])
    stack.write_back(models)
    sgd.write_back([t.optimizer for t in trials], models)
    return [float(total) / max(count, 1) for total in totals]
