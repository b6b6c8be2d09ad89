"""Balanced Softmax: the shifted logits by hand, the loss, and plain-argmax evaluation."""

import math
from types import SimpleNamespace

import pytest
import torch

from trainables.loop import Trial
from trainables.methods import METHODS
from trainables.methods.balanced_softmax import balanced_softmax_logits


def test_logits_are_shifted_by_log_counts():
    out = balanced_softmax_logits(torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]), torch.tensor([1.0, 10.0, 100.0]))
    expected = torch.tensor([[1.0, 2.0 + math.log(10), 3.0 + math.log(100)], [0.0, math.log(10), math.log(100)]])
    torch.testing.assert_close(out, expected)


def test_dtype_and_empty_class():
    out = balanced_softmax_logits(torch.zeros(2, 3, dtype=torch.float64), torch.tensor([0, 1, 4]))
    assert out.dtype == torch.float64
    assert out[0, 0] == -math.inf and out[0, 2] == pytest.approx(math.log(4))


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="last dimension"):
        balanced_softmax_logits(torch.zeros(2, 3), torch.ones(4))
    with pytest.raises(ValueError, match="non-negative"):
        balanced_softmax_logits(torch.zeros(2, 2), torch.tensor([1.0, -1.0]))


def test_loss_by_hand_and_frequencies_give_the_same_loss():
    counts = [50.0, 5.0, 1.0]
    logits = torch.tensor([[0.5, 1.0, -0.5], [2.0, 0.0, 1.0]])
    y = torch.tensor([1, 2])
    by_hand = [-math.log(counts[t] * math.exp(z[t]) / sum(n * math.exp(v) for n, v in zip(counts, z, strict=True)))
               for z, t in zip(logits.tolist(), y.tolist(), strict=True)]
    cls = METHODS.get("balanced_softmax")
    for scale in (1.0, 1 / sum(counts)):
        method = cls({}, SimpleNamespace(class_counts=torch.tensor(counts) * scale, device=torch.device("cpu")))
        assert float(method.loss(logits, y, y)) == pytest.approx(sum(by_hand) / 2, rel=1e-6)


def test_evaluation_uses_the_plain_logits():
    cfg = {"method": {"name": "balanced_softmax"}, "model": "mlp", "seed": 0,
           "dataset": {"name": "gaussian", "imbalance": 10}, "train": {"epochs": 1, "device": "cpu"}}
    trial = Trial(cfg)
    trial.run_epoch()
    trial.model.eval()
    with torch.no_grad():
        plain = trial.model(trial.test.x).argmax(1)
    expected = float(torch.stack([(plain[trial.test.y == c] == c).double().mean() for c in range(4)]).mean())
    assert trial.evaluate()["test_acc"] == pytest.approx(expected)
