"""Instance-difficulty sampling: exact du/dl, D and truncation; uniform first epoch; state round trip."""

import copy
import math

import pytest
import torch

from search_spaces import space_for
from search_spaces.grid import expand_method
from search_spaces.methods.ids import noise_gamma_grid
from trainables.loop import Trial, train
from trainables.methods.ids import difficulty, prediction_change, truncate_top


def t(*rows):
    return torch.tensor(rows, dtype=torch.float64)


# ---- prediction_change ----------------------------------------------------------------------------
def test_prediction_change_by_hand():
    p_prev = t([0.5, 0.3, 0.2], [0.6, 0.3, 0.1])
    p_curr = t([0.7, 0.2, 0.1], [0.3, 0.5, 0.2])
    targets = torch.tensor([0, 0])
    du, dl = prediction_change(p_prev, p_curr, targets)
    # row 0: target rose (learning), both others fell (learning) -> everything is dl
    dl0 = 0.2 * math.log(0.7 / 0.5) + 0.1 * math.log(0.3 / 0.2) + 0.1 * math.log(0.2 / 0.1)
    # row 1: target fell (unlearning), both others rose (unlearning) -> everything is du
    du1 = 0.3 * math.log(0.6 / 0.3) + 0.2 * math.log(0.5 / 0.3) + 0.1 * math.log(0.2 / 0.1)
    torch.testing.assert_close(du, t(0.0, du1))
    torch.testing.assert_close(dl, t(dl0, 0.0))


def test_prediction_change_mixed_row():
    p_prev = t([0.4, 0.4, 0.2])
    p_curr = t([0.5, 0.1, 0.4])  # target 0 rose (dl), class 1 fell (dl), class 2 rose (du)
    du, dl = prediction_change(p_prev, p_curr, torch.tensor([0]))
    assert du.item() == pytest.approx(0.2 * math.log(2.0))
    assert dl.item() == pytest.approx(0.1 * math.log(1.25) + 0.3 * math.log(4.0))
    # the same change seen from target 2: class 2's rise is now learning, class 0's rise unlearning
    du, dl = prediction_change(p_prev, p_curr, torch.tensor([2]))
    assert du.item() == pytest.approx(0.1 * math.log(1.25))
    assert dl.item() == pytest.approx(0.2 * math.log(2.0) + 0.3 * math.log(4.0))


def test_prediction_change_sums_to_psi_and_is_nonnegative():
    g = torch.Generator().manual_seed(0)
    p, q = torch.rand(50, 7, generator=g).softmax(1), torch.rand(50, 7, generator=g).softmax(1)
    y = torch.randint(0, 7, (50,), generator=g)
    du, dl = prediction_change(p, q, y)
    assert (du >= 0).all() and (dl >= 0).all()
    torch.testing.assert_close(du + dl, ((q - p) * (q / p).log()).sum(1))
    du0, dl0 = prediction_change(p, p, y)
    assert du0.abs().max() == 0 and dl0.abs().max() == 0


def test_prediction_change_clamps_zero_probabilities():
    du, dl = prediction_change(t([1.0, 0.0]), t([0.5, 0.5]), torch.tensor([0]))
    assert torch.isfinite(du).all() and du.item() == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(0.5 / 1e-8))


@pytest.mark.parametrize("args, match", [
    ((t([0.5, 0.5]), t([0.5, 0.5], [0.5, 0.5]), torch.tensor([0])), "p_prev and p_curr"),
    ((t([0.5, 0.5]), t([0.5, 0.5]), torch.tensor([0, 1])), "targets"),
    ((t([0.5, 0.5]), t([0.5, 0.5]), torch.tensor([2])), "class indices"),
    ((t([1.5, -0.5]), t([0.5, 0.5]), torch.tensor([0])), r"\[0, 1\]"),
])
def test_prediction_change_rejects_invalid(args, match):
    with pytest.raises(ValueError, match=match):
        prediction_change(*args)


# ---- difficulty and truncation --------------------------------------------------------------------
def test_difficulty_by_hand():
    D = difficulty(torch.tensor([0.0, 2.0, 1.0]), torch.tensor([0.0, 1.0, 9.0]), c=1.0)
    torch.testing.assert_close(D, torch.tensor([1.0, 1.5, 0.2]))
    D = difficulty(torch.tensor([0.0, 2.0]), torch.tensor([0.0, 1.0]), c=10.0)
    torch.testing.assert_close(D, torch.tensor([1.0, 12.0 / 11.0]))


@pytest.mark.parametrize("kwargs, match", [
    ({"sum_du": torch.zeros(2), "sum_dl": torch.zeros(2), "c": 0.0}, "c must be"),
    ({"sum_du": torch.zeros(2), "sum_dl": torch.zeros(2), "c": -1.0}, "c must be"),
    ({"sum_du": torch.zeros(2), "sum_dl": torch.zeros(3), "c": 1.0}, "same shape"),
    ({"sum_du": -torch.ones(2), "sum_dl": torch.zeros(2), "c": 1.0}, "negative"),
])
def test_difficulty_rejects_invalid(kwargs, match):
    with pytest.raises(ValueError, match=match):
        difficulty(**kwargs)


def test_truncate_top_by_hand():
    w = torch.tensor([1.0, 5.0, 2.0, 4.0, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    out = truncate_top(w, 0.2)  # int(0.2 * 10) = 2: the 5 and the 4 go
    expected = torch.tensor([1.0, 0.0, 2.0, 0.0, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0]) / 11.0
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(truncate_top(w, 0.0), w / 20.0)
    torch.testing.assert_close(truncate_top(w, 0.05), w / 20.0)  # int(0.5) = 0
    assert float(truncate_top(torch.rand(1000) + 0.1, 0.29).eq(0).sum()) == 290  # 0.29 * 1000, float-safe


@pytest.mark.parametrize("gamma", [-0.1, 1.0, 1.5])
def test_truncate_top_rejects_gamma_outside_unit_interval(gamma):
    with pytest.raises(ValueError, match="gamma"):
        truncate_top(torch.ones(4), gamma)


def test_truncate_top_rejects_bad_weights():
    with pytest.raises(ValueError, match="1-D"):
        truncate_top(torch.ones(2, 2), 0.1)
    with pytest.raises(ValueError, match=">= 0"):
        truncate_top(torch.tensor([1.0, -1.0]), 0.1)


# ---- the method in the loop -----------------------------------------------------------------------
def _cfg(**hp):
    return {"method": {"name": "ids", **hp}, "dataset": {"name": "gaussian", "imbalance": 10},
            "model": "mlp", "train": {"epochs": 4, "batch_size": 64, "device": "cpu"}, "seed": 0}


def test_first_epoch_is_uniform_then_follows_difficulty():
    trial = Trial(_cfg(c=1.0, gamma=0.01))
    n = len(trial.train_set)
    w0 = trial.method.sample_weights(0)
    assert torch.equal(w0, torch.full((n,), 1.0 / n, dtype=torch.float64))  # D_0 = 1, no truncation yet
    p0 = trial.method.p_prev.clone()
    metrics = trial.run_epoch()
    p1 = trial.ctx.predict(trial.train_set.x)
    du, dl = prediction_change(p0, p1, trial.train_set.y)
    expected = truncate_top(difficulty(du.double(), dl.double(), 1.0), 0.01)
    torch.testing.assert_close(trial.method.sample_weights(1), expected)
    assert int((expected == 0).sum()) == int(0.01 * n)
    masses = [metrics[f"ids_mass_{g}"] for g in ("many", "medium", "few") if f"ids_mass_{g}" in metrics]
    assert sum(masses) == pytest.approx(1.0)


def test_init_net_starts_from_the_untrained_predictions():
    trial = Trial(_cfg(init_pred="init_net"))
    torch.testing.assert_close(trial.method.p_prev, trial.ctx.predict(trial.train_set.x))
    assert not torch.allclose(Trial(_cfg()).method.p_prev, trial.method.p_prev)


def test_state_survives_a_checkpoint_round_trip():
    states, full = [], []
    train(_cfg(), report=lambda m, s: (full.append(m), states.append(copy.deepcopy(s))))
    saved = states[1]["method"]
    assert saved["updates"] == 2 and saved["p_prev"].shape == (len(Trial(_cfg()).train_set), 4)
    fresh = Trial(_cfg())
    fresh.load_state_dict(states[1])
    for key in ("p_prev", "sum_du", "sum_dl"):
        assert torch.equal(getattr(fresh.method, key), saved[key])
    resumed = [fresh.run_epoch() for _ in range(2)]
    assert [m["ids_max_weight_x_n"] for m in resumed] == [m["ids_max_weight_x_n"] for m in full[2:]]
    assert [m["test_acc"] for m in resumed] == [m["test_acc"] for m in full[2:]]


def test_noise_detection_diagnostic_counts_truly_noisy_instances():
    cfg = _cfg(gamma=0.0)
    cfg["dataset"].update(noise_type="symmetric", noise_rate=0.2)
    trial = Trial(cfg)
    metrics = trial.run_epoch()
    noisy = trial.train_set.y != trial.train_set.true_y
    k = int(0.01 * len(noisy))
    top = torch.topk(trial.method.difficulties(), k).indices
    assert metrics["ids_noise_top1pct"] == pytest.approx(float(noisy[top].double().mean()))
    assert metrics["ids_noise_rate"] == pytest.approx(float(noisy.double().mean()))
    assert "ids_noise_top1pct" not in Trial(_cfg()).run_epoch()


def test_grid_and_noise_gamma_grid():
    configs = expand_method("ids", space_for("ids").grid, "ids")
    assert len(configs) == 12 and {c["c"] for c in configs} == {0.1, 1.0, 10.0}
    assert max(c["gamma"] for c in configs) == 0.001
    assert noise_gamma_grid(0.1) == [0.0, 2.5e-4, 5e-4, 1e-3, 0.05, 0.1, 0.15000000000000002]
    assert noise_gamma_grid(0.0) == [0.0, 2.5e-4, 5e-4, 1e-3]


def test_short_sweep_over_the_paper_grid():
    for hp in expand_method("ids", space_for("ids").grid, "ids"):
        metrics = train({**_cfg(**hp), "train": {"epochs": 2, "batch_size": 128, "device": "cpu"}})
        assert math.isfinite(metrics["train_loss"]) and "ids_max_weight_x_n" in metrics


@pytest.mark.gpu
def test_math_on_gpu():
    p, q = torch.rand(8, 3).softmax(1), torch.rand(8, 3).softmax(1)
    y = torch.randint(0, 3, (8,))
    du, dl = prediction_change(p.cuda(), q.cuda(), y.cuda())
    torch.testing.assert_close(du.cpu(), prediction_change(p, q, y)[0])
    w = truncate_top(difficulty(du, dl, 1.0), 0.25)
    assert w.is_cuda and float(w.sum()) == pytest.approx(1.0)


def test_preset_sweeps_c_by_gamma_on_noisy_data():
    from raysweep.planning.plan import plan
    from raysweep.spec.loading import load_spec_file as load_spec
    from raysweep.spec.schema import validate_spec

    spec = validate_spec(load_spec("search_spaces/presets/ids_c_x_gamma.yaml"))
    trials = plan(spec)
    assert len(trials) == 3 * 6 * 2
    config = trials[-1].config
    assert config["dataset"]["noise_rate"] == 0.05 and config["method"]["gamma"] == 0.05
    # one epoch of the planned trial on a smaller draw of the same generator (20k samples take seconds)
    small = {**config, "dataset": {**config["dataset"], "num_samples": 2000},
             "train": {**config["train"], "epochs": 1, "device": "cpu"}}
    assert "ids_noise_top1pct" in Trial(small).run_epoch()
