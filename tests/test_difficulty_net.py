"""Difficulty-Net: the H rule, weights and driver loss by hand, the meta-gradient modes, the step, state."""

import copy
import math

import pytest
import torch
from torch.nn import functional as F

from search_spaces import space_for
from search_spaces.grid import expand_method
from trainables.loop import Trial, train
from trainables.methods import METHODS
from trainables.methods.difficulty_net import (
    DifficultyNet,
    difficulty_weights,
    driver_loss,
    driver_target,
    hidden_width,
)
from trainables.params import InactiveParamError


@pytest.mark.parametrize("C, H", [(1, 2), (2, 4), (3, 4), (4, 8), (10, 16), (15, 16), (16, 32),
                                  (100, 128), (127, 128), (128, 256), (365, 512), (1000, 1024)])
def test_hidden_width_rule(C, H):
    assert hidden_width(C) == H
    assert 2 ** (int(math.log2(H)) - 1) <= C < H


@pytest.mark.parametrize("bad", [0, -3, 2.0, True])
def test_hidden_width_rejects_invalid(bad):
    with pytest.raises(ValueError, match="num_classes"):
        hidden_width(bad)


def test_weights_and_driver_loss_by_hand():
    d = torch.tensor([0.2, 0.6, 0.2])
    torch.testing.assert_close(difficulty_weights(d), torch.tensor([0.6, 1.8, 0.6]))
    A = torch.tensor([0.5, 0.25, 0.25])
    torch.testing.assert_close(driver_target(A), torch.tensor([0.5, 0.75, 0.75]))
    expected = ((0.2 - 0.5) ** 2 + (0.6 - 0.75) ** 2 + (0.2 - 0.75) ** 2) / 3
    assert driver_loss(d, A).item() == pytest.approx(expected)
    torch.testing.assert_close(driver_target(torch.zeros(3)), torch.ones(3))  # all A = 0: target 1
    with pytest.raises(ValueError, match="disagree"):
        driver_loss(d, torch.zeros(4))


def _cfg(**hp):
    return {"method": {"name": "difficulty_net", **hp},
            "dataset": {"name": "gaussian", "imbalance": 10, "meta_per_class": 10},
            "model": "mlp", "train": {"epochs": 3, "batch_size": 64, "device": "cpu"}, "seed": 0}


def test_network_shape_and_hidden_options():
    trial = Trial(_cfg())
    net = trial.method.net
    assert isinstance(net, DifficultyNet) and trial.method.hidden == 8  # C = 4 -> H = 8
    assert [tuple(m.weight.shape) for m in net.layers if isinstance(m, torch.nn.Linear)] == [(8, 4), (8, 8), (4, 8)]
    out = net(torch.rand(4))
    assert out.shape == (4,) and ((out > 0) & (out < 1)).all()
    assert Trial(_cfg(hidden_factor=4.0)).method.hidden == 32
    assert Trial(_cfg(hidden=5)).method.hidden == 5
    no_bias = Trial(_cfg(mlp_bias=False)).method.net
    assert all(m.bias is None for m in no_bias.layers if isinstance(m, torch.nn.Linear))
    with pytest.raises(InactiveParamError, match="hidden_factor"):
        METHODS.get("difficulty_net").resolve_params({"hidden": 64, "hidden_factor": 2.0})


def _meta_grads(meta_grad, lam=0.0):
    trial = Trial(_cfg(meta_grad=meta_grad, lam=lam))
    method = trial.method
    method.class_acc = torch.tensor([0.9, 0.6, 0.3, 0.1])
    x, y = trial.train_set.x[:64], trial.train_set.y[:64]
    xm, ym = trial.ctx.meta_batch(40)
    return method.meta_gradients(trial.model, x, y, xm, ym, lr=0.1)


def test_second_order_meta_ce_alone_reaches_the_mlp():
    grads, terms = _meta_grads("second_order", lam=0.0)
    assert "meta_ce" in terms and all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert all(float(g.abs().sum()) > 0 for g in grads)  # every layer of the MLP gets a gradient


def test_driver_only_gives_no_meta_ce_gradient():
    grads, terms = _meta_grads("driver_only", lam=0.0)
    assert "meta_ce" not in terms
    assert all(float(g.abs().sum()) == 0 for g in grads)
    grads, _ = _meta_grads("driver_only", lam=0.3)  # with lambda > 0 the driver loss alone trains it
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_driver_only_gradient_is_lambda_times_the_driver_gradient():
    trial = Trial(_cfg(meta_grad="driver_only", lam=0.3))
    method = trial.method
    method.class_acc = torch.tensor([0.9, 0.6, 0.3, 0.1])
    grads, _ = method.meta_gradients(trial.model, trial.train_set.x[:8], trial.train_set.y[:8],
                                     *trial.ctx.meta_batch(8), lr=0.1)
    ref = torch.autograd.grad(0.3 * driver_loss(method.net(method.class_acc), method.class_acc),
                              list(method.net.parameters()))
    for g, r in zip(grads, ref, strict=True):
        torch.testing.assert_close(g, r)


def test_virtual_step_leaves_the_model_alone_and_real_step_uses_updated_weights():
    trial = Trial(_cfg())
    method, model = trial.method, trial.model
    method.class_acc = torch.tensor([0.9, 0.6, 0.3, 0.1])
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, y = trial.train_set.x[:64], trial.train_set.y[:64]
    net_before = [p.detach().clone() for p in method.net.parameters()]
    # the reference real step: CE weighted by the weights of the net after its meta step, plain SGD
    gen_state = trial.generator.get_state()
    loss = method.train_step(model, trial.optimizer, x, y, torch.arange(64))
    assert any(not torch.equal(a, b) for a, b in zip(net_before, method.net.parameters(), strict=True))
    w = method.class_weights()
    ref_model = copy.deepcopy(model)
    ref_model.load_state_dict({**params, **buffers}, strict=True)
    expected = (w[y] * F.cross_entropy(ref_model(x), y, reduction="none")).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # BatchNorm statistics moved exactly once (the real forward), as in ref_model's single forward
    for name, buf in ref_model.named_buffers():
        torch.testing.assert_close(dict(model.named_buffers())[name], buf)
    assert not torch.equal(trial.generator.get_state(), gen_state)  # a meta batch was drawn


def test_balanced_softmax_base_loss():
    trial = Trial(_cfg(base_loss="balanced_softmax"))
    method = trial.method
    logits, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 1, 0])
    w = torch.tensor([1.0, 2.0, 0.5, 0.5])
    shifted = logits + trial.ctx.class_counts.log()
    expected = (w[y] * F.cross_entropy(shifted, y, reduction="none")).mean()
    torch.testing.assert_close(method.weighted_loss(logits, y, w), expected)


def test_accuracy_is_measured_on_the_meta_set_after_each_epoch():
    trial = Trial(_cfg())
    assert torch.equal(trial.method.class_acc, torch.zeros(4))  # official CIFAR code: A starts at 0
    metrics = trial.run_epoch()
    pred = trial.ctx.predict(trial.ctx.meta.x).argmax(1)
    expected = torch.stack([(pred[trial.ctx.meta.y == c] == c).float().mean() for c in range(4)])
    torch.testing.assert_close(trial.method.class_acc, expected)
    assert {"diffnet_meta_ce", "diffnet_driver_loss", "diffnet_weight_min"} <= set(metrics)
    per_iter = Trial(_cfg(accuracy_update="iteration"))
    per_iter.run_epoch()
    assert not torch.equal(per_iter.method.class_acc, torch.zeros(4))


def test_state_round_trip_continues_the_same_run():
    states, full = [], []
    cfg = _cfg()
    train(cfg, report=lambda m, s: (full.append(m), states.append(copy.deepcopy(s))))
    fresh = Trial(cfg)
    fresh.load_state_dict(states[0])
    resumed = [fresh.run_epoch() for _ in range(2)]
    for key in ("test_acc", "diffnet_meta_ce", "diffnet_weight_max"):
        assert [m[key] for m in resumed] == [m[key] for m in full[1:]]


def test_grid_is_h_factors_plus_lambda_by_meta_lr():
    configs = expand_method("difficulty_net", space_for("difficulty_net").grid, "difficulty_net")
    assert len(configs) == 4 + 12 - 1  # the default point appears in both blocks once
    assert sorted({c["hidden_factor"] for c in configs}) == [0.5, 1.0, 2.0, 4.0]
    assert {(c["lam"], c["meta_lr"]) for c in configs if c["hidden_factor"] == 1.0} == {
        (lam, lr) for lam in (0.0, 0.1, 0.3, 1.0) for lr in (1e-5, 1e-4, 1e-3)}


def test_short_sweep_over_the_grid():
    configs = expand_method("difficulty_net", space_for("difficulty_net").grid, "difficulty_net")
    configs.append({"meta_grad": "driver_only", "base_loss": "balanced_softmax"})
    for hp in configs:
        metrics = train({**_cfg(**hp), "train": {"epochs": 1, "batch_size": 128, "device": "cpu"}})
        assert math.isfinite(metrics["train_loss"]) and "diffnet_weight_max" in metrics


@pytest.mark.gpu
def test_runs_on_gpu():
    cfg = _cfg()
    cfg["train"].update(device="cuda", epochs=1)
    metrics = train(cfg)
    assert math.isfinite(metrics["train_loss"])
    assert difficulty_weights(torch.rand(5, device="cuda")).is_cuda


def test_preset_lays_out_supplementary_table_6():
    from raysweep.planning.plan import plan
    from raysweep.spec.loading import load_spec_file as load_spec
    from raysweep.spec.schema import validate_spec

    spec = validate_spec(load_spec("search_spaces/presets/difficulty_net_h.yaml"))
    trials = plan(spec)
    assert len(trials) == 5 * 2 * 3
    assert sorted({t.config["method"]["hidden"] for t in trials}) == [16, 32, 64, 128, 256]
    assert hidden_width(10) == 16  # the first row is the rule for mnist1d's 10 classes
    config = trials[0].config
    assert math.isfinite(train({**config, "train": {**config["train"], "epochs": 1, "device": "cpu"}})["train_loss"])


def test_real_step_reusing_the_virtual_forward_equals_a_fresh_forward(monkeypatch):
    """The real step reuses the virtual pass's logits and BatchNorm statistics: same result as model(x)."""
    reused, fresh = Trial(_cfg(lam=0.3)), Trial(_cfg(lam=0.3))
    original = type(fresh.method).meta_gradients

    def without_reuse(self, *args, keep_forward=None, **kwargs):
        return original(self, *args, **kwargs)

    monkeypatch.setattr(fresh.method, "meta_gradients", without_reuse.__get__(fresh.method))
    x, y = reused.train_set.x[:64], reused.train_set.y[:64]
    idx = torch.arange(64)
    for trial in (reused, fresh):
        trial.method.class_acc = torch.tensor([0.9, 0.6, 0.3, 0.1])
        trial.model.train()
    loss_a = reused.method.train_step(reused.model, reused.optimizer, x, y, idx)
    loss_b = fresh.method.train_step(fresh.model, fresh.optimizer, x, y, idx)
    assert torch.allclose(loss_a, loss_b, atol=1e-6)
    state_a, state_b = reused.model.state_dict(), fresh.model.state_dict()
    for name in state_a:
        assert torch.allclose(state_a[name].float(), state_b[name].float(), atol=1e-6), name
