"""Embedded dataset sources that need no download: scikit-learn's digits, mnist1d, a Gaussian mixture."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from trainables.data import DATASETS, DatasetSource
from trainables.data.protocol import SourceData
from trainables.params import Param


def _load_digits(options: Mapping[str, Any]) -> SourceData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.as_tensor(bunch.data / 16.0, dtype=torch.float32)
    return SourceData(x_train=x, y_train=np.asarray(bunch.target), num_classes=10)


def _load_mnist1d(options: Mapping[str, Any]) -> SourceData:
    # make_dataset generates offline; mnist1d's get_dataset() would try a download with no timeout.
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = int(options["num_samples"])
    args.seed = int(options["seed"])
    data = make_dataset(args)
    return SourceData(
        x_train=torch.as_tensor(data["x"], dtype=torch.float32),
        y_train=np.asarray(data["y"], dtype=np.int64),
        x_test=torch.as_tensor(data["x_test"], dtype=torch.float32),
        y_test=np.asarray(data["y_test"], dtype=np.int64),
        num_classes=10,
    )


def _load_gaussian(options: Mapping[str, Any]) -> SourceData:
    """Class means on a sphere of radius ``separation`` in ``dim`` dimensions, unit-variance noise."""
    rng = np.random.default_rng(options["seed"])
    C, d, n = options["num_classes"], options["dim"], options["samples_per_class"]
    means = rng.normal(size=(C, d))
    means *= options["separation"] / np.linalg.norm(means, axis=1, keepdims=True)
    y = np.repeat(np.arange(C), n)
    x = means[y] + rng.normal(size=(C * n, d))
    perm = rng.permutation(len(y))
    return SourceData(x_train=torch.as_tensor(x[perm], dtype=torch.float32), y_train=y[perm], num_classes=C)


DATASETS.add(DatasetSource("digits", "scikit-learn's 8x8 digits (1797 x 64, 10 classes); embedded", _load_digits,
                           defaults={"test_per_class": 50, "meta_per_class": 10},
                           shape=lambda o: ((64,), 1797, 10), cache=("scikit-learn",)))
DATASETS.add(DatasetSource(
        "mnist1d", "mnist1d generated offline (40-step 1-D signals, 10 classes); embedded",
        _load_mnist1d,
        params={
            "num_samples": Param(5000, (int,), low=200, help="train + test samples generated (80/20)"),
            "seed": Param(42, (int,), low=0, help="the generator's seed (42 = the published dataset)"),
        },
        shape=lambda o: ((40,), o["num_samples"], 10),
        cache=("mnist1d", "numpy"),
    )
)
DATASETS.add(DatasetSource(
        "gaussian", "synthetic Gaussian mixture for fast tests; embedded",
        _load_gaussian,
        params={
            "num_classes": Param(4, (int,), low=2, high=1000),
            "dim": Param(16, (int,), low=1),
            "samples_per_class": Param(300, (int,), low=20),
            "separation": Param(2.5, (float,), low=0.0),
            "seed": Param(0, (int,), low=0),
        },
        defaults={"test_per_class": 50, "meta_per_class": 10},
        shape=lambda o: ((o["dim"],), o["num_classes"] * o["samples_per_class"], o["num_classes"]),
        cache=("numpy",),
    )
)
