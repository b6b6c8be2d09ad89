"""Image datasets written in their real formats for the tests: CIFAR pickles, MNIST IDX files, and image
folders plus ``path label`` lists. Nothing is downloaded."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np


def write_image_lists(root: Path, counts: dict[str, list[int]], *, size: tuple[int, int] = (30, 40),
                      ext: str = "png", prefix: str = "ImageNet_LT", seed: int | None = None) -> Path:
    """``<split>/c<c>/<i>.<ext>`` images plus ``<prefix>_<split>.txt`` lists (``counts``: split -> per-class counts).

    Each image's red channel is its id (0, 1, 2, ... over all splits), the others 40 * class, so a constant
    image survives any resize; with ``seed`` the green channel is random texture instead (for pixel checks).
    """
    from PIL import Image

    rng = None if seed is None else np.random.default_rng(seed)
    next_id = 0
    for split, per_class in counts.items():
        lines = []
        for c, n in enumerate(per_class):
            (root / split / f"c{c}").mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.full((*size, 3), 40 * c, dtype=np.uint8)
                pixels[:, :, 0] = next_id % 256
                if rng is not None:
                    pixels[:, :, 1] = rng.integers(0, 256, size=size, dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / f"c{c}" / f"{i}.{ext}")
                lines.append(f"{split}/c{c}/{i}.{ext} {c}")
                next_id += 1
        (root / f"{prefix}_{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def _ids_to_pixels(ids: np.ndarray, size: int) -> np.ndarray:
    """uint8 rows of ``size`` bytes whose first three bytes encode a unique image id (to check disjointness)."""
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 256, size=(len(ids), size), dtype=np.uint8)
    rows[:, 0], rows[:, 1], rows[:, 2] = ids % 256, (ids // 256) % 256, ids // 65536
    return rows


def write_cifar10(root, train_per_class=30, test_per_class=12):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    labels = np.repeat(np.arange(10), train_per_class)
    np.random.default_rng(1).shuffle(labels)
    data = _ids_to_pixels(np.arange(len(labels)), 3072)
    for i, part in enumerate(np.array_split(np.arange(len(labels)), 5), 1):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({"data": data[part], "labels": labels[part].tolist()}, f)
    test_labels = np.repeat(np.arange(10), test_per_class)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": _ids_to_pixels(np.arange(len(test_labels)) + 100000, 3072),
                     "labels": test_labels.tolist()}, f)
    return root


def write_cifar100(root, train_per_class=6, test_per_class=3):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for split, per, offset in (("train", train_per_class, 0), ("test", test_per_class, 100000)):
        labels = np.repeat(np.arange(100), per)
        with open(folder / split, "wb") as f:
            pickle.dump({"data": _ids_to_pixels(np.arange(len(labels)) + offset, 3072),
                         "fine_labels": labels.tolist(), "coarse_labels": (labels // 5).tolist()}, f)
    return root


def _write_idx(path, array, gz):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if gz else open
    with opener(str(path) + (".gz" if gz else ""), "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_mnist(root, train_counts, test_counts):
    """torchvision's MNIST/raw layout; image ids in the first 3 pixels; the image files gzipped."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, counts, offset in (("train", train_counts, 0), ("t10k", test_counts, 1 << 20)):
        digits = np.repeat(np.arange(10), counts)
        np.random.default_rng(2).shuffle(digits)
        images = _ids_to_pixels(np.arange(len(digits)) + offset, 784).reshape(-1, 28, 28)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images, gz=True)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", digits, gz=False)
    return root


def _jpeg(path: Path, label: int, size: tuple[int, int]) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), 17 * label % 256, dtype=np.uint8)).save(path)


def write_inaturalist(root: Path, year: int, train_counts: list[int], val_counts: list[int],
                      size: tuple[int, int] = (30, 40)) -> Path:
    """``train<year>.json`` / ``val<year>.json`` in the competition's COCO-style format, plus the images under
    ``train_val<year>/<supercategory>/<category id>/``. Category ids are 100, 101, ... (not 0-based)."""
    import json

    image_id = 0
    for split, counts in (("train", train_counts), ("val", val_counts)):
        images, annotations = [], []
        for c, n in enumerate(counts):
            for i in range(n):
                name = f"train_val{year}/Plantae/{100 + c}/{split}{i}.jpg"
                _jpeg(root / name, c, size)
                images.append({"id": image_id, "file_name": name, "width": size[1], "height": size[0]})
                annotations.append({"id": image_id, "image_id": image_id, "category_id": 100 + c})
                image_id += 1
        categories = [{"id": 100 + c, "name": f"species {c}", "supercategory": "Plantae"} for c in range(len(counts))]
        (root / f"{split}{year}.json").write_text(json.dumps({"info": {"year": year}, "images": images,
                                                                "annotations": annotations,
                                                                "categories": categories, "licenses": []}))
    return root


def write_clothing1m(root: Path, noisy: list[int], val: list[int], test: list[int],
                     size: tuple[int, int] = (30, 40)) -> Path:
    """Clothing1M's key lists (noisy train, clean val/test) and label files (noisy / clean ``path label``) under
    ``root``, the images under ``images/<a>/<b>/``; per-class counts for each split (14 classes)."""
    lists = {"noisy_train_key_list": [], "clean_val_key_list": [], "clean_test_key_list": []}
    kv = {"noisy_label_kv": [], "clean_label_kv": []}
    for (name, label_file), counts in zip((("noisy_train_key_list", "noisy_label_kv"),
                                           ("clean_val_key_list", "clean_label_kv"),
                                           ("clean_test_key_list", "clean_label_kv")), (noisy, val, test),
                                          strict=True):
        for c, n in enumerate(counts):
            for i in range(n):
                path = f"images/{c}/{name[:5]}/{i}.jpg"
                _jpeg(root / path, c, size)
                lists[name].append(path)
                kv[label_file].append(f"{path} {c}")
    kv["noisy_label_kv"].append("images/9/unused/x.jpg 3")  # the kv files label more images than the lists use
    for name, lines in {**lists, **kv}.items():
        (root / f"{name}.txt").write_text("\n".join(lines) + "\n")
    (root / "category_names_eng.txt").write_text("\n".join(f"class {c}" for c in range(14)) + "\n")
    return root
