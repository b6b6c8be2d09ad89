"""MNIST from a local root (IDX files, torchvision's ``MNIST/raw`` layout or flat), with the papers' tasks.

``task``:

- ``digits``: the 10 digits through the shared protocol;
- ``odd_even`` (Yu et al., IDS appendix 7.2): the long-tail profile is applied per *digit* (digit 0 the head,
  digit 9 the tail, n_d = floor(n_max * mu^(d/9)), rho = n_max/n_min over digits) and the model learns the
  binary label even (0) / odd (1); the meta and test sets are balanced over the two binary classes;
- ``four_nine`` (CDB, Sinha et al. IJCV 4.1.1, after Ren et al. 2018): digits 4 (class 0, head) and 9
  (class 1, tail), ``train_size`` 5000 training images split by the head ratio rho/(rho+1)
  (rho = 99 -> 4950/50, rho = 199 -> 4975/25); the paper's 500 per class balanced validation set and 800 per
  class test set are ``meta_per_class: 500`` and ``test_per_class: 800``.

Images are uint8 (N, 1, 28, 28), normalised by the model with MNIST's mean/std; no augmentation.
"""

from __future__ import annotations

import gzip
import os
from typing import Any, Mapping

import numpy as np
import torch

from trainables.data import DATASETS, DatasetSource
from trainables.data.cifar import DOWNLOAD, download_lock, local_root, require_files, root_param
from trainables.data.protocol import SourceData
from trainables.params import Param

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
FOLDERS = ("MNIST/raw", "")  # torchvision's layout, then the files directly in root
TASKS = ("digits", "odd_even", "four_nine")
NORM = ((0.1307,), (0.3081,))
FOUR_NINE_SIZE = 5000


def find_file(root: str, name: str) -> str | None:
    """Path of IDX file ``name`` (or ``name.gz``) under ``root/MNIST/raw`` or ``root``; None if absent."""
    for folder in FOLDERS:
        for suffix in ("", ".gz"):
            path = os.path.join(root, folder, name + suffix)
            if os.path.isfile(path):
                return path
    return None


def read_idx(path: str) -> np.ndarray:
    """Parse an IDX file (big-endian header: 0, 0, dtype code 0x08 = uint8, ndim; then the dims)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims}, found {data.size} values")
    return data.reshape(dims)


def _require(root: str | None) -> dict[str, str]:
    """The path of every IDX file, or the ``dataset.root`` error naming the missing ones."""
    what = "MNIST (IDX files, optionally .gz, in root/MNIST/raw or directly in root)"
    if root is None:
        require_files(None, [f"MNIST/raw/{n}" for n in FILES], what)
    found = {name: find_file(root, name) for name in FILES}
    missing = [f"MNIST/raw/{name}" for name, path in found.items() if path is None]
    if missing:
        require_files(root, missing, what)
    return found  # type: ignore[return-value]


def task_labels(digits: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray]:
    """(kept indices, class labels) of a task: all digits, parity (even 0 / odd 1), or 4 -> 0 and 9 -> 1."""
    if task == "digits":
        return np.arange(len(digits)), digits.astype(np.int64)
    if task == "odd_even":
        return np.arange(len(digits)), (digits % 2).astype(np.int64)
    if task == "four_nine":
        keep = np.flatnonzero((digits == 4) | (digits == 9))
        return keep, (digits[keep] == 9).astype(np.int64)
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def _load(options: Mapping[str, Any]) -> SourceData:
    root, task = local_root(options), options["task"]
    if root is not None and options["download"] and any(find_file(root, n) is None for n in FILES):
        import torchvision

        with download_lock(root):
            torchvision.datasets.MNIST(root, train=True, download=True)
    files = _require(root)
    x_tr, d_tr = read_idx(files[FILES[0]]), read_idx(files[FILES[1]])
    x_te, d_te = read_idx(files[FILES[2]]), read_idx(files[FILES[3]])
    keep, y_tr = task_labels(d_tr, task)
    keep_te, y_te = task_labels(d_te, task)
    size = options["train_size"]
    if size is None:
        size = FOUR_NINE_SIZE if task == "four_nine" else None
    return SourceData(
        x_train=torch.from_numpy(x_tr[keep].copy()).unsqueeze(1), y_train=y_tr, num_classes=int(y_tr.max()) + 1,
        x_test=torch.from_numpy(x_te[keep_te].copy()).unsqueeze(1), y_test=y_te,
        class_names={"digits": [str(d) for d in range(10)], "odd_even": ["even", "odd"], "four_nine": ["4", "9"]}[task],
        lt_labels=d_tr[keep].astype(np.int64) if task == "odd_even" else None,
        train_total=size, input_norm=NORM,
    )


def _preflight(cfg: Mapping[str, Any]) -> None:
    root = local_root(cfg, preflight=True)
    if not (cfg["download"] and root is not None):
        _require(root)


DATASETS.add(DatasetSource(
        "mnist", "MNIST from root (IDX files); tasks: digits, odd_even (IDS), four_nine (CDB); uint8",
        _load,
        params={
            "root": root_param("MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"),
            "download": DOWNLOAD,
            "task": Param("digits", (str,), choices=TASKS, help="digits | odd_even (per-digit long tail) | four_nine"),
            "train_size": Param(None, (int,), low=2, nullable=True,
                                help="training-set size the long tail is fitted to; null = 5000 for four_nine, else "
                                     "n_max rules"),
        },
        defaults={"meta_per_class": 10},
        preflight=_preflight,
        inputs=lambda options: ((1, 28, 28), NORM),
    )
)
