"""Image models: the CIFAR ResNet-32 and torchvision's ResNet-10 / ResNet-50, plus the shared image input.

Image datasets keep their pixels as uint8 tensors on the device; every image model starts with
:class:`ImageInput`, which turns them into normalised floats with the (mean, std) the dataset declares
(the loop passes it as the ``input_norm`` build option). Speed options for GPUs: ``channels_last`` memory
format and ``bf16`` autocast of the backbone (the classifier and the returned logits stay float32).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from trainables.data.inputs import InputNorm
from trainables.models import MODELS, ModelSpec, classifier_head
from trainables.params import ConfigError, Param

IMAGE_MODEL_PARAMS: dict[str, Param] = {
    "channels_last": Param(False, (bool,), help="channels_last memory format (faster convolutions on recent GPUs)"),
    "bf16": Param(False, (bool,), help="bfloat16 autocast of the backbone; classifier and logits stay float32"),
}


def image_channels(input_shape: tuple[int, ...], model: str) -> int:
    """Input channels of an image shape (C, H, W) or (H, W); anything else is a configuration error."""
    if len(input_shape) == 2:
        return 1
    if len(input_shape) == 3:
        return int(input_shape[0])
    raise ConfigError("model.name", f"{model} needs image inputs (C, H, W) or (H, W); this dataset gives "
                                    f"{tuple(input_shape)}: use mlp or cnn1d")


class ImageInput(nn.Module):
    """uint8 (or float) images -> the data path's float (x / 255 - mean) / std (:class:`InputNorm`), with a
    channel axis and the memory format.

    ``input_norm`` is ((mean per channel), (std per channel)) in [0, 1] units, or None (only the /255).
    """

    def __init__(self, channels: int, input_norm: Sequence[Sequence[float]] | None, channels_last: bool) -> None:
        super().__init__()
        self.channels_last = channels_last
        self.norm = InputNorm(input_norm, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        x = self.norm(x)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


class ImageClassifier(nn.Module):
    """ImageInput -> ``features`` (to a flat vector) -> ``classifier``; ``bf16`` autocasts the features only."""

    def __init__(self, inputs: ImageInput, features: nn.Module, classifier: nn.Module, bf16: bool) -> None:
        super().__init__()
        self.input, self.features, self.classifier, self.bf16 = inputs, features, classifier, bf16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input(x)
        # only entered when on: autocast refuses some device types (meta, used by trainables.pairs) even when off
        with torch.autocast(x.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext():
            h = self.features(x)
        return self.classifier(h.float())


# ---- ResNet-32 for CIFAR (He et al. 2016, option-A shortcuts; the LDAM / MW-Net / GDW network) -------------
class BasicBlockA(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = (planes - in_planes) // 2 if stride != 1 or in_planes != planes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # Option A: subsample by 2 and zero-pad the new channels (no parameters).
        short = x if self.pad is None else F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + short)


class CifarResNetFeatures(nn.Module):
    """conv3x3(16) -> 3 stages of ``n`` basic blocks (16, 32, 64 channels) -> global average pool."""

    def __init__(self, in_channels: int, n: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, planes_in = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                blocks.append(BasicBlockA(planes_in, planes, stride if i == 0 else 1))
                planes_in = planes
        self.blocks = nn.Sequential(*blocks)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(F.relu(self.bn1(self.conv1(x))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


def _resnet32(input_shape: tuple[int, ...], num_classes: int, cfg: Mapping[str, Any]) -> nn.Module:
    channels = image_channels(input_shape, "resnet32")
    head = classifier_head(64, num_classes, cfg["normed_classifier"])
    if isinstance(head, nn.Linear):
        nn.init.kaiming_normal_(head.weight)  # LDAM's _weights_init covers Linear layers too
    model = ImageClassifier(ImageInput(channels, cfg.get("input_norm"), cfg["channels_last"]),
                            CifarResNetFeatures(channels, 5), head, cfg["bf16"])
    return model.to(memory_format=torch.channels_last) if cfg["channels_last"] else model


# ---- torchvision ResNet-10 / ResNet-50 (ImageNet-LT, Places-LT) ---------------------------------------------
def load_backbone_weights(backbone: nn.Module, path: str) -> None:
    """Load a local state dict (a torchvision ResNet checkpoint) into ``backbone``; its ``fc.*`` is ignored.

    Accepts a plain state dict or one under ``state_dict``/``model``; strips a ``module.`` prefix. Any other
    missing or unexpected key is a configuration error, so a wrong file never half-loads silently.
    """
    if not os.path.isfile(path):
        raise ConfigError("model.weights", f"no file at {path!r}: pretrained weights load only from a local file")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.removeprefix("module.").startswith("fc.")}
    try:
        missing, unexpected = backbone.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches raise even with strict=False
        reason = str(err).splitlines()[1].strip()
        raise ConfigError("model.weights", f"{path!r} does not fit this network: {reason}") from None
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ConfigError("model.weights", f"{path!r} does not fit this network: missing {missing[:5]}, "
                                           f"unexpected {unexpected[:5]}")


def _torchvision_resnet(depth: int):
    def build(input_shape: tuple[int, ...], num_classes: int, cfg: Mapping[str, Any]) -> nn.Module:
        from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

        channels = image_channels(input_shape, f"resnet{depth}")
        block, layers = (BasicBlock, [1, 1, 1, 1]) if depth == 10 else (Bottleneck, [3, 4, 6, 3])
        backbone = ResNet(block, layers)
        if cfg["weights"] is not None:
            load_backbone_weights(backbone, cfg["weights"])
        if channels != 3:
            backbone.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        width = backbone.fc.in_features
        backbone.fc = nn.Identity()
        model = ImageClassifier(ImageInput(channels, cfg.get("input_norm"), cfg["channels_last"]),
                                backbone, classifier_head(width, num_classes, cfg["normed_classifier"]), cfg["bf16"])
        return model.to(memory_format=torch.channels_last) if cfg["channels_last"] else model

    return build


_WEIGHTS = Param(None, (str,), nullable=True,
                 help="path of a local torchvision state dict to start from (its fc layer is dropped); never "
                      "downloaded")

MODELS.add(ModelSpec("resnet32", "CIFAR ResNet-32 (0.46M params, option-A shortcuts; LDAM/MW-Net/GDW/CDB), image input",
                     _resnet32, dict(IMAGE_MODEL_PARAMS)))
MODELS.add(ModelSpec("resnet10", "ResNet-10 (torchvision BasicBlock [1,1,1,1]) for ImageNet-LT / Places-LT, "
                                 "image input",
                     _torchvision_resnet(10), {**IMAGE_MODEL_PARAMS, "weights": _WEIGHTS}))
MODELS.add(ModelSpec("resnet50", "ResNet-50 (torchvision) for ImageNet-LT / Places-LT, image input",
                     _torchvision_resnet(50), {**IMAGE_MODEL_PARAMS, "weights": _WEIGHTS}))
