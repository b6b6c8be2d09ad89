"""Which balanced split selects the model, and whether that is fair to every method of a sweep.

The protocol holds out a balanced meta set (``dataset.meta_per_class``) and, optionally, a second balanced
validation set (``dataset.val_per_class``); ``val_balanced_acc``, the usual search metric, is measured on
the validation set, which with ``val_per_class: 0`` is the meta set itself. Methods that learn from the
meta set (``Method.needs_meta``: MW-Net, GDW and Difficulty-Net meta-train on it, CDB sets its class
weights from it) would then be selected on data they fit, while CE or DM would not. ``val_per_class:
null`` (the default) resolves that: a separate set as large as the meta set whenever a method learns from
the meta set, else 0 (the meta set, which then no method trains on, is the validation set).

All trials of one sweep must share one split, so a sweep resolves it once over all its methods
(:func:`resolve_val_per_class`); a single trial resolves it for its own method (``resolve_trial``).
Pure functions of the dataset section and the method names; nothing here trains or loads data.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from trainables.data import resolve_dataset
from trainables.methods import METHODS
from trainables.params import ConfigError


def meta_learners(method_names: Iterable[str]) -> list[str]:
    """The given methods that learn from the meta set (``Method.needs_meta``), in order, without repeats."""
    out: list[str] = []
    for name in method_names:
        if name not in METHODS:
            raise ConfigError("methods", f"unknown method {name!r}; allowed: {', '.join(METHODS.names())}")
        if METHODS.get(name).needs_meta and name not in out:
            out.append(name)
    return out


def _resolved(dataset: Mapping[str, Any]) -> dict[str, Any]:
    """The dataset section validated, with the source's defaults filled (raises ConfigError on bad input)."""
    return resolve_dataset(dict(dataset))


def resolve_val_per_class(dataset_raw: Mapping[str, Any], method_names: Iterable[str]) -> int:
    """``val_per_class`` for a sweep (or one trial): the given value, or for null (auto) meta_per_class
    when any of the methods learns from the meta set and 0 otherwise.

    ``dataset_raw`` is a dataset section (name plus options; defaults are filled from the source), and
    bad values raise :class:`~trainables.params.ConfigError` naming the field.
    """
    dataset = _resolved(dataset_raw)
    given = dataset["val_per_class"]
    if given is not None:
        return int(given)
    return int(dataset["meta_per_class"]) if meta_learners(method_names) else 0


def selection_split(dataset_cfg: Mapping[str, Any], method_names: Iterable[str]) -> tuple[str, str | None]:
    """(one line saying which split selects the model, a warning or None) for a sweep's dataset and methods.

    The warning is set when a method that learns from the meta set would be selected on it
    (``val_per_class: 0`` with MW-Net, GDW, Difficulty-Net or CDB), or when there is no balanced
    validation set at all (``val_balanced_acc`` cannot be measured).
    """
    names = list(method_names)
    dataset = _resolved(dataset_cfg)
    val = resolve_val_per_class(dataset, names)
    meta = int(dataset["meta_per_class"])
    learners = meta_learners(names)
    if val > 0:
        return (f"model selection on a separate balanced validation set ({val} per class) that no method "
                f"trains on", None)
    if meta == 0:
        return ("no balanced validation set (meta_per_class and val_per_class are 0)",
                "val_balanced_acc cannot be measured without a validation set; set dataset.meta_per_class "
                "or dataset.val_per_class > 0, or search on another metric")
    if not learners:
        return (f"model selection on the balanced meta set ({meta} per class), which no method of this sweep "
                f"trains on", None)
    uses = "; ".join(f"{name} {METHODS.get(name).meta_use} the meta set" for name in learners)
    return (f"model selection on the balanced meta set ({meta} per class), which {', '.join(learners)} "
            f"also learn{'s' if len(learners) == 1 else ''} from",
            f"model selection on the meta set favours the methods that learn from it ({uses}); leave "
            f"dataset.val_per_class null (or set it > 0) to select on a separate validation set")
