"""Augmentation of uint8 image batches on their own device (the way the fastest CIFAR trainers do it).

Every function takes a batch ``x`` of shape (N, C, H, W) and dtype uint8 on any device plus the trial's
CPU ``torch.Generator``, draws its random numbers from that generator (so a trial seed fixes them and a
resume continues them), and returns a uint8 batch of the same shape. The loop applies
:class:`ImageAugment` to training batches only; meta, validation and test images are never augmented.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

PAD_MODES = ("zeros", "reflect")
CROPS = ("pad", "none")
# torchvision's AutoAugmentPolicy values. torchvision (and torch._dynamo through it, about 3 s) is imported only
# where an AutoAugment operation runs: a sweep without one never pays for it, in the driver or a worker.
POLICIES = ("imagenet", "cifar10", "svhn")


def _check_batch(x: torch.Tensor) -> None:
    if x.dim() != 4 or x.dtype != torch.uint8:
        raise ValueError(f"expected a uint8 batch of shape (N, C, H, W), got {x.dtype} {tuple(x.shape)}")


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = 4,
                     pad_mode: str = "zeros", flip: bool = True) -> torch.Tensor:
    """Pad by ``padding``, take a random HxW crop, mirror half of the images; one gather, no padded copy.

    Equals torchvision's ``RandomCrop(H, padding, padding_mode=constant|reflect)`` then
    ``RandomHorizontalFlip()``. Draw order: row offsets (N), column offsets (N), flips (N).
    """
    _check_batch(x)
    if padding < 0 or pad_mode not in PAD_MODES:
        raise ValueError(f"padding must be >= 0 and pad_mode one of {PAD_MODES}, got {padding}, {pad_mode!r}")
    n, c, h, w = x.shape
    if pad_mode == "reflect" and padding >= min(h, w):
        raise ValueError(f"reflect padding {padding} needs images larger than it, got {h}x{w}")
    dev = x.device
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(dev)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(dev)
    rows = dy[:, None] + torch.arange(h, device=dev) - padding  # (N, H) in padded -> original coordinates
    cols = dx[:, None] + torch.arange(w, device=dev) - padding
    if flip:
        mirrored = torch.rand(n, generator=generator).to(dev) < 0.5
        cols = torch.where(mirrored[:, None], cols.flip(1), cols)
    if pad_mode == "reflect":
        rows, cols = rows.abs(), cols.abs()
        rows = torch.where(rows > h - 1, 2 * (h - 1) - rows, rows)
        cols = torch.where(cols > w - 1, 2 * (w - 1) - cols, cols)
        inside = None
    else:
        inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
        rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    out = x[torch.arange(n, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
            rows[:, None, :, None], cols[:, None, None, :]]
    if inside is not None:
        out = out * inside[:, None].to(out.dtype)
    return out


def cutout(x: torch.Tensor, generator: torch.Generator, size: int = 16) -> torch.Tensor:
    """Zero one ``size`` x ``size`` square per image, centred anywhere, clipped at the border (DeVries & Taylor).

    Zero is black in pixel space (Cutout before normalisation, as in Difficulty-Net's transform list).
    Draw order: centre rows (N), centre columns (N).
    """
    _check_batch(x)
    if size < 1:
        raise ValueError(f"cutout size must be >= 1, got {size}")
    n, _, h, w = x.shape
    dev = x.device
    cy = torch.randint(0, h, (n,), generator=generator).to(dev)
    cx = torch.randint(0, w, (n,), generator=generator).to(dev)
    r, c = torch.arange(h, device=dev), torch.arange(w, device=dev)
    in_rows = (r[None] >= (cy - size // 2)[:, None]) & (r[None] < (cy + size - size // 2)[:, None])
    in_cols = (c[None] >= (cx - size // 2)[:, None]) & (c[None] < (cx + size - size // 2)[:, None])
    hole = in_rows[:, :, None] & in_cols[:, None, :]
    return x.masked_fill(hole[:, None], 0)


def magnitude(op: str, bin_index: int, height: int, width: int, num_bins: int = 10) -> float:
    """AutoAugment's magnitude of ``op`` at ``bin_index`` (torchvision's discretisation, 10 bins)."""
    spaces = {
        "ShearX": (0.0, 0.3), "ShearY": (0.0, 0.3), "Rotate": (0.0, 30.0),
        "TranslateX": (0.0, 150.0 / 331.0 * width), "TranslateY": (0.0, 150.0 / 331.0 * height),
        "Brightness": (0.0, 0.9), "Color": (0.0, 0.9), "Contrast": (0.0, 0.9), "Sharpness": (0.0, 0.9),
        "Solarize": (255.0, 0.0),
    }
    if op == "Posterize":
        return float(8 - round(bin_index / ((num_bins - 1) / 4)))
    if op in spaces:
        lo, hi = spaces[op]
        return lo + (hi - lo) * bin_index / (num_bins - 1)
    return 0.0


SIGNED_OPS = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
              "Sharpness"}


def apply_op(x: torch.Tensor, op: str, mag: float) -> torch.Tensor:
    """One AutoAugment operation on a uint8 batch (nearest interpolation, zero fill, as torchvision)."""
    import torchvision.transforms.functional as TF

    nearest = TF.InterpolationMode.NEAREST
    if op in ("ShearX", "ShearY"):
        shear = math.degrees(math.atan(mag))
        return TF.affine(x, angle=0.0, translate=[0, 0], scale=1.0, interpolation=nearest, fill=None, center=[0, 0],
                         shear=[shear, 0.0] if op == "ShearX" else [0.0, shear])
    if op in ("TranslateX", "TranslateY"):
        shift = [int(mag), 0] if op == "TranslateX" else [0, int(mag)]
        return TF.affine(x, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0], interpolation=nearest, fill=None)
    simple = {
        "Rotate": lambda: TF.rotate(x, mag, interpolation=nearest, fill=None),
        "Brightness": lambda: TF.adjust_brightness(x, 1.0 + mag),
        "Color": lambda: TF.adjust_saturation(x, 1.0 + mag),
        "Contrast": lambda: TF.adjust_contrast(x, 1.0 + mag),
        "Sharpness": lambda: TF.adjust_sharpness(x, 1.0 + mag),
        "Posterize": lambda: TF.posterize(x, int(mag)),
        "Solarize": lambda: TF.solarize(x, mag),
        "AutoContrast": lambda: TF.autocontrast(x),
        "Equalize": lambda: TF.equalize(x),
        "Invert": lambda: TF.invert(x),
    }
    if op not in simple:
        raise ValueError(f"unknown AutoAugment operation {op!r}")
    return simple[op]()


@functools.lru_cache(maxsize=None)
def policy_table(policy: str) -> tuple:
    """torchvision's AutoAugment sub-policies for ``policy`` (cifar10, imagenet, svhn): ((op, p, bin), (op, p, bin))."""
    from torchvision.transforms import AutoAugment, AutoAugmentPolicy

    return tuple(AutoAugment(AutoAugmentPolicy(policy)).policies)


def auto_augment(x: torch.Tensor, generator: torch.Generator, policy: str = "cifar10") -> torch.Tensor:
    """AutoAugment with a sub-policy drawn per image (torchvision's policy tables, applied per group).

    Each image draws one of the policy's sub-policies; each of its two operations fires with the
    sub-policy's probability and a signed magnitude flips sign with probability 1/2. Images sharing a
    (sub-policy, operation, sign) are transformed together, so a batch costs at most a few dozen calls.
    Gray (1-channel) images skip the colour operation ``Color``. Draw order: sub-policies (N),
    fire draws (N, 2), sign draws (N, 2).
    """
    _check_batch(x)
    policies = policy_table(policy)
    n, c, h, w = x.shape
    dev = x.device
    pick = torch.randint(0, len(policies), (n,), generator=generator).to(dev)
    fire = torch.rand(n, 2, generator=generator).to(dev)
    negative = torch.rand(n, 2, generator=generator).to(dev) < 0.5
    out = x.clone()
    for k in torch.unique(pick).tolist():
        for slot, (op, prob, bin_index) in enumerate(policies[k]):
            if op == "Color" and c == 1:
                continue
            chosen = (pick == k) & (fire[:, slot] < prob)
            mag = magnitude(op, bin_index or 0, h, w)
            for sign in ((1.0, -1.0) if op in SIGNED_OPS else (1.0,)):
                sel = chosen & (negative[:, slot] == (sign < 0)) if op in SIGNED_OPS else chosen
                idx = sel.nonzero().flatten()
                if len(idx):
                    out[idx] = apply_op(out[idx], op, sign * mag)
    return out


def resized_crop_box(height: int, width: int, generator: torch.Generator,
                     scale: tuple[float, float] = (0.08, 1.0),
                     ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, box height, box width) of a random-resized crop: torchvision's sampling rule, own generator.

    The same draws, in the same order, as ``RandomResizedCrop.get_params``: up to 10 tries of (area, log
    aspect, top, left), a box that does not fit is redrawn, then the fallback is the center crop clamped to
    ``ratio``. Fed the same generator state, the boxes equal torchvision's.
    """
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator)).item()  # float32
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
            return top, left, h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def color_jitter(x: torch.Tensor, generator: torch.Generator, brightness: float, contrast: float,
                 saturation: float) -> torch.Tensor:
    """torchvision's ``ColorJitter(brightness, contrast, saturation)`` of one uint8 image (C, H, W), own generator.

    Same draws and order as ``ColorJitter.get_params``: a random order of the four operations, then one
    factor in [max(0, 1 - v), 1 + v] per enabled operation (hue is off, as in OLTR's preset).
    """
    import torchvision.transforms.functional as TF

    order = torch.randperm(4, generator=generator)
    factors = {k: (None if v <= 0 else
                   float(torch.empty(1).uniform_(max(0.0, 1 - v), 1 + v, generator=generator)))
               for k, v in (("b", brightness), ("c", contrast), ("s", saturation))}
    for op in order.tolist():
        if op == 0 and factors["b"] is not None:
            x = TF.adjust_brightness(x, factors["b"])
        elif op == 1 and factors["c"] is not None:
            x = TF.adjust_contrast(x, factors["c"])
        elif op == 2 and factors["s"] is not None:
            x = TF.adjust_saturation(x, factors["s"])
    return x


@dataclass(frozen=True)
class PaperCrop:
    """The ImageNet-LT papers' training transform of whole stored images (any size, aspect kept).

    Per image, in torchvision's order: ``RandomResizedCrop(size, scale, ratio)`` (bilinear, antialiased),
    ``RandomHorizontalFlip()``, then ``ColorJitter(jitter, jitter, jitter)`` when ``jitter`` > 0 (OLTR).
    All draws come from the trial's generator, so the same generator state gives the same batch (resume).
    Only the crop box is copied out of the store; resizing runs on ``device``.
    """

    size: int = 224
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    jitter: float = 0.0

    def crops(self, images: Sequence[np.ndarray | torch.Tensor], generator: torch.Generator,
              device: torch.device | str = "cpu") -> torch.Tensor:
        """uint8 (N, C, size, size) on ``device`` from N uint8 (C, H, W) images: arrays (memory-mapped views of a
        store) or tensors (decoded files)."""
        import torchvision.transforms.functional as TF

        out = []
        for image in images:
            _, h, w = image.shape
            top, left, bh, bw = resized_crop_box(h, w, generator, self.scale, self.ratio)
            box = image[:, top:top + bh, left:left + bw]
            if not isinstance(box, torch.Tensor):  # a memory-mapped store: copy the box only
                box = torch.from_numpy(np.array(box))
                if torch.device(device).type == "cuda":
                    box = box.pin_memory()
            box = box.to(device, non_blocking=True)
            x = TF.resize(box, [self.size, self.size], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
            if self.flip and torch.rand(1, generator=generator).item() < 0.5:
                x = x.flip(-1)
            if self.jitter > 0:
                x = color_jitter(x, generator, self.jitter, self.jitter, self.jitter)
            out.append(x)
        return torch.stack(out) if out else torch.empty((0, 3, self.size, self.size), dtype=torch.uint8,
                                                        device=device)


@dataclass(frozen=True)
class ImageAugment:
    """The training-batch augmentation a dataset declares; call it as ``augment(x, generator)``.

    ``crop``: ``pad`` (pad + random crop, CIFAR/MNIST) or ``none`` (flip only); then optional AutoAugment
    (``policy``) and Cutout (``cutout`` > 0 = square side). ImageNet-LT's random-resized crop of the whole
    stored image is :class:`PaperCrop`.
    """

    crop: str = "pad"
    padding: int = 4
    pad_mode: str = "zeros"
    flip: bool = True
    policy: str | None = None
    cutout: int = 0

    def __post_init__(self) -> None:
        if self.crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {self.crop!r}")
        if self.policy is not None and self.policy not in POLICIES:
            raise ValueError(f"unknown AutoAugment policy {self.policy!r}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.crop == "pad" or (self.crop == "none" and self.flip):
            x = random_crop_flip(x, generator, self.padding if self.crop == "pad" else 0, self.pad_mode, self.flip)
        if self.policy is not None:
            x = auto_augment(x, generator, self.policy)
        if self.cutout > 0:
            x = cutout(x, generator, self.cutout)
        return x
