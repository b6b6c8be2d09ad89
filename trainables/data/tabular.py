"""UCI-style tabular sets that scikit-learn ships (iris, wine, breast cancer): no root, nothing downloaded.

As in the IDS appendix (Yu et al., section 7.4): a random 80/20 train/test split (``test_fraction``,
``split_seed``); features standardised with the training part's mean and std. With ``imbalance`` 1 the
training part keeps its natural class distribution; ``imbalance`` > 1 (or ``n_max``) subsamples it through
the shared protocol, and label noise applies as everywhere. Meta/val sets come out of the 80%; the test
set is the balanced part of the 20% (as many per class as the smallest class has).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from trainables.data import DATASETS, DatasetSource
from trainables.data.protocol import SourceData
from trainables.params import Param

LOADERS = {"iris": "load_iris", "wine": "load_wine", "breast_cancer": "load_breast_cancer"}


def random_split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices of a random split with round(n * test_fraction) test rows (both sorted)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _loader(name: str):
    def load(options: Mapping[str, Any]) -> SourceData:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, LOADERS[name])()
        x, y = np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64)
        train, test = random_split(len(y), options["test_fraction"], options["split_seed"])
        mean, std = x[train].mean(0), x[train].std(0)
        x = (x - mean) / np.where(std > 0, std, 1.0)
        as_tensor = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
        return SourceData(x_train=as_tensor(x[train]), y_train=y[train], num_classes=int(y.max()) + 1,
                          x_test=as_tensor(x[test]), y_test=y[test], class_names=[str(c) for c in bunch.target_names],
                          keep_train=True)

    return load


_PARAMS = {
    "test_fraction": Param(0.2, (float,), low=0.0, high=1.0, low_open=True, high_open=True, help="random test share"),
    "split_seed": Param(0, (int,), low=0, help="seed of the random train/test split"),
}

for _name, _what in (("iris", "Iris (150 x 4, 3 classes)"), ("wine", "Wine (178 x 13, 3 classes)"),
                     ("breast_cancer", "Breast Cancer Wisconsin (569 x 30, 2 classes)")):
    DATASETS.add(DatasetSource(_name, f"{_what}; scikit-learn's copy, random 80/20 split; embedded", _loader(_name),
                               dict(_PARAMS), defaults={"meta_per_class": 5},
                               cache=("scikit-learn",)))
