"""Fair model selection: which split each method learns from, val_per_class auto, and the selection statement."""

import pytest
import torch

from trainables.config import resolve_trial
from trainables.data import load_splits, resolve_dataset
from trainables.loop import Trial
from trainables.methods import METHODS
from trainables.params import ConfigError
from trainables.selection import meta_learners, resolve_val_per_class, selection_split

META_LEARNERS = {"mwnet", "gdw", "difficulty_net", "cdb_w_ce", "cdb_w_fl", "cdb_s"}
DATA = {"name": "gaussian", "imbalance": 5, "meta_per_class": 6}


def rows(t: torch.Tensor) -> set:
    return {tuple(r) for r in t.tolist()}


def test_every_method_declares_the_splits_it_learns_from():
    for name in METHODS.names():
        cls = METHODS.get(name)
        assert cls.learns_from() == (("train", "meta") if name in META_LEARNERS else ("train",)), name
        assert bool(cls.meta_use) == (name in META_LEARNERS), name
    assert meta_learners(["ce", "gdw", "cdb_s", "gdw", "dm"]) == ["gdw", "cdb_s"]
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        meta_learners(["nope"])


def test_val_per_class_is_null_by_default_and_resolves_per_sweep():
    assert resolve_dataset({"name": "gaussian"})["val_per_class"] is None
    assert resolve_val_per_class(DATA, ["ce", "dm", "ids"]) == 0
    assert resolve_val_per_class(DATA, ["ce", "mwnet"]) == 6  # any meta learner: the whole sweep gets a val set
    assert resolve_val_per_class(DATA, ["cdb_w_ce"]) == 6
    assert resolve_val_per_class({"name": "gaussian"}, ["gdw"]) == 10  # the protocol's default meta_per_class
    assert resolve_val_per_class({**DATA, "val_per_class": 0}, ["gdw"]) == 0  # explicit wins
    assert resolve_val_per_class({**DATA, "val_per_class": 3}, ["ce"]) == 3
    with pytest.raises(ConfigError, match="dataset.val_per_class"):
        resolve_val_per_class({**DATA, "val_per_class": -1}, ["ce"])


def test_a_single_trial_resolves_auto_for_its_own_method():
    cfg = {"dataset": DATA, "model": "mlp"}
    assert resolve_trial({**cfg, "method": "ce"})["dataset"]["val_per_class"] == 0
    assert resolve_trial({**cfg, "method": "difficulty_net"})["dataset"]["val_per_class"] == 6
    resolved = resolve_trial({**cfg, "method": "gdw"})
    assert resolve_trial(resolved) == resolved  # idempotent
    # a dataset resolved without any method: auto = 0, the meta set is the validation set
    s = load_splits(resolve_dataset(DATA))
    assert torch.equal(s.val.x, s.meta.x)


@pytest.mark.parametrize("method", sorted(META_LEARNERS))
def test_methods_that_learn_from_the_meta_set_read_only_ctx_meta(method):
    trial = Trial({"method": method, "dataset": DATA, "model": "mlp",
                   "train": {"epochs": 1, "batch_size": 64, "device": "cpu"}, "seed": 0})
    meta, val = rows(trial.splits.meta.x), rows(trial.splits.val.x)
    assert len(val) == 6 * 4 and not meta & val, "auto gives a separate validation set"
    seen: list[torch.Tensor] = []
    predict, meta_batch = trial.ctx.predict, trial.ctx.meta_batch
    trial.ctx.predict = lambda x: (seen.append(x), predict(x))[1]
    trial.ctx.meta_batch = lambda size: (lambda b: (seen.append(b[0]), b)[1])(meta_batch(size))
    trial.run_epoch()
    assert seen, "the method must read the meta set"
    assert all(rows(x) <= meta for x in seen), "only meta-set inputs"


def test_selection_statement_and_warning():
    line, warning = selection_split(DATA, ["ce", "gdw"])
    assert line == "model selection on a separate balanced validation set (6 per class) that no method trains on"
    assert warning is None
    line, warning = selection_split(DATA, ["ce", "dm"])
    assert line == "model selection on the balanced meta set (6 per class), which no method of this sweep trains on"
    assert warning is None
    line, warning = selection_split({**DATA, "val_per_class": 0}, ["ce", "difficulty_net", "cdb_s"])
    assert line.endswith("which difficulty_net, cdb_s also learn from")
    assert "difficulty_net meta-trains its Difficulty-Net on the meta set" in warning
    assert "cdb_s sets its class weights from its per-class accuracy on the meta set" in warning
    assert "val_per_class" in warning
    line, warning = selection_split({**DATA, "meta_per_class": 0}, ["ce"])
    assert "no balanced validation set" in line and "val_balanced_acc" in warning
