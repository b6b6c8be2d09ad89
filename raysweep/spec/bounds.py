"""Bounds on what a sweep may ask for, checked by arithmetic before anything is built or started.

``seeds: 1000000000``, a grid of 10^7 configurations or ``num_samples: 10000000`` once passed validation and
then took the machine down while the list of trials was being built. Here the number of configurations
and trials is *counted* (products of the swept value lists), never enumerated, and refused above
:data:`MAX_TRIALS` with a ConfigError naming the field and the bound, in microseconds.
Sizes in bytes (datasets, models) are :mod:`raysweep.footprint`'s business.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from trainables.params import ConfigError, as_list

MAX_TRIALS = 100_000  # planned trials of one phase (configurations x seeds); Ray's driver keeps each in memory


def grid_size(blocks: Iterable[Mapping[str, Any]]) -> int:
    """How many combinations a method's blocks of swept values give (an upper bound: inactive and repeated
    combinations are dropped later), without building one."""
    return sum(math.prod(len(as_list(v)) for v in block.values()) for block in blocks)


def check_count(count: int, field: str, what: str) -> int:
    """``count`` if at most MAX_TRIALS, else a ConfigError naming ``field``."""
    if count > MAX_TRIALS:
        raise ConfigError(field, f"asks for {count:,} {what}; at most {MAX_TRIALS:,} per phase (split the sweep, "
                                 "or sample it with search.mode: random)")
    return count
