"""Derivative Manipulation: lambda (emphasis mode) and beta (spread), beta conditional on lambda.

Paper grid (DM supplementary Figs. 6-9 and Table 9): lambda in {0, 0.5, 1, 2}, each with its own four
betas, plus the beta = 0 control (all examples weighted alike): 17 configurations. The continuous space
for Optuna / random search samples lambda in [0, 2] and beta in a range that follows lambda, interpolated
linearly between the grid's ranges (larger lambda needs larger beta for the same spread).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from search_spaces import SPACES, MethodSpace

BETA_GRID: dict[float, list[float]] = {
    0.0: [0.5, 1.0, 2.0, 4.0],
    0.5: [4.0, 8.0, 12.0, 16.0],
    1.0: [8.0, 12.0, 16.0, 20.0],
    2.0: [12.0, 16.0, 20.0, 24.0],
}
LAM_RANGE = (0.0, 2.0)


def beta_range(lam: float) -> tuple[float, float]:
    """The continuous space's beta interval for ``lam`` in [0, 2]: the grid ranges, linearly interpolated."""
    if not LAM_RANGE[0] <= lam <= LAM_RANGE[1]:
        raise ValueError(f"lambda must be in [{LAM_RANGE[0]}, {LAM_RANGE[1]}], got {lam}")
    knots = sorted(BETA_GRID)
    low = float(np.interp(lam, knots, [BETA_GRID[k][0] for k in knots]))
    high = float(np.interp(lam, knots, [BETA_GRID[k][-1] for k in knots]))
    return low, high


def suggest(trial: Any) -> dict[str, Any]:
    lam = trial.suggest_float("lam", *LAM_RANGE)
    return {"lam": lam, "beta": trial.suggest_float("beta", *beta_range(lam))}


SPACES.add(MethodSpace(
    "dm", "DM lambda x beta (beta per lambda) plus the beta = 0 control",
    grid=[{"lam": [lam], "beta": betas} for lam, betas in BETA_GRID.items()] + [{"lam": [0.0], "beta": [0.0]}],
    suggest=suggest,
))
