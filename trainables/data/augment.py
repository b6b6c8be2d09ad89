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

import torch
from torch.nn import functional as F

PAD_MODES = ("zeros", "reflect")
CROPS = ("pad", "resized", "none")
# torchvision's AutoAugmentPolicy values. torchvision (and torch._dynamo through it, about 3 s) is imported only
# where an AutoAugment operation runs: a sweep without one never pays for it, in the driver or a worker.
POLICIES = ("imagenet", "cifar10", "svhn")


def _check_batch(x: torch.Tensor) -> None:
    if x.dim() != 4 or x.dtype != torch.uint8:
        raise ValueError(f"expected a uint8 batch of shape (N, C, H, W), got {x.dtype} {tuple(x.shape)}")


def _uniform(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=generator).to(device)


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


def random_resized_crop_flip(x: torch.Tensor, generator: torch.Generator, scale: tuple[float, float] = (0.08, 1.0),
                             ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: bool = True) -> torch.Tensor:
    """ImageNet-style random-resized crop (area fraction ``scale``, aspect ``ratio``) and flip, by one grid_sample.

    Unlike torchvision's ten rejection tries, a box that does not fit is clamped to the image side.
    Draw order: areas (N), log-aspects (N), box centres x (N) and y (N), flips (N).
    """
    _check_batch(x)
    n, _, h, w = x.shape
    dev = x.device
    area = scale[0] + (scale[1] - scale[0]) * _uniform(n, generator, dev)
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * _uniform(n, generator, dev)
    aspect = log_r.exp()
    fw = (area * aspect).sqrt().clamp(max=1.0)  # box width / image width
    fh = (area / aspect).sqrt().clamp(max=1.0)
    cx = (2 * _uniform(n, generator, dev) - 1) * (1 - fw)
    cy = (2 * _uniform(n, generator, dev) - 1) * (1 - fh)
    sx = torch.where(_uniform(n, generator, dev) < 0.5, -fw, fw) if flip else fw
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, cx, fh, cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


@dataclass(frozen=True)
class ImageAugment:
    """The training-batch augmentation a dataset declares; call it as ``augment(x, generator)``.

    ``crop``: ``pad`` (pad + random crop, CIFAR/MNIST), ``resized`` (random-resized crop, ImageNet-LT) or
    ``none``; then optional AutoAugment (``policy``) and Cutout (``cutout`` > 0 = square side).
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
        elif self.crop == "resized":
            x = random_resized_crop_flip(x, generator, flip=self.flip)
        if self.policy is not None:
            x = auto_augment(x, generator, self.policy)
        if self.cutout > 0:
            x = cutout(x, generator, self.cutout)
        return x
