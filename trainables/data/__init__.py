"""Dataset sources (registered by name) and the protocol that turns any source into train/meta/val/test.

A source declares its own options (``params``) next to the protocol's common options; the dataset section
of a spec is validated against both. Built splits are cached per process, so a reused Ray actor does not
rebuild the data for every trial.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from trainables.data.protocol import NOISE_TYPES, SourceData, Split, Splits, build_splits
from trainables.params import ConfigError, Param, resolve, resolve_named
from trainables.registry import Registry, discover


@dataclass(frozen=True)
class DatasetSource:
    """A registered dataset: ``load(options)`` returns the raw pools; ``params`` are its own options.

    Registered with ``DATASETS.add(DatasetSource(name, description, load, ...))`` in a module of this package.
    """

    name: str
    description: str
    load: Callable[[Mapping[str, Any]], SourceData]
    params: Mapping[str, Param] = field(default_factory=dict)
    # Protocol defaults this source prefers (e.g. a smaller test hold-out for a small dataset).
    defaults: Mapping[str, Any] = field(default_factory=dict)
    # A cheap check of a resolved dataset section (name + every option) that a spec validator can run
    # before Ray starts: raises ConfigError (e.g. ``dataset.root`` missing files); None = nothing to check.
    preflight: Callable[[Mapping[str, Any]], None] | None = None
    # The source's labels without its inputs (``x_*`` may be (N, 0) tensors), so the split-size preflight
    # (trainables.data.sizes) runs the protocol cheaply. None: that preflight calls ``load`` for a source
    # that reads no files (no ``preflight``), and skips a source that does.
    labels: Callable[[Mapping[str, Any]], SourceData] | None = None
    # (one example's input shape, examples in the source, classes) of the source's own options, without
    # loading anything: the pre-run checks estimate its bytes and run one batch shape through the model on
    # the meta device (raysweep.footprint). None: those checks skip this source.
    shape: Callable[[Mapping[str, Any]], tuple[tuple[int, ...], int, int]] | None = None
    # One input's shape and the source's input_norm from its options alone (no file read), so the model/data
    # pair check (trainables.pairs) runs before anything starts. None: loaded when the source reads no files.
    inputs: Callable[[Mapping[str, Any]], tuple[tuple[int, ...], Any]] | None = None
    # Bytes of the per-node stores the source memory-maps (an estimate from its lists, before any decode), for
    # the fit check (trainables.data.fit). None: the source's splits are tensors private to each trial.
    store_bytes: Callable[[Mapping[str, Any]], int] | None = None
    # A generated or embedded source: the distributions whose versions shape its output. Its raw pools are
    # then built once per machine (trainables.data.source_cache); None: loaded by each process (files).
    cache: tuple[str, ...] | None = None


DATASETS: Registry[DatasetSource] = Registry("dataset")

PROTOCOL_PARAMS: dict[str, Param] = {
    "imbalance": Param(1.0, (float,), low=1.0, high=10000.0, help="rho = n_max / n_min; 1 = balanced (beyond 1e4 every "
                       "tail class of a real dataset is one example)"),
    "meta_per_class": Param(10, (int,), low=0, help="clean balanced meta/validation images per class"),
    "val_per_class": Param(None, (int,), low=0, nullable=True,
                           help="a separate balanced set for model selection; 0 = select on the meta set; null = "
                                "meta_per_class if a method learns from the meta set, else 0 (trainables.selection)"),
    "test_per_class": Param(None, (int,), low=1, nullable=True, help="balanced test size; null = as many as balance "
                                                                     "allows"),
    "n_max": Param(None, (int,), low=1, nullable=True, help="head-class count; null = the smallest class left"),
    "noise_type": Param("none", (str,), choices=NOISE_TYPES),
    "noise_rate": Param(0.0, (float,), low=0.0, high=1.0, high_open=True),
    "data_seed": Param(0, (int,), low=0, help="fixes the split; trial seeds do not change it"),
    "many_threshold": Param(100, (int,), low=0, help="many-shot: n_c > this"),
    "few_threshold": Param(20, (int,), low=0, help="few-shot: n_c < this"),
}


def dataset_params(name: str) -> dict[str, Param]:
    """All options of dataset ``name``: the protocol's (with the source's defaults) and its own."""
    source = DATASETS.get(name)
    params = {k: (Param(**{**p.__dict__, "default": source.defaults[k]}) if k in source.defaults else p)
              for k, p in PROTOCOL_PARAMS.items()}
    params.update(source.params)
    return params


def resolve_dataset(raw: Mapping[str, Any], path: str = "dataset") -> dict[str, Any]:
    """Validate a dataset section (``name`` plus options) and fill every default.

    A noise rate without a noise type is refused: the protocol would ignore it while MLflow records it.
    """
    cfg = resolve_named(raw, path, DATASETS.names(), "dataset",
                        lambda name, options, where: resolve(dataset_params(name), options, where))
    if cfg["noise_rate"] and cfg["noise_type"] == "none":
        raise ConfigError(f"{path}.noise_rate", f"is {cfg['noise_rate']:g} but {path}.noise_type is 'none', so no "
                                                f"label would change; set noise_type to one of "
                                                f"{', '.join(t for t in NOISE_TYPES if t != 'none')}")
    return cfg


def split_inputs(cfg: Mapping[str, Any]) -> tuple[DatasetSource, dict[str, Any], dict[str, Any]]:
    """(source, its own options, the protocol's options) of a resolved dataset config.

    A config resolved without a method (``val_per_class`` still null) has no method that learns from the
    meta set, so its auto value is 0: the meta set is also the validation set.
    """
    source = DATASETS.get(cfg["name"])
    protocol = {k: cfg[k] for k in PROTOCOL_PARAMS}
    if protocol["val_per_class"] is None:
        protocol["val_per_class"] = 0
    return source, {k: cfg[k] for k in source.params}, protocol


def load_source(source: DatasetSource, own: Mapping[str, Any]) -> SourceData:
    """The raw pools of ``source`` with its own options ``own``: from the machine's cache for a cached source."""
    if source.cache is None:
        return source.load(own)
    from trainables.data.source_cache import load_cached

    return load_cached(source.name, own, source.load, source.cache)


def load_splits(dataset_cfg: Mapping[str, Any]) -> Splits:
    """Build (or fetch from this process's cache) the splits a resolved dataset config describes."""
    return _cached_splits(json.dumps(dict(dataset_cfg), sort_keys=True))


@functools.lru_cache(maxsize=1)  # a reused actor keeps its last dataset, never a pile of them
def _cached_splits(key: str) -> Splits:
    source, own, protocol = split_inputs(json.loads(key))
    return build_splits(load_source(source, own), **protocol)


# every other module of this package registers its sources (after DATASETS exists)
discover(__name__, __path__, helpers=("augment", "fit", "image_store", "inputs", "node_cache", "protocol", "sizes",
                                     "source_cache"))

__all__ = ["DATASETS", "DatasetSource", "PROTOCOL_PARAMS", "SourceData", "Split", "Splits",
           "dataset_params", "load_source", "load_splits", "resolve_dataset", "split_inputs"]
