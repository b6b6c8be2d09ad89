"""GDW: class-level step size eta_omega x clip x the weighting net's meta learning rate.

Grid (docs/METHODS.md M6: GDW's README uses eta_omega 100 for CIFAR-10 and 1000 for CIFAR-100 with clip
0.2 and Adam lr 1e-3; the grid spans a decade either way): eta_omega {10, 100, 1000} x clip
{0.1, 0.2, 0.5} x meta lr {1e-4, 1e-3}. The Optuna / random space samples eta_omega and the meta lr
log-uniformly and clip uniformly over the grid's ranges.
"""

from __future__ import annotations

from typing import Any

from search_spaces import SPACES, MethodSpace
from search_spaces.methods.mwnet import suggest_meta_lr

ETAS = [10.0, 100.0, 1000.0]
CLIPS = [0.1, 0.2, 0.5]
META_LRS = [1e-4, 1e-3]


def _suggest(trial: Any) -> dict[str, Any]:
    return {"eta_omega": trial.suggest_float("eta_omega", 1.0, 1e4, log=True),
            "clip": trial.suggest_float("clip", 0.05, 0.5),
            **suggest_meta_lr(trial)}


SPACES.add(MethodSpace(
    "gdw", "eta_omega {10, 100, 1000} x clip {0.1, 0.2, 0.5} x meta lr {1e-4, 1e-3}",
    grid=[{"eta_omega": ETAS, "clip": CLIPS, "meta_lr": META_LRS}],
    suggest=_suggest,
))
