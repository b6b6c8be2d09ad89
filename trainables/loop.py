"""The one training loop. A plain function: runs standalone, knows nothing of Ray.

``train(config)`` builds the data, model and method a trial config names, trains for ``train.epochs``
and returns the last epoch's metrics. Every epoch it calls ``report(metrics, state)``; ``state`` is the
full checkpoint (model, optimizer, scheduler, method, RNG states, epoch); it holds live tensors, so save
or copy it inside ``report``. Passing a saved state back as ``resume_state`` continues the same trajectory.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import nn

from trainables.config import resolve_trial
from trainables.data import Split, Splits, load_splits
from trainables.data.augment import PaperCrop
from trainables.data.image_store import StoreView, gather_batch
from trainables.methods import METHODS, EpochEvaluation, Method, MethodContext
from trainables.metrics import balanced_accuracy, class_accuracy, group_accuracy, predict_probs
from trainables.models import build_model

Reporter = Callable[[dict[str, float], dict[str, Any]], None]
PER_CLASS_METRICS_MAX = 20  # above this many classes, per-class accuracy is not sent as separate metrics


def lr_factor(epoch: int, cfg: Mapping[str, Any]) -> float:
    """Multiplier of the base lr during 0-based ``epoch``: linear warm-up, then the schedule."""
    warm = cfg["warmup_epochs"]
    if epoch < warm:
        return (epoch + 1) / warm
    if cfg["schedule"] == "cosine":
        span = max(1, cfg["epochs"] - warm)
        return 0.5 * (1.0 + math.cos(math.pi * (epoch - warm) / span))
    if cfg["schedule"] == "multistep":
        return cfg["lr_decay"] ** sum(epoch >= m for m in cfg["milestones"])
    return 1.0


def pick_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def epoch_batches(n: int, batch_size: int, weights: torch.Tensor | None,
                  generator: torch.Generator) -> list[torch.Tensor]:
    """Index batches for one epoch: a shuffle, or n weighted draws with replacement.

    A trailing batch of a single example is dropped (BatchNorm cannot train on it).
    """
    if weights is None:
        order = torch.randperm(n, generator=generator)
    else:
        order = torch.multinomial(weights.detach().double().cpu(), n, replacement=True, generator=generator)
    batches = list(torch.split(order, batch_size))
    if len(batches) > 1 and len(batches[-1]) < 2:
        batches.pop()
    return batches


@dataclass(frozen=True)
class DeviceSplits:
    """The splits a trial trains and evaluates on, moved to its device (members of a trial group share one)."""

    train: Split
    meta: Split
    val: Split
    test: Split


RESIDENT_SHARE = 0.25  # store-backed splits stay on a GPU whole while they fit this share of its free memory


def splits_on(splits: Splits, device: torch.device, budget: int | None = None) -> DeviceSplits:
    """The splits on ``device``: tensors move whole; a store-backed split (a StoreView) is gathered onto the
    device whole when it fits ``budget`` bytes (default: RESIDENT_SHARE of a GPU's free memory, 0 on CPU,
    where the memory-mapped store already is memory and a gathered copy would be private), else read per
    batch. The training split stays a view when its augmentation crops the whole stored images."""
    if budget is None:
        budget = int(RESIDENT_SHARE * torch.cuda.mem_get_info(device)[0]) if device.type == "cuda" else 0
    left = budget

    def place(split: Split, croppable: bool) -> Split:
        nonlocal left
        moved = split.to(device)
        if isinstance(moved.x, StoreView) and not croppable and moved.x.nbytes <= left:
            left -= moved.x.nbytes
            return Split(moved.x[:], moved.y, moved.true_y)
        return moved

    meta = place(splits.meta, False)
    val = meta if splits.val is splits.meta else place(splits.val, False)
    return DeviceSplits(place(splits.train, isinstance(splits.augment, PaperCrop)), meta, val,
                        place(splits.test, False))


class Trial:
    """Everything one trial holds: splits, model, optimizer, scheduler, method and RNG.

    Kept as an object so tests, benchmarks and trial groups (:mod:`trainables.groups.group`) can step it;
    :func:`train` is the way to run one. ``data``: the dataset already on the device (a group passes the
    one copy its members share); by default the trial moves its own.
    """

    def __init__(self, config: Mapping[str, Any], *, data: DeviceSplits | None = None) -> None:
        self.config = resolve_trial(config)
        cfg, tcfg = self.config, self.config["train"]
        self.device = pick_device(tcfg["device"])
        torch.manual_seed(cfg["seed"])
        self.generator = torch.Generator().manual_seed(cfg["seed"])
        self.splits: Splits = load_splits(cfg["dataset"])
        data = data if data is not None else splits_on(self.splits, self.device)
        self.train_set = data.train
        method_cls = METHODS.get(cfg["method"]["name"])
        hparams = {k: v for k, v in cfg["method"].items() if k != "name"}
        # input_norm: the dataset's per-channel (mean, std) that image models apply to its uint8 inputs.
        model_cfg = {**cfg["model"], **method_cls.model_options(hparams), "input_norm": self.splits.input_norm}
        self.model: nn.Module = build_model(model_cfg, self.splits.input_shape, self.splits.num_classes).to(self.device)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=tcfg["lr"], momentum=tcfg["momentum"],
            weight_decay=tcfg["weight_decay"], nesterov=tcfg["nesterov"] and tcfg["momentum"] > 0,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda e: lr_factor(e, tcfg))
        counts = torch.bincount(self.splits.train.y, minlength=self.splits.num_classes).float().to(self.device)
        self.ctx = MethodContext(
            num_classes=self.splits.num_classes, class_counts=counts, train=self.train_set,
            meta=data.meta, device=self.device, epochs=tcfg["epochs"],
            batch_size=tcfg["batch_size"], generator=self.generator,
            predict=lambda x: predict_probs(self.model, x, tcfg["eval_batch_size"]),
            groups=self.splits.groups,
        )
        self.method: Method = method_cls(hparams, self.ctx)
        self.method.setup(self.model, self.optimizer)
        self.epoch = 0  # epochs completed
        self.val = data.val
        self.test = data.test

    # ---- checkpoint state ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "method": self.method.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
            "config": self.config,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.method.load_state_dict(state["method"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    # ---- one epoch ------------------------------------------------------------------------------
    def run_epoch(self) -> dict[str, float]:
        """Train one epoch, evaluate, and return the epoch's metrics (``epoch`` counts from 1).

        A NaN or infinite mean training loss adds ``non_finite_loss = 1.0`` to the metrics (the method's
        ``on_epoch_end`` is skipped); :func:`train` stops after reporting such an epoch.
        """
        started = time.perf_counter()
        lr, batches = self.begin_epoch()
        total, count = torch.zeros((), device=self.device), 0
        for idx in batches:
            x, y, idx = self.batch(idx)
            loss = self.method.train_step(self.model, self.optimizer, x, y, idx)
            total += loss.float() * len(idx)
            count += len(idx)
        return self.end_epoch(float(total) / max(count, 1), lr, started)

    # The three parts of an epoch, public so a trial group can run the batches of several trials fused.
    def begin_epoch(self) -> tuple[float, list[torch.Tensor]]:
        """The method's epoch-start hooks; returns the epoch's lr and its index batches (model in train mode)."""
        e = self.epoch
        self.method.on_epoch_start(e)
        weights = self.method.sample_weights(e)
        lr = self.optimizer.param_groups[0]["lr"]
        self.model.train()
        batches = epoch_batches(len(self.train_set), self.config["train"]["batch_size"], weights, self.generator)
        if isinstance(self.train_set.x, StoreView):
            self.train_set.x.prefetch(batches)  # a stream reader starts reading the epoch ahead
        return lr, batches

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(inputs, labels, indices) of one index batch on the device, augmented with the trial's generator."""
        idx = idx.to(self.device)
        x = gather_batch(self.train_set.x, idx, self.splits.augment, self.generator)
        return x, self.train_set.y[idx], idx

    def end_epoch(self, train_loss: float, lr: float, started: float) -> dict[str, float]:
        """After the batches: step the schedule, evaluate, run the method's epoch-end hook; the metrics."""
        self.scheduler.step()
        self.epoch += 1
        metrics = self.evaluate()
        if not math.isfinite(train_loss):
            # Retrying cannot help (the same seed diverges again): the trial stops here. The model is still
            # evaluated so the search metric exists; train_loss reads +inf (the worst value for a min search).
            metrics.update(epoch=float(self.epoch), train_loss=math.inf, lr=lr, non_finite_loss=1.0,
                           epoch_seconds=time.perf_counter() - started)
            return metrics
        metrics.update(epoch=float(self.epoch), train_loss=train_loss, lr=lr)
        evaluation = EpochEvaluation(self._val_class_acc, self._test_class_acc, dict(metrics))
        metrics.update(self.method.on_epoch_end(self.epoch - 1, evaluation))
        metrics["epoch_seconds"] = time.perf_counter() - started
        return metrics

    def evaluate(self) -> dict[str, Any]:
        """Balanced val/test accuracy, per-class and many/medium/few test accuracy, clean train accuracy.

        Numbers only, except above PER_CLASS_METRICS_MAX classes: then per-class accuracy is one list,
        ``test_class_acc``, rather than one metric per class.
        """
        bs, C = self.config["train"]["eval_batch_size"], self.splits.num_classes
        self._val_class_acc = class_accuracy(predict_probs(self.model, self.val.x, bs).argmax(1), self.val.y, C)
        self._test_class_acc = class_accuracy(predict_probs(self.model, self.test.x, bs).argmax(1), self.test.y, C)
        out = {"val_balanced_acc": balanced_accuracy(self._val_class_acc),
               "test_acc": balanced_accuracy(self._test_class_acc)}
        for group, acc in group_accuracy(self._test_class_acc, self.splits.groups).items():
            out[f"test_{group}_acc"] = acc
        if C <= PER_CLASS_METRICS_MAX:
            out.update({f"test_acc_class{c}": float(a) for c, a in enumerate(self._test_class_acc)})
        else:  # one list, not C metric keys; the tracker stores it as a CSV artifact of the trial's run
            out["test_class_acc"] = [float(a) for a in self._test_class_acc]
        if self.splits.is_noisy:
            pred = predict_probs(self.model, self.train_set.x, bs).argmax(1)
            out["train_clean_acc"] = float((pred == self.train_set.true_y).double().mean())
        return out


def train(config: Mapping[str, Any], *, report: Reporter | None = None,
          resume_state: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Run one trial to ``train.epochs`` (continuing from ``resume_state`` if given); return the last metrics.

    Stops early, after reporting it, at the first epoch whose loss is not finite (``non_finite_loss`` set).
    """
    trial = Trial(config)
    if resume_state is not None:
        trial.load_state_dict(resume_state)
    metrics: dict[str, float] = {}
    while trial.epoch < trial.config["train"]["epochs"]:
        metrics = trial.run_epoch()
        if report is not None:
            report(metrics, trial.state_dict())
        if metrics.get("non_finite_loss"):
            break
    return metrics
