"""iNaturalist (annotation JSON) and Clothing1M (key lists) on small stand-ins written in the real formats:
the right counts in every split, their protocol rules, and their stores shared like ImageNet-LT's."""

from __future__ import annotations

import pytest
import torch

from tests._images import write_clothing1m, write_inaturalist
from trainables.data import DATASETS, load_splits, resolve_dataset
from trainables.data.image_store import StoreView
from trainables.data.sizes import split_sizes
from trainables.params import ConfigError

STORE = {"image_size": 16, "store_size": 20}


@pytest.mark.parametrize("year", [2018, 2019])
def test_inaturalist_keeps_the_long_tail_and_evaluates_on_the_val_set(tmp_path, year):
    root = write_inaturalist(tmp_path / "inat", year, train_counts=[9, 4, 2], val_counts=[3, 3, 3])
    cfg = resolve_dataset({"name": "inaturalist", "root": str(root), "year": year, "cache_dir": str(tmp_path / "c"),
                           **STORE})
    assert cfg["meta_per_class"] == 1
    s = load_splits(cfg)
    assert s.num_classes == 3 and s.class_counts.tolist() == [9, 4, 2]  # category ids 100.. become 0..2
    assert torch.bincount(s.meta.y).tolist() == [1, 1, 1] and torch.bincount(s.test.y).tolist() == [2, 2, 2]
    assert isinstance(s.train.x, StoreView) and s.test.x.store is s.meta.x.store  # both from the val set
    assert set(s.test.x.rows.tolist()).isdisjoint(s.meta.x.rows.tolist())
    sizes = split_sizes(cfg)  # the labels-only preflight gives the same sizes without a pixel
    assert sizes.train == (9, 4, 2) and sizes.test == (2, 2, 2)
    DATASETS.get("inaturalist").preflight(cfg)


def test_inaturalist_refuses_extra_imbalance_and_a_missing_file(tmp_path):
    root = write_inaturalist(tmp_path / "inat", 2018, [2, 1], [3, 3])
    source = DATASETS.get("inaturalist")
    with pytest.raises(ConfigError) as err:
        source.preflight(resolve_dataset({"name": "inaturalist", "root": str(root), "imbalance": 10}))
    assert err.value.path == "dataset.imbalance"
    with pytest.raises(ConfigError, match="val2019.json") as err:
        source.preflight(resolve_dataset({"name": "inaturalist", "root": str(root), "year": 2019}))
    assert err.value.path == "dataset.root"


def test_clothing1m_trains_on_the_noisy_list_and_holds_out_meta_from_the_clean_val_list(tmp_path):
    noisy = [5 + c for c in range(14)]
    root = write_clothing1m(tmp_path / "c1m", noisy=noisy, val=[3] * 14, test=[2] * 13 + [4])
    cfg = resolve_dataset({"name": "clothing1m", "root": str(root), "meta_per_class": 2, "val_per_class": 1,
                           "cache_dir": str(tmp_path / "c"), **STORE})
    s = load_splits(cfg)
    assert s.num_classes == 14 and s.class_counts.tolist() == noisy and len(s.train) == sum(noisy)
    assert torch.bincount(s.meta.y).tolist() == [2] * 14 and torch.bincount(s.val.y).tolist() == [1] * 14
    assert torch.bincount(s.test.y).tolist() == [2] * 14  # the protocol's balanced test set
    assert s.meta.x.store is s.val.x.store and s.test.x.store is not s.meta.x.store
    assert not s.is_noisy  # the real noise: the training images' clean labels are unknown
    assert split_sizes(cfg).train == tuple(noisy)
    DATASETS.get("clothing1m").preflight(cfg)


def test_clothing1m_refuses_synthetic_noise_on_its_real_noise(tmp_path):
    root = write_clothing1m(tmp_path / "c1m", noisy=[2] * 14, val=[2] * 14, test=[1] * 14)
    cfg = resolve_dataset({"name": "clothing1m", "root": str(root), "noise_type": "symmetric", "noise_rate": 0.2})
    with pytest.raises(ConfigError) as err:
        DATASETS.get("clothing1m").preflight(cfg)
    assert err.value.path == "dataset.noise_type" and "really noisy" in err.value.message


def test_clothing1m_names_an_image_without_a_label(tmp_path):
    root = write_clothing1m(tmp_path / "c1m", noisy=[2] * 14, val=[2] * 14, test=[1] * 14)
    with open(root / "clean_test_key_list.txt", "a") as handle:
        handle.write("images/0/clean/99.jpg\n")
    with pytest.raises(ConfigError, match="have no label in clean_label_kv.txt"):
        load_splits(resolve_dataset({"name": "clothing1m", "root": str(root), "meta_per_class": 1,
                                     "cache_dir": str(tmp_path / "c"), **STORE}))
