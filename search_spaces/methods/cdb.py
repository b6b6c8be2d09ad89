"""CDB-W-CE, CDB-W-FL, CDB-S: tau grids of the CDB paper (Tables 2 and 3) and a conditional search space.

Paper grid: fixed tau in {0.5, 1, 1.5, 2, 5} and the dynamic variants linear, poly, log, sigmoid; ``p`` (the
polynomial degree, not stated in the paper; docs/METHODS.md suggests {2, 3}) exists only in the ``poly`` block.
CDB-W-FL adds the focal grid gamma in {0.5, 1, 2} (the paper does not state its gamma).
The random/Optuna space picks a tau mode first, then a fixed tau in [0, 5] or the variant (and p only
for ``poly``); the official code's two forms are part of that space.
"""

from __future__ import annotations

from typing import Any

from search_spaces import SPACES, MethodSpace
from trainables.methods.cdb import PAPER_VARIANTS, TAU_VARIANTS

PAPER_FIXED_TAU = [0.5, 1.0, 1.5, 2.0, 5.0]
POLY_DEGREES = [2, 3]
FOCAL_GAMMAS = [0.5, 1.0, 2.0]


def tau_grid() -> list[dict[str, list[Any]]]:
    """The tau rows of CDB Tables 2/3 as grid blocks (p only with poly)."""
    others = [v for v in PAPER_VARIANTS if v != "poly"]
    return [{"tau": PAPER_FIXED_TAU + others}, {"tau": ["poly"], "p": POLY_DEGREES}]


def suggest_tau(trial: Any) -> dict[str, Any]:
    """Define-by-run tau: mode first; a fixed value in [0, 5] or the variant; p only for poly."""
    mode = trial.suggest_categorical("tau_mode", ["fixed", *TAU_VARIANTS])
    if mode == "fixed":
        return {"tau": trial.suggest_float("tau_fixed", 0.0, 5.0)}
    out: dict[str, Any] = {"tau": mode}
    if mode == "poly":
        out["p"] = trial.suggest_int("p", 2, 4)
    return out


def _suggest_fl(trial: Any) -> dict[str, Any]:
    return {**suggest_tau(trial), "gamma": trial.suggest_float("gamma", 0.0, 5.0)}


SPACES.add(MethodSpace("cdb_w_ce", "CDB tau: fixed {0.5..5} or dynamic variants (p only for poly)",
                       grid=tau_grid(), suggest=suggest_tau))
SPACES.add(MethodSpace("cdb_s", "CDB tau: fixed {0.5..5} or dynamic variants (p only for poly)",
                       grid=tau_grid(), suggest=suggest_tau))
SPACES.add(MethodSpace("cdb_w_fl", "CDB tau x focal gamma {0.5, 1, 2}",
                       grid=[{**block, "gamma": FOCAL_GAMMAS} for block in tau_grid()], suggest=_suggest_fl))
