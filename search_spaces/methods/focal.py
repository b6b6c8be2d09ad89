"""Focal loss: gamma grid {0.5, 1, 2} (Lin et al.; LDAM-DRW and CDB repos default to 1)."""

from search_spaces import SPACES, MethodSpace

SPACES.add(MethodSpace(
    "focal", "focal gamma",
    grid=[{"gamma": [0.5, 1.0, 2.0]}],
    suggest=lambda trial: {"gamma": trial.suggest_float("gamma", 0.0, 5.0)},
))
