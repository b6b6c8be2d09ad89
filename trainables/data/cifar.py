"""CIFAR-10 / CIFAR-100 from a local root (the python-pickle layout torchvision downloads), long-tailed.

Also the local-root convention every real source shares (``root``, ``download``, the missing-files error).
Images stay uint8 (N, 3, 32, 32); the model normalises them with the dataset's mean/std, and training
batches are augmented on their device (:mod:`trainables.data.augment`).

Long-tail profiles (``lt_profile``), both n_c = floor(n_max * mu^(c/(C-1))), head class 0, named after
where the balanced meta/val hold-out comes from:

- ``holdout_from_train`` (default, docs/METHODS.md 0.1; the MW-Net, CDB, GDW and Difficulty-Net code): the
  meta/val set is held out of the training images first and n_max is what is left per class, e.g.
  CIFAR-10 with 10 per class: [4990, 2991, ..., 49] at rho = 100; CIFAR-100 with 25: n_max = 475;
- ``holdout_from_test`` (Cui et al.'s ``class-balanced-loss`` and ``kaidic/LDAM-DRW``, neither of which
  has a meta set): n_max is every training image of a class (5000 / 500), so the training set is the
  standard [5000, 2997, ..., 50] = 12406 (CIFAR-10) / 10847 (CIFAR-100) images at rho = 100; the meta/val
  set is held out of the test images and the test set is the rest.
"""

from __future__ import annotations

import fcntl
import os
import pickle
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from trainables.data import DATASETS, DatasetSource
from trainables.data.augment import ImageAugment
from trainables.data.protocol import SourceData
from trainables.params import ConfigError, Param

# ---- the local-root convention of real datasets ---------------------------------------------------------------


def root_param(what: str) -> Param:
    return Param(None, (str,), nullable=True, help=f"folder holding {what}; required (nothing is downloaded unless "
                                                   "download: true)")


DOWNLOAD = Param(False, (bool,), help="download into root when files are missing (needs internet); never by default")


def local_root(options: Mapping[str, Any], preflight: bool = False) -> str | None:
    """The ``root`` option with ``~`` and ``$VARS`` expanded. In a preflight (before a sweep) it must be
    absolute: Ray runs each trial in its own working folder, where a relative path means something else."""
    root = options["root"]
    if root is None:
        return None
    root = os.path.expandvars(os.path.expanduser(root))
    if preflight and not os.path.isabs(root):
        raise ConfigError("dataset.root", "must be an absolute path (or start with ~) for a sweep, got "
                                          f"{options['root']!r}")
    return root


def missing_files(root: str, expected: Sequence[str]) -> list[str]:
    """The entries of ``expected`` (paths relative to ``root``) that are not files."""
    return [f for f in expected if not os.path.isfile(os.path.join(root, f))]


def require_files(root: str | None, expected: Sequence[str], what: str, downloadable: bool = True) -> None:
    """Raise ``ConfigError('dataset.root', ...)`` naming what was expected where and how to get it."""
    how = ("set download: true on a machine with internet, or copy the data there" if downloadable
           else "copy the data there (it cannot be downloaded automatically)")
    if root is None:
        raise ConfigError("dataset.root", f"not set; {what} expects a folder holding {', '.join(expected[:8])}; "
                                          f"set root to it, then {how}")
    missing = missing_files(root, expected)
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise ConfigError("dataset.root", f"{what} not found: expected {shown} under {root!r}; {how}")


@contextmanager
def download_lock(root: str) -> Iterator[None]:
    """An exclusive file lock in ``root`` so concurrent trials on one machine never download twice at once."""
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, ".raysweep-download.lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---- CIFAR ----------------------------------------------------------------------------------------------------

LAYOUT = {  # folder, training files, test files, label key, classes
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", 100),
}
# (mean, std) per channel: LDAM-DRW's CIFAR-10 values; the CIFAR-100 training-set statistics (CDB, Difficulty-Net).
NORMS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
LT_PROFILES = ("holdout_from_train", "holdout_from_test")
AUGMENTS = ("standard", "autoaugment", "none")


def cifar_files(name: str) -> list[str]:
    folder, train, test, _, _ = LAYOUT[name]
    return [f"{folder}/{f}" for f in train + test]


def read_batches(root: str, folder: str, files: Sequence[str], label_key: str) -> tuple[torch.Tensor, np.ndarray]:
    """Concatenate CIFAR pickle batches: uint8 images (N, 3, 32, 32) and int64 labels."""
    xs, ys = [], []
    for f in files:
        path = os.path.join(root, folder, f)
        with open(path, "rb") as handle:
            entry = pickle.load(handle, encoding="latin1")
        data = np.asarray(entry["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(entry[label_key]) != len(data):
            raise ConfigError("dataset.root", f"{path} is not a CIFAR batch: data {data.shape}, "
                                              f"{len(entry[label_key])} labels")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(np.asarray(entry[label_key], dtype=np.int64))
    return torch.from_numpy(np.concatenate(xs)), np.concatenate(ys)


def _download(name: str, root: str) -> None:
    import torchvision

    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    with download_lock(root):
        if missing_files(root, cifar_files(name)):
            cls(root, train=True, download=True)


def _loader(name: str):
    def load(options: Mapping[str, Any]) -> SourceData:
        root = local_root(options)
        if root is not None and options["download"] and missing_files(root, cifar_files(name)):
            _download(name, root)
        require_files(root, cifar_files(name), name)
        folder, train, test, key, classes = LAYOUT[name]
        x_train, y_train = read_batches(root, folder, train, key)
        x_test, y_test = read_batches(root, folder, test, key)
        augment = None
        if options["augment"] != "none":
            auto = options["augment"] == "autoaugment"
            augment = ImageAugment(crop="pad", padding=4, pad_mode=options["pad_mode"], flip=True,
                                   policy="cifar10" if auto else None, cutout=options["cutout"] if auto else 0)
        return SourceData(x_train=x_train, y_train=y_train, num_classes=classes, x_test=x_test, y_test=y_test,
                          holdout_from_test=options["lt_profile"] == "holdout_from_test", augment=augment,
                          input_norm=NORMS[name])

    return load


def _preflight(name: str):
    def check(cfg: Mapping[str, Any]) -> None:
        root = local_root(cfg, preflight=True)
        if not (cfg["download"] and root is not None):
            require_files(root, cifar_files(name), name)

    return check


def _params(name: str) -> dict[str, Param]:
    return {
        "root": root_param(f"{LAYOUT[name][0]}/ (the python version)"),
        "download": DOWNLOAD,
        "lt_profile": Param("holdout_from_train", (str,), choices=LT_PROFILES,
                            help="holdout_from_train: meta/val held out of the training images, n_max = what is "
                                 "left; holdout_from_test: n_max = all images (Cui, LDAM), meta/val from test"),
        "augment": Param("standard", (str,), choices=AUGMENTS,
                         help="standard: pad 4 + random crop 32 + flip; autoaugment: + AutoAugment (CIFAR-10 policy) "
                              "+ Cutout"),
        "pad_mode": Param("zeros", (str,), choices=("zeros", "reflect"), help="crop padding (LDAM/CDB: zeros; "
                                                                              "MW-Net/GDW: reflect)"),
        "cutout": Param(16, (int,), low=1, high=32, help="Cutout square side with augment: autoaugment"),
    }


for _name, _label in (("cifar10", "CIFAR-10"), ("cifar100", "CIFAR-100")):
    DATASETS.add(DatasetSource(
        _name, f"{_label} from root (python pickles), long-tailed by `imbalance`; uint8 on the device",
        _loader(_name), _params(_name), defaults={"meta_per_class": 10}, preflight=_preflight(_name),
        inputs=lambda options, name=_name: ((3, 32, 32), NORMS[name])))
