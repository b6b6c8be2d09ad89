"""LeNet-5 (LeCun et al. 1998) for MNIST-size images: the network of the CDB 4-vs-9 and L2RW MNIST setups."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from trainables.models import MODELS, ModelSpec, classifier_head
from trainables.models.resnet import IMAGE_MODEL_PARAMS, ImageClassifier, ImageInput, image_channels
from trainables.params import Param


class LeNet5Features(nn.Module):
    """conv5x5(6) -> ReLU -> maxpool2 -> conv5x5(16) -> ReLU -> maxpool2 -> fc 120 -> ReLU -> fc 84 -> ReLU.

    ``padding`` 2 on the first convolution gives the classic 32x32 geometry from 28x28 MNIST digits
    (16 x 5 x 5 features); the flattened size is computed from the input, so other sizes work too.
    """

    def __init__(self, input_shape: tuple[int, ...], channels: int, padding: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(channels, 6, 5, padding=padding), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        )
        h, w = input_shape[-2:]
        with torch.no_grad():
            flat = self.conv(torch.zeros(1, channels, h, w)).shape[1]
        self.fc = nn.Sequential(nn.Linear(flat, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))


def _lenet5(input_shape: tuple[int, ...], num_classes: int, cfg: Mapping[str, Any]) -> nn.Module:
    channels = image_channels(input_shape, "lenet5")
    if min(input_shape[-2:]) + 2 * cfg["padding"] < 16:
        raise ValueError(f"lenet5 needs images of at least 16x16 after padding, got {tuple(input_shape)}")
    model = ImageClassifier(ImageInput(channels, cfg.get("input_norm"), cfg["channels_last"]),
                            LeNet5Features(input_shape, channels, cfg["padding"]),
                            classifier_head(84, num_classes, cfg["normed_classifier"]), cfg["bf16"])
    return model.to(memory_format=torch.channels_last) if cfg["channels_last"] else model


MODELS.add(ModelSpec("lenet5", "LeNet-5 for MNIST-size images (2 conv + 3 fc layers), image input", _lenet5,
                     {**IMAGE_MODEL_PARAMS, "padding": Param(2, (int,), low=0, high=4,
                                                             help="first-conv padding; 2 = classic 32x32 geometry")}))
