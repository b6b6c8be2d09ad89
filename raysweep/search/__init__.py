"""How configurations are chosen and trials stopped: search modes (``modes``: grid, ofat, random, optuna) and
schedulers (``schedulers``: fifo, asha, hyperband, median), each a registry that a plugin can add to.

Sits just above the leaves: modes read a spec through small protocols (``modes.Spec``), so the spec layer can
validate names against these registries without an import circle.
"""

from raysweep._exports import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "MODES": "modes", "SearchMode": "modes", "SCHEDULERS": "schedulers", "Scheduler": "schedulers",
    "resolve_scheduler": "schedulers",
})
