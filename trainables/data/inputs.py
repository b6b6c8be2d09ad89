"""The data path's conversion of a batch into what every model receives: float, normalised per channel.

Sources keep images as uint8 (four times smaller on the device and in a store); every model starts with
:class:`InputNorm`, built from the dataset's ``input_norm``, so a uint8 batch reaches no layer unconverted
whatever the model family (an MLP on ImageNet-LT included). Float inputs (tabular, mnist1d) pass through.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def to_float(x: torch.Tensor, mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 pixels -> float in [0, 1]; other dtypes -> float; then ``(x - mean) / std`` when given (broadcast)."""
    x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
    return x if mean is None else (x - mean) / std


class InputNorm(nn.Module):
    """:func:`to_float` with the dataset's per-channel ``input_norm`` ((means), (stds) in [0, 1] units) or None.

    The statistics are buffers outside the state dict (weights stay independent of the dataset). Normalising
    needs a channel axis: inputs (N, C, ...) with C = ``len(mean)``.
    """

    def __init__(self, input_norm: Sequence[Sequence[float]] | None, channels: int | None = None) -> None:
        super().__init__()
        self.normed = input_norm is not None
        if input_norm is None:
            return
        mean, std = input_norm
        if len(mean) != len(std) or min(std) <= 0 or (channels is not None and len(mean) != channels):
            raise ValueError(f"input_norm must give {channels or len(mean)} means and as many positive stds, "
                             f"got {input_norm}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.normed:
            return to_float(x)
        if x.dim() != 4:
            raise ValueError(f"per-channel normalisation needs (N, C, H, W) inputs, got {tuple(x.shape)}")
        return to_float(x, self.mean, self.std)
