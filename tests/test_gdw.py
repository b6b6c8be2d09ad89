"""GDW: the zero-mean constraint, the class-level step, the clamped probabilities, and its two stage-2 starts.

Line-by-line parity with GDW's released ``main.py`` is in tests/test_parity.py.
"""

import copy
import math

import pytest
import torch
from torch.nn import functional as F

from raysweep.planning.plan import plan
from raysweep.spec.loading import load_spec_file as load_spec
from raysweep.spec.schema import validate_spec
from search_spaces import space_for
from search_spaces.grid import expand_method
from trainables.loop import Trial, train
from trainables.methods.gdw import default_eta_omega, update_class_weights, zero_mean_target


def make_trial(method, seed=0, batch=32, **hparams):
    cfg = {"method": {"name": method, **hparams},
           "dataset": {"name": "gaussian", "imbalance": 5, "meta_per_class": 8,
                       "noise_type": "symmetric", "noise_rate": 0.4},
           "model": {"name": "mlp", "width": 32},
           "train": {"epochs": 2, "batch_size": batch, "device": "cpu"}, "seed": seed}
    trial = Trial(cfg)
    idx = torch.arange(batch)
    return trial, trial.train_set.x[idx], trial.train_set.y[idx], idx


def constraint(omega, probs, targets):
    """sum_j omega_j (p_j - y_j) per row."""
    return (omega * (probs - F.one_hot(targets, probs.shape[1]).to(probs.dtype))).sum(1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_mean_target_satisfies_the_constraint_on_random_inputs(dtype):
    g = torch.Generator().manual_seed(0)
    for C in (2, 5, 100):
        probs = torch.randn(64, C, generator=g, dtype=dtype).mul(2).softmax(1)
        omega = torch.rand(64, C, generator=g, dtype=dtype) * 3
        targets = torch.randint(0, C, (64,), generator=g)
        before = omega.clone()
        out = zero_mean_target(omega, probs, targets)
        assert torch.equal(omega, before), "the input must not be modified"
        # exact for the clamped p (what the formula uses), hence for p itself wherever p <= 0.999
        assert constraint(out, probs.clamp(max=0.999), targets).abs().max() < 1e-6
        unclamped = probs.max(1).values <= 0.999
        assert unclamped.sum() > 32
        assert constraint(out, probs, targets)[unclamped].abs().max() < 1e-6
        off_target = torch.ones_like(out, dtype=torch.bool).scatter(1, targets[:, None], False)
        assert torch.equal(out[off_target], omega[off_target])


def test_zero_mean_target_by_hand_and_with_the_probability_clamp():
    omega = torch.tensor([[0.5, 1.0, 2.0], [1.0, 2.0, 3.0]], dtype=torch.float64)
    probs = torch.tensor([[0.2, 0.3, 0.5], [0.9995, 0.0005, 0.0]], dtype=torch.float64)
    out = zero_mean_target(omega, probs, torch.tensor([0, 0]))
    # row 0: (1 * 0.3 + 2 * 0.5) / (1 - 0.2) = 1.625; row 1: p_t clamped to 0.999: 2 * 0.0005 / 0.001 = 1.0
    assert torch.allclose(out, torch.tensor([[1.625, 1.0, 2.0], [1.0, 2.0, 3.0]], dtype=torch.float64))


def test_equal_rows_come_back_unchanged():
    g = torch.Generator().manual_seed(1)
    probs = torch.randn(50, 10, generator=g).mul(3).softmax(1)
    targets = torch.randint(0, 10, (50,), generator=g)
    omega = torch.rand(50, 1, generator=g).expand(-1, 10).clone()
    omega[::2, 3] += 0.25  # every other row unequal
    out = zero_mean_target(omega, probs, targets)
    assert torch.equal(out[1::2], omega[1::2])
    assert not torch.equal(out[::2], omega[::2])


def test_zero_mean_target_rejects_bad_arguments():
    omega, probs, t = torch.ones(2, 3), torch.full((2, 3), 1 / 3), torch.tensor([0, 2])
    with pytest.raises(ValueError, match="shape|batch x classes"):
        zero_mean_target(omega, probs[:, :2], t)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        zero_mean_target(omega, probs * 4, t)
    with pytest.raises(ValueError, match="targets"):
        zero_mean_target(omega, probs, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="targets"):
        zero_mean_target(omega, probs, torch.tensor([0]))


def test_update_class_weights_by_hand():
    omega = torch.tensor([[1.0, 1.0], [0.5, 0.1]], dtype=torch.float64)
    grad = torch.tensor([[0.1, -0.3], [0.2, 0.4]], dtype=torch.float64)  # sum |g| = 1
    # eta g / sum|g| = [[0.1, -0.3], [0.2, 0.4]] -> clipped to +-0.2 -> [[0.1, -0.2], [0.2, 0.2]]
    # omega - step = [[0.9, 1.2], [0.3, -0.1]] -> clamped to [1e-6, 1e6]
    out = update_class_weights(omega, grad, eta=1.0, clip=0.2)
    assert torch.allclose(out, torch.tensor([[0.9, 1.2], [0.3, 1e-6]], dtype=torch.float64), rtol=0, atol=1e-15)
    # eta 10 makes every step hit the clip; a larger clip lets it through: 10 * 0.1 / 1 = 1.0 -> 1 - 1 = 1e-6
    assert torch.allclose(update_class_weights(omega, grad, 10.0, clip=0.5),
                          torch.tensor([[0.5, 1.5], [1e-6, 1e-6]], dtype=torch.float64), rtol=0, atol=1e-15)
    assert torch.equal(update_class_weights(omega, grad, eta=0.0), omega)
    assert torch.equal(update_class_weights(omega, torch.zeros_like(grad), eta=100.0), omega)
    assert float(update_class_weights(torch.full((1, 2), 2e6), grad[:1], 0.0).max()) == 1e6


def test_update_class_weights_rejects_bad_arguments():
    omega = torch.ones(2, 2)
    with pytest.raises(ValueError, match="same shape"):
        update_class_weights(omega, torch.ones(2, 3), 1.0)
    with pytest.raises(ValueError, match="eta"):
        update_class_weights(omega, omega, -1.0)
    with pytest.raises(ValueError, match="clip"):
        update_class_weights(omega, omega, 1.0, clip=0.0)


def test_default_eta_omega_follows_the_number_of_classes():
    assert default_eta_omega(10) == 100.0 and default_eta_omega(100) == 1000.0
    trial, *_ = make_trial("gdw")
    assert trial.method.eta_omega == 100.0
    assert make_trial("gdw", eta_omega=10)[0].method.eta_omega == 10.0


def test_confident_equal_rows_follow_the_formula_with_the_clamped_probability():
    """GDW's code clamps p before the constraint, so an equal row with p_t > 0.999 is not a fixed point."""
    omega = torch.full((2, 3), 0.5, dtype=torch.float64)
    probs = torch.tensor([[0.9996, 0.0003, 0.0001], [0.0002, 0.9995, 0.0003]], dtype=torch.float64)
    out = zero_mean_target(omega, probs, torch.tensor([0, 0]))
    # row 0: 0.5 * (0.0003 + 0.0001) / (1 - 0.999) = 0.2; row 1: p_1 clamped: 0.5 * (0.999 + 0.0003) / 0.9998
    assert out[0, 0].item() == pytest.approx(0.2, rel=1e-12)
    assert out[1, 0].item() == pytest.approx(0.5 * 0.9993 / 0.9998, rel=1e-12)
    assert torch.equal(out[:, 1:], omega[:, 1:])
    assert constraint(out, probs.clamp(max=0.999), torch.tensor([0, 0])).abs().max() < 1e-15


def test_default_stage_two_starts_from_the_weights_before_the_meta_step():
    assert make_trial("gdw")[0].method.hparams["omega_from"] == "previous"


@pytest.mark.parametrize("norm", ["mean", "sum"])
def test_gdw_updated_with_eta_zero_is_exactly_one_mwnet_iteration(norm):
    """The identity holds for ``omega_from: updated`` only (GDW's own form starts before the meta step)."""
    mw, x, y, idx = make_trial("mwnet", norm=norm)
    gdw, *_ = make_trial("gdw", norm=norm, eta_omega=0.0, omega_from="updated")
    for trial in (mw, gdw):
        for _ in range(2):
            trial.method.train_step(trial.model, trial.optimizer, x, y, idx)
    for (n, a), b in zip(mw.model.named_parameters(), gdw.model.parameters(), strict=True):
        assert torch.equal(a, b), n
    for a, b in zip(mw.method.vnet.parameters(), gdw.method.vnet.parameters(), strict=True):
        assert torch.equal(a, b)
    # and the class-level step does change the trajectory
    other, *_ = make_trial("gdw", norm=norm)
    other.method.train_step(other.model, other.optimizer, x, y, idx)
    other.method.train_step(other.model, other.optimizer, x, y, idx)
    assert not all(torch.equal(a, b) for a, b in zip(mw.model.parameters(), other.model.parameters(), strict=True))


def capture_logit_grads(trial):
    """Record d loss / d logits of every backward pass through the classifier (the last one is the real step's)."""
    seen = []

    def hook(module, inputs, out):
        if out.requires_grad:
            out.register_hook(seen.append)

    trial.model.classifier.register_forward_hook(hook)
    return seen


def test_real_step_gradient_is_class_weighted_and_zero_sum():
    trial, x, y, idx = make_trial("gdw", eta_omega=1000.0, clip=0.5)
    with torch.no_grad():
        probs = copy.deepcopy(trial.model)(x).softmax(1)  # p at theta, as the step sees it
    seen = capture_logit_grads(trial)
    trial.method.train_step(trial.model, trial.optimizer, x, y, idx)
    grad = seen[-1]
    assert grad.abs().sum(1).min() > 0
    assert grad.sum(1).abs().max() < 1e-7, "the zero-mean constraint keeps every row's sum at 0"
    omega = grad / (probs - F.one_hot(y, probs.shape[1])) * len(y)  # the omega' the real step used
    assert omega.min() > 0
    assert (omega.max(1).values - omega.min(1).values).max() > 1e-2, "weights must differ across classes"
    assert torch.allclose(zero_mean_target(omega.double(), probs.double(), y).float(), omega, rtol=1e-4)


def test_real_step_rows_sum_to_zero_on_a_confident_model():
    """p clamped at 0.999 in the gradient too (GDW's code): with p_y > 0.999 every row still sums to 0."""
    trial, x, y, idx = make_trial("gdw")
    with torch.no_grad():
        trial.model.classifier.weight.mul_(60.0)  # confident: many p_max > 0.999
        probs = copy.deepcopy(trial.model)(x).softmax(1)
    assert (probs.gather(1, y[:, None]) > 0.999).any()
    seen = capture_logit_grads(trial)
    trial.method.train_step(trial.model, trial.optimizer, x, y, idx)
    assert seen[-1].sum(1).abs().max() < 1e-8


def test_omega_from_previous_uses_the_weights_before_the_meta_step():
    """GDW's code: omega' starts from the virtual step's omega; with eta = 0 that is V_old(l) on every class."""
    trial, x, y, idx = make_trial("gdw", eta_omega=0.0, omega_from="previous")
    seen = capture_logit_grads(trial)
    vnet_old = copy.deepcopy(trial.method.vnet)
    model_old = copy.deepcopy(trial.model)
    with torch.no_grad():
        logits = model_old(x)
        w = vnet_old(F.cross_entropy(logits, y, reduction="none")[:, None])
        expected = w * (logits.softmax(1) - F.one_hot(y, logits.shape[1])) / len(y)
    trial.method.train_step(trial.model, trial.optimizer, x, y, idx)
    assert torch.allclose(seen[-1], expected, atol=1e-7)
    pairs = zip(vnet_old.parameters(), trial.method.vnet.parameters(), strict=True)
    assert not all(torch.equal(a, b) for a, b in pairs)


def test_diagnostics_report_class_level_weights_on_noisy_examples():
    trial, *_ = make_trial("gdw")
    metrics = trial.run_epoch()
    for key in ("gdw_w_clean", "gdw_w_noisy", "gdw_omega_true_noisy", "gdw_omega_other_noisy", "gdw_nontarget_shift"):
        assert key in metrics and metrics[key] > 0, key


def test_paper_grid_is_eta_by_clip_by_meta_lr_and_every_point_trains():
    configs = expand_method("gdw", space_for("gdw").grid, "gdw")
    assert {(c["eta_omega"], c["clip"], c["meta_lr"]) for c in configs} == {
        (e, c, lr) for e in (10.0, 100.0, 1000.0) for c in (0.1, 0.2, 0.5) for lr in (1e-4, 1e-3)}
    for hp in configs + [{"omega_from": "previous", "norm": "sum"}]:
        metrics = train({"method": {"name": "gdw", **hp},
                         # val_per_class 0: this small pool has no room for the separate validation set auto adds
                         "dataset": {"name": "gaussian", "imbalance": 5, "samples_per_class": 60, "meta_per_class": 8,
                                     "val_per_class": 0},
                         "model": {"name": "mlp", "width": 16},
                         "train": {"epochs": 1, "batch_size": 128, "device": "cpu"}})
        assert math.isfinite(metrics["train_loss"]) and "gdw_nontarget_shift" in metrics


@pytest.mark.parametrize("preset, cells", [("gdw_vs_mwnet_noise", 4), ("gdw_vs_mwnet_imbalance", 3)])
def test_presets_compare_ce_mwnet_and_gdw_in_every_cell(preset, cells):
    trials = plan(validate_spec(load_spec(f"search_spaces/presets/{preset}.yaml")))
    assert len(trials) == 3 * cells * 3
    assert {t.config["method"]["name"] for t in trials} == {"ce", "mwnet", "gdw"}
    gdw = next(t.config for t in trials if t.config["method"]["name"] == "gdw")
    assert (gdw["method"]["eta_omega"], gdw["method"]["clip"], gdw["method"]["meta_lr"]) == (100.0, 0.2, 1e-3)
    cfg = {**gdw, "dataset": {**gdw["dataset"], "num_samples": 600},
           "train": {**gdw["train"], "epochs": 1, "device": "cpu"}}
    assert math.isfinite(train(cfg)["train_loss"])


@pytest.mark.gpu
def test_runs_on_gpu_and_the_public_math_stays_on_the_device():
    cfg = {"method": {"name": "gdw"}, "dataset": {"name": "gaussian", "meta_per_class": 8}, "model": "mlp",
           "train": {"epochs": 1, "batch_size": 64, "device": "cuda"}}
    assert train(cfg)["gdw_w_mean"] > 0
    omega, probs = torch.rand(4, 3, device="cuda"), torch.full((4, 3), 1 / 3, device="cuda")
    out = zero_mean_target(omega, probs, torch.tensor([0, 1, 2, 0], device="cuda"))
    assert out.is_cuda and update_class_weights(out, torch.randn(4, 3, device="cuda"), 100.0).is_cuda
