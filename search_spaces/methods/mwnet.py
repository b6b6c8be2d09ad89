"""MW-Net: the weighting net's meta learning rate, the one knob its papers set per setting.

Paper grid: meta lr 1e-5 (the long-tailed value of MW-Net's class-imbalance code) and 1e-3 (label noise:
MW-Net.py and GDW's code), with the other knobs at their defaults (Adam, plain mean, detached loss). The
class-imbalance code itself is more than its lr: ``{meta_optimizer: sgd, meta_weight_decay: 5e-4, norm:
sum, detach_loss: false}`` (docs/methods/meta_weighting.md). The Optuna / random space samples the lr
log-uniformly over 1e-6 .. 1e-2 and also picks the weight normalisation (batch sum or plain mean, both in
MW-Net's official code).
"""

from __future__ import annotations

from typing import Any

from search_spaces import SPACES, MethodSpace

META_LRS = [1e-5, 1e-3]


def suggest_meta_lr(trial: Any) -> dict[str, Any]:
    """The weighting net's lr, log-uniform (shared with GDW's space)."""
    return {"meta_lr": trial.suggest_float("meta_lr", 1e-6, 1e-2, log=True)}


def _suggest(trial: Any) -> dict[str, Any]:
    return {**suggest_meta_lr(trial), "norm": trial.suggest_categorical("norm", ["mean", "sum"])}


SPACES.add(MethodSpace(
    "mwnet", "meta lr {1e-5 (long-tailed), 1e-3 (noise)}",
    grid=[{"meta_lr": META_LRS}],
    suggest=_suggest,
))
