"""MW-Net: the weighted logit gradient, the meta step's chain rule, the real step, BatchNorm isolation."""

import copy
import math

import pytest
import torch
from torch.func import functional_call
from torch.nn import functional as F

from search_spaces import space_for
from search_spaces.grid import expand_method
from trainables.loop import Trial, train
from trainables.methods.mwnet import WeightNet, weight_normaliser, weighted_logit_grad
from trainables.params import ConfigError


def make_trial(method="mwnet", batch=16, **hparams):
    cfg = {"method": {"name": method, **hparams},
           "dataset": {"name": "gaussian", "imbalance": 5, "meta_per_class": 8,
                       "noise_type": "symmetric", "noise_rate": 0.4},
           "model": {"name": "mlp", "width": 32},
           "train": {"epochs": 2, "batch_size": batch, "device": "cpu", "momentum": 0.0, "weight_decay": 0.0},
           "seed": 0}
    trial = Trial(cfg)
    idx = torch.arange(batch)
    return trial, trial.train_set.x[idx], trial.train_set.y[idx], idx


@pytest.mark.parametrize("norm", ["mean", "sum"])
def test_weighted_logit_grad_is_the_gradient_of_the_weighted_ce(norm):
    torch.manual_seed(1)
    logits = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 3, 1, 1, 2, 0])
    w = torch.rand(6, 1, dtype=torch.float64)
    z = 6.0 if norm == "mean" else float(w.sum())
    (F.cross_entropy(logits, y, reduction="none") * w[:, 0]).sum().div(z).backward()
    got = weighted_logit_grad(w, logits.detach().softmax(1), y, norm)
    assert torch.allclose(got, logits.grad, atol=1e-12)
    # batch x classes weights with equal rows are the same thing
    assert torch.equal(weighted_logit_grad(w.expand(-1, 4), logits.detach().softmax(1), y, norm), got)


def test_weight_normaliser_by_hand():
    omega = torch.tensor([[0.2, 0.9], [0.5, 0.1], [0.3, 0.3]])
    y = torch.tensor([0, 1, 1])
    assert float(weight_normaliser(omega, y, "mean")) == 3.0
    assert float(weight_normaliser(omega, y, "sum")) == pytest.approx(0.2 + 0.1 + 0.3)
    assert float(weight_normaliser(torch.zeros(2, 2), torch.tensor([0, 1]), "sum")) == 1.0
    with pytest.raises(ValueError, match="norm"):
        weight_normaliser(omega, y, "median")
    with pytest.raises(ValueError, match="omega"):
        weighted_logit_grad(torch.ones(3, 2), torch.full((3, 3), 1 / 3), y, "mean")


def test_weight_net_maps_a_loss_column_into_the_unit_interval():
    torch.manual_seed(0)
    w = WeightNet(100)(torch.linspace(0, 10, 50)[:, None])
    assert w.shape == (50, 1) and bool(((w > 0) & (w < 1)).all())
    assert [p.shape for p in WeightNet(100).parameters()] == [(100, 1), (100,), (1, 100), (1,)]


def test_needs_a_meta_set():
    cfg = {"method": {"name": "mwnet"}, "dataset": {"name": "gaussian", "meta_per_class": 0}, "model": "mlp",
           "train": {"device": "cpu"}}
    with pytest.raises(ConfigError, match="meta_per_class"):
        Trial(cfg)


@pytest.mark.parametrize("norm", ["mean", "sum"])
def test_meta_step_follows_the_chain_rule_and_the_real_step_uses_the_new_weights(norm):
    """Recompute one iteration independently: per-example gradients J_i at theta, theta' = theta - lr sum w_i J_i / Z,
    dL_meta/dw_i by autograd through theta', dL_meta/dphi = sum_i dL_meta/dw_i dw_i/dphi (plus the normaliser's
    dependence for norm=sum); then the real step theta - lr sum_i V_new(l_i) J_i / Z."""
    trial, x, y, idx = make_trial(norm=norm, meta_optimizer="sgd", meta_lr=0.5, meta_weight_decay=0.0)
    method, model = trial.method, trial.model
    lr = trial.optimizer.param_groups[0]["lr"]
    names = [n for n, _ in model.named_parameters()]
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    vnet_before = copy.deepcopy(method.vnet)
    gen_state = trial.generator.get_state()

    method.train_step(model, trial.optimizer, x, y, idx)

    trial.generator.set_state(gen_state)
    xm, ym = trial.ctx.meta_batch(method.hparams["meta_batch_size"])

    def ce_at(params, xb, yb):
        logits = functional_call(model, {**copy.deepcopy(buffers), **params}, (xb,))
        return F.cross_entropy(logits, yb, reduction="none")

    leaf = {n: t.clone().requires_grad_(True) for n, t in theta.items()}
    losses = ce_at(leaf, x, y)
    J = [torch.autograd.grad(losses[i], [leaf[n] for n in names], retain_graph=True) for i in range(len(y))]
    ell = losses.detach()
    w = vnet_before(ell[:, None])[:, 0]  # graph to phi
    w_val = w.detach().clone().requires_grad_(True)
    z = len(y) if norm == "mean" else w_val.sum()
    theta_prime = {n: theta[n] - lr * sum(w_val[i] * J[i][k] for i in range(len(y))) / z for k, n in enumerate(names)}
    meta_loss = ce_at(theta_prime, xm, ym).mean()
    (dl_dw,) = torch.autograd.grad(meta_loss, [w_val])
    phi_grads = torch.autograd.grad(w, list(vnet_before.parameters()), grad_outputs=dl_dw)
    expected_vnet = copy.deepcopy(vnet_before)
    opt = torch.optim.SGD(expected_vnet.parameters(), lr=0.5, momentum=0.9, nesterov=True)
    for p, g in zip(expected_vnet.parameters(), phi_grads, strict=True):
        p.grad = g
    opt.step()
    triples = zip(method.vnet.parameters(), expected_vnet.parameters(), vnet_before.parameters(), strict=True)
    for got, want, old in triples:
        assert not torch.equal(got, old), "the meta step must change the weighting net"
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)

    # the real step: the weights are the updated net's function of each example's loss
    w_new = method.vnet(ell[:, None])[:, 0].detach()
    assert len(set(w_new.tolist())) == len(set(ell.tolist())), "different losses must get different weights"
    z_new = len(y) if norm == "mean" else w_new.sum()
    for k, n in enumerate(names):
        step = sum(w_new[i] * J[i][k] for i in range(len(y))) / z_new
        assert torch.allclose(dict(model.named_parameters())[n], theta[n] - lr * step, rtol=1e-4, atol=1e-6), n


def test_virtual_and_meta_passes_leave_batchnorm_statistics_alone():
    """After a step the running statistics are those of exactly one train-mode forward of the batch (the real one)."""
    trial, x, y, idx = make_trial()
    reference = copy.deepcopy(trial.model).train()
    with torch.no_grad():
        reference(x)
    trial.method.train_step(trial.model, trial.optimizer, x, y, idx)
    got = dict(trial.model.named_buffers())
    assert got, "the model must have BatchNorm buffers for this test to mean anything"
    for n, b in reference.named_buffers():
        assert torch.equal(got[n], b), n
    assert int(got["features.2.num_batches_tracked"]) == 1


def test_logged_loss_is_the_weighted_ce_and_diagnostics_split_clean_and_noisy():
    trial, *_ = make_trial(norm="sum")
    metrics = trial.run_epoch()
    keys = {"mwnet_meta_loss", "mwnet_w_mean", "mwnet_w_clean", "mwnet_w_noisy", "mwnet_w_many"}
    assert keys <= set(metrics)
    assert 0 < metrics["mwnet_w_clean"] < 1 and 0 < metrics["mwnet_w_noisy"] < 1
    # with norm=sum and one batch the logged loss is sum w CE / sum w: a convex combination of the CEs
    trial, x, y, idx = make_trial(norm="sum")
    with torch.no_grad():
        ce = F.cross_entropy(trial.model(x), y, reduction="none")
    loss = trial.method.train_step(trial.model, trial.optimizer, x, y, idx)
    assert float(ce.min()) <= float(loss) <= float(ce.max())


def test_paper_grid_is_the_two_meta_learning_rates_and_every_point_trains():
    configs = expand_method("mwnet", space_for("mwnet").grid, "mwnet")
    assert sorted(c["meta_lr"] for c in configs) == [1e-5, 1e-3]
    for hp in configs + [{"norm": "sum", "meta_optimizer": "sgd"}]:
        metrics = train({"method": {"name": "mwnet", **hp},
                         "dataset": {"name": "gaussian", "imbalance": 5, "samples_per_class": 100, "meta_per_class": 8},
                         "model": {"name": "mlp", "width": 32},
                         "train": {"epochs": 1, "batch_size": 64, "device": "cpu"}})
        assert math.isfinite(metrics["train_loss"]) and "mwnet_w_mean" in metrics


@pytest.mark.gpu
def test_runs_on_gpu():
    cfg = {"method": {"name": "mwnet"}, "dataset": {"name": "gaussian", "meta_per_class": 8}, "model": "mlp",
           "train": {"epochs": 1, "batch_size": 64, "device": "cuda"}}
    assert train(cfg)["mwnet_w_mean"] > 0


def test_detach_loss_is_an_mwnet_option_only():
    """false = the class-imbalance code's live loss into V (parity in tests/test_parity.py); GDW's code detaches."""
    from trainables.methods import METHODS

    assert METHODS.get("mwnet").resolve_params({})["detach_loss"] is True
    assert METHODS.get("mwnet").resolve_params({"detach_loss": False})["detach_loss"] is False
    with pytest.raises(ConfigError, match="detach_loss"):
        METHODS.get("gdw").resolve_params({"detach_loss": False})
    trial, x, y, idx = make_trial(detach_loss=False, norm="sum")
    assert math.isfinite(float(trial.method.train_step(trial.model, trial.optimizer, x, y, idx)))
