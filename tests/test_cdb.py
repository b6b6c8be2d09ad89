"""CDB-W-CE, CDB-W-FL, CDB-S: exact formulas (hand-computed values) and behaviour in the loop."""

import math

import pytest
import torch
from torch.nn import functional as F

from search_spaces import space_for
from search_spaces.grid import expand_method
from trainables.loop import Trial, train
from trainables.methods import METHODS
from trainables.methods.base import meta_class_accuracy
from trainables.methods.cdb import (
    cdb_class_weights,
    class_sampling_probs,
    dynamic_tau,
    instance_sampling_probs,
    performance_bias,
)
from trainables.params import ConfigError, InactiveParamError

B_M = 99.0  # 1/eps - 1 for eps = 0.01


def sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def acc(*values):
    return torch.tensor(values, dtype=torch.float64)


# ---- performance_bias (Eq. 5) ---------------------------------------------------------------------
def test_bias_by_hand():
    assert performance_bias(acc(0.9, 0.5, 0.1)) == pytest.approx(0.9 / 0.11 - 1, abs=1e-12)
    assert performance_bias(acc(0.8, 0.4), eps=0.1) == pytest.approx(0.8 / 0.5 - 1, abs=1e-12)
    assert performance_bias(acc(1.0, 0.0)) == pytest.approx(B_M, abs=1e-9)


def test_bias_is_zero_when_balanced_not_negative():
    # 0.5 / 0.51 - 1 < 0 is clamped to 0
    assert performance_bias(acc(0.5, 0.5, 0.5)) == 0.0
    assert performance_bias(acc(0.0, 0.0)) == 0.0


@pytest.mark.parametrize("bad", [acc(), acc(0.5, 1.2), acc(-0.1, 0.5), acc(0.5, float("nan")), torch.zeros(2, 2)])
def test_bias_rejects_invalid(bad):
    with pytest.raises(ValueError):
        performance_bias(bad)


def test_bias_rejects_bad_eps():
    with pytest.raises(ValueError, match="eps"):
        performance_bias(acc(0.5, 0.2), eps=0.0)


# ---- dynamic_tau (Eqs. 7-10 and the code's forms) -------------------------------------------------
@pytest.mark.parametrize("bias", [0.0, 1.0, B_M])
def test_paper_variants_by_hand(bias):
    assert dynamic_tau(bias, "linear") == pytest.approx(5.0 * bias / 99.0, abs=1e-12)
    assert dynamic_tau(bias, "poly", p=2) == pytest.approx(5.0 * (bias / 99.0) ** 2, abs=1e-12)
    assert dynamic_tau(bias, "poly", p=3) == pytest.approx(5.0 * (bias / 99.0) ** 3, abs=1e-12)
    assert dynamic_tau(bias, "log") == pytest.approx(5.0 * math.log(1 + bias) / math.log(100.0), abs=1e-12)
    assert dynamic_tau(bias, "sigmoid") == pytest.approx(5.0 * (2 / (1 + math.exp(-bias)) - 1), abs=1e-12)


def test_variant_end_points():
    for variant in ("linear", "poly", "log", "sigmoid"):
        assert dynamic_tau(0.0, variant) == 0.0
    for variant in ("linear", "poly", "log"):
        assert dynamic_tau(B_M, variant) == pytest.approx(5.0)
    assert dynamic_tau(1.0, "linear") == pytest.approx(5 / 99)
    assert dynamic_tau(1.0, "log") == pytest.approx(5 * math.log(2) / math.log(100))  # 0.7526
    assert dynamic_tau(1.0, "sigmoid") == pytest.approx(5 * (2 * 0.7310585786300049 - 1))  # 2.3106
    assert dynamic_tau(1.0, "linear", t_max=2.0, eps=0.1) == pytest.approx(2.0 * 1.0 / 9.0)


@pytest.mark.parametrize("bias", [0.0, 1.0, B_M])
def test_code_variants_by_hand(bias):
    # CIFAR code: tau = sigmoid(max/(min + eps)) = sigmoid(bias + 1); ImageNet code: tau = 2 sigmoid(bias)
    assert dynamic_tau(bias, "sigmoid_code_cifar") == pytest.approx(sig(bias + 1), abs=1e-12)
    assert dynamic_tau(bias, "sigmoid_code_imagenet") == pytest.approx(2 * sig(bias), abs=1e-12)
    assert dynamic_tau(0.0, "sigmoid_code_imagenet") == 1.0


def test_log_variant_increases_with_bias():
    values = [dynamic_tau(b, "log") for b in (0.0, 0.5, 3.0, 30.0, B_M)]
    assert values == sorted(values) and values[-1] > 0


@pytest.mark.parametrize("kwargs, match", [
    ({"bias": 1.0, "variant": "cubic"}, "unknown tau variant"),
    ({"bias": -0.5, "variant": "linear"}, "bias"),
    ({"bias": 120.0, "variant": "sigmoid"}, "bias"),
    ({"bias": 1.0, "variant": "poly", "p": 1}, "p >= 2"),
    ({"bias": 1.0, "variant": "poly", "p": 2.5}, "p >= 2"),
    ({"bias": 1.0, "variant": "log", "t_max": -1.0}, "t_max"),
])
def test_dynamic_tau_rejects_invalid(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dynamic_tau(**kwargs)


# ---- cdb_class_weights (Eq. 4) --------------------------------------------------------------------
def test_fixed_tau_weights_by_hand():
    a = acc(0.9, 0.5, 0.1)  # d = 0.1, 0.5, 0.9
    raw = torch.tensor([0.1 ** 1.5, 0.5 ** 1.5, 0.9 ** 1.5], dtype=torch.float64)
    torch.testing.assert_close(cdb_class_weights(a, 1.5, normalize=False), raw)
    torch.testing.assert_close(cdb_class_weights(a, 1.5), raw / raw.sum() * 3)
    assert float(cdb_class_weights(a, 1.5).mean()) == pytest.approx(1.0)


def test_dynamic_tau_weights_by_hand():
    a = acc(0.9, 0.5, 0.1)
    bias = 0.9 / 0.11 - 1
    tau = 5 * (2 * sig(bias) - 1)
    raw = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64) ** tau
    torch.testing.assert_close(cdb_class_weights(a, "sigmoid"), raw / raw.sum() * 3)
    tau_lin = 5 * bias / 99
    torch.testing.assert_close(cdb_class_weights(a, "linear", normalize=False),
                               torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64) ** tau_lin)


def test_code_variants_use_the_unclamped_ratio():
    """All accuracies 0.5: the code's tau is sigmoid(0.5 / 0.51), not sigmoid(1) (the clamped bias + 1)."""
    a = acc(0.5, 0.5, 0.2)
    ratio = 0.5 / 0.21
    raw = torch.tensor([0.5, 0.5, 0.8], dtype=torch.float64) ** sig(ratio)
    torch.testing.assert_close(cdb_class_weights(a, "sigmoid_code_cifar", normalize=False), raw)
    b = acc(0.6, 0.6)  # ratio 0.6/0.61 < 1: the code's bias is negative
    d = torch.tensor([0.4, 0.4], dtype=torch.float64)
    torch.testing.assert_close(cdb_class_weights(b, "sigmoid_code_imagenet", normalize=False),
                               d ** (2 * sig(0.6 / 0.61 - 1)))


def test_weights_edge_cases():
    assert torch.equal(cdb_class_weights(acc(0.3, 0.7), 0.0), torch.ones(2, dtype=torch.float64))
    # a perfect class gets weight 0 (paper); the floor keeps it in play
    w = cdb_class_weights(acc(1.0, 0.5), 2.0, normalize=False)
    assert w.tolist() == [0.0, 0.25]
    w = cdb_class_weights(acc(1.0, 0.5), 2.0, normalize=False, floor=0.1)
    assert w.tolist() == pytest.approx([0.01, 0.25])
    # every class perfect: all raw weights 0; normalised they are the uniform limit
    assert cdb_class_weights(acc(1.0, 1.0), 1.0).tolist() == [1.0, 1.0]


@pytest.mark.parametrize("tau", [-0.5, "fixed", float("nan"), True])
def test_weights_reject_bad_tau(tau):
    with pytest.raises(ValueError, match="tau"):
        cdb_class_weights(acc(0.2, 0.4), tau)


# ---- CDB-S sampling (Eq. 15) ----------------------------------------------------------------------
def test_sampling_probabilities_by_hand():
    w = torch.tensor([1.0, 3.0, 0.0, 4.0])
    counts = torch.tensor([10.0, 5.0, 2.0, 0.0])  # class 3 has no training example: its mass is dropped
    probs = class_sampling_probs(w, counts)
    torch.testing.assert_close(probs, torch.tensor([0.25, 0.75, 0.0, 0.0], dtype=torch.float64))
    labels = torch.tensor([0, 0, 1, 2])
    per = instance_sampling_probs(probs, labels, counts)
    torch.testing.assert_close(per, torch.tensor([0.025, 0.025, 0.15, 0.0], dtype=torch.float64))


def test_sampling_frequencies_match_class_probabilities():
    """Draw many epochs' worth through the method's own sampler: class frequencies match P_c."""
    trial = Trial({"method": {"name": "cdb_s", "tau": 2.0}, "dataset": {"name": "gaussian", "imbalance": 10},
                   "model": "mlp", "train": {"epochs": 1, "device": "cpu"}, "seed": 0})
    method, C = trial.method, trial.splits.num_classes
    val_acc = torch.tensor([0.9, 0.7, 0.5, 0.2], dtype=torch.float64)
    method.update_weights(val_acc)
    d = 1 - val_acc
    expected = d ** 2 / (d ** 2).sum()
    weights = method.sample_weights(1)
    draws = torch.multinomial(weights.double(), 200_000, replacement=True, generator=torch.Generator().manual_seed(1))
    freq = torch.bincount(trial.train_set.y[draws], minlength=C).double() / len(draws)
    torch.testing.assert_close(freq, expected, atol=0.005, rtol=0)
    # inside a class the draws are uniform over its instances
    cls3 = draws[trial.train_set.y[draws] == 3]
    per_instance = torch.bincount(cls3, minlength=len(trial.train_set)).double()[trial.train_set.y == 3]
    assert per_instance.std() / per_instance.mean() < 0.1


def test_cdb_s_first_epoch_is_class_balanced_or_a_shuffle():
    cfg = {"method": {"name": "cdb_s"}, "dataset": {"name": "gaussian", "imbalance": 10}, "model": "mlp",
           "train": {"epochs": 1, "device": "cpu"}, "seed": 0}
    method = Trial(cfg).method
    w = method.sample_weights(0)
    mass = torch.zeros(4, dtype=torch.float64).index_add_(0, method.ctx.train.y, w)
    torch.testing.assert_close(mass, torch.full((4,), 0.25, dtype=torch.float64))
    cfg["method"]["first_epoch"] = "instance_uniform"
    assert Trial(cfg).method.sample_weights(0) is None


# ---- behaviour in the loop ------------------------------------------------------------------------
def _cfg(method, **hp):
    return {"method": {"name": method, **hp}, "dataset": {"name": "gaussian", "imbalance": 10, "meta_per_class": 10},
            "model": "mlp", "train": {"epochs": 3, "batch_size": 64, "device": "cpu"}, "seed": 0}


@pytest.mark.parametrize("method", ["cdb_w_ce", "cdb_w_fl", "cdb_s"])
def test_weights_follow_previous_epoch_meta_set_accuracy(method):
    """CDB learns from the meta set (the paper's validation set); the loop's validation split is not read.

    With ``val_per_class`` auto the trial holds out a separate validation set: the weights must come from
    the meta set's accuracy (before item 7 of the fidelity issue they came from the validation split).
    """
    trial = Trial(_cfg(method, tau=1.5))
    assert trial.config["dataset"]["val_per_class"] == 10 and trial.method.learns_from() == ("train", "meta")
    rows = lambda t: {tuple(r) for r in t.tolist()}  # noqa: E731
    assert not rows(trial.splits.val.x) & rows(trial.splits.meta.x)
    assert torch.equal(trial.method.class_weights, torch.ones(4))  # epoch 1: no evaluation yet
    for _ in range(2):
        metrics = trial.run_epoch()
        expected = cdb_class_weights(meta_class_accuracy(trial.ctx), 1.5).float()
        torch.testing.assert_close(trial.method.class_weights, expected)
        assert metrics["cdb_tau"] == 1.5
    with pytest.raises(ConfigError, match="meta_per_class"):
        Trial({**_cfg(method), "dataset": {"name": "gaussian", "meta_per_class": 0, "val_per_class": 5}})


def test_loss_uses_the_class_weights():
    trial = Trial(_cfg("cdb_w_ce", tau=1.0))
    trial.method.class_weights = torch.tensor([0.5, 1.0, 2.0, 0.5])
    logits, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 2, 0])
    ce = F.cross_entropy(logits, y, reduction="none")
    w = trial.method.class_weights[y]
    torch.testing.assert_close(trial.method.loss(logits, y, y), (w * ce).mean())
    trial = Trial(_cfg("cdb_w_ce", tau=1.0, reduction="weighted_mean"))
    trial.method.class_weights = torch.tensor([0.5, 1.0, 2.0, 0.5])
    torch.testing.assert_close(trial.method.loss(logits, y, y), (w * ce).sum() / w.sum())
    trial = Trial(_cfg("cdb_w_fl", tau=1.0, gamma=2.0))
    trial.method.class_weights = torch.tensor([0.5, 1.0, 2.0, 0.5])
    p = logits.softmax(1).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(trial.method.loss(logits, y, y), (w * (1 - p) ** 2 * ce).mean())


def test_poly_tau_is_reported_and_restored_from_state():
    states, full = [], []
    cfg = _cfg("cdb_w_ce", tau="poly", p=3)
    cfg["train"]["epochs"] = 4
    train(cfg, report=lambda m, s: (full.append(m), states.append({k: v for k, v in s.items()})))
    bias = full[0]["cdb_bias"]
    assert full[0]["cdb_tau"] == pytest.approx(5 * (bias / 99) ** 3)
    fresh = Trial(cfg)
    fresh.method.load_state_dict(states[1]["method"])
    assert fresh.method.tau == full[1]["cdb_tau"]


def test_conditional_knobs_are_checked():
    cls = METHODS.get("cdb_w_ce")
    with pytest.raises(InactiveParamError, match="p"):
        cls.resolve_params({"tau": 1.5, "p": 3})
    with pytest.raises(InactiveParamError, match="t_max"):
        cls.resolve_params({"tau": "sigmoid_code_cifar", "t_max": 3.0})
    with pytest.raises(InactiveParamError, match="eps"):
        cls.resolve_params({"tau": 2.0, "eps": 0.05})
    resolved = cls.resolve_params({"tau": 1.5})
    assert cls.resolve_params(resolved) == resolved  # idempotent: defaults of inactive knobs pass
    assert cls.resolve_params({"tau": "poly", "p": 3})["p"] == 3
    with pytest.raises(ConfigError, match="tau"):
        cls.resolve_params({"tau": "cubic"})
    with pytest.raises(ConfigError, match="tau"):
        cls.resolve_params({"tau": -1})
    assert "gamma" not in cls.params and "gamma" in METHODS.get("cdb_w_fl").params


def test_paper_grid_has_p_only_with_poly():
    for method, size in [("cdb_w_ce", 10), ("cdb_s", 10), ("cdb_w_fl", 30)]:
        configs = expand_method(method, space_for(method).grid, method)
        assert len(configs) == size
        taus = {c["tau"] for c in configs}
        assert taus == {0.5, 1.0, 1.5, 2.0, 5.0, "linear", "poly", "log", "sigmoid"}
        assert sorted(c["p"] for c in configs if c["tau"] == "poly") == sorted([2, 3] * (size // 10))


@pytest.mark.parametrize("method", ["cdb_w_ce", "cdb_w_fl", "cdb_s"])
def test_short_sweep_over_the_paper_grid(method):
    """Every configuration of the paper grid trains two epochs end to end (no Ray: the plain loop)."""
    configs = expand_method(method, space_for(method).grid, method)
    for hp in configs:
        cfg = {**_cfg(method, **hp), "train": {"epochs": 2, "batch_size": 128, "device": "cpu"}}
        metrics = train(cfg)
        assert math.isfinite(metrics["train_loss"]) and "cdb_tau" in metrics


@pytest.mark.gpu
def test_math_on_gpu():
    a = acc(0.9, 0.5, 0.1).cuda()
    w = cdb_class_weights(a, "sigmoid")
    assert w.is_cuda
    torch.testing.assert_close(w.cpu(), cdb_class_weights(a.cpu(), "sigmoid"))
    assert performance_bias(a) == performance_bias(a.cpu())


def test_preset_lays_out_tables_2_and_3():
    from raysweep.planning.plan import plan
    from raysweep.spec.loading import load_spec_file as load_spec
    from raysweep.spec.schema import validate_spec

    spec = validate_spec(load_spec("search_spaces/presets/cdb_tau_x_imbalance.yaml"))
    trials = plan(spec)
    assert len(trials) == (1 + 9 + 9) * 5 * 2
    cdb = [t for t in trials if t.config["method"]["name"] == "cdb_s" and t.seed == trials[0].seed]
    assert {(t.config["method"]["tau"], t.config["dataset"]["imbalance"]) for t in cdb} == {
        (tau, rho) for tau in [0.5, 1.0, 1.5, 2.0, 5.0, "linear", "poly", "log", "sigmoid"]
        for rho in [10.0, 20.0, 50.0, 100.0, 200.0]}
    config = {**cdb[-1].config, "train": {**cdb[-1].config["train"], "epochs": 1, "device": "cpu"}}
    assert math.isfinite(train(config)["train_loss"])


def test_default_tau_is_the_released_cifar_codes_dynamic_form():
    """cifar_train.py's default ``--tau dynamic``: tau = sigmoid(max A / (min A + 0.01)) (docs: evidence table)."""
    for name in ("cdb_w_ce", "cdb_w_fl", "cdb_s"):
        assert METHODS.get(name).resolve_params({})["tau"] == "sigmoid_code_cifar"
    a = acc(0.9, 0.5, 0.1)
    raw = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64) ** sig(0.9 / 0.11)
    torch.testing.assert_close(cdb_class_weights(a, "sigmoid_code_cifar"), raw / raw.sum() * 3)  # ~[0.2, 1.0, 1.8]
