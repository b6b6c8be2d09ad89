"""Shared pieces of the bi-level (meta-learning) step used by MW-Net, GDW and Difficulty-Net.

The virtual step is built with ``torch.func.functional_call`` on a parameter dict (never by copying
modules): theta'(phi) = theta - lr * grad_theta L_train(theta, phi), kept in the autograd graph so the
meta loss on theta' can be differentiated with respect to the weighting parameters phi.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.func import functional_call


def model_params(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's trainable parameters as a name -> tensor dict (the live tensors, not copies)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def scratch_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """Clones of the model's buffers, so a virtual forward pass never moves the real BatchNorm statistics."""
    return {n: b.clone() for n, b in model.named_buffers()}


def forward_with(model: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                 x: torch.Tensor) -> torch.Tensor:
    """Run ``model`` on ``x`` with the given parameters and buffers substituted."""
    return functional_call(model, {**buffers, **params}, (x,), strict=False)


def virtual_step(
    model: nn.Module,
    x: torch.Tensor,
    loss_of_logits: Callable[[torch.Tensor], torch.Tensor],
    lr: float,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One differentiable SGD step of the model on ``loss_of_logits(model(x))``.

    Returns (theta', buffers): theta' depends on whatever ``loss_of_logits`` depends on (e.g. the
    weighting net), with ``create_graph=True``; ``buffers`` are the scratch buffers the step used, to be
    reused for the meta forward pass.
    """
    params = model_params(model)
    buffers = scratch_buffers(model)
    loss = loss_of_logits(forward_with(model, params, buffers, x))
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=True, allow_unused=True)
    updated = {n: (p if g is None else p - lr * g) for (n, p), g in zip(params.items(), grads, strict=True)}
    return updated, buffers


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The learning rate the model's optimizer uses now (the virtual step uses the same)."""
    return float(optimizer.param_groups[0]["lr"])
