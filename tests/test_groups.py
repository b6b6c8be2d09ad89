"""Trial groups: k members in one process equal the k ungrouped trials (loop exactly, fused to float32
rounding), a diverging member leaves alone, the group state resumes every member on its own trajectory."""

import copy
import math

import pytest
import torch

from trainables.checkpoint import load_state, save_state
from trainables.groups.fused import ModelStack, StackedSGD, stacked_forward
from trainables.groups.group import COMPLETED, NON_FINITE, STOPPED, TrialGroup, fuses, train_group
from trainables.loop import train
from trainables.methods import METHODS
from trainables.methods.base import Method
from trainables.models import build_model, model_params
from trainables.params import ConfigError, Param

DATASETS = {
    "mlp": {"name": "gaussian", "imbalance": 10, "meta_per_class": 8},
    "cnn1d": {"name": "mnist1d", "imbalance": 10, "meta_per_class": 8, "num_samples": 1000},
}
# A knob per method that changes what its loss or sampler computes; a method not listed varies by seed only.
KNOBS = {
    "focal": {"gamma": 2.0}, "cb": {"beta": 0.99, "base": "focal"}, "ldam_drw": {"max_m": 0.3, "drw_fraction": 0.5},
    "cdb_w_ce": {"tau": 1.5}, "cdb_w_fl": {"tau": "linear", "gamma": 2.0}, "cdb_s": {"tau": 1.0}, "ids": {"c": 1.0},
    "dm": {"lam": 1.0, "beta": 6.0}, "mwnet": {"meta_lr": 0.01}, "gdw": {"clip": 0.1}, "difficulty_net": {"lam": 0.5},
}
TRAIN_KNOBS = {"lr": 0.05, "momentum": 0.6, "nesterov": True, "weight_decay": 1e-3}
LOSS_BASED = ["ce", "focal", "cb", "balanced_softmax", "ldam_drw", "cdb_w_ce", "cdb_w_fl", "cdb_s", "ids", "dm"]
FUSABLE = [name for name in METHODS.names() if fuses(METHODS.get(name))]


def config(method, seed=0, model="mlp", epochs=2, **train_options):
    return {"method": method, "dataset": DATASETS[model], "model": model, "seed": seed,
            "train": {"epochs": epochs, "batch_size": 64, "device": "cpu", **train_options}}


def three_members(method, model="mlp", epochs=2):
    """Seeds 0, 1, 2; member 1 moves the method's knob, member 2 the optimizer's (lr, momentum, ...)."""
    return [config({"name": method}, 0, model, epochs),
            config({"name": method, **KNOBS.get(method, {})}, 1, model, epochs),
            config({"name": method}, 2, model, epochs, **TRAIN_KNOBS)]


def timeless(metrics):
    return {k: v for k, v in metrics.items() if k != "epoch_seconds"}


def ungrouped(cfg):
    """A trial run alone: its per-epoch metrics and its final checkpoint state."""
    history, final = [], {}
    train(cfg, report=lambda m, s: (history.append(timeless(m)), final.update(copy.deepcopy(s))) and None)
    return history, final


def grouped(configs, engine, resume_state=None, stop=None, forward="auto"):
    """A group run: per-member metric histories, each round's ended members, and a copy of each round's state."""
    histories, ended, states = {i: [] for i in range(len(configs))}, [], []

    def report(epoch, state):
        for i, m in epoch.metrics.items():
            histories[i].append(timeless(m))
        ended.append(dict(epoch.ended))
        states.append(copy.deepcopy(state))
        return stop(len(states)) if stop else None

    last = train_group(configs, engine=engine, report=report, resume_state=resume_state, forward=forward)
    return histories, ended, states, last


def assert_states_close(actual, expected):
    """Model parameters and every BatchNorm buffer within float32 training tolerance."""
    assert actual["model"].keys() == expected["model"].keys()
    for name, value in expected["model"].items():
        torch.testing.assert_close(actual["model"][name], value, rtol=1e-5, atol=1e-5, msg=name)
    assert actual["epoch"] == expected["epoch"]


# ---- loop engine: every method, exactly the ungrouped trials --------------------------------------------
@pytest.mark.parametrize("method", METHODS.names())
def test_loop_group_equals_the_ungrouped_trials_exactly(method):
    configs = three_members(method)
    histories, ended, states, last = grouped(configs, "loop")
    for i, cfg in enumerate(configs):
        history, final = ungrouped(cfg)
        assert histories[i] == history, f"member {i}"
        assert timeless(last[i]) == history[-1]
        for name, value in final["model"].items():
            assert torch.equal(states[-1]["members"][i]["model"][name], value), name
    assert ended == [{}, {0: COMPLETED, 1: COMPLETED, 2: COMPLETED}]


# ---- fused engine: every method that fuses, parameters and BatchNorm buffers within 1e-5 ----------------
def test_the_loss_based_methods_fuse_and_a_fusable_method_keeps_the_default_step():
    assert set(LOSS_BASED) <= set(FUSABLE)
    for name in METHODS.names():
        cls = METHODS.get(name)
        assert fuses(cls) == cls.fusable, f"{name} declares fusable but overrides train_step"


# Fused is equal up to float32 rounding. Rounding can flip a ReLU whose input lies within ~1e-8 of zero, and
# a sampler fed by the model (IDS) then amplifies that into other batches; these configurations have none.
@pytest.mark.parametrize("model", ["mlp", "cnn1d"])
@pytest.mark.parametrize("method", FUSABLE)
def test_fused_group_matches_the_ungrouped_trials(method, model):
    check_fused_against_ungrouped(three_members(method, model), "auto")


@pytest.mark.parametrize("model", ["mlp", "cnn1d"])
@pytest.mark.parametrize("method", ["ldam_drw", "dm"])
def test_fused_group_through_vmap_matches_the_ungrouped_trials(method, model):
    check_fused_against_ungrouped(three_members(method, model), "vmap")


def check_fused_against_ungrouped(configs, forward):
    assert TrialGroup(configs, engine="fused").layout() == [("fused", [0, 1, 2])]
    histories, _, states, _ = grouped(configs, "fused", forward=forward)
    for i, cfg in enumerate(configs):
        history, final = ungrouped(cfg)
        assert_states_close(states[-1]["members"][i], final)
        assert [h["epoch"] for h in histories[i]] == [1.0, 2.0]
        for got, want in zip(histories[i], history, strict=True):
            assert got.keys() == want.keys()
            assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-5)
        assert final["optimizer"]["state"].keys() == states[-1]["members"][i]["optimizer"]["state"].keys()


def test_fused_group_without_momentum_and_with_a_schedule_matches_the_ungrouped_trials():
    configs = [config({"name": "ce"}, 0, "cnn1d", 3, momentum=0.0, schedule="multistep", milestones=[1]),
               config({"name": "ce"}, 1, "cnn1d", 3, warmup_epochs=1, weight_decay=0.0),
               config({"name": "ce"}, 2, "cnn1d", 3, lr=0.2, schedule="constant")]
    _, _, states, _ = grouped(configs, "fused")
    for i, cfg in enumerate(configs):
        _, final = ungrouped(cfg)
        assert_states_close(states[-1]["members"][i], final)
        assert final["optimizer"]["state"].keys() == states[-1]["members"][i]["optimizer"]["state"].keys()


def test_the_bi_level_methods_fall_back_to_the_loop_inside_a_fused_group():
    configs = [config({"name": "ce"}), config({"name": "mwnet"}), config({"name": "ce"}, 1),
               config({"name": "ce"}, 2, batch_size=32)]
    assert TrialGroup(configs, engine="fused").layout() == [("fused", [0, 2]), ("fused", [3]), ("loop", [1])]
    assert TrialGroup(configs, engine="loop").layout() == [("loop", [i]) for i in range(4)]


def test_members_share_one_copy_of_the_data():
    group = TrialGroup([config({"name": "ce"}), config({"name": "focal"}, 1)], engine="loop")
    first, second = (m.trial for m in group.members)
    assert first.train_set.x is second.train_set.x and first.test.x is second.test.x




def relative_error(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


@pytest.mark.parametrize("name", ["mlp", "cnn1d", "lenet5", "resnet32"])
@pytest.mark.parametrize("kind", ["fast", "vmap"])
def test_stacked_forward_and_step_equal_each_model_on_its_own(name, kind):
    """One training step of 3 members: the logits and BatchNorm buffers equal each model's own forward, the
    updated parameters its own SGD step. ResNet-32 runs on 8x8 images: at 32x32 float32 rounding flips ReLUs
    whose input lies within ~1e-7 of zero every step (the same model in channels_last memory format moves
    its gradients by ~1e-2 against contiguous), which says nothing about the fused translation."""
    shape = {"mlp": (40,), "cnn1d": (40,), "lenet5": (1, 28, 28), "resnet32": (3, 8, 8)}[name]
    cfg = {"name": name, **{k: p.default for k, p in model_params(name).items()}}
    torch.manual_seed(0)
    models = [build_model(cfg, shape, 10).train() for _ in range(3)]
    ours = [copy.deepcopy(m) for m in models]
    hyper = [dict(lr=0.1, momentum=0.9, weight_decay=5e-4), dict(lr=0.05, momentum=0.0, weight_decay=0.0),
             dict(lr=0.2, momentum=0.5, nesterov=True, weight_decay=1e-3)]
    optimizers = [torch.optim.SGD(m.parameters(), **h) for m, h in zip(models, hyper, strict=True)]
    x = torch.randn(3, 16, *shape, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 10, (3, 16), generator=torch.Generator().manual_seed(1))
    expected = []
    for m, model in enumerate(models):
        expected.append(model(x[m]))
        torch.nn.functional.cross_entropy(expected[-1], y[m]).backward()
        optimizers[m].step()
    stack = ModelStack(ours)
    own_optimizers = [torch.optim.SGD(m.parameters(), **h) for m, h in zip(ours, hyper, strict=True)]
    sgd = StackedSGD(stack.params, own_optimizers, ours)
    logits = stacked_forward(ours[0], kind)(stack.params, stack.buffers, x)
    assert relative_error(logits, torch.stack(expected)) < 1e-6
    sum(torch.nn.functional.cross_entropy(logits[m], y[m]) for m in range(3)).backward()
    sgd.step()
    stack.write_back(ours)
    for mine, theirs in zip(ours, models, strict=True):
        for n, b in theirs.named_buffers():
            assert relative_error(dict(mine.named_buffers())[n], b) < 1e-6 if b.is_floating_point() else torch.equal(
                dict(mine.named_buffers())[n], b), n
        for (n, a), b in zip(mine.named_parameters(), theirs.parameters(), strict=True):
            assert relative_error(a, b) < 1e-4, n


def test_stacked_sgd_is_torch_sgd_per_member():
    torch.manual_seed(0)
    weights = [torch.nn.Parameter(torch.randn(5, 3)) for _ in range(4)]
    hyper = [dict(lr=0.1, momentum=0.9, weight_decay=5e-4), dict(lr=0.3, momentum=0.0, weight_decay=0.0),
             dict(lr=0.01, momentum=0.5, nesterov=True, weight_decay=1e-2), dict(lr=1.0, momentum=0.99)]
    models = [torch.nn.Linear(3, 5, bias=False) for _ in weights]
    for model, w in zip(models, weights, strict=True):
        model.weight.data.copy_(w)
    optimizers = [torch.optim.SGD(m.parameters(), **h) for m, h in zip(models, hyper, strict=True)]
    stack = ModelStack([copy.deepcopy(m) for m in models])
    sgd = StackedSGD(stack.params, [torch.optim.SGD(m.parameters(), **h) for m, h in zip(models, hyper, strict=True)],
                     models)
    for step in range(5):
        grads = torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(step))
        for m, opt in enumerate(optimizers):
            models[m].weight.grad = grads[m].clone()
            opt.step()
        stack.params["weight"].grad = grads.clone()
        sgd.step()
    for m, model in enumerate(models):
        torch.testing.assert_close(stack.params["weight"][m].detach(), model.weight.detach(), rtol=1e-6, atol=1e-7)


# ---- faults, stopping, resume ---------------------------------------------------------------------------
class NanAt(Method):
    """CE whose loss turns NaN from epoch ``at`` (1-based)."""

    name = "nan_at"
    description = "CE that diverges at epoch `at`"
    params = {"at": Param(2, (int,), low=1)}

    def on_epoch_start(self, epoch):
        self.epoch = epoch

    def loss(self, logits, targets, indices):
        loss = super().loss(logits, targets, indices)
        return loss * float("nan") if self.epoch + 1 >= self.hparams["at"] else loss


@pytest.fixture
def nan_method(monkeypatch):
    monkeypatch.setitem(METHODS._entries, NanAt.name, NanAt)
    monkeypatch.setitem(METHODS._descriptions, NanAt.name, NanAt.description)


def same_metrics(a, b):
    return a.keys() == b.keys() and all(x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y))
                                        for x, y in ((a[k], b[k]) for k in a))


@pytest.mark.parametrize("engine", ["loop", "fused"])
def test_a_diverging_member_leaves_and_the_others_go_on(engine, nan_method):
    configs = [config({"name": "ce"}, 0, "cnn1d", 3), config({"name": "nan_at", "at": 2}, 1, "cnn1d", 3),
               config({"name": "focal"}, 2, "cnn1d", 3)]
    if engine == "fused":
        assert TrialGroup(configs, engine="fused").layout() == [("fused", [0, 1, 2])]
    histories, ended, states, last = grouped(configs, engine)
    assert ended == [{}, {1: NON_FINITE}, {0: COMPLETED, 2: COMPLETED}]
    assert [h["epoch"] for h in histories[1]] == [1.0, 2.0] and histories[1][-1]["non_finite_loss"] == 1.0
    assert histories[1][-1]["train_loss"] == math.inf and last[1]["non_finite_loss"] == 1.0
    assert states[-1]["ended"] == [COMPLETED, NON_FINITE, COMPLETED] and states[-1]["members"][1]["epoch"] == 2
    for i, cfg in enumerate(configs):
        history, final = ungrouped(cfg)
        if engine == "loop":
            assert all(same_metrics(a, b) for a, b in zip(histories[i], history, strict=True)), i
        elif i != 1:
            assert_states_close(states[-1]["members"][i], final)


def test_a_member_the_reporter_stops_keeps_its_state_and_the_others_go_on():
    configs = [config({"name": "ce"}, s, "mlp", 3) for s in range(3)]
    histories, ended, states, _ = grouped(configs, "loop", stop=lambda rounds: [1] if rounds == 1 else None)
    assert [len(histories[i]) for i in range(3)] == [3, 1, 3]
    assert ended[1] == {} and states[1]["ended"] == [None, STOPPED, None] and states[-1]["members"][1]["epoch"] == 1
    assert histories[0] == ungrouped(configs[0])[0]


@pytest.mark.parametrize("engine", ["loop", "fused"])
def test_resume_continues_every_member_on_its_own_trajectory(engine, nan_method, tmp_path):
    configs = [config({"name": "cdb_w_ce"}, 0, "cnn1d", 4), config({"name": "nan_at", "at": 2}, 1, "cnn1d", 4),
               config({"name": "ids", **KNOBS["ids"]}, 2, "cnn1d", 4, **TRAIN_KNOBS)]
    full, _, states, _ = grouped(configs, engine)
    save_state(states[2], tmp_path)  # after round 3; member 1 left at round 2
    resumed, ended, _, _ = grouped(configs, engine, resume_state=load_state(tmp_path))
    assert ended == [{0: COMPLETED, 2: COMPLETED}]
    assert resumed[1] == [] and resumed[0] == full[0][3:] and resumed[2] == full[2][3:]


@pytest.mark.parametrize("engine", ["loop", "fused"])
def test_resume_with_members_at_different_epochs(engine):
    """A state whose members stand at epochs 1, 3 and 2 (e.g. pieced from per-member checkpoints)."""
    configs = three_members("cdb_s", "cnn1d", epochs=4)
    _, _, states, _ = grouped(configs, "loop")
    mixed = {"members": [states[0]["members"][0], states[2]["members"][1], states[1]["members"][2]],
             "ended": [None, None, None]}
    resumed, ended, _, _ = grouped(configs, engine, resume_state=mixed)
    assert [[h["epoch"] for h in resumed[i]] for i in range(3)] == [[2.0, 3.0, 4.0], [4.0], [3.0, 4.0]]
    assert ended == [{1: COMPLETED}, {2: COMPLETED}, {0: COMPLETED}]
    for i, cfg in enumerate(configs):
        history, _ = ungrouped(cfg)
        if engine == "loop":
            assert resumed[i] == history[-len(resumed[i]):]
        else:
            assert [h["train_loss"] for h in resumed[i]] == pytest.approx(
                [h["train_loss"] for h in history[-len(resumed[i]):]], rel=1e-5)


def test_bad_group_input_is_a_clear_error():
    with pytest.raises(ConfigError, match="engine: must be one of auto, loop, fused"):
        TrialGroup([config({"name": "ce"})], engine="vectorised")
    with pytest.raises(ConfigError, match="at least one member"):
        TrialGroup([], engine="loop")
    state = TrialGroup([config({"name": "ce"})], engine="loop").state_dict()
    with pytest.raises(ValueError, match="holds 1 members, the group has 2"):
        TrialGroup([config({"name": "ce"}), config({"name": "ce"}, 1)], resume_state=state)
    with pytest.raises(ValueError, match="member 0 was saved for a different trial config"):
        TrialGroup([config({"name": "ce"}, 5)], resume_state=state)
