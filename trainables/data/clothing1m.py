"""Clothing1M (Xiao et al. 2015): a million clothing images with real label noise, from its key lists.

The release's files under ``root``: ``noisy_label_kv.txt`` and ``clean_label_kv.txt`` (``images/<a>/<b>/<name>.jpg
label`` lines, 14 classes), ``noisy_train_key_list.txt`` (the 1,037,497 noisy training images, one path a
line), ``clean_val_key_list.txt`` (14,313) and ``clean_test_key_list.txt`` (10,526) with clean labels. The
training split is the noisy list with its noisy labels, as released: the noise is real, so ``noise_type``
must stay ``none`` (the clean labels of the training images are unknown; ``train_clean_acc`` is not
reported). Meta (and val) are held out of the clean validation list per class (DM and GDW meta-learn on
it); the test set is the protocol's balanced subset of the clean test list.

Images are decoded once per node into memory-mapped stores like ImageNet-LT's; at a million images the
training store is about 260 GB at store_size 256, which is what ``dataset.loader: stream`` is for.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from trainables.data import DATASETS, DatasetSource
from trainables.data.cifar import local_root, require_files, root_param
from trainables.data.image_lists import (
    IMAGENET_NORM,
    check_store_sizes,
    image_inputs,
    image_pools,
    labels_source,
    paper_augment,
    store_estimate,
    store_params,
)
from trainables.data.protocol import SourceData
from trainables.params import ConfigError

NUM_CLASSES = 14
LISTS = {"train": "noisy_train_key_list", "val": "clean_val_key_list", "test": "clean_test_key_list"}
LABELS = {"train": "noisy_label_kv", "val": "clean_label_kv", "test": "clean_label_kv"}


def read_keys(path: str) -> list[str]:
    with open(path) as handle:
        keys = [line.strip() for line in handle if line.strip()]
    if not keys:
        raise ConfigError("dataset.root", f"{path} lists no images")
    return keys


def read_labels(path: str) -> dict[str, int]:
    """``path label`` lines -> {path: label}; a label outside 0..13 is a root error."""
    out = {}
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            parts = line.strip().rsplit(maxsplit=1)
            if not parts:
                continue
            if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) >= NUM_CLASSES:
                raise ConfigError("dataset.root", f"{path}:{number}: expected 'path label' with a label in 0..13, "
                                                  f"got {line.strip()!r}")
            out[parts[0]] = int(parts[1])
    return out


def _parsed(root: str | None) -> dict[str, tuple[str, list[str], np.ndarray]]:
    """Each split's (key list file, image paths, labels)."""
    names = sorted({f"{n}.txt" for n in (*LISTS.values(), *LABELS.values())})
    require_files(root, names, "Clothing1M key and label lists", downloadable=False)
    kv = {name: read_labels(os.path.join(root, f"{name}.txt")) for name in set(LABELS.values())}
    out = {}
    for split, name in LISTS.items():
        path = os.path.join(root, f"{name}.txt")
        keys = read_keys(path)
        labels = kv[LABELS[split]]
        unlabelled = [k for k in keys if k not in labels]
        if unlabelled:
            raise ConfigError("dataset.root", f"{path}: {len(unlabelled)} images have no label in "
                                              f"{LABELS[split]}.txt, e.g. {unlabelled[0]}")
        out[split] = (path, keys, np.asarray([labels[k] for k in keys], dtype=np.int64))
    return out


def _load(options: Mapping[str, Any]) -> SourceData:
    check_store_sizes(options)
    root = local_root(options)
    parsed = _parsed(root)
    pools = image_pools("clothing1m", root, {s: (p[0], p[1]) for s, p in parsed.items()}, options)
    return SourceData(x_train=pools["train"], y_train=parsed["train"][2], num_classes=NUM_CLASSES,
                      x_val=pools["val"], y_val=parsed["val"][2], x_test=pools["test"], y_test=parsed["test"][2],
                      keep_train=True, augment=paper_augment(options), input_norm=IMAGENET_NORM)


def _labels(options: Mapping[str, Any]) -> SourceData:
    parsed = _parsed(local_root(options, preflight=True))
    return labels_source({s: p[2] for s, p in parsed.items()}, NUM_CLASSES, keep_train=True)


def _store_bytes(options: Mapping[str, Any]) -> int:
    parsed = _parsed(local_root(options, preflight=True))
    return store_estimate(len(parsed["train"][1]), len(parsed["val"][1]) + len(parsed["test"][1]), options)


def _preflight(cfg: Mapping[str, Any]) -> None:
    if cfg["noise_type"] != "none":
        raise ConfigError("dataset.noise_type", f"is {cfg['noise_type']!r}, but Clothing1M's training labels are "
                                                "really noisy already: leave noise_type at 'none'")
    if cfg["imbalance"] != 1 or cfg["n_max"] is not None:
        raise ConfigError("dataset.imbalance", "Clothing1M is used as released: leave imbalance at 1 and n_max unset")
    check_store_sizes(cfg)
    root = local_root(cfg, preflight=True)
    for path, keys, _ in _parsed(root).values():  # cheap: only the first image of each list
        require_files(root, [keys[0]], f"Clothing1M images of {os.path.basename(path)}", downloadable=False)


DATASETS.add(DatasetSource(
    "clothing1m", "Clothing1M from root + its key lists: real label noise (noise_type stays none), clean val/test",
    _load,
    params={"root": root_param("images/ and the key/label lists (noisy_label_kv.txt, clean_*_key_list.txt, ...)"),
            **store_params()},
    defaults={"meta_per_class": 10},
    preflight=_preflight, labels=_labels, store_bytes=_store_bytes, inputs=image_inputs,
))
