"""Difficulty-Net: H around the rule (supp. Table 6), lambda and the meta learning rate.

The grid is two blocks: H in {H/2, H, 2H, 4H} around the rule H = 2^n, 2^(n-1) <= C < 2^n (as
``hidden_factor``, so the grid fits any number of classes), and lambda {0, 0.1, 0.3, 1} x meta lr
{1e-5 (CIFAR code), 1e-4, 1e-3 (supplementary)}; each block keeps the other knobs at their defaults.
Supp. Table 6's absolute widths (128 ... 2048 for C = 100) are set with ``hidden`` instead, as the
Difficulty-Net H preset does.
"""

from __future__ import annotations

from typing import Any

from search_spaces import SPACES, MethodSpace

HIDDEN_FACTORS = [0.5, 1.0, 2.0, 4.0]
LAMBDAS = [0.0, 0.1, 0.3, 1.0]
META_LRS = [1e-5, 1e-4, 1e-3]


def _suggest(trial: Any) -> dict[str, Any]:
    return {"hidden_factor": trial.suggest_categorical("hidden_factor", HIDDEN_FACTORS),
            "lam": trial.suggest_float("lam", 0.0, 1.0),
            "meta_lr": trial.suggest_float("meta_lr", 1e-5, 1e-2, log=True)}


SPACES.add(MethodSpace(
    "difficulty_net", "H factor {0.5, 1, 2, 4} of the rule; lambda {0..1} x meta lr {1e-5..1e-3}",
    grid=[{"hidden_factor": HIDDEN_FACTORS}, {"lam": LAMBDAS, "meta_lr": META_LRS}],
    suggest=_suggest,
))
