"""Real dataset sources on tiny files in each real format: protocol counts, exact paper sizes, augmentation,
the missing-root error, and one short training epoch per dataset. Nothing is downloaded."""

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests._images import write_cifar10, write_cifar100, write_image_lists, write_mnist
from trainables.data import DATASETS, load_splits, resolve_dataset
from trainables.data.augment import ImageAugment, auto_augment, cutout, random_crop_flip
from trainables.data.cifar import NORMS
from trainables.data.image_lists import read_list
from trainables.data.image_store import decode_resized, gather_batch
from trainables.data.protocol import long_tail_counts, n_max_for_total
from trainables.loop import Trial
from trainables.params import ConfigError


# ---- tiny files in the real formats --------------------------------------------------------------------------
def _cifar_ids(x: torch.Tensor) -> set[int]:
    flat = x.reshape(len(x), -1)[:, :3].long()
    return set((flat[:, 0] + 256 * flat[:, 1] + 65536 * flat[:, 2]).tolist())


def one_epoch(dataset: dict, model: str, **train) -> dict:
    trial = Trial({"method": {"name": "ce"}, "dataset": dataset, "model": model, "seed": 0,
                   "train": {"epochs": 1, "batch_size": 16, "device": "cpu", "eval_batch_size": 256, **train}})
    metrics = trial.run_epoch()
    assert math.isfinite(metrics["train_loss"]) and 0.0 <= metrics["test_acc"] <= 1.0
    return trial


def splits_of(**dataset):
    return load_splits(resolve_dataset(dataset))


def assert_balanced_disjoint(splits, ids=_cifar_ids):
    C = splits.num_classes
    meta_counts = torch.bincount(splits.meta.y, minlength=C)
    assert (meta_counts == meta_counts[0]).all() and meta_counts[0] > 0
    parts = [ids(splits.train.x), ids(splits.meta.x), ids(splits.test.x)]
    assert sum(map(len, parts)) == len(set().union(*parts)), "train, meta and test share images"


# ---- CIFAR ------------------------------------------------------------------------------------------------------
def test_holdout_from_test_profile_gives_the_standard_cifar_lt_sizes():
    # Cui et al.'s and LDAM-DRW's int(img_max * (1/rho)^(c/(C-1))) with every training image of a class as img_max.
    assert sum(long_tail_counts(5000, 10, 100)) == 12406
    assert sum(long_tail_counts(500, 100, 100)) == 10847
    assert sum(long_tail_counts(500, 100, 10)) == 19573
    assert long_tail_counts(5000, 10, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def test_cifar10_holdout_from_train_profile_holds_meta_out_first(tmp_path):
    root = write_cifar10(tmp_path)
    s = splits_of(name="cifar10", root=str(root), imbalance=10, meta_per_class=5)
    # n_max = 30 - 5 = 25; n_c = floor(25 * 0.1^(c/9)) by hand: 25, 19.37, 15.00 (- slack), 11.60, ...
    assert s.class_counts.tolist() == [25, 19, 14, 11, 8, 6, 5, 4, 3, 2]
    assert torch.bincount(s.meta.y).tolist() == [5] * 10 and torch.equal(s.val.y, s.meta.y)
    assert torch.bincount(s.test.y).tolist() == [12] * 10
    assert s.train.x.dtype == torch.uint8 and s.input_shape == (3, 32, 32)
    assert s.input_norm == NORMS["cifar10"]
    assert_balanced_disjoint(s)
    assert _cifar_ids(s.test.x) == set(range(100000, 100120))


def test_cifar10_holdout_from_test_profile_takes_meta_from_the_test_pool(tmp_path):
    root = write_cifar10(tmp_path)
    s = splits_of(name="cifar10", root=str(root), imbalance=10, meta_per_class=5, lt_profile="holdout_from_test")
    # n_max = all 30 images of a class: floor(30 * 0.1^(c/9)) = 30, 23.2, 17.99, 13.9, 10.8, ...
    assert s.class_counts.tolist() == [30, 23, 17, 13, 10, 8, 6, 5, 3, 3]
    assert torch.bincount(s.meta.y).tolist() == [5] * 10 and torch.bincount(s.test.y).tolist() == [7] * 10
    assert _cifar_ids(s.meta.x) <= set(range(100000, 100120))  # meta comes from the test pool
    assert_balanced_disjoint(s)


def test_cifar_separate_val_set_and_noise(tmp_path):
    root = write_cifar10(tmp_path)
    s = splits_of(name="cifar10", root=str(root), imbalance=2, meta_per_class=3, val_per_class=2,
                  noise_type="flip", noise_rate=0.4)
    assert torch.bincount(s.val.y).tolist() == [2] * 10
    assert not _cifar_ids(s.val.x) & _cifar_ids(s.meta.x) and not _cifar_ids(s.val.x) & _cifar_ids(s.train.x)
    assert s.is_noisy and torch.bincount(s.train.true_y).tolist() == s.class_counts.tolist()


def test_cifar10_one_epoch_with_resnet32_and_autoaugment(tmp_path):
    root = write_cifar10(tmp_path, train_per_class=8, test_per_class=2)
    trial = one_epoch({"name": "cifar10", "root": str(root), "imbalance": 2, "meta_per_class": 2,
                       "augment": "autoaugment"}, "resnet32")
    mean, std = NORMS["cifar10"]
    assert torch.allclose(trial.model.input.norm.mean.flatten(), torch.tensor(mean))
    assert torch.allclose(trial.model.input.norm.std.flatten(), torch.tensor(std))


def test_cifar100_reads_fine_labels(tmp_path):
    root = write_cifar100(tmp_path)
    s = splits_of(name="cifar100", root=str(root), imbalance=5, meta_per_class=1)
    assert s.num_classes == 100 and s.class_counts[0] == 5 and s.class_counts[-1] == 1
    assert torch.bincount(s.test.y).tolist() == [3] * 100
    assert_balanced_disjoint(s)


# ---- MNIST ------------------------------------------------------------------------------------------------------
def _digits_of(x: torch.Tensor, digit_of_id: dict[int, int]) -> np.ndarray:
    return np.array([digit_of_id[i] for i in _ids_list(x)])


def _ids_list(x):
    flat = x.reshape(len(x), -1)[:, :3].long()
    return (flat[:, 0] + 256 * flat[:, 1] + 65536 * flat[:, 2]).tolist()


def test_mnist_odd_even_applies_the_long_tail_per_digit(tmp_path):
    root = write_mnist(tmp_path, [40] * 10, [6] * 10)
    s = splits_of(name="mnist", root=str(root), task="odd_even", imbalance=10, n_max=30, meta_per_class=3)
    # per digit d: floor(30 * 0.1^(d/9)) = 30, 23, 17, 13, 10, 8, 6, 5, 3, 3 (digit 0 the head)
    per_digit = [30, 23, 17, 13, 10, 8, 6, 5, 3, 3]
    assert s.num_classes == 2 and s.input_shape == (1, 28, 28)
    assert s.class_counts.tolist() == [sum(per_digit[0::2]), sum(per_digit[1::2])]  # even 66, odd 52
    train_digits = np.repeat(np.arange(10), [40] * 10)
    np.random.default_rng(2).shuffle(train_digits)
    digits = _digits_of(s.train.x, dict(enumerate(train_digits)))
    assert np.bincount(digits, minlength=10).tolist() == per_digit
    assert (s.train.y.numpy() == digits % 2).all()
    assert torch.bincount(s.meta.y).tolist() == [3, 3] and torch.bincount(s.test.y).tolist() == [30, 30]
    assert_balanced_disjoint(s)


def test_mnist_four_vs_nine_has_the_cdb_sizes(tmp_path):
    counts = [5] * 10
    counts[4], counts[9] = 5500, 550
    test_counts = [3] * 10
    test_counts[4], test_counts[9] = 810, 805
    root = write_mnist(tmp_path, counts, test_counts)
    for rho, head in ((99, 4950), (199, 4975)):
        s = splits_of(name="mnist", root=str(root), task="four_nine", imbalance=rho, meta_per_class=500,
                      test_per_class=800)
        assert s.class_counts.tolist() == [head, 5000 - head] and len(s.train) == 5000
        assert torch.bincount(s.meta.y).tolist() == [500, 500]
        assert torch.bincount(s.test.y).tolist() == [800, 800]
        assert_balanced_disjoint(s)
    assert n_max_for_total(5000, 2, 99) == 4950 and n_max_for_total(5000, 2, 199) == 4975


def test_mnist_one_epoch_with_lenet5(tmp_path):
    root = write_mnist(tmp_path, [12] * 10, [3] * 10)
    one_epoch({"name": "mnist", "root": str(root), "imbalance": 5, "meta_per_class": 2}, "lenet5")


# ---- ImageNet-LT / Places-LT lists ------------------------------------------------------------------------------
def _red_ids(x) -> set[int]:
    return set(x[:][:, 0, 0, 0].tolist())


def test_image_lists_keep_the_listed_long_tail(tmp_path):
    root = write_image_lists(tmp_path, {"train": [6, 3, 2], "val": [2, 2, 2], "test": [2, 2, 2]})
    s = splits_of(name="imagenet_lt", root=str(root), image_size=16, store_size=30, meta_per_class=1,
                  val_per_class=1, many_threshold=4, few_threshold=3, augment="resized",
                  cache_dir=str(tmp_path / "cache"))
    assert s.class_counts.tolist() == [6, 3, 2] and s.train.x.shape == (11, 3, 16, 16)
    assert {k: v.tolist() for k, v in s.groups.items()} == {"many": [0], "medium": [1], "few": [2]}
    assert torch.bincount(s.meta.y).tolist() == [1, 1, 1] and torch.bincount(s.val.y).tolist() == [1, 1, 1]
    assert torch.bincount(s.test.y).tolist() == [2, 2, 2]
    val_ids = set(range(11, 17))
    assert _red_ids(s.meta.x) | _red_ids(s.val.x) == val_ids  # meta and val split the official val list
    assert_balanced_disjoint(s, _red_ids)
    out = gather_batch(s.train.x, torch.arange(11), s.augment, torch.Generator().manual_seed(0))
    assert out.shape == s.train.x.shape and out.dtype == torch.uint8


def test_image_lists_one_epoch_with_resnet10_and_a_node_store(tmp_path):
    root = write_image_lists(tmp_path / "data", {"train": [4, 2], "val": [1, 1], "test": [1, 1]})
    cfg = {"name": "places_lt", "root": str(root), "image_size": 32, "store_size": 36, "meta_per_class": 1,
           "cache_dir": str(tmp_path / "c"),
           **{f"{s}_list": f"ImageNet_LT_{s}.txt" for s in ("train", "val", "test")}}
    one_epoch(cfg, "resnet10", batch_size=3)
    assert len([p for p in os.listdir(tmp_path / "c") if not p.endswith(".lock")]) == 3  # train, val, test stores
    cached = DATASETS.get("places_lt").load({**resolve_dataset(cfg), "workers": 2})
    assert cached.x_train.shape == (6, 3, 32, 32) and cached.x_train.store.shapes.tolist() == [[36, 48]] * 6


def test_decode_resizes_the_short_side_and_center_crops(tmp_path):
    from PIL import Image

    pixels = np.zeros((20, 60, 3), dtype=np.uint8)
    pixels[:, 14:46], pixels[:, 46:] = 200, 100  # the center square (columns 20-40) plus a margin for the filter
    Image.fromarray(pixels).save(tmp_path / "a.png")
    out = decode_resized(str(tmp_path / "a.png"), 10, 10)
    assert out.shape == (3, 10, 10) and out.dtype == np.uint8
    assert (out == 200).all()


def test_list_parsing_rejects_malformed_lines(tmp_path):
    (tmp_path / "l.txt").write_text("a b/c.jpg 3\n\nd.jpg 1\n")
    paths, labels = read_list(str(tmp_path / "l.txt"))
    assert paths == ["a b/c.jpg", "d.jpg"] and labels.tolist() == [3, 1]
    (tmp_path / "bad.txt").write_text("x.jpg cat\n")
    with pytest.raises(ConfigError, match="bad.txt:1"):
        read_list(str(tmp_path / "bad.txt"))


def test_image_lists_preflight_rejects_extra_imbalance(tmp_path):
    root = write_image_lists(tmp_path, {"train": [2, 1], "val": [1, 1], "test": [1, 1]})
    source = DATASETS.get("imagenet_lt")
    source.preflight(resolve_dataset({"name": "imagenet_lt", "root": str(root)}))
    with pytest.raises(ConfigError, match="long-tailed already") as err:
        source.preflight(resolve_dataset({"name": "imagenet_lt", "root": str(root), "imbalance": 10}))
    assert err.value.path == "dataset.imbalance"


# ---- tabular ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,n,classes", [("iris", 150, 3), ("wine", 178, 3), ("breast_cancer", 569, 2)])
def test_tabular_sets_split_80_20_and_keep_their_class_distribution(name, n, classes):
    s = splits_of(name=name, meta_per_class=2)
    assert len(s.train) + len(s.meta) == n - round(0.2 * n)
    test_counts = torch.bincount(s.test.y)
    assert len(test_counts) == classes and (test_counts == test_counts[0]).all()
    assert abs(float(s.train.x.mean())) < 0.2 and s.train.x.dtype == torch.float32


def test_tabular_imbalance_and_noise_go_through_the_protocol():
    natural = splits_of(name="breast_cancer", meta_per_class=5)
    s = splits_of(name="breast_cancer", meta_per_class=5, imbalance=4, noise_type="symmetric", noise_rate=0.2)
    n_max = int(natural.class_counts.min())  # the natural pool's smaller class heads the profile
    assert s.class_counts.tolist() == [n_max, n_max // 4] and s.is_noisy


def test_tabular_one_epoch_with_mlp():
    one_epoch({"name": "wine", "noise_type": "symmetric", "noise_rate": 0.2}, "mlp")


# ---- the missing-root error -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,expected", [
    ("cifar10", "cifar-10-batches-py/data_batch_1"), ("cifar100", "cifar-100-python/train"),
    ("mnist", "MNIST/raw/train-images-idx3-ubyte"), ("imagenet_lt", "ImageNet_LT_train.txt"),
    ("places_lt", "Places_LT_train.txt"),
])
def test_missing_root_names_the_files_and_how_to_get_them(tmp_path, name, expected):
    source = DATASETS.get(name)
    for root in (None, str(tmp_path / "empty")):
        cfg = resolve_dataset({"name": name, "root": root})
        with pytest.raises(ConfigError) as err:
            source.preflight(cfg)
        assert err.value.path == "dataset.root" and expected in str(err.value)
        assert ("download: true" in str(err.value)) == (name in ("cifar10", "cifar100", "mnist"))
        with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
            source.load({k: cfg[k] for k in source.params})


def test_incomplete_root_names_only_what_is_missing(tmp_path):
    root = write_cifar10(tmp_path)
    os.remove(root / "cifar-10-batches-py" / "test_batch")
    with pytest.raises(ConfigError, match=r"expected cifar-10-batches-py/test_batch under") as err:
        Trial({"method": {"name": "ce"}, "dataset": {"name": "cifar10", "root": str(root)}, "model": "resnet32"})
    assert "data_batch" not in str(err.value)


def test_sweep_preflight_wants_an_absolute_root():
    with pytest.raises(ConfigError, match="absolute"):
        DATASETS.get("cifar10").preflight(resolve_dataset({"name": "cifar10", "root": "data"}))


# ---- augmentation -----------------------------------------------------------------------------------------------
def _batch(n=6, c=3, h=32, w=32):
    return torch.randint(1, 256, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("pad_mode,torch_mode", [("zeros", "constant"), ("reflect", "reflect")])
def test_random_crop_flip_equals_pad_then_slice(pad_mode, torch_mode):
    x = _batch()
    out = random_crop_flip(x, torch.Generator().manual_seed(3), 4, pad_mode)
    g = torch.Generator().manual_seed(3)  # the documented draw order: rows, columns, flips
    dy, dx = torch.randint(0, 9, (6,), generator=g), torch.randint(0, 9, (6,), generator=g)
    flip = torch.rand(6, generator=g) < 0.5
    padded = torch.nn.functional.pad(x.float(), (4, 4, 4, 4), mode=torch_mode).to(torch.uint8)
    for i in range(6):
        crop = padded[i, :, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32]
        assert torch.equal(out[i], crop.flip(2) if flip[i] else crop)


def test_cutout_blanks_one_clipped_square():
    x = torch.full((50, 3, 32, 32), 255, dtype=torch.uint8)
    out = cutout(x, torch.Generator().manual_seed(0), 16)
    zeros = (out[:, 0] == 0).sum((1, 2))
    assert out.dtype == torch.uint8 and (zeros <= 256).all() and (zeros >= 64).all() and (zeros == 256).any()
    assert ((out == 0) | (out == 255)).all() and ((out == 0).all(1) == (out[:, 0] == 0)).all()


@pytest.mark.parametrize("augment", [ImageAugment(), ImageAugment(pad_mode="reflect", policy="cifar10", cutout=16),
                                     ImageAugment(crop="none")])
def test_augmentation_keeps_shapes_and_dtypes_and_follows_the_generator(augment):
    x = _batch(c=1) if augment.crop == "none" else _batch()
    a = augment(x, torch.Generator().manual_seed(1))
    b = augment(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and a.dtype == torch.uint8 and torch.equal(a, b) and not torch.equal(a, x)


def test_auto_augment_works_on_gray_images():
    x = _batch(n=8, c=1, h=28, w=28)
    out = auto_augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8


# ---- the paper presets --------------------------------------------------------------------------------------------
PRESETS = sorted((Path(__file__).resolve().parent.parent / "search_spaces" / "presets").glob("paper_*.yaml"))


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_paper_presets_plan_without_data_and_pass_preflight_with_it(path, tmp_path):
    from raysweep.planning.plan import plan
    from raysweep.spec.loading import apply_overrides
    from raysweep.spec.loading import load_spec_file as load_spec
    from raysweep.spec.schema import validate_spec

    spec = load_spec(path)
    assert spec["name"] == path.stem
    trials = plan(validate_spec(spec))  # no data needed to plan
    assert trials and all(t.config["dataset"]["root"] == "~/data" for t in trials)
    root = tmp_path / "data"
    write_cifar10(root, train_per_class=1, test_per_class=1)
    write_cifar100(root, train_per_class=1, test_per_class=1)
    write_mnist(root, [1] * 10, [1] * 10)
    trials = plan(validate_spec(apply_overrides(spec, [f"dataset.root={root}"])))
    for cfg in {json.dumps(t.config["dataset"], sort_keys=True): t.config["dataset"] for t in trials}.values():
        DATASETS.get(cfg["name"]).preflight(cfg)


def test_auto_augment_magnitudes_follow_the_ten_bin_discretisation():
    from trainables.data.augment import magnitude, policy_table

    assert magnitude("Rotate", 9, 32, 32) == 30.0 and magnitude("ShearX", 3, 32, 32) == pytest.approx(0.1)
    assert magnitude("TranslateY", 9, 28, 32) == pytest.approx(150 / 331 * 28)
    assert [magnitude("Posterize", i, 32, 32) for i in (0, 1, 2, 3, 9)] == [8, 8, 7, 7, 4]  # 8 - round(i / 2.25)
    assert magnitude("Solarize", 0, 32, 32) == 255.0 and magnitude("Solarize", 9, 32, 32) == 0.0
    assert len(policy_table("cifar10")) == 25 and policy_table("cifar10")[0][0][0] == "Invert"
