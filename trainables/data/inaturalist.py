"""iNaturalist 2018 / 2019 from their annotation JSON (the COCO-style files of the competition).

``train<year>.json`` and ``val<year>.json`` each hold ``images`` (``id``, ``file_name`` relative to root,
e.g. ``train_val2018/Plantae/7477/<hash>.jpg``), ``annotations`` (``image_id``, ``category_id``) and
``categories`` (``id``, ``name``). 2018: 437,513 training images in 8,142 classes (1,000 to 2 per class),
24,426 validation images (3 per class); 2019: 265,213 / 3,030 in 1,010 classes. The training set is
long-tailed already and kept whole; as in the papers (Cui et al., CDB, IDS) the official validation set is
the evaluation pool: meta (and val) are held out of it per class and the rest is the test set.

Images are decoded once per node into memory-mapped stores like ImageNet-LT's (``trainables.data.image_lists``).
"""

from __future__ import annotations

import json
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
from trainables.params import ConfigError, Param

YEARS = (2018, 2019)
SPLITS = ("train", "val")


def read_annotations(path: str) -> tuple[list[str], np.ndarray, list[int]]:
    """(file names, category ids, the file's category ids sorted) of one annotation JSON."""
    try:
        with open(path) as handle:
            data = json.load(handle)
        files = {image["id"]: image["file_name"] for image in data["images"]}
        pairs = [(files[a["image_id"]], int(a["category_id"])) for a in data["annotations"]]
        categories = sorted(int(c["id"]) for c in data["categories"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError("dataset.root", f"{path}: not an iNaturalist annotation file ({err})") from None
    if not pairs:
        raise ConfigError("dataset.root", f"{path} annotates no images")
    return [p for p, _ in pairs], np.asarray([c for _, c in pairs], dtype=np.int64), categories


def _files(root: str | None, options: Mapping[str, Any]) -> dict[str, str]:
    names = {s: options[f"{s}_json"] or f"{s}{options['year']}.json" for s in SPLITS}
    require_files(root, list(names.values()), f"iNaturalist {options['year']} annotation files", downloadable=False)
    return {s: os.path.join(root, n) for s, n in names.items()}


def _parsed(root: str | None, options: Mapping[str, Any]) -> tuple[dict[str, str], dict, int]:
    """The annotation files, each split's (file names, class indices) and the class count (the training
    file's categories, in id order)."""
    files = _files(root, options)
    raw = {s: read_annotations(files[s]) for s in SPLITS}
    index = {c: i for i, c in enumerate(raw["train"][2])}
    unknown = sorted(set(raw["val"][1].tolist()) - set(index))
    if unknown:
        raise ConfigError("dataset.root", f"{files['val']} uses categories the training file does not have: "
                                          f"{unknown[:5]}")
    parsed = {s: (raw[s][0], np.asarray([index[c] for c in raw[s][1]], dtype=np.int64)) for s in SPLITS}
    return files, parsed, len(index)


def _load(options: Mapping[str, Any]) -> SourceData:
    check_store_sizes(options)
    root = local_root(options)
    files, parsed, classes = _parsed(root, options)
    pools = image_pools(f"inaturalist{options['year']}", root, {s: (files[s], parsed[s][0]) for s in SPLITS}, options)
    return SourceData(x_train=pools["train"], y_train=parsed["train"][1], num_classes=classes,
                      x_test=pools["val"], y_test=parsed["val"][1], holdout_from_test=True, keep_train=True,
                      augment=paper_augment(options), input_norm=IMAGENET_NORM)


def _labels(options: Mapping[str, Any]) -> SourceData:
    _, parsed, classes = _parsed(local_root(options, preflight=True), options)
    return labels_source({"train": parsed["train"][1], "test": parsed["val"][1]}, classes, holdout_from_test=True,
                         keep_train=True)


def _store_bytes(options: Mapping[str, Any]) -> int:
    _, parsed, _ = _parsed(local_root(options, preflight=True), options)
    return store_estimate(len(parsed["train"][1]), len(parsed["val"][1]), options)


def _preflight(cfg: Mapping[str, Any]) -> None:
    if cfg["imbalance"] != 1 or cfg["n_max"] is not None:
        raise ConfigError("dataset.imbalance", "iNaturalist is long-tailed already: leave imbalance at 1 and n_max "
                                               "unset")
    check_store_sizes(cfg)
    root = local_root(cfg, preflight=True)
    files, parsed, _ = _parsed(root, cfg)
    for split in SPLITS:  # cheap: only the first image of each file
        require_files(root, [parsed[split][0][0]], f"iNaturalist images of {files[split]}", downloadable=False)


DATASETS.add(DatasetSource(
    "inaturalist", "iNaturalist 2018/2019 from root + the annotation JSON; long-tailed as released, the val set "
                   "is the meta/val/test pool",
    _load,
    params={
        "root": root_param("the images and train<year>.json / val<year>.json"),
        "year": Param(2018, (int,), choices=YEARS, help="2018 (8,142 classes) or 2019 (1,010)"),
        "train_json": Param(None, (str,), nullable=True, help="null = train<year>.json (relative to root)"),
        "val_json": Param(None, (str,), nullable=True, help="null = val<year>.json (relative to root)"),
        **store_params(),
    },
    defaults={"meta_per_class": 1},  # the val set has 3 images a class: 1 meta, the rest test
    preflight=_preflight, labels=_labels, store_bytes=_store_bytes, inputs=image_inputs,
))
