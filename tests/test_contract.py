"""Contract tests parametrized over everything registered: every method on every dataset and model."""

import copy
import math

import pytest
import torch

from tests._images import (
    write_cifar10,
    write_cifar100,
    write_clothing1m,
    write_image_lists,
    write_inaturalist,
    write_mnist,
)
from trainables.data import DATASETS, dataset_params, resolve_dataset
from trainables.loop import Trial, train
from trainables.methods import METHODS
from trainables.models import MODELS, build_model, model_params, resolve_model
from trainables.pairs import check_model_on_data
from trainables.params import ConfigError

SMALL = {
    "gaussian": {"name": "gaussian", "imbalance": 10, "meta_per_class": 8},
    "digits": {"name": "digits", "imbalance": 10, "meta_per_class": 8},
    "mnist1d": {"name": "mnist1d", "imbalance": 10, "meta_per_class": 8, "num_samples": 1000},
}
EMBEDDED = sorted(SMALL)


def small_dataset(name: str) -> dict:
    """A tiny configuration of a registered dataset (real-data sources need their own fixtures)."""
    return SMALL[name]


def trial_config(method: str, dataset: str = "gaussian", **train):
    return {"method": {"name": method}, "dataset": small_dataset(dataset), "model": "mlp",
            "train": {"epochs": 1, "batch_size": 64, "device": "cpu", **train}, "seed": 0}


@pytest.mark.parametrize("dataset", EMBEDDED)
@pytest.mark.parametrize("method", METHODS.names())
def test_method_one_epoch_on_every_dataset(method, dataset):
    """One short epoch: finite loss, every trainable parameter gets a gradient, state round-trips."""
    trial = Trial(trial_config(method, dataset))
    before = {n: p.detach().clone() for n, p in trial.model.named_parameters()}
    metrics = trial.run_epoch()
    assert math.isfinite(metrics["train_loss"])
    assert 0.0 <= metrics["test_acc"] <= 1.0 and 0.0 <= metrics["val_balanced_acc"] <= 1.0
    changed = [n for n, p in trial.model.named_parameters() if not torch.equal(p, before[n])]
    assert changed == [n for n, _ in trial.model.named_parameters()], "every parameter must be trained"
    state = trial.method.state_dict()
    fresh = Trial(trial_config(method, dataset))
    fresh.method.load_state_dict(state)
    assert _flatten(fresh.method.state_dict()).keys() == _flatten(state).keys()
    for key, value in _flatten(state).items():
        other = _flatten(fresh.method.state_dict())[key]
        assert torch.equal(value, other) if torch.is_tensor(value) else value == other


def _flatten(state, prefix=""):
    out = {}
    for k, v in (state.items() if isinstance(state, dict) else enumerate(state)):
        if isinstance(v, (dict, list, tuple)) and not torch.is_tensor(v):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@pytest.mark.parametrize("method", METHODS.names())
def test_method_resume_continues_the_same_trajectory(method):
    """3 epochs + checkpoint + resume to 5 equals an uninterrupted 5-epoch run, for every method."""
    cfg = trial_config(method, epochs=5)
    states, full = [], []
    train(cfg, report=lambda m, s: (full.append(m), states.append(copy.deepcopy(s))))
    resumed = []
    train(cfg, report=lambda m, s: resumed.append(m), resume_state=states[2])
    keys = ["train_loss", "val_balanced_acc", "test_acc"]
    assert [[r[k] for k in keys] for r in resumed] == [[f[k] for k in keys] for f in full[3:]]
    assert [r["epoch"] for r in resumed] == [4.0, 5.0]


@pytest.mark.parametrize("method", METHODS.names())
def test_method_declares_valid_defaults(method):
    cls = METHODS.get(method)
    assert cls.description and cls.relative_cost > 0
    assert cls.resolve_params({}) == {k: p.default for k, p in cls.params.items()}


INPUT_SHAPES = {"resnet32": (3, 32, 32), "resnet10": (3, 32, 32), "resnet50": (3, 32, 32), "lenet5": (1, 28, 28)}


@pytest.mark.parametrize("model", MODELS.names())
def test_model_forward_backward(model):
    shape = INPUT_SHAPES.get(model, (40,))
    net = build_model({"name": model, **{k: p.default for k, p in model_params(model).items()}}, shape, 10)
    out = net(torch.randn(8, *shape))
    assert out.shape == (8, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("dataset", DATASETS.names())
def test_dataset_declares_protocol_options(dataset):
    params = dataset_params(dataset)
    assert {"imbalance", "meta_per_class", "noise_type", "noise_rate", "data_seed"} <= set(params)


def test_many_classes_report_per_class_accuracy_as_one_list():
    cfg = trial_config("ce")
    cfg["dataset"] = {"name": "gaussian", "num_classes": 25, "samples_per_class": 40, "test_per_class": 5,
                      "meta_per_class": 2}
    metrics = Trial(cfg).run_epoch()
    assert len(metrics["test_class_acc"]) == 25 and not any(k.startswith("test_acc_class") for k in metrics)
    few = Trial(trial_config("ce")).run_epoch()
    assert "test_class_acc" not in few and sum(k.startswith("test_acc_class") for k in few) == 4


# ---- every model on every image source -------------------------------------------------------------------------
def _image_sources() -> list[str]:
    """Registered sources whose inputs are images (C, H, W), from their ``inputs`` hook (no file read)."""
    out = []
    for name in DATASETS.names():
        source = DATASETS.get(name)
        if source.inputs is not None and len(source.inputs(resolve_dataset({"name": name}))[0]) == 3:
            out.append(name)
    return out


def _tiny_image_dataset(name: str, root) -> dict:
    """A tiny dataset config of image source ``name`` on files written in its real format."""
    if name in ("cifar10", "cifar100"):
        (write_cifar10 if name == "cifar10" else write_cifar100)(root, 4, 2)
        return {"name": name, "root": str(root), "meta_per_class": 1, "test_per_class": 1}
    if name == "mnist":
        write_mnist(root, [6] * 10, [2] * 10)
        return {"name": name, "root": str(root), "meta_per_class": 1, "test_per_class": 1}
    if name in ("imagenet_lt", "places_lt"):
        write_image_lists(root, {"train": [3, 2], "val": [1, 1], "test": [1, 1]}, size=(40, 52))
        return {"name": name, "root": str(root), "image_size": 32, "store_size": 36, "meta_per_class": 1,
                "cache_dir": str(root / "cache"), **{f"{s}_list": f"ImageNet_LT_{s}.txt" for s in ("train", "val",
                                                                                                   "test")}}
    store = {"image_size": 32, "store_size": 36, "cache_dir": str(root / "cache")}
    if name == "inaturalist":
        write_inaturalist(root, 2018, [3, 2], [3, 3], size=(40, 52))
        return {"name": name, "root": str(root), **store}
    if name == "clothing1m":
        write_clothing1m(root, [2] * 14, [1] * 14, [1] * 14, size=(40, 52))
        return {"name": name, "root": str(root), "meta_per_class": 1, **store}
    raise AssertionError(f"image source {name!r} has no tiny stand-in here: add one")


@pytest.mark.parametrize("source", _image_sources())
@pytest.mark.parametrize("model", MODELS.names())
def test_every_model_trains_on_every_image_source_or_preflight_refuses_the_pair(model, source, tmp_path):
    """Either the pair check refuses it (model.name) or one training step gives a finite loss."""
    dataset = resolve_dataset(_tiny_image_dataset(source, tmp_path))
    model_cfg = resolve_model(model)
    try:
        check_model_on_data(model_cfg, dataset)
    except ConfigError as err:
        assert err.path == "model.name" and "cannot train on" in err.message
        return
    trial = Trial({"method": {"name": "ce"}, "dataset": dataset, "model": model, "seed": 0,
                   "train": {"epochs": 1, "batch_size": 4, "device": "cpu", "eval_batch_size": 8}})
    _, batches = trial.begin_epoch()
    x, y, idx = trial.batch(batches[0])
    loss = trial.method.train_step(trial.model, trial.optimizer, x, y, idx)
    assert math.isfinite(float(loss))
