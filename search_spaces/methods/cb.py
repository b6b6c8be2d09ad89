"""Class-balanced loss: effective-number beta grid {0.9, 0.99, 0.999, 0.9999} (Cui et al.) on softmax CE and
on Cui et al.'s sigmoid focal loss (gamma {0.5, 1, 2}, the focal grid); gamma only exists under a focal base.
The sampled space also offers the sigmoid cross-entropy base, the third loss of Cui et al.'s code."""

from typing import Any

from search_spaces import SPACES, MethodSpace

BETAS = [0.9, 0.99, 0.999, 0.9999]


def suggest(trial: Any) -> dict[str, Any]:
    # Sampled names are the knob names (a searcher may put them into the config as they are); beta's
    # decades are what matters, so it stays categorical over the grid.
    out: dict[str, Any] = {"beta": trial.suggest_categorical("beta", BETAS)}
    out["base"] = trial.suggest_categorical("base", ["ce", "sigmoid", "focal"])
    if out["base"] == "focal":
        out["gamma"] = trial.suggest_float("gamma", 0.0, 5.0)
    return out


SPACES.add(MethodSpace(
    "cb", "CB loss beta on softmax CE and on Cui's sigmoid focal",
    grid=[{"base": ["ce"], "beta": BETAS}, {"base": ["focal"], "beta": BETAS, "gamma": [0.5, 1.0, 2.0]}],
    suggest=suggest,
))
