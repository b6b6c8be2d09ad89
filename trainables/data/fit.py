"""The fit check: what a sweep's trials need in memory, against what a node and a GPU share give, before
anything starts.

Per node, a store-backed source (ImageNet-LT, Places-LT) costs its memory-mapped stores once, whatever the
number of trials (the page cache shares them); every trial adds its private bytes: its in-memory splits
(tensor sources: CIFAR, MNIST, the embedded ones), its model state (weights, gradients, momentum) and, on
CPU, its activations. Per trial on a GPU: the splits resident there, the model state and the larger of the
training activations (``batch_size`` samples, every layer's output kept for the backward pass) and the
evaluation peak (``eval_batch_size`` samples through the widest layer, which for a ResNet at 224 px is
6 MB a sample: 6.6 GB at the default 1024). Estimates, not measurements: the model's numbers come from a
forward on PyTorch's meta device (:func:`trainables.pairs.model_footprint`), a store's from its lists.

:func:`check_fit` raises a ConfigError naming the knob to change: ``dataset.store_size`` (the stores do not
fit the node), ``train.eval_batch_size`` (the evaluation peak is what overflows; the message gives the
largest batch that fits), ``resources.trials_per_gpu`` (a trial's device bytes exceed its share of the
card) or ``resources.cpu`` (too many trials on a node for its memory).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from trainables.data import split_inputs
from trainables.params import ConfigError

SAFETY = 0.9  # of a node's memory or a GPU share that trials may plan to use (the rest: the runtime, Ray, CUDA)
GB = 1e9


LOADERS = ("auto", "store", "stream")


def node_memory() -> int:
    """Bytes of this machine's physical memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def choose_loader(requested: str, store_bytes: int, memory: int | None) -> tuple[str, str]:
    """(``store`` or ``stream``, why) for a store-backed source: ``auto`` takes the store when the decoded
    stores fit SAFETY of the node's ``memory`` (None: unknown, the store), else streams the training images."""
    if requested != "auto":
        return requested, "as set (dataset.loader)"
    if memory is None:
        return "store", "auto; the node's memory is unknown here, each node decides when it starts"
    budget = SAFETY * memory
    if store_bytes <= budget:
        return "store", f"auto: the stores ({store_bytes / GB:.1f} GB) fit {budget / GB:.1f} GB of the node's memory"
    return "stream", f"auto: the stores ({store_bytes / GB:.1f} GB) exceed {budget / GB:.1f} GB of the node's memory"


@dataclass(frozen=True)
class TrialFit:
    """One trial config's memory estimate, in bytes."""

    store: int  # per node, shared by every trial of this dataset config (0: no store)
    store_key: str  # identifies the store (trials of one dataset share it)
    data: int  # the trial's own splits (in-memory sources; moved whole to a GPU)
    state: int  # model weights, gradients and momentum
    train_activations: int
    eval_activations: int
    eval_per_sample: int
    eval_batch: int
    loader: str = ""  # a store-backed source's choice and why ("" for in-memory sources)

    @property
    def activations(self) -> int:
        return max(self.train_activations, self.eval_activations)

    def private(self, on_gpu: bool) -> int:
        """Host bytes of one trial process: its splits, plus model and activations when it trains on CPU."""
        return self.data + (0 if on_gpu else self.state + self.activations)

    def device(self) -> int:
        """Bytes one trial needs on its GPU."""
        return self.data + self.state + self.activations


def _sample_bytes(shape: tuple[int, ...], dtype: Any) -> int:
    import torch

    return math.prod(shape) * torch.empty((), dtype=dtype).element_size()


def trial_fit(config: Mapping[str, Any], memory: int | None = None) -> TrialFit | None:
    """The estimate for one resolved trial config on a node of ``memory`` bytes (None: unknown); None when
    its inputs are unknown before loading."""
    from trainables.data.sizes import split_sizes
    from trainables.pairs import input_spec, model_footprint

    dataset, train = config["dataset"], config["train"]
    spec = input_spec(dataset)
    if spec is None:
        return None
    shape, norm, dtype = spec
    source, own, _ = split_inputs(dataset)
    store, loader = 0, ""
    if source.store_bytes is not None:
        store = source.store_bytes({**own, "loader": "store"})
        if "loader" in own:
            chosen, why = choose_loader(own["loader"], store, memory)
            loader = f"{dataset['name']}: dataset.loader {chosen} ({why})"
            if chosen == "stream":
                store = source.store_bytes({**own, "loader": "stream"})
    data, sizes = 0, split_sizes(dataset)
    if not store and sizes is not None:
        splits = [sizes.train, sizes.meta, sizes.test] + ([sizes.val] if sizes.val != sizes.meta else [])
        data = sum(sum(s) for s in splits) * _sample_bytes(shape, dtype)
    model = model_footprint(config["model"], shape, norm, dtype, sizes.num_classes if sizes is not None else 2)
    return TrialFit(store, json.dumps({"name": dataset["name"], **own}, sort_keys=True, default=str), data,
                    model.state_bytes, train["batch_size"] * model.train_bytes_per_sample,
                    train["eval_batch_size"] * model.eval_bytes_per_sample, model.eval_bytes_per_sample,
                    train["eval_batch_size"], loader)


@dataclass(frozen=True)
class FitReport:
    """The sweep's estimate: the largest trial, the stores of a node, and the budgets checked (None: unknown)."""

    worst: TrialFit
    loaders: tuple[str, ...]
    stores: int
    trials_per_node: int
    node_memory: int | None
    gpu_share: int | None

    def lines(self) -> list[str]:
        w, on_gpu = self.worst, self.gpu_share is not None
        out = [f"memory per node: stores {self.stores / GB:.2f} GB once (memory-mapped, shared) + "
               f"{self.trials_per_node} trial(s) x {w.private(on_gpu) / GB:.2f} GB private (splits "
               f"{w.data / GB:.2f}, model state {w.state / GB:.2f}, activations {w.activations / GB:.2f} on CPU: "
               f"training {w.train_activations / GB:.2f}, evaluation {w.eval_activations / GB:.2f} at eval batch "
               f"{w.eval_batch})" + (f" of {self.node_memory / GB:.1f} GB" if self.node_memory else "")]
        out += [f"loader: {line}" for line in self.loaders]
        if on_gpu:
            out.append(f"memory per GPU trial: {w.device() / GB:.2f} GB of a {self.gpu_share / GB:.1f} GB share")
        return out


def check_fit(configs: Iterable[Mapping[str, Any]], *, trials_per_node: int, node_memory: int | None,
              gpu_share: int | None = None) -> FitReport | None:
    """Estimate every distinct trial config and check the largest against the node and the GPU share.

    ``node_memory``: bytes of a node's memory (None: unknown, not checked); ``gpu_share``: bytes of a GPU one
    trial may use (None: trials train on CPU). Raises ConfigError naming the knob; None when nothing is known.
    """
    fits: dict[str, TrialFit] = {}
    for cfg in configs:
        key = json.dumps([cfg["dataset"], cfg["model"], cfg["train"]], sort_keys=True, default=str)
        if key not in fits:
            fit = trial_fit(cfg, node_memory)
            if fit is not None:
                fits[key] = fit
    if not fits:
        return None
    on_gpu = gpu_share is not None
    stores = sum({f.store_key: f.store for f in fits.values()}.values())
    worst = max(fits.values(), key=lambda f: f.device() if on_gpu else f.private(on_gpu))
    loaders = tuple(dict.fromkeys(f.loader for f in fits.values() if f.loader))
    report = FitReport(worst, loaders, stores, trials_per_node, node_memory, gpu_share)
    if node_memory:
        budget = SAFETY * node_memory
        if stores > budget:
            raise ConfigError("dataset.loader" if any("loader store (as set" in f.loader for f in fits.values())
                              else "dataset.store_size",
                              f"the decoded stores need {stores / GB:.1f} GB, more than {budget / GB:.1f} GB of this "
                              "node's memory; stream the training images (loader: stream or auto) or lower "
                              "store_size")
        private = worst.private(on_gpu)
        if stores + trials_per_node * private > budget:
            per_trial = (budget - stores) / trials_per_node
            _refuse(worst, private, per_trial, on_gpu is False,
                    f"{trials_per_node} trial(s) x {private / GB:.2f} GB private + stores {stores / GB:.2f} GB "
                    f"exceed {budget / GB:.1f} GB of this node's memory", "resources.cpu",
                    "give each trial more CPUs, so fewer share a node")
    if on_gpu:
        need, budget = worst.device(), SAFETY * gpu_share
        if need > budget:
            _refuse(worst, need, budget, True, f"a trial needs {need / GB:.2f} GB on its GPU (splits "
                                               f"{worst.data / GB:.2f}, model {worst.state / GB:.2f}, activations "
                                               f"{worst.activations / GB:.2f}), more than its "
                                               f"{budget / GB:.2f} GB share", "resources.trials_per_gpu",
                    "put fewer trials on a GPU")
    return report


def _refuse(fit: TrialFit, need: float, budget: float, activations_count: bool, what: str, knob: str,
            advice: str) -> None:
    """Raise the ConfigError for ``what``: ``train.eval_batch_size`` when evaluation's peak is what overflows and
    a smaller evaluation batch fits, else ``knob``."""
    if activations_count and fit.eval_activations >= fit.train_activations:
        rest = need - fit.activations + fit.train_activations
        largest = int((budget - rest) // max(fit.eval_per_sample, 1))
        if largest >= 1:
            raise ConfigError("train.eval_batch_size", f"{what}; evaluation at batch {fit.eval_batch} alone needs "
                                                       f"{fit.eval_activations / GB:.2f} GB: set eval_batch_size "
                                                       f"to at most {min(largest, fit.eval_batch - 1)}")
    raise ConfigError(knob, f"{what}; {advice}")


__all__ = ["FitReport", "LOADERS", "TrialFit", "check_fit", "choose_loader", "node_memory", "trial_fit"]
