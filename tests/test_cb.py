"""Class-balanced loss: effective-number weights by hand, the loss on each base, its knobs and grid.

Parity with Cui et al.'s released code is in tests/test_parity.py.
"""

import math
from types import SimpleNamespace

import pytest
import torch
from torch.nn import functional as F

from search_spaces import space_for
from search_spaces.grid import expand_method
from trainables.methods import METHODS
from trainables.methods.cb import effective_number_weights
from trainables.methods.focal import focal_loss, sigmoid_focal_loss
from trainables.params import InactiveParamError


def by_hand(counts, beta):
    raw = [(1 - beta) / (1 - beta**n) if n else 0.0 for n in counts]
    return [r * len(counts) / sum(raw) for r in raw]


@pytest.mark.parametrize("beta", [0.9, 0.99, 0.999, 0.9999])
def test_weights_match_the_formula_and_have_mean_one(beta):
    counts = [500, 120, 30, 5, 1]
    w = effective_number_weights(torch.tensor(counts), beta)
    assert w.dtype == torch.float32
    torch.testing.assert_close(w, torch.tensor(by_hand(counts, beta)), rtol=1e-6, atol=0)
    assert float(w.mean()) == pytest.approx(1.0, rel=1e-6)


def test_exact_small_case():
    # beta 0.5, counts [1, 2]: E = [1, 1.5], 1/E = [1, 2/3], scaled to sum 2: [1.2, 0.8].
    torch.testing.assert_close(effective_number_weights(torch.tensor([1.0, 2.0]), 0.5), torch.tensor([1.2, 0.8]))


def test_beta_limits():
    counts = torch.tensor([40.0, 10.0, 1.0])
    assert torch.equal(effective_number_weights(counts, 0.0), torch.ones(3))  # no re-weighting
    inverse = (1 / counts) * 3 / (1 / counts).sum()
    torch.testing.assert_close(effective_number_weights(counts, 1 - 1e-9), inverse, rtol=1e-6, atol=0)


def test_empty_class_gets_zero_weight_and_the_mean_stays_one():
    w = effective_number_weights(torch.tensor([10, 0, 2]), 0.9)
    assert float(w[1]) == 0.0
    torch.testing.assert_close(w, torch.tensor(by_hand([10, 0, 2], 0.9)))


def test_invalid_arguments_raise():
    for beta in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="beta"):
            effective_number_weights(torch.tensor([1.0, 2.0]), beta)
    for counts in (torch.tensor([1.0, -2.0]), torch.zeros(3), torch.ones(2, 2), torch.tensor([1.0, float("inf")])):
        with pytest.raises(ValueError, match="class_counts"):
            effective_number_weights(counts, 0.9)


def cb_method(counts, **hp):
    cls = METHODS.get("cb")
    ctx = SimpleNamespace(class_counts=torch.tensor(counts), device=torch.device("cpu"))
    return cls(cls.resolve_params(hp), ctx)


def test_loss_is_the_batch_mean_of_weighted_ce_and_focal():
    counts = [100.0, 10.0, 1.0]
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 0.0], [0.3, 0.2, 0.1], [1.0, 1.0, 3.0]])
    y = torch.tensor([0, 1, 2, 2])
    w = by_hand(counts, 0.99)
    ce = [-math.log(math.exp(z[t]) / sum(math.exp(v) for v in z))
          for z, t in zip(logits.tolist(), y.tolist(), strict=True)]
    expected = sum(w[t] * c for t, c in zip(y.tolist(), ce, strict=True)) / 4
    assert float(cb_method(counts, beta=0.99).loss(logits, y, y)) == pytest.approx(expected, rel=1e-6)
    # the softmax focal is a named option, not Cui et al.'s focal
    fl = focal_loss(logits, y, 2.0, reduction="none")
    expected = sum(w[t] * float(f) for t, f in zip(y.tolist(), fl, strict=True)) / 4
    got = cb_method(counts, beta=0.99, base="softmax_focal", gamma=2.0).loss(logits, y, y)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    assert float(cb_method(counts, beta=0.0).loss(logits, y, y)) == pytest.approx(float(F.cross_entropy(logits, y)))


def sigmoid_focal_by_hand(z, t, gamma):
    """sum_j (1 - p_t)^gamma * -log p_t, p = sigmoid(z_j), p_t = p for the target class and 1 - p otherwise."""
    total = 0.0
    for j, zj in enumerate(z):
        p = 1 / (1 + math.exp(-zj))
        pt = p if j == t else 1 - p
        total += (1 - pt) ** gamma * -math.log(pt)
    return total


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_cb_focal_is_cuis_sigmoid_focal_summed_over_classes(gamma):
    counts = [100.0, 10.0, 1.0]
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 0.0], [0.3, 0.2, 0.1], [1.0, 1.0, 3.0]])
    y = torch.tensor([0, 1, 2, 2])
    per = [sigmoid_focal_by_hand(z, t, gamma) for z, t in zip(logits.tolist(), y.tolist(), strict=True)]
    torch.testing.assert_close(sigmoid_focal_loss(logits, y, gamma), torch.tensor(per), rtol=1e-6, atol=1e-7)
    w = by_hand(counts, 0.999)
    expected = sum(w[t] * v for t, v in zip(y.tolist(), per, strict=True)) / 4
    assert float(cb_method(counts, beta=0.999, base="focal", gamma=gamma).loss(logits, y, y)) == pytest.approx(expected)
    if gamma == 0.0:  # the sigmoid base is the focal with gamma 0
        assert float(cb_method(counts, beta=0.999, base="sigmoid").loss(logits, y, y)) == pytest.approx(expected)
    # and it is not the softmax focal (the example: 2.67 vs 6.16 at beta 0.999, gamma 0.5)
    if gamma == 0.5:
        soft = cb_method(counts, beta=0.999, base="softmax_focal", gamma=gamma).loss(logits, y, y)
        assert abs(float(soft) - expected) > 0.1


def test_gamma_only_with_focal():
    cls = METHODS.get("cb")
    with pytest.raises(InactiveParamError, match="gamma"):
        cls.resolve_params({"base": "ce", "gamma": 2.0})
    assert cls.resolve_params({"base": "focal", "gamma": 2.0})["gamma"] == 2.0
    assert cls.resolve_params({"base": "softmax_focal", "gamma": 2.0})["gamma"] == 2.0
    with pytest.raises(InactiveParamError, match="gamma"):
        cls.resolve_params({"base": "sigmoid", "gamma": 2.0})
    configs = expand_method("cb", {"base": ["ce", "focal"], "beta": [0.9], "gamma": [0.5, 2]}, "m")
    assert [(c["base"], c["gamma"]) for c in configs] == [("focal", 0.5), ("focal", 2.0)]


def test_paper_grid():
    configs = expand_method("cb", space_for("cb").grid, "method")
    assert len(configs) == 4 + 4 * 3
    assert sorted({c["beta"] for c in configs}) == [0.9, 0.99, 0.999, 0.9999]
    assert {c["gamma"] for c in configs if c["base"] == "focal"} == {0.5, 1.0, 2.0}
