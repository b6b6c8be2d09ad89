"""The shared data protocol: long-tail counts, balanced hold-outs, label noise, determinism."""

import math

import numpy as np
import pytest
import torch

from trainables.data import load_splits, resolve_dataset
from trainables.data.protocol import (
    SourceData,
    add_label_noise,
    balanced_holdout,
    build_splits,
    long_tail_counts,
    shot_groups,
)


def test_long_tail_counts_match_the_published_cifar_lt_sizes():
    # CIFAR-10-LT at rho = 100 (Cui et al. / LDAM): the well-known per-class counts.
    assert long_tail_counts(5000, 10, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    # CIFAR-100-LT at rho = 100 has 10847 training images.
    assert sum(long_tail_counts(500, 100, 100)) == 10847


def test_long_tail_counts_by_hand():
    # n_c = floor(400 * 0.1^(c/9)); c=1: 400*0.7743 = 309.7; c=9: 40.
    assert long_tail_counts(400, 10, 10) == [400, 309, 239, 185, 143, 111, 86, 66, 51, 40]
    assert long_tail_counts(100, 4, 1) == [100, 100, 100, 100]
    assert long_tail_counts(100, 2, 4) == [100, 25]
    with pytest.raises(ValueError, match="imbalance"):
        long_tail_counts(100, 4, 0.5)


def _source(num_classes=4, per_class=200, dim=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(num_classes), per_class)
    x = torch.as_tensor(rng.normal(size=(len(y), dim)), dtype=torch.float32)
    return SourceData(x_train=x, y_train=y, num_classes=num_classes)


def _rows(t: torch.Tensor) -> set:
    return {tuple(r) for r in t.tolist()}


def test_splits_have_exact_counts_and_are_disjoint():
    s = build_splits(_source(), imbalance=10, meta_per_class=5, val_per_class=3, test_per_class=20, data_seed=1)
    # pool per class: 200 - 20 test - 5 meta - 3 val = 172 = n_max.
    assert np.bincount(s.train.y.numpy(), minlength=4).tolist() == long_tail_counts(172, 4, 10)
    assert np.bincount(s.meta.y.numpy()).tolist() == [5] * 4
    assert np.bincount(s.val.y.numpy()).tolist() == [3] * 4
    assert np.bincount(s.test.y.numpy()).tolist() == [20] * 4
    parts = [_rows(p.x) for p in (s.train, s.meta, s.val, s.test)]
    assert sum(map(len, parts)) == len(set().union(*parts)), "train, meta, val and test must be disjoint"
    assert s.class_counts.tolist() == long_tail_counts(172, 4, 10)


def test_val_reuses_meta_when_val_per_class_is_zero():
    s = build_splits(_source(), meta_per_class=5, test_per_class=10)
    assert torch.equal(s.val.x, s.meta.x)


def test_same_data_seed_same_split_and_other_seed_differs():
    a = build_splits(_source(), imbalance=5, noise_type="symmetric", noise_rate=0.3, data_seed=7, test_per_class=10)
    b = build_splits(_source(), imbalance=5, noise_type="symmetric", noise_rate=0.3, data_seed=7, test_per_class=10)
    c = build_splits(_source(), imbalance=5, noise_type="symmetric", noise_rate=0.3, data_seed=8, test_per_class=10)
    for part in ("train", "meta", "test"):
        assert torch.equal(getattr(a, part).x, getattr(b, part).x)
        assert torch.equal(getattr(a, part).y, getattr(b, part).y)
    assert not torch.equal(a.train.x, c.train.x)


def _binomial_ok(observed: int, n: int, p: float) -> bool:
    return abs(observed - n * p) <= 5 * math.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_symmetric_noise_rate_and_never_the_true_label(rate):
    labels = np.repeat(np.arange(10), 2000)
    noisy = add_label_noise(labels, 10, "symmetric", rate, np.random.default_rng(0))
    flipped = noisy != labels
    assert _binomial_ok(int(flipped.sum()), len(labels), rate)
    # the corrupted labels spread uniformly over the 9 other classes
    counts = np.bincount((noisy[flipped] - labels[flipped]) % 10, minlength=10)
    assert counts[0] == 0 and all(_binomial_ok(c, int(flipped.sum()), 1 / 9) for c in counts[1:])


def test_uniform_noise_keeps_the_true_label_with_probability_one_minus_r_plus_r_over_c():
    labels = np.repeat(np.arange(10), 2000)
    noisy = add_label_noise(labels, 10, "uniform", 0.4, np.random.default_rng(0))
    assert _binomial_ok(int((noisy != labels).sum()), len(labels), 0.4 * 9 / 10)


def test_flip_noise_sends_each_class_to_one_fixed_other_class():
    labels = np.repeat(np.arange(5), 1000)
    noisy = add_label_noise(labels, 5, "flip", 0.3, np.random.default_rng(3))
    for c in range(5):
        targets = set(noisy[(labels == c) & (noisy != labels)].tolist())
        assert len(targets) == 1 and c not in targets
    assert _binomial_ok(int((noisy != labels).sum()), len(labels), 0.3)


def test_noise_only_touches_the_training_split_and_true_labels_are_kept():
    s = build_splits(_source(), noise_type="symmetric", noise_rate=0.5, test_per_class=10, data_seed=2)
    assert s.is_noisy and (s.train.y != s.train.true_y).any()
    assert torch.equal(s.meta.y, s.meta.true_y) and torch.equal(s.test.y, s.test.true_y)
    assert np.bincount(s.train.true_y.numpy()).tolist() == s.class_counts.tolist()


def test_noise_arguments_are_checked():
    with pytest.raises(ValueError, match="rate"):
        add_label_noise(np.zeros(3, dtype=int), 2, "symmetric", 1.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="noise type"):
        add_label_noise(np.zeros(3, dtype=int), 2, "pairwise", 0.1, np.random.default_rng(0))


def test_balanced_holdout_refuses_too_small_classes():
    with pytest.raises(ValueError, match="class 1 has 2"):
        balanced_holdout(np.array([0, 0, 0, 1, 1]), 3, 2, np.random.default_rng(0))


def test_shot_groups_use_the_thresholds():
    groups = shot_groups(np.array([500, 101, 100, 20, 19, 3]), 100, 20)
    assert groups["many"].tolist() == [0, 1]
    assert groups["medium"].tolist() == [2, 3]
    assert groups["few"].tolist() == [4, 5]


def test_embedded_mnist1d_long_tail_follows_the_formula():
    cfg = resolve_dataset({"name": "mnist1d", "imbalance": 100, "meta_per_class": 10})
    s = load_splits(cfg)
    counts = s.class_counts.tolist()
    assert counts == long_tail_counts(counts[0], 10, 100)
    assert np.bincount(s.test.y.numpy()).min() == np.bincount(s.test.y.numpy()).max()
