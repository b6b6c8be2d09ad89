"""The shared data protocol: balanced hold-outs, long-tailed subsampling and label noise.

Pure functions of (labels, sizes, a numpy Generator); every dataset source goes through the same
:func:`build_splits`, so all methods and all trial seeds see the same split for a given data seed.
Formulas follow docs/METHODS.md section 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

NOISE_TYPES = ("none", "symmetric", "uniform", "flip")


class SplitError(ValueError):
    """The splits a dataset config asks for cannot be built from its source. ``knob`` is the dataset option
    that asks for more examples than there are, or "" when the hold-outs together leave a class empty."""

    def __init__(self, knob: str, message: str) -> None:
        super().__init__(message)
        self.knob = knob


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


def n_max_for_total(total: int, num_classes: int, imbalance: float) -> int:
    """The largest n_max whose :func:`long_tail_counts` sum to at most ``total`` (e.g. 5000, 2, 99 -> 4950)."""
    if total < num_classes:
        raise ValueError(f"a training total of {total} cannot give each of {num_classes} classes an example")
    low, high = 1, total
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if sum(long_tail_counts(mid, num_classes, imbalance)) <= total else (low, mid - 1)
    return low


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


def _holdout(labels: np.ndarray, per_class: int, num_classes: int, rng: np.random.Generator,
             knob: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`balanced_holdout`, its failure named by the option that asked for ``per_class``."""
    try:
        return balanced_holdout(labels, per_class, num_classes, rng)
    except ValueError as err:
        raise SplitError(knob, f"cannot hold out {knob}={per_class}: {err}") from None


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
    """Return noisy copies of ``labels`` (docs/METHODS.md 0.2).

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


def take(x: Any, rows: np.ndarray) -> Any:
    """Rows ``rows`` of a split's inputs without a needless copy: ``x`` itself when ``rows`` is every row in
    order; a view for a store view (``trainables.data.image_store.StoreView.subset``); else a tensor's rows."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == len(x) and (rows == np.arange(len(x))).all():
        return x
    if hasattr(x, "subset"):
        return x.subset(rows)
    return x[torch.as_tensor(rows)]


@dataclass
class Split:
    """Inputs and labels of one split. ``true_y`` differs from ``y`` only on a noisy training split.

    ``x`` is a tensor, or a :class:`trainables.data.image_store.StoreView` (rows of a memory-mapped store,
    gathered per batch) that indexes like one."""

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
    # Optional protocol inputs a real source may set (None/False = the default protocol):
    x_val: torch.Tensor | None = None  # an official validation pool: meta/val are held out of it
    y_val: np.ndarray | None = None
    holdout_from_test: bool = False  # meta/val come from the test pool (LDAM-style CIFAR-LT); train pool stays whole
    keep_train: bool = False  # imbalance 1 and n_max unset keep the pool whole (natural class distribution)
    lt_labels: np.ndarray | None = None  # labels the long-tail profile ranks (digits of odd/even MNIST)
    train_total: int | None = None  # with n_max unset: the largest n_max whose counts sum to <= this
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None
    input_norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # per-channel mean, std in [0, 1] units


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
    # Per-channel (mean, std) that image models apply to uint8 inputs (x / 255 - mean) / std; None = none.
    input_norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None

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
    A source may move the meta/val hold-outs to an official validation pool (``x_val``) or to its test
    pool (``holdout_from_test``), keep its natural class distribution (``keep_train``), rank the
    long-tail profile by other labels (``lt_labels``) or fix the training size (``train_total``).
    """
    rng = np.random.default_rng(data_seed)
    C = source.num_classes
    y_pool = np.asarray(source.y_train, dtype=np.int64)
    pool_idx = np.arange(len(y_pool))
    y_t = None if source.y_test is None else np.asarray(source.y_test, dtype=np.int64)

    def test_holdout(candidates: np.ndarray) -> np.ndarray:
        per = test_per_class if test_per_class is not None else int(np.bincount(y_t[candidates], minlength=C).min())
        return candidates[_holdout(y_t[candidates], per, C, rng, "test_per_class")[0]]

    if source.x_test is None:
        per = test_per_class if test_per_class is not None else int(np.bincount(y_pool, minlength=C).min() // 4)
        test_idx, rest = _holdout(y_pool, per, C, rng, "test_per_class")
        x_test, y_test = take(source.x_train, test_idx), y_pool[test_idx]
        pool_idx = rest
    elif not source.holdout_from_test:
        test_idx = test_holdout(np.arange(len(y_t)))
        x_test, y_test = take(source.x_test, test_idx), y_t[test_idx]

    if source.x_val is not None:
        x_hold, y_hold, hold_idx = source.x_val, np.asarray(source.y_val, dtype=np.int64), np.arange(len(source.y_val))
    elif source.holdout_from_test:
        x_hold, y_hold, hold_idx = source.x_test, y_t, np.arange(len(y_t))
    else:
        x_hold, y_hold, hold_idx = source.x_train, y_pool, pool_idx
    meta_local, rest_local = _holdout(y_hold[hold_idx], meta_per_class, C, rng, "meta_per_class")
    meta_idx, hold_idx = hold_idx[meta_local], hold_idx[rest_local]
    if val_per_class > 0:
        val_local, rest_local = _holdout(y_hold[hold_idx], val_per_class, C, rng, "val_per_class")
        val_idx, hold_idx = hold_idx[val_local], hold_idx[rest_local]
    else:
        val_idx = meta_idx
    if source.holdout_from_test:
        test_idx = test_holdout(hold_idx)
        x_test, y_test = take(source.x_test, test_idx), y_t[test_idx]
    elif source.x_val is None:
        pool_idx = hold_idx

    if source.keep_train and imbalance == 1.0 and n_max is None:
        train_idx = pool_idx
    else:
        lt_y = y_pool if source.lt_labels is None else np.asarray(source.lt_labels, dtype=np.int64)
        L = C if source.lt_labels is None else int(lt_y.max()) + 1
        if n_max is not None:
            top = n_max
        elif source.train_total is not None:
            top = n_max_for_total(source.train_total, L, imbalance)
        else:
            top = int(np.bincount(lt_y[pool_idx], minlength=L).min())
            if top < 1:
                empty = int(np.bincount(lt_y[pool_idx], minlength=L).argmin())
                held = f"test_per_class={'auto' if test_per_class is None else test_per_class}, " \
                       f"meta_per_class={meta_per_class}, val_per_class={val_per_class}"
                raise SplitError("", f"class {empty} has no example left to train on after the balanced hold-outs "
                                     f"({held}); lower them, or give the source more examples per class")
        try:
            train_idx = pool_idx[subsample_per_class(lt_y[pool_idx], long_tail_counts(top, L, imbalance), rng)]
        except ValueError as err:
            raise SplitError("n_max" if n_max is not None else "", f"the long-tailed training split: {err}") from None
    true_y = y_pool[train_idx]
    noisy_y = add_label_noise(true_y, C, noise_type, noise_rate, rng)

    def split(x: torch.Tensor, y: np.ndarray, true: np.ndarray | None = None) -> Split:
        true = y if true is None else true
        return Split(x, torch.as_tensor(y, dtype=torch.long), torch.as_tensor(true, dtype=torch.long))

    class_counts = np.bincount(true_y, minlength=C)
    meta = split(take(x_hold, meta_idx), y_hold[meta_idx])
    return Splits(
        train=split(take(source.x_train, train_idx), noisy_y, true_y),
        meta=meta,
        val=meta if val_per_class == 0 else split(take(x_hold, val_idx), y_hold[val_idx]),  # one copy, not two
        test=split(x_test, y_test),
        num_classes=C,
        class_counts=class_counts,
        groups=shot_groups(class_counts, many_threshold, few_threshold),
        augment=source.augment,
        input_norm=source.input_norm,
    )
