"""Derivative Manipulation: the manipulated logit gradient, its weights, the method and its search space."""

import math
from types import SimpleNamespace

import optuna
import pytest
import torch
from torch.nn import functional as F

from search_spaces import space_for
from search_spaces.grid import expand_method
from search_spaces.methods.dm import BETA_GRID, beta_range
from trainables.loop import Trial
from trainables.methods import METHODS
from trainables.methods.dm import dm_logit_grad, dm_loss, dm_weights
from trainables.params import InactiveParamError

CASES = [(0.0, 2.0), (0.5, 12.0), (1.0, 16.0), (2.0, 24.0), (0.5, 0.0), (0.0, -3.0), (1.0, -8.0), (0.3, 6.5)]


def dm_method(lam, beta):
    return METHODS.get("dm")({"lam": lam, "beta": beta}, SimpleNamespace(device=torch.device("cpu")))


def random_batch(seed, batch=32, classes=10, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, classes, generator=g) * scale, torch.randint(0, classes, (batch,), generator=g)


@pytest.mark.parametrize("lam,beta", CASES)
def test_logit_grad_equals_autograd_through_the_method_loss(lam, beta):
    for seed in range(3):
        logits, y = random_batch(seed)
        logits.requires_grad_(True)
        dm_method(lam, beta).loss(logits, y, torch.arange(len(y))).backward()
        torch.testing.assert_close(logits.grad, dm_logit_grad(logits.detach(), y, lam, beta), rtol=0, atol=1e-6)


@pytest.mark.parametrize("lam,beta", CASES)
def test_gradient_mass_is_one_per_batch(lam, beta):
    logits, y = random_batch(7, scale=1.0)
    grad = dm_logit_grad(logits, y, lam, beta)
    p_y = torch.softmax(logits, 1).gather(1, y[:, None]).squeeze(1)
    w = dm_weights(p_y, lam, beta)
    # Row i's L1 norm is w_i * 2(1 - p_i) / (2(1 - p_i) + 1e-6): w_i up to the 1e-6 in the denominator.
    torch.testing.assert_close(grad.abs().sum(1), w * 2 * (1 - p_y) / (2 * (1 - p_y) + 1e-6), rtol=1e-5, atol=1e-7)
    assert abs(float(grad.abs().sum()) - 1.0) < 1e-5
    assert torch.allclose(grad.sum(1), torch.zeros(len(y)), atol=1e-6)  # the CE direction sums to zero


def test_weights_match_the_formula_by_hand():
    p = [0.2, 0.5, 0.9]
    for lam, beta in [(1.0, 4.0), (0.5, 12.0), (2.0, -3.0)]:
        raw = [math.exp(beta * q**lam * (1 - q)) for q in p]
        expected = torch.tensor([r / sum(raw) for r in raw])
        torch.testing.assert_close(dm_weights(torch.tensor(p), lam, beta), expected, rtol=1e-6, atol=0)


def test_lambda_zero_is_the_exponential_variant():
    p = torch.tensor([0.0, 0.1, 0.6, 1.0])  # p = 0 included: 0^0 = 1
    raw = torch.exp(3.0 * (1 - p))
    torch.testing.assert_close(dm_weights(p, 0.0, 3.0), raw / raw.sum())


def test_beta_zero_treats_all_examples_alike_for_every_lambda():
    logits, y = random_batch(3, batch=8)
    p = torch.softmax(logits, 1)
    p_y = p.gather(1, y[:, None]).squeeze(1)
    expected = (1 / 8) * (p - F.one_hot(y, 10)) / (2 * (1 - p_y[:, None]) + 1e-6)
    for lam in (0.0, 0.5, 2.0):
        assert torch.equal(dm_weights(p_y, lam, 0.0), torch.full((8,), 1 / 8))
        torch.testing.assert_close(dm_logit_grad(logits, y, lam, 0.0), expected, rtol=1e-6, atol=1e-7)


def test_sign_of_beta_chooses_hard_or_easy_examples():
    p = torch.tensor([0.1, 0.4, 0.7, 0.95])
    assert torch.all(torch.diff(dm_weights(p, 0.0, 2.0)) < 0)  # hardest (smallest p) first
    assert torch.all(torch.diff(dm_weights(p, 0.0, -2.0)) > 0)  # negative beta: easiest first
    w = dm_weights(torch.tensor([0.1, 1 / 3, 0.6, 0.95]), 0.5, 12.0)  # mode lam/(lam+1) = 1/3
    assert int(w.argmax()) == 1


def test_loss_value_is_the_weighted_ce_not_the_surrogate():
    logits, y = random_batch(11)
    loss, w = dm_loss(logits, y, 1.0, 16.0)
    ce = F.cross_entropy(logits, y, reduction="none")
    assert float(loss) == pytest.approx(float((w * ce).sum()), rel=1e-6)
    surrogate = (w / (2 * (1 - torch.softmax(logits, 1).gather(1, y[:, None]).squeeze(1)) + 1e-6) * ce).sum()
    assert abs(float(loss) - float(surrogate)) > 1e-3


def test_float32_whatever_the_model_dtype():
    logits, y = random_batch(5)
    for dtype in (torch.bfloat16, torch.float64):
        z = logits.to(dtype).requires_grad_(True)
        loss, _ = dm_loss(z, y, 0.5, 12.0)
        assert loss.dtype == torch.float32
        loss.backward()
        assert z.grad.dtype == dtype
        assert dm_logit_grad(z.detach(), y, 0.5, 12.0).dtype == torch.float32
        torch.testing.assert_close(z.grad.float(), dm_logit_grad(z.detach(), y, 0.5, 12.0),
                                   rtol=0, atol=1e-2 if dtype == torch.bfloat16 else 1e-6)


def test_large_beta_does_not_overflow():
    logits, y = random_batch(2)
    assert torch.isfinite(dm_logit_grad(logits, y, 0.0, 100.0)).all()
    assert float(dm_weights(torch.tensor([0.0, 1.0]), 0.0, 1000.0)[0]) == 1.0


def test_invalid_arguments_raise():
    logits, y = random_batch(0, batch=4)
    with pytest.raises(ValueError, match="lambda"):
        dm_weights(torch.tensor([0.5]), -0.5, 1.0)
    with pytest.raises(ValueError, match="beta"):
        dm_weights(torch.tensor([0.5]), 0.5, float("nan"))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dm_weights(torch.tensor([0.5, 1.2]), 0.5, 1.0)
    with pytest.raises(ValueError, match="1-D"):
        dm_weights(torch.rand(2, 3), 0.5, 1.0)
    with pytest.raises(ValueError, match="same"):
        dm_logit_grad(logits, y[:3], 0.5, 1.0)
    with pytest.raises(ValueError, match="lie in"):
        dm_logit_grad(logits, torch.tensor([0, 1, 2, 10]), 0.5, 1.0)
    with pytest.raises(ValueError, match="lambda"):
        dm_loss(logits, y, -1.0, 1.0)


def test_beta_zero_control_is_one_configuration():
    cls = METHODS.get("dm")
    assert cls.resolve_params({"beta": 0}) == {"lam": 0.0, "beta": 0.0}
    assert cls.resolve_params({"lam": 0, "beta": 0}) == {"lam": 0.0, "beta": 0.0}
    with pytest.raises(InactiveParamError, match="lam"):
        cls.resolve_params({"lam": 2, "beta": 0})
    assert expand_method("dm", {"lam": [0, 0.5, 2], "beta": [0, 8]}, "m") == [
        {"lam": 0.0, "beta": 0.0}, {"lam": 0.0, "beta": 8.0}, {"lam": 0.5, "beta": 8.0}, {"lam": 2.0, "beta": 8.0}]


def test_paper_grid_is_the_sixteen_pairs_plus_the_control():
    configs = expand_method("dm", space_for("dm").grid, "method")
    expected = [{"lam": lam, "beta": b} for lam, betas in BETA_GRID.items() for b in betas]
    assert configs == expected + [{"lam": 0.0, "beta": 0.0}]
    assert {lam: [c["beta"] for c in configs if c["lam"] == lam and c["beta"]] for lam in BETA_GRID} == {
        0.0: [0.5, 1, 2, 4], 0.5: [4, 8, 12, 16], 1.0: [8, 12, 16, 20], 2.0: [12, 16, 20, 24]}


def test_continuous_space_keeps_beta_in_its_lambda_range():
    assert beta_range(0.0) == (0.5, 4.0) and beta_range(2.0) == (12.0, 24.0)
    assert beta_range(0.25) == (2.25, 10.0) and beta_range(1.5) == (10.0, 22.0)
    with pytest.raises(ValueError):
        beta_range(2.5)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(200):
        trial = study.ask()
        hp = space_for("dm").suggest(trial)
        low, high = beta_range(hp["lam"])
        assert 0.0 <= hp["lam"] <= 2.0 and low <= hp["beta"] <= high
        METHODS.get("dm").resolve_params(hp)
        study.tell(trial, 0.0)


def test_weight_entropy_diagnostic():
    method = dm_method(0.5, 0.0)
    for batch in (8, 4):
        logits, y = random_batch(batch, batch=batch)
        method.loss(logits, y, torch.arange(batch))
    out = method.on_epoch_end(0, None)
    assert out["dm_weight_entropy"] == pytest.approx((math.log(8) + math.log(4)) / 2, rel=1e-6)
    logits, y = random_batch(1, batch=8)
    method.loss(logits, y, torch.arange(8))
    assert method.on_epoch_end(1, None)["dm_weight_entropy"] == pytest.approx(math.log(8), rel=1e-6)  # reset


def test_short_training_run_reports_entropy():
    cfg = {"method": {"name": "dm", "lam": 1.0, "beta": 16.0}, "model": "mlp", "seed": 0,
           "dataset": {"name": "gaussian", "noise_type": "symmetric", "noise_rate": 0.4},
           "train": {"epochs": 2, "batch_size": 64, "device": "cpu"}}
    trial = Trial(cfg)
    metrics = [trial.run_epoch() for _ in range(2)]
    for m in metrics:
        assert 0 < m["dm_weight_entropy"] < math.log(64)
        assert math.isfinite(m["train_loss"]) and "train_clean_acc" in m


@pytest.mark.gpu
def test_public_math_runs_on_cuda():
    from trainables.methods.balanced_softmax import balanced_softmax_logits
    from trainables.methods.cb import effective_number_weights
    from trainables.methods.ldam_drw import ldam_margins

    logits, y = random_batch(0)
    cuda = dm_logit_grad(logits.cuda(), y.cuda(), 0.5, 12.0)
    assert cuda.is_cuda
    torch.testing.assert_close(cuda.cpu(), dm_logit_grad(logits, y, 0.5, 12.0), rtol=1e-5, atol=1e-7)
    counts = torch.tensor([100.0, 10.0, 1.0])
    for fn in (lambda c: effective_number_weights(c, 0.99), ldam_margins):
        assert fn(counts.cuda()).is_cuda
        torch.testing.assert_close(fn(counts.cuda()).cpu(), fn(counts))
    assert balanced_softmax_logits(torch.zeros(2, 3).cuda(), counts.cuda()).is_cuda
