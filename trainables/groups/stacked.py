"""Hand-fused training forward of k same-architecture models whose parameters are stacked (the fast path of
the fused trial-group engine, :mod:`trainables.groups.fused`).

Parameters and buffers keep the model's own names, each stacked over the members to ``[k, *shape]``;
the input is ``[k, B, ...]`` (member m's batch at ``x[m]``) and the output is the logits ``[k, B, C]``.
The forward is the models' own arithmetic, re-expressed so that one kernel serves all members:

- convolutions run as one grouped convolution over the members' channels side by side (``groups = k``);
- BatchNorm runs once over k x C channels: its statistics are per channel, so every member's running mean
  and variance update exactly as its own module's would;
- linear layers run as one batched matrix product (``baddbmm``) over the members.

Activations move between three layouts, converted only where an operation needs another one:
``MEMBERS`` ``[k, B, ...]`` (the input), ``CHANNELS`` ``[B, k*C, ...]`` (convolutions, pooling, image
BatchNorm) and ``FEATURES`` ``[k, F, B]`` (linear layers; a linear layer's output feeds BatchNorm1d as
``[1, k*F, B]`` without a copy). Only the module types below are translated, each exactly as its
``forward`` computes; :func:`fast_forward` returns None for a model containing anything else, and the
engine then uses the generic ``vmap`` path. Training mode only (evaluation runs each member's own model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from trainables.data.inputs import InputNorm
from trainables.models import NormedLinear
from trainables.models.lenet import LeNet5Features
from trainables.models.resnet import BasicBlockA, CifarResNetFeatures, ImageClassifier, ImageInput
from trainables.models.small import CNN1D, MLP

Tensors = Mapping[str, torch.Tensor]
StackedForward = Callable[[Tensors, Tensors, torch.Tensor], torch.Tensor]

MEMBERS, CHANNELS, FEATURES = "members", "channels", "features"


@dataclass(frozen=True)
class Stacked:
    """An activation of all k members in one of the three layouts."""

    t: torch.Tensor
    layout: str
    k: int

    def members(self) -> torch.Tensor:
        """``[k, B, ...]``."""
        if self.layout == CHANNELS:
            return self.t.unflatten(1, (self.k, -1)).transpose(0, 1)
        return self.t.transpose(1, 2) if self.layout == FEATURES else self.t

    def channels(self) -> torch.Tensor:
        """``[B, k*C, ...]`` (member m's channels at m*C .. (m+1)*C - 1)."""
        if self.layout == MEMBERS:
            return self.t.transpose(0, 1).flatten(1, 2)
        return self.t.permute(2, 0, 1).flatten(1) if self.layout == FEATURES else self.t

    def features(self) -> torch.Tensor:
        """``[k, F, B]`` of flat features."""
        if self.layout == MEMBERS:
            if self.t.dim() != 3:
                raise ValueError(f"a linear layer needs flat features, got member activations {tuple(self.t.shape)}")
            return self.t.transpose(1, 2)
        if self.layout == CHANNELS:
            if self.t.dim() != 2:
                raise ValueError(f"a linear layer needs flat features, got channel activations {tuple(self.t.shape)}")
            return self.t.unflatten(1, (self.k, -1)).permute(1, 2, 0)
        return self.t


class _Pass:
    """One fused forward: the stacked parameters and buffers, and the translation of each module type."""

    def __init__(self, params: Tensors, buffers: Tensors, k: int) -> None:
        self.params, self.buffers, self.k = params, buffers, k

    def run(self, module: nn.Module, name: str, h: Stacked) -> Stacked:
        return _HANDLERS[type(module)][0](self, module, name, h)

    def sequence(self, modules: nn.Sequential, name: str, h: Stacked) -> Stacked:
        for child_name, child in modules.named_children():
            h = self.run(child, f"{name}{child_name}.", h)
        return h

    def flat(self, name: str) -> torch.Tensor | None:
        """A stacked parameter with its member axis merged into the next one ([k, C, ...] -> [k*C, ...])."""
        p = self.params.get(name)
        return None if p is None else p.flatten(0, 1)


# ---- handlers: (pass, module, parameter-name prefix, activation) -> activation -------------------------------
def _linear(run: _Pass, m: nn.Linear, name: str, h: Stacked) -> Stacked:
    x, weight, bias = h.features(), run.params[f"{name}weight"], run.params.get(f"{name}bias")
    out = torch.bmm(weight, x) if bias is None else torch.baddbmm(bias.unsqueeze(2), weight, x)
    return Stacked(out, FEATURES, run.k)


def _normed_linear(run: _Pass, m: NormedLinear, name: str, h: Stacked) -> Stacked:
    # normalize(x, dim=1) @ normalize(W, dim=0), per member; x is [k, F, B] here, W [k, F, C].
    weight = F.normalize(run.params[f"{name}weight"], dim=1)
    return Stacked(torch.bmm(weight.transpose(1, 2), F.normalize(h.features(), dim=1)), FEATURES, run.k)


def _batch_norm(run: _Pass, m: nn.modules.batchnorm._BatchNorm, name: str, h: Stacked) -> Stacked:
    """Training-mode BatchNorm over all members' channels at once (what ``_BatchNorm.forward`` computes)."""
    run.buffers[f"{name}num_batches_tracked"].add_(1)
    if h.layout == FEATURES:  # [k, F, B] -> [1, k*F, B]: statistics per channel over the batch, no copy
        k, features, batch = h.t.shape
        x = h.t.reshape(1, k * features, batch)
    else:
        x = h.channels()
    out = F.batch_norm(x, run.buffers[f"{name}running_mean"].view(-1), run.buffers[f"{name}running_var"].view(-1),
                       run.flat(f"{name}weight"), run.flat(f"{name}bias"), True, m.momentum, m.eps)
    return Stacked(out.view(h.t.shape), FEATURES, run.k) if h.layout == FEATURES else Stacked(out, CHANNELS, run.k)


def _conv(run: _Pass, m: nn.Conv1d | nn.Conv2d, name: str, h: Stacked) -> Stacked:
    conv = F.conv1d if isinstance(m, nn.Conv1d) else F.conv2d
    out = conv(h.channels(), run.flat(f"{name}weight"), run.flat(f"{name}bias"), m.stride, m.padding, m.dilation,
               m.groups * run.k)
    return Stacked(out, CHANNELS, run.k)


def _relu(run: _Pass, m: nn.ReLU, name: str, h: Stacked) -> Stacked:
    return Stacked(torch.relu(h.t), h.layout, run.k)


def _per_channel(run: _Pass, m: nn.Module, name: str, h: Stacked) -> Stacked:
    """Pooling: the module itself, on the members' channels side by side."""
    return Stacked(m(h.channels()), CHANNELS, run.k)


def _flatten(run: _Pass, m: nn.Flatten, name: str, h: Stacked) -> Stacked:
    if h.layout == FEATURES:
        return h
    # [B, k*C, ...] -> [B, k*C*...]: member m's flattened features stay one contiguous block, in its own order.
    return Stacked(h.t.flatten(1), CHANNELS, run.k) if h.layout == CHANNELS else Stacked(h.t.flatten(2), MEMBERS, run.k)


def _sequential(run: _Pass, m: nn.Sequential, name: str, h: Stacked) -> Stacked:
    return run.sequence(m, name, h)


def _mlp(run: _Pass, m: MLP, name: str, h: Stacked) -> Stacked:
    h = run.run(m.input, f"{name}input.", h)
    return run.run(m.classifier, f"{name}classifier.", run.run(m.features, f"{name}features.", h))


def _cnn1d(run: _Pass, m: CNN1D, name: str, h: Stacked) -> Stacked:
    h = run.run(m.input, f"{name}input.", h)
    if h.t.dim() == 3:  # [k, B, L] -> [k, B, 1, L], as CNN1D.forward unsqueezes [B, L]
        h = Stacked(h.members().unsqueeze(2), MEMBERS, run.k)
    return run.run(m.classifier, f"{name}classifier.", run.run(m.features, f"{name}features.", h))


def _image_input(run: _Pass, m: ImageInput, name: str, h: Stacked) -> Stacked:
    x = h.members()  # per-sample arithmetic without parameters: the module on the k*B samples
    return Stacked(m(x.flatten(0, 1)).unflatten(0, (run.k, -1)), MEMBERS, run.k)


def _image_classifier(run: _Pass, m: ImageClassifier, name: str, h: Stacked) -> Stacked:
    h = run.run(m.input, f"{name}input.", h)
    with torch.autocast(h.t.device.type, dtype=torch.bfloat16, enabled=m.bf16):
        h = run.run(m.features, f"{name}features.", h)
    return run.run(m.classifier, f"{name}classifier.", Stacked(h.t.float(), h.layout, run.k))


def _lenet5(run: _Pass, m: LeNet5Features, name: str, h: Stacked) -> Stacked:
    return run.run(m.fc, f"{name}fc.", run.run(m.conv, f"{name}conv.", h))


def _basic_block(run: _Pass, m: BasicBlockA, name: str, h: Stacked) -> Stacked:
    x = Stacked(h.channels(), CHANNELS, run.k)
    out = _relu(run, m, name, run.run(m.bn1, f"{name}bn1.", run.run(m.conv1, f"{name}conv1.", x)))
    out = run.run(m.bn2, f"{name}bn2.", run.run(m.conv2, f"{name}conv2.", out))
    short = x.t
    if m.pad is not None:  # option A, per member: subsample by 2, zero-pad each member's own channels
        short = short.unflatten(1, (run.k, -1))[..., ::2, ::2]
        short = F.pad(short, (0, 0, 0, 0, m.pad, m.pad)).flatten(1, 2)
    return Stacked(torch.relu(out.t + short), CHANNELS, run.k)


def _resnet_features(run: _Pass, m: CifarResNetFeatures, name: str, h: Stacked) -> Stacked:
    h = _relu(run, m, name, run.run(m.bn1, f"{name}bn1.", run.run(m.conv1, f"{name}conv1.", h)))
    h = run.run(m.blocks, f"{name}blocks.", h)
    return Stacked(F.adaptive_avg_pool2d(h.channels(), 1).flatten(1), CHANNELS, run.k)


def _always(m: nn.Module) -> bool:
    return True


def _standard_batch_norm(m: nn.modules.batchnorm._BatchNorm) -> bool:
    return m.affine and m.track_running_stats and m.momentum is not None


def _standard_conv(m: nn.Conv1d | nn.Conv2d) -> bool:
    return m.padding_mode == "zeros" and not isinstance(m.padding, str)


def _standard_flatten(m: nn.Flatten) -> bool:
    return m.start_dim == 1 and m.end_dim == -1


# type -> (handler, whether this instance is one the handler translates exactly)
_HANDLERS: dict[type, tuple[Callable[[_Pass, nn.Module, str, Stacked], Stacked], Callable[[nn.Module], bool]]] = {
    nn.Linear: (_linear, _always),
    NormedLinear: (_normed_linear, _always),
    nn.BatchNorm1d: (_batch_norm, _standard_batch_norm),
    nn.BatchNorm2d: (_batch_norm, _standard_batch_norm),
    nn.Conv1d: (_conv, _standard_conv),
    nn.Conv2d: (_conv, _standard_conv),
    nn.ReLU: (_relu, _always),
    nn.MaxPool1d: (_per_channel, _always),
    nn.MaxPool2d: (_per_channel, _always),
    nn.AdaptiveAvgPool1d: (_per_channel, _always),
    nn.AdaptiveAvgPool2d: (_per_channel, _always),
    nn.Flatten: (_flatten, _standard_flatten),
    nn.Sequential: (_sequential, _always),
    MLP: (_mlp, _always),
    CNN1D: (_cnn1d, _always),
    ImageInput: (_image_input, _always),
    InputNorm: (_image_input, _always),  # per-sample arithmetic without parameters, like ImageInput
    ImageClassifier: (_image_classifier, _always),
    LeNet5Features: (_lenet5, _always),
    BasicBlockA: (_basic_block, _always),
    CifarResNetFeatures: (_resnet_features, _always),
}


def fast_forward(model: nn.Module) -> StackedForward | None:
    """The hand-fused training forward for models built only of the translated module types, else None.

    Exact types are required (a subclass may override ``forward``). The returned function takes the
    stacked parameters and buffers (updated in place: BatchNorm statistics) and ``x`` ``[k, B, ...]``.
    """
    for module in model.modules():
        entry = _HANDLERS.get(type(module))
        if entry is None or not entry[1](module):
            return None

    def forward(params: Tensors, buffers: Tensors, x: torch.Tensor) -> torch.Tensor:
        return _Pass(params, buffers, x.shape[0]).run(model, "", Stacked(x, MEMBERS, x.shape[0])).members()

    return forward
