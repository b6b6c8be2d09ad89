"""ImageNet-LT and Places-LT: an image root plus split files of ``relative/path label`` lines.

The list files are the standard ones (Liu et al. 2019, OLTR): ``ImageNet_LT_train.txt`` (115,846 images,
1000 classes, 1280 to 5 per class), ``ImageNet_LT_val.txt`` (20 per class), ``ImageNet_LT_test.txt``
(50 per class), and the ``Places_LT_*`` counterparts (365 classes). Paths are relative to ``root``; list
paths are relative to ``root`` unless absolute. The training list is long-tailed already: with
``imbalance`` 1 it is kept whole, many/medium/few come from its counts, meta (and val) are held out of
the validation list, test is the test list.

Every image is decoded once (threads), its short side resized to ``image_size`` and center-cropped to a
square, and kept as uint8 (N, 3, S, S); ``cache_dir`` stores the decoded arrays for the next process.
Training batches get a random-resized crop and flip on their device.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping

import numpy as np
import torch

from trainables.data import DATASETS, DatasetSource
from trainables.data.augment import ImageAugment
from trainables.data.cifar import local_root, require_files, root_param
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


def decode_image(path: str, size: int) -> np.ndarray:
    """RGB uint8 (3, size, size): short side resized to ``size`` (bilinear), then the center square."""
    from PIL import Image

    with Image.open(path) as image:
        image.draft("RGB", (size, size))  # JPEG: decode at the smallest scale still >= size (fast)
        image = image.convert("RGB")
        w, h = image.size
        scale = size / min(w, h)
        image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
        left, top = (image.width - size) // 2, (image.height - size) // 2
        image = image.crop((left, top, left + size, top + size))
        return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


def decode_all(root: str, paths: list[str], size: int, workers: int) -> np.ndarray:
    """Decode every listed image into one (N, 3, size, size) uint8 array; missing files are a root error."""
    full = [os.path.join(root, p) for p in paths]
    missing = [p for p, f in zip(paths, full, strict=True) if not os.path.isfile(f)]
    if missing:
        require_files(root, missing, "listed images", downloadable=False)
    out = np.empty((len(full), 3, size, size), dtype=np.uint8)

    def fill(i: int) -> None:
        out[i] = decode_image(full[i], size)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(fill, range(len(full))))
    return out


def _cached(cache_dir: str | None, list_path: str, size: int, build) -> np.ndarray:
    """``build()``'s array, stored as .npy in ``cache_dir`` keyed by the list file (path, size, mtime) and size."""
    if cache_dir is None:
        return build()
    cache_dir = os.path.expanduser(cache_dir)
    stat = os.stat(list_path)
    key = hashlib.sha1(f"{os.path.abspath(list_path)}|{stat.st_size}|{stat.st_mtime_ns}|{size}".encode()).hexdigest()
    path = os.path.join(cache_dir, f"{os.path.basename(list_path)}-{size}-{key[:12]}.npy")
    if os.path.isfile(path):
        return np.load(path)
    array = build()
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as handle:
        np.save(handle, array)
    os.replace(tmp, path)
    return array


def _require_lists(root: str | None, options: Mapping[str, Any], what: str) -> dict[str, str]:
    """Paths of the train/val/test lists, or the ``dataset.root`` error naming the missing ones."""
    require_files(root, [options[f"{s}_list"] for s in SPLITS], f"{what} split lists", downloadable=False)
    return {s: os.path.join(root, options[f"{s}_list"]) for s in SPLITS}


def _loader(what: str):
    def load(options: Mapping[str, Any]) -> SourceData:
        root = local_root(options)
        lists = _require_lists(root, options, what)
        size = options["image_size"]
        parsed = {s: read_list(lists[s]) for s in SPLITS}
        pools = {s: torch.from_numpy(_cached(options["cache_dir"], lists[s], size,
                                             lambda s=s: decode_all(root, parsed[s][0], size, options["workers"])))
                 for s in SPLITS}
        num_classes = int(max(parsed[s][1].max() for s in SPLITS)) + 1
        crop = "resized" if options["augment"] == "resized" else "none"
        augment = None if options["augment"] == "none" else ImageAugment(crop=crop)
        return SourceData(
            x_train=pools["train"], y_train=parsed["train"][1], num_classes=num_classes,
            x_test=pools["test"], y_test=parsed["test"][1], x_val=pools["val"], y_val=parsed["val"][1],
            keep_train=True, augment=augment, input_norm=IMAGENET_NORM,
        )

    return load


def _preflight(what: str):
    def check(cfg: Mapping[str, Any]) -> None:
        if cfg["imbalance"] != 1 or cfg["n_max"] is not None:
            raise ConfigError("dataset.imbalance", f"{what} is long-tailed already: leave imbalance at 1 and n_max "
                                                   "unset")
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
        "image_size": Param(224, (int,), low=16, high=1024, help="stored square side (memory: N x 3 x S x S bytes)"),
        "augment": Param("resized", (str,), choices=AUGMENTS, help="resized: random-resized crop + flip; flip; none"),
        "workers": Param(8, (int,), low=1, high=256, help="decoding threads"),
        "cache_dir": Param(None, (str,), nullable=True,
                           help="folder for decoded .npy arrays reused by later processes"),
    }


for _name, _prefix, _what in (("imagenet_lt", "ImageNet_LT", "ImageNet-LT"), ("places_lt", "Places_LT", "Places-LT")):
    DATASETS.add(DatasetSource(
        _name, f"{_what} from an image root + split lists (relative/path label); long-tailed as listed",
        _loader(_what), _params(_prefix), defaults={"meta_per_class": 10}, preflight=_preflight(_what)))
