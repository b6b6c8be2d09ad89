"""The split-size preflight: the protocol run on a dataset's labels alone, before any trial starts.

``gaussian`` with ``samples_per_class: 60`` passed validation and then failed in every trial (its default
hold-outs, 50 test + 10 meta per class, leave nothing to train on). :func:`split_sizes` runs the very same
:func:`trainables.data.protocol.build_splits` on the source's labels with empty inputs (``(N, 0)`` tensors,
so indexing them costs nothing), which gives the exact per-class sizes of every split, or the protocol's
own error as a ConfigError naming the dataset option.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from trainables.data import load_source, split_inputs
from trainables.data.protocol import SourceData, Split, SplitError, build_splits
from trainables.params import ConfigError


@dataclass(frozen=True)
class SplitSizes:
    """Per-class example counts of each split a dataset config gives (clean labels for ``train``)."""

    num_classes: int
    train: tuple[int, ...]
    meta: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]
    groups: dict[str, tuple[int, ...]]  # many/medium/few -> its classes (by training count)
    noisy: bool  # some training label was changed by the noise


def labels_only(data: SourceData) -> SourceData:
    """``data`` with every input tensor replaced by an (N, 0) one: the protocol only needs the labels."""
    def empty(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else torch.empty((len(x), 0))

    return replace(data, x_train=empty(data.x_train), x_test=empty(data.x_test), x_val=empty(data.x_val))


def _counts(split: Split, num_classes: int, clean: bool = False) -> tuple[int, ...]:
    labels = (split.true_y if clean else split.y).numpy()
    return tuple(int(n) for n in np.bincount(labels, minlength=num_classes))


def source_labels(cfg: Mapping[str, Any]) -> SourceData | None:
    """The labels of a resolved dataset config's source: its ``labels`` hook, or its ``load`` when it reads
    no files; None for a file-backed source without the hook (loading it could mean decoding a hundred
    thousand images)."""
    source, own, _ = split_inputs(cfg)
    if source.labels is not None:
        return source.labels(own)
    return load_source(source, own) if source.preflight is None else None


def split_sizes(cfg: Mapping[str, Any], path: str = "dataset", data: SourceData | None = None) -> SplitSizes | None:
    """The split sizes of a resolved dataset config, or a ConfigError naming ``path``.<the option at fault>.

    ``data`` is the source's output if already loaded, else :func:`source_labels`; None when that is None.
    """
    data = source_labels(cfg) if data is None else data
    if data is None:
        return None
    try:
        splits = build_splits(labels_only(data), **split_inputs(cfg)[2])
    except SplitError as err:
        raise ConfigError(f"{path}.{err.knob}" if err.knob else path, str(err)) from None
    except ValueError as err:  # the protocol's other checks (e.g. a training total below the class count)
        raise ConfigError(path, str(err)) from None
    C = splits.num_classes
    return SplitSizes(
        num_classes=C, train=_counts(splits.train, C, clean=True), meta=_counts(splits.meta, C),
        val=_counts(splits.val, C), test=_counts(splits.test, C),
        groups={k: tuple(int(c) for c in v) for k, v in splits.groups.items()}, noisy=splits.is_noisy,
    )


def check_split_sizes(configs: Iterable[Mapping[str, Any]], path: str = "dataset") -> dict[str, SplitSizes | None]:
    """:func:`split_sizes` of each distinct resolved dataset config (JSON key -> sizes), loading each source
    once per distinct set of its own options (an imbalance axis reuses one load)."""
    loaded: dict[str, SourceData | None] = {}
    out: dict[str, SplitSizes | None] = {}
    for cfg in configs:
        key = json.dumps(dict(cfg), sort_keys=True, default=str)
        if key in out:
            continue
        _, own, _ = split_inputs(cfg)
        source_key = json.dumps({"name": cfg["name"], **own}, sort_keys=True, default=str)
        if source_key not in loaded:
            loaded[source_key] = source_labels(cfg)
        data = loaded[source_key]
        out[key] = None if data is None else split_sizes(cfg, path, data)
    return out
