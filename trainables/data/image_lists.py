"""ImageNet-LT and Places-LT: an image root plus split files of ``relative/path label`` lines.

The list files are the standard ones (Liu et al. 2019, OLTR): ``ImageNet_LT_train.txt`` (115,846 images,
1000 classes, 1280 to 5 per class), ``ImageNet_LT_val.txt`` (20 per class), ``ImageNet_LT_test.txt``
(50 per class), and the ``Places_LT_*`` counterparts (365 classes). Paths are relative to ``root``; list
paths are relative to ``root`` unless absolute. The training list is long-tailed already: with
``imbalance`` 1 it is kept whole, many/medium/few come from its counts, meta (and val) are held out of
the validation list, test is the test list.

Each list is decoded once per machine into a memory-mapped store (``trainables.data.image_store``, shared by
every trial on the node): the training images at short side ``store_size`` (256) with their aspect kept, the
validation and test images as the papers evaluate them, resize ``store_size`` then center crop
``image_size`` (224). Splits are index views of the stores; training batches get the papers' transform
(RandomResizedCrop ``image_size``, flip, optional ColorJitter) of the whole stored image.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
import torch

from trainables.data import DATASETS, DatasetSource
from trainables.data.augment import ImageAugment, PaperCrop
from trainables.data.cifar import local_root, require_files, root_param
from trainables.data.fit import LOADERS, choose_loader, node_memory
from trainables.data.image_store import ImageFiles, StoreView, node_store
from trainables.data.protocol import SourceData
from trainables.params import ConfigError, Param

IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
SPLITS = ("train", "val", "test")
AUGMENTS = ("resized", "flip", "none")


def read_list(path: str) -> tuple[list[str], np.ndarray]:
    """Parse ``relative/path label`` lines (the path may contain spaces; the label is the last field)."""
    paths, labels = [], []
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit() or int(parts[1]) < 0:
                raise ConfigError("dataset.root", f"{path}:{number}: expected 'relative/path label', got {line!r}")
            paths.append(parts[0])
            labels.append(int(parts[1]))
    if not paths:
        raise ConfigError("dataset.root", f"{path} lists no images")
    return paths, np.asarray(labels, dtype=np.int64)


def _require_lists(root: str | None, options: Mapping[str, Any], what: str) -> dict[str, str]:
    """Paths of the train/val/test lists, or the ``dataset.root`` error naming the missing ones."""
    require_files(root, [options[f"{s}_list"] for s in SPLITS], f"{what} split lists", downloadable=False)
    return {s: os.path.join(root, options[f"{s}_list"]) for s in SPLITS}


# ---- shared by every store-backed source (image lists, iNaturalist, Clothing1M) ------------------------------
def paper_augment(options: Mapping[str, Any]) -> PaperCrop | ImageAugment | None:
    """The training augmentation a store-backed source's ``augment`` and ``color_jitter`` options ask for."""
    if options["augment"] == "resized":
        return PaperCrop(options["image_size"], jitter=options["color_jitter"])
    return ImageAugment(crop="none") if options["augment"] == "flip" else None


def check_store_sizes(options: Mapping[str, Any]) -> None:
    if options["store_size"] < options["image_size"]:
        raise ConfigError("dataset.store_size", f"is {options['store_size']}, smaller than image_size "
                                                f"{options['image_size']}: the test view and the crops need at "
                                                "least image_size stored pixels on the short side")


def image_pools(name: str, root: str, listed: Mapping[str, tuple[str, list[str]]],
                options: Mapping[str, Any]) -> dict[str, StoreView]:
    """Each split's view: ``listed`` maps a split to (its list file, its image paths relative to root).
    ``train`` is stored whole (short side store_size), or read from its files per batch when the loader is
    ``stream`` (``auto``: when the stores would not fit this node's memory); every other split is stored as
    the test view (center image_size)."""
    counts = {s: len(p) for s, (_, p) in listed.items()}
    full = store_estimate(counts["train"], sum(counts.values()) - counts["train"], {**options, "loader": "store"})
    loader, _ = choose_loader(options["loader"], full, node_memory())
    pools = {}
    for split, (list_path, paths) in listed.items():
        files = [os.path.join(root, p) for p in paths]
        missing = [p for p, f in zip(paths, files, strict=True) if not os.path.isfile(f)]
        if missing:
            require_files(root, missing, "listed images", downloadable=False)
        if split == "train" and loader == "stream":
            workers = max(0, (options["workers"] or torch.get_num_threads()) - 1)  # the trial's CPU share
            pools[split] = StoreView.of(ImageFiles(files, options["store_size"], workers), options["image_size"])
            continue
        store = node_store(f"{name}-{split}", list_path, files, options["store_size"],
                           None if split == "train" else options["image_size"], threads=options["workers"],
                           root=options["cache_dir"])
        pools[split] = StoreView.of(store, options["image_size"])
    return pools


TYPICAL_ASPECT = 4 / 3  # long / short side of a typical photo (ImageNet's mean is about 1.3; 375 x 500 is 4/3)


def store_estimate(n_train: int, n_eval: int, options: Mapping[str, Any]) -> int:
    """Bytes of the stores: training images at short side store_size and a typical aspect (none when the
    loader is ``stream``), the others image_size square (the fit check's estimate before any decode)."""
    short, side = options["store_size"], options["image_size"]
    train = 0 if options["loader"] == "stream" else n_train * 3 * short * int(short * TYPICAL_ASPECT)
    return int(train + n_eval * 3 * side * side)


def labels_source(labels: Mapping[str, np.ndarray], num_classes: int, **protocol: Any) -> SourceData:
    """A SourceData of labels only (empty (N, 0) inputs) for the split-size preflight."""
    empty = {s: torch.empty((len(y), 0)) for s, y in labels.items()}
    return SourceData(x_train=empty["train"], y_train=labels["train"], num_classes=num_classes,
                      x_test=empty.get("test"), y_test=labels.get("test"), x_val=empty.get("val"),
                      y_val=labels.get("val"), **protocol)


def store_params() -> dict[str, Param]:
    """The options of a store-backed source (besides its root and its lists)."""
    return {
        "image_size": Param(224, (int,), low=16, high=1024, help="side of the training crops and of the test view"),
        "store_size": Param(256, (int,), low=16, high=2048,
                            help="stored short side (aspect kept); val/test: resize to it, center crop image_size"),
        "augment": Param("resized", (str,), choices=AUGMENTS,
                         help="resized: RandomResizedCrop(image_size) of the stored image + flip; flip; none"),
        "color_jitter": Param(0.0, (float,), low=0.0, high=1.0,
                              help="ColorJitter brightness = contrast = saturation after the crop (OLTR: 0.4)"),
        "loader": Param("auto", (str,), choices=LOADERS,
                        help="store: decode once per node into a memory-mapped store; stream: decode the training "
                             "JPEGs per batch; auto: the store when it fits the node's memory, else stream"),
        "workers": Param(None, (int,), low=1, high=256, nullable=True,
                         help="decoding threads (stream: loader processes + 1); null = the trial's CPU share"),
        "cache_dir": Param(None, (str,), nullable=True,
                           help="node-local folder of the decoded stores; null = $RAYSWEEP_DATA_CACHE or "
                                "~/.cache/raysweep/data"),
    }


def image_inputs(options: Mapping[str, Any]) -> tuple[tuple[int, ...], Any]:
    return (3, options["image_size"], options["image_size"]), IMAGENET_NORM


# ---- ImageNet-LT / Places-LT ------------------------------------------------------------------------------------
def _loader(name: str, what: str):
    def load(options: Mapping[str, Any]) -> SourceData:
        check_store_sizes(options)
        root = local_root(options)
        lists = _require_lists(root, options, what)
        parsed = {s: read_list(lists[s]) for s in SPLITS}
        pools = image_pools(name, root, {s: (lists[s], parsed[s][0]) for s in SPLITS}, options)
        num_classes = int(max(parsed[s][1].max() for s in SPLITS)) + 1
        return SourceData(
            x_train=pools["train"], y_train=parsed["train"][1], num_classes=num_classes,
            x_test=pools["test"], y_test=parsed["test"][1], x_val=pools["val"], y_val=parsed["val"][1],
            keep_train=True, augment=paper_augment(options), input_norm=IMAGENET_NORM,
        )

    return load


def _store_bytes(what: str):
    def estimate(options: Mapping[str, Any]) -> int:
        lists = _require_lists(local_root(options, preflight=True), options, what)
        n = {s: len(read_list(lists[s])[1]) for s in SPLITS}
        return store_estimate(n["train"], n["val"] + n["test"], options)

    return estimate


def _labels(what: str):
    """The lists' labels without a pixel (the split-size preflight)."""
    def labels(options: Mapping[str, Any]) -> SourceData:
        lists = _require_lists(local_root(options, preflight=True), options, what)
        parsed = {s: read_list(lists[s])[1] for s in SPLITS}
        return labels_source(parsed, int(max(v.max() for v in parsed.values())) + 1, keep_train=True)

    return labels


def _preflight(what: str):
    def check(cfg: Mapping[str, Any]) -> None:
        if cfg["imbalance"] != 1 or cfg["n_max"] is not None:
            raise ConfigError("dataset.imbalance", f"{what} is long-tailed already: leave imbalance at 1 and n_max "
                                                   "unset")
        check_store_sizes(cfg)
        root = local_root(cfg, preflight=True)
        lists = _require_lists(root, cfg, what)
        for split, path in lists.items():  # cheap: only the first image of each list
            first = read_list(path)[0][0]
            require_files(root, [first], f"{what} images of the {split} list", downloadable=False)

    return check


def _params(prefix: str) -> dict[str, Param]:
    return {
        "root": root_param("the images and the split lists"),
        **{f"{s}_list": Param(f"{prefix}_{s}.txt", (str,), help=f"{s} list of 'relative/path label' lines (relative "
                                                                "to root)")
           for s in SPLITS},
        **store_params(),
    }


for _name, _prefix, _what in (("imagenet_lt", "ImageNet_LT", "ImageNet-LT"), ("places_lt", "Places_LT", "Places-LT")):
    DATASETS.add(DatasetSource(
        _name, f"{_what} from an image root + split lists (relative/path label); long-tailed as listed",
        _loader(_name, _what), _params(_prefix), defaults={"meta_per_class": 10}, preflight=_preflight(_what),
        labels=_labels(_what), store_bytes=_store_bytes(_what),
        inputs=image_inputs))
