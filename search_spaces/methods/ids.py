"""Instance-difficulty sampling: c in {0.1, 1, 10} x gamma in [0, 0.001] (Yu et al., appendix 7.8.2).

The paper tunes gamma within 0 <= gamma <= 0.001 (CIFAR-LT and iNaturalist use 0.001); with synthetic label
noise docs/METHODS.md suggests also trying gamma near the true noise rate: :func:`noise_gamma_grid` gives that
grid for a known rate (the IDS c x gamma preset uses it).
"""

from __future__ import annotations

from typing import Any

from search_spaces import SPACES, MethodSpace

C_GRID = [0.1, 1.0, 10.0]
GAMMA_GRID = [0.0, 2.5e-4, 5e-4, 1e-3]


def noise_gamma_grid(noise_rate: float) -> list[float]:
    """The paper's gamma grid plus half, the whole and 1.5 times a known noise rate (each < 1, sorted)."""
    if not 0.0 <= noise_rate < 1.0:
        raise ValueError(f"noise_rate must be in [0, 1), got {noise_rate}")
    extra = [f * noise_rate for f in (0.5, 1.0, 1.5) if 0 < f * noise_rate < 1]
    return sorted(set(GAMMA_GRID + extra))


def _suggest(trial: Any) -> dict[str, Any]:
    return {"c": trial.suggest_float("c", 0.05, 20.0, log=True),
            "gamma": trial.suggest_float("gamma", 0.0, 1e-3)}


SPACES.add(MethodSpace("ids", "IDS c {0.1, 1, 10} x gamma {0, 2.5e-4, 5e-4, 1e-3}",
                       grid=[{"c": C_GRID, "gamma": GAMMA_GRID}], suggest=_suggest))
