"""LDAM-DRW: the paper fixes max_m 0.5, s 30 and DRW at 160/200 epochs; the grid varies the margin and
where re-weighting starts (1.0 = plain LDAM, no DRW), the knobs its ablations move."""

from typing import Any

from search_spaces import SPACES, MethodSpace


def suggest(trial: Any) -> dict[str, Any]:
    return {"max_m": trial.suggest_float("max_m", 0.1, 1.0),
            "drw_fraction": trial.suggest_float("drw_fraction", 0.5, 1.0)}


SPACES.add(MethodSpace(
    "ldam_drw", "LDAM max margin and DRW start",
    grid=[{"max_m": [0.25, 0.5, 1.0], "drw_fraction": [0.6, 0.8, 1.0]}],
    suggest=suggest,
))
