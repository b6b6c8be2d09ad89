"""Evaluation: per-class accuracy on a split, the summary metrics derived from it, and their names."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn


@torch.no_grad()
def predict_probs(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Eval-mode softmax probabilities for ``x`` in batches; restores the model's train/eval mode."""
    was_training = model.training
    model.eval()
    out = torch.cat([torch.softmax(model(x[i : i + batch_size]).float(), dim=1)
                     for i in range(0, len(x), batch_size)]) if len(x) else torch.empty(0)
    model.train(was_training)
    return out


def class_accuracy(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Accuracy of each class (float64 [C]); NaN for a class with no examples."""
    correct = torch.bincount(y[pred == y], minlength=num_classes).double()
    total = torch.bincount(y, minlength=num_classes).double()
    return torch.where(total > 0, correct / total.clamp_min(1), torch.full_like(total, float("nan")))


def balanced_accuracy(class_acc: torch.Tensor) -> float:
    """Mean per-class accuracy over the classes present."""
    return float(torch.nanmean(class_acc))


def group_accuracy(class_acc: torch.Tensor, groups: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Mean accuracy of each many/medium/few group; groups with no class are left out."""
    return {name: float(torch.nanmean(class_acc[torch.as_tensor(idx, dtype=torch.long)]))
            for name, idx in groups.items() if len(idx)}


PER_CLASS_METRICS_MAX = 20  # above this many classes, per-class test accuracy is one list (an artifact)
EPOCH_METRICS = ("epoch", "train_loss", "lr", "epoch_seconds")  # Trial.run_epoch adds these to every epoch


def summary_metrics(val_class_acc: torch.Tensor, test_class_acc: torch.Tensor, groups: Mapping[str, np.ndarray],
                    train_clean_acc: float | None = None) -> dict[str, float | list[float]]:
    """The evaluation metrics of one epoch, from per-class accuracies (what ``Trial.evaluate`` reports).

    Balanced val and test accuracy, the many/medium/few test accuracy of each non-empty group, per-class
    test accuracy (``test_acc_class{c}``, or one list ``test_class_acc`` above PER_CLASS_METRICS_MAX
    classes), and the accuracy on the clean labels of a noisy training split when given.
    """
    out: dict[str, float | list[float]] = {"val_balanced_acc": balanced_accuracy(val_class_acc),
                                           "test_acc": balanced_accuracy(test_class_acc)}
    for group, acc in group_accuracy(test_class_acc, groups).items():
        out[f"test_{group}_acc"] = acc
    if len(test_class_acc) <= PER_CLASS_METRICS_MAX:
        out.update({f"test_acc_class{c}": float(a) for c, a in enumerate(test_class_acc)})
    else:
        out["test_class_acc"] = [float(a) for a in test_class_acc]
    if train_clean_acc is not None:
        out["train_clean_acc"] = float(train_clean_acc)
    return out


def reported_metrics(num_classes: int, groups: Mapping[str, Sequence[int]], noisy: bool) -> list[str]:
    """Names of the metrics every epoch of a trial reports, for checking e.g. ``table.metric`` before a sweep.

    Derived by calling :func:`summary_metrics` on per-class accuracies of the right shape, plus
    EPOCH_METRICS. ``groups`` and ``noisy`` come from the split sizes (``trainables.data.sizes``). Not
    included: a method's own diagnostics (``on_epoch_end``), ``non_finite_loss`` (only on divergence) and the
    GPU-share metrics of a capped trial.
    """
    probe = torch.full((num_classes,), float("nan"), dtype=torch.float64)
    groups = {name: np.asarray(idx, dtype=np.int64) for name, idx in groups.items()}
    metrics = summary_metrics(probe, probe, groups, 0.0 if noisy else None)
    return [name for name, value in metrics.items() if not isinstance(value, list)] + list(EPOCH_METRICS)
