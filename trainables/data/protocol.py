"""The shared data protocol: balanced hold-outs, long-tailed subsampling and label noise.

Pure functions of (labels, sizes, a numpy Generator); every dataset source goes through the same
:func:`build_splits`, so all methods and all trial seeds see the same split for a given data seed.
Formulas follow METHODS.md section 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

NOISE_TYPES = ("none", "symmetric", "uniform", "flip")


def long_tail_counts(n_max: int, num_classes: int, imbalance: float) -> list[int]:
    """Per-class counts n_c = floor(n_max * mu^(c/(C-1))) with mu = 1/imbalance (head class first).

    ``imbalance`` (rho = n_max/n_min) >= 1; rho = 1 gives n_max for every class. A 1e-9 slack keeps
    exact products such as 500 * 0.01 from flooring to 4 through rounding error.
    """
    if imbalance < 1:
        raise ValueError(f"imbalance must be >= 1 (1 = balanced), got {imbalance}")
    if num_classes < 1 or n_max < 1:
        raise ValueError(f"need num_classes >= 1 and n_max >= 1, got {num_classes}, {n_max}")
    if num_classes == 1:
        return [n_max]
    mu = 1.0 / imbalance
    return [max(1, math.floor(n_max * mu ** (c / (num_classes - 1)) + 1e-9)) for c in range(num_classes)]


def balanced_holdout(
    labels: np.ndarray, per_class: int, num_classes: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (held-out: ``per_class`` random indices of every class, the rest)."""
    held = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx) < per_class:
            raise ValueError(f"class {c} has {len(idx)} examples, fewer than the {per_class} to hold out")
        held.append(rng.permutation(idx)[:per_class])
    held_idx = np.sort(np.concatenate(held)) if held else np.empty(0, dtype=np.int64)
    rest = np.setdiff1d(np.arange(len(labels)), held_idx, assume_unique=True)
    return held_idx.astype(np.int64), rest.astype(np.int64)


def subsample_per_class(
    labels: np.ndarray, counts: list[int], rng: np.random.Generator
) -> np.ndarray:
    """Indices of the first ``counts[c]`` shuffled examples of each class c (sorted)."""
    picked = []
    for c, n_c in enumerate(counts):
        idx = np.flatnonzero(labels == c)
        if len(idx) < n_c:
            raise ValueError(f"class {c} has {len(idx)} examples, fewer than the {n_c} requested")
        picked.append(rng.permutation(idx)[:n_c])
    return np.sort(np.concatenate(picked)).astype(np.int64)


def flip_targets(num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """For the ``flip`` noise: each class c goes to one fixed other class pi(c), drawn once."""
    offsets = rng.integers(1, num_classes, size=num_classes)
    return (np.arange(num_classes) + offsets) % num_classes


def add_label_noise(
    labels: np.ndarray, num_classes: int, kind: str, rate: float, rng: np.random.Generator
) -> np.ndarray:
    """Return noisy copies of ``labels`` (METHODS.md 0.2).

    - ``symmetric``: with probability ``rate`` the label becomes one of the C-1 other classes, uniformly;
    - ``uniform``: with probability ``rate`` the label is redrawn uniformly from all C classes (the true one
      included, so the effective flip rate is rate (C-1)/C);
    - ``flip``: with probability ``rate`` class c becomes its fixed partner pi(c).
    """
    if kind not in NOISE_TYPES:
        raise ValueError(f"noise type must be one of {', '.join(NOISE_TYPES)}, got {kind!r}")
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"noise rate must be in [0, 1), got {rate}")
    labels = np.asarray(labels, dtype=np.int64)
    if kind == "none" or rate == 0.0:
        return labels.copy()
    if num_classes < 2:
        raise ValueError("label noise needs at least 2 classes")
    corrupt = rng.random(len(labels)) < rate
    noisy = labels.copy()
    if kind == "symmetric":
        offsets = rng.integers(1, num_classes, size=len(labels))
        noisy[corrupt] = (labels[corrupt] + offsets[corrupt]) % num_classes
    elif kind == "uniform":
        noisy[corrupt] = rng.integers(0, num_classes, size=int(corrupt.sum()))
    else:
        partner = flip_targets(num_classes, rng)
        noisy[corrupt] = partner[labels[corrupt]]
    return noisy


def shot_groups(class_counts: np.ndarray, many_threshold: int, few_threshold: int) -> dict[str, np.ndarray]:
    """Class indices of the many (n > many), medium (few <= n <= many) and few (n < few) groups."""
    counts = np.asarray(class_counts)
    return {
        "many": np.flatnonzero(counts > many_threshold),
        "medium": np.flatnonzero((counts >= few_threshold) & (counts <= many_threshold)),
        "few": np.flatnonzero(counts < few_threshold),
    }


@dataclass
class Split:
    """Inputs and labels of one split. ``true_y`` differs from ``y`` only on a noisy training split."""

    x: torch.Tensor
    y: torch.Tensor
    true_y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> "Split":
        return Split(self.x.to(device), self.y.to(device), self.true_y.to(device))


@dataclass
class SourceData:
    """What a dataset source returns before the protocol: a training pool and an optional test pool."""

    x_train: torch.Tensor
    y_train: np.ndarray
    num_classes: int
    x_test: torch.Tensor | None = None
    y_test: np.ndarray | None = None
    class_names: list[str] | None = None


@dataclass
class Splits:
    """The protocol's output: everything a trial trains and evaluates on."""

    train: Split
    meta: Split
    val: Split
    test: Split
    num_classes: int
    class_counts: np.ndarray  # per-class training counts of the clean labels (the protocol's n_c)
    groups: dict[str, np.ndarray] = field(default_factory=dict)
    # Applied to training batches on their device (e.g. random crops); identity when None.
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    @property
    def is_noisy(self) -> bool:
        return bool((self.train.y != self.train.true_y).any())


def build_splits(
    source: SourceData,
    *,
    imbalance: float = 1.0,
    meta_per_class: int = 10,
    val_per_class: int = 0,
    test_per_class: int | None = None,
    n_max: int | None = None,
    noise_type: str = "none",
    noise_rate: float = 0.0,
    data_seed: int = 0,
    many_threshold: int = 100,
    few_threshold: int = 20,
) -> Splits:
    """Apply the protocol to a source, deterministically given ``data_seed``.

    Order: balanced test hold-out (only when the source has no test pool), balanced meta hold-out,
    optional second balanced validation hold-out (``val_per_class`` = 0 reuses the meta set for
    validation), long-tailed subsampling of the rest by clean label, then noise on the training split only.
    """
    rng = np.random.default_rng(data_seed)
    C = source.num_classes
    y_pool = np.asarray(source.y_train, dtype=np.int64)
    pool_idx = np.arange(len(y_pool))

    if source.x_test is None:
        per = test_per_class if test_per_class is not None else int(np.bincount(y_pool, minlength=C).min() // 4)
        test_idx, rest = balanced_holdout(y_pool, per, C, rng)
        x_test, y_test = source.x_train[test_idx], y_pool[test_idx]
        pool_idx = rest
    else:
        y_t = np.asarray(source.y_test, dtype=np.int64)
        per = test_per_class if test_per_class is not None else int(np.bincount(y_t, minlength=C).min())
        test_idx, _ = balanced_holdout(y_t, per, C, rng)
        x_test, y_test = source.x_test[test_idx], y_t[test_idx]

    meta_local, rest_local = balanced_holdout(y_pool[pool_idx], meta_per_class, C, rng)
    meta_idx, pool_idx = pool_idx[meta_local], pool_idx[rest_local]
    if val_per_class > 0:
        val_local, rest_local = balanced_holdout(y_pool[pool_idx], val_per_class, C, rng)
        val_idx, pool_idx = pool_idx[val_local], pool_idx[rest_local]
    else:
        val_idx = meta_idx

    available = np.bincount(y_pool[pool_idx], minlength=C)
    top = int(available.min()) if n_max is None else n_max
    counts = long_tail_counts(top, C, imbalance)
    train_local = subsample_per_class(y_pool[pool_idx], counts, rng)
    train_idx = pool_idx[train_local]
    true_y = y_pool[train_idx]
    noisy_y = add_label_noise(true_y, C, noise_type, noise_rate, rng)

    def split(x: torch.Tensor, y: np.ndarray, true: np.ndarray | None = None) -> Split:
        true = y if true is None else true
        return Split(x, torch.as_tensor(y, dtype=torch.long), torch.as_tensor(true, dtype=torch.long))

    class_counts = np.bincount(true_y, minlength=C)
    return Splits(
        train=split(source.x_train[train_idx], noisy_y, true_y),
        meta=split(source.x_train[meta_idx], y_pool[meta_idx]),
        val=split(source.x_train[val_idx], y_pool[val_idx]),
        test=split(x_test, y_test),
        num_classes=C,
        class_counts=class_counts,
        groups=shot_groups(class_counts, many_threshold, few_threshold),
    )
