"""Decoded image stores: one per node and image list, memory-mapped read-only by every trial, split by index views.

A store is a folder of three ``.npy`` files: ``pixels`` (every image's uint8 (3, h, w) pixels, flattened and
concatenated), ``offsets`` (N + 1 positions into ``pixels``) and ``shapes`` (N x (h, w)). Images keep their
aspect: the short side is resized to ``store_size`` (torchvision's ``Resize(int)`` rule), and a store built
with ``crop`` also takes the center ``crop`` x ``crop`` square (validation and test: resize 256, center crop
224, stored once as such).

:func:`node_store` builds a store at most once per machine (:func:`trainables.data.node_cache.build_once`:
one builder under a file lock, the others wait; a killed builder leaves nothing that others trust), keyed by
the list and its images (path, size, mtime) and the storage sizes, then opens it with ``np.load(mmap_mode='r')``:
the page cache holds one copy per node whatever the number of trials on it.

A split is a :class:`StoreView`: (store, row indices). ``view[key]`` gathers a uint8 batch (the center
``size`` square of each image) onto the view's device, from pinned memory on CUDA; ``view.subset(rows)`` is
another view (the protocol's hold-outs never copy pixels).
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from trainables.data.augment import PaperCrop
from trainables.data.node_cache import build_once

STORE_FORMAT = 1  # bump when the files or the resize rule change: the node cache key includes it


def resized_shape(height: int, width: int, short: int) -> tuple[int, int]:
    """(h, w) after resizing the short side to ``short``: torchvision's ``Resize(short)`` rule (long side truncated)."""
    if width <= height:
        return int(short * height / width), short
    return short, int(short * width / height)


def center_box(height: int, width: int, size: int) -> tuple[int, int]:
    """(top, left) of the center ``size`` square: torchvision's ``center_crop`` rounding."""
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def image_size_of(path: str) -> tuple[int, int]:
    """(height, width) from the file's header (nothing decoded)."""
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
    return height, width


def decode_resized(path: str, short: int, crop: int | None = None) -> np.ndarray:
    """RGB uint8 (3, h, w): short side resized to ``short`` (bilinear, antialiased), then the center ``crop`` square
    when given. JPEGs are decoded at the smallest DCT scale still at least the target size (PIL's draft)."""
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
        new_h, new_w = resized_shape(height, width, short)
        image.draft("RGB", (new_w, new_h))
        image = image.convert("RGB")
        if image.size != (new_w, new_h):
            image = image.resize((new_w, new_h), Image.BILINEAR)
        pixels = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)
    if crop is not None:
        top, left = center_box(new_h, new_w, crop)
        pixels = pixels[:, top:top + crop, left:left + crop]
    return pixels


def stored_shape(height: int, width: int, short: int, crop: int | None) -> tuple[int, int]:
    """(h, w) an image of ``height`` x ``width`` has in a store of short side ``short`` and optional ``crop``."""
    return (crop, crop) if crop is not None else resized_shape(height, width, short)


def build_store(folder: Path, files: Sequence[str], short: int, crop: int | None, threads: int) -> None:
    """Decode ``files`` into a store in ``folder``, with ``threads`` decoding threads (bounded memory: the pixels
    are written straight into a memory-mapped file sized from the headers)."""
    threads = max(1, int(threads))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        headers = list(pool.map(image_size_of, files))
    shapes = np.array([stored_shape(h, w, short, crop) for h, w in headers], dtype=np.int64).reshape(-1, 2)
    offsets = np.zeros(len(files) + 1, dtype=np.int64)
    np.cumsum(3 * shapes[:, 0] * shapes[:, 1], out=offsets[1:])
    pixels = np.lib.format.open_memmap(folder / "pixels.npy", mode="w+", dtype=np.uint8, shape=(int(offsets[-1]),))

    def fill(i: int) -> None:
        image = decode_resized(files[i], short, crop)
        if image.shape[1:] != tuple(shapes[i]):
            raise ValueError(f"{files[i]}: decoded {image.shape[1:]}, its header promised {tuple(shapes[i])}")
        pixels[offsets[i]:offsets[i + 1]] = image.reshape(-1)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(fill, range(len(files))))
    pixels.flush()
    np.save(folder / "offsets.npy", offsets)
    np.save(folder / "shapes.npy", shapes)


@dataclass(frozen=True)
class ImageStore:
    """An opened store: ``pixels`` is a read-only memory map (shared through the page cache), the rest is small."""

    folder: Path
    pixels: np.ndarray
    offsets: np.ndarray
    shapes: np.ndarray

    @classmethod
    def open(cls, folder: str | os.PathLike) -> ImageStore:
        folder = Path(folder)
        return cls(folder, np.load(folder / "pixels.npy", mmap_mode="r"), np.load(folder / "offsets.npy"),
                   np.load(folder / "shapes.npy"))

    def __len__(self) -> int:
        return len(self.shapes)

    @property
    def nbytes(self) -> int:
        return int(self.offsets[-1])

    @property
    def uniform(self) -> tuple[int, int] | None:
        """The one (h, w) of every image, or None when sizes differ."""
        if not len(self.shapes) or (self.shapes != self.shapes[0]).any():
            return None
        return int(self.shapes[0, 0]), int(self.shapes[0, 1])

    def image(self, i: int) -> np.ndarray:
        """Image ``i`` as a (3, h, w) view of the memory map (no copy)."""
        h, w = self.shapes[i]
        return self.pixels[self.offsets[i]:self.offsets[i + 1]].reshape(3, h, w)

    def images(self, rows: Sequence[int]) -> list[np.ndarray]:
        """The whole stored images of ``rows`` (views of the memory map)."""
        return [self.image(int(r)) for r in rows]

    def view(self, i: int, size: int) -> np.ndarray:
        """Image ``i``'s test view: its center ``size`` square (resize + center crop, as stored)."""
        image = self.image(i)
        top, left = center_box(image.shape[1], image.shape[2], size)
        return image[:, top:top + size, left:left + size]

    def array(self) -> np.ndarray:
        """A uniform store as one (N, 3, h, w) view of the memory map (no copy)."""
        h, w = self.uniform or (0, 0)
        if not h:
            raise ValueError(f"{self.folder}: images differ in size; read them one by one")
        return self.pixels.reshape(len(self), 3, h, w)


class ImageFiles:
    """The stream reader: images decoded from their files when a batch needs them, nothing kept.

    ``images(rows)``: the whole original images (the papers' RandomResizedCrop is of the original), decoded
    with ``torchvision.io`` (on the GPU with ``decode_jpeg`` when ``device`` is CUDA); ``view(i, size)``: the
    test view, resize ``short`` then center crop ``size``, the very pixels a store holds. :meth:`prefetch`
    starts a ``DataLoader`` over an epoch's batches whose ``workers`` read (and on CPU decode) ahead of the
    loop; the random crops are drawn in the trial's process, from its generator, so the batches are the same
    whatever the workers (deterministic per seed and epoch; resumable at an epoch boundary).
    """

    def __init__(self, files: Sequence[str], short: int, workers: int = 0) -> None:
        self.files, self.short, self.workers = list(files), short, workers
        self.device = torch.device("cpu")
        self._pending: list[np.ndarray] = []
        self._batches: Any = None

    def __len__(self) -> int:
        return len(self.files)

    uniform = None

    def read(self, rows: Sequence[int]) -> list[torch.Tensor]:
        """The files' bytes (on a GPU trial) or their decoded images (CPU): what a loader worker does."""
        from torchvision.io import ImageReadMode, decode_image, read_file

        data = [read_file(self.files[int(r)]) for r in rows]
        if self.device.type == "cuda":
            return data
        return [decode_image(d, mode=ImageReadMode.RGB) for d in data]

    def _decoded(self, read: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.device.type != "cuda":
            return read
        from torchvision.io import ImageReadMode, decode_image, decode_jpeg

        try:
            return decode_jpeg(read, mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError:  # a file nvJPEG cannot take (a PNG or CMYK JPEG in the list): decode on the CPU
            return [decode_image(d, mode=ImageReadMode.RGB).to(self.device) for d in read]

    def images(self, rows: Sequence[int]) -> list[torch.Tensor]:
        rows = np.asarray(rows)
        if self._pending and np.array_equal(self._pending[0], rows):
            self._pending.pop(0)
            return self._decoded(next(self._batches))
        return self._decoded(self.read(rows))

    def view(self, i: int, size: int) -> np.ndarray:
        return decode_resized(self.files[i], self.short, size)

    def prefetch(self, batches: list[np.ndarray], device: torch.device) -> None:
        """Read this epoch's ``batches`` (row arrays) ahead of the loop in ``workers`` processes."""
        from torch.utils.data import DataLoader

        self.device = device
        self._pending = [np.asarray(b) for b in batches]
        loader = DataLoader(_Batches(self, self._pending), batch_size=None, shuffle=False,
                            num_workers=self.workers, prefetch_factor=2 if self.workers else None,
                            collate_fn=lambda batch: batch)
        self._batches = iter(loader)


class _Batches(torch.utils.data.Dataset):
    """One epoch's batches of rows; item k is batch k read by :meth:`ImageFiles.read`."""

    def __init__(self, files: ImageFiles, batches: list[np.ndarray]) -> None:
        self.files, self.batches = files, list(batches)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int) -> list[torch.Tensor]:
        return self.files.read(self.batches[k])


def files_key(files: Sequence[str]) -> str:
    """A digest of every file's (path, size, mtime): a changed, added or replaced image gives a new store."""
    h = hashlib.sha256()
    for path in files:
        st = os.stat(path)
        h.update(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def node_store(name: str, list_path: str, files: Sequence[str], short: int, crop: int | None, *,
               threads: int | None = None, root: str | os.PathLike | None = None,
               on_wait: Callable[[str], None] | None = None) -> ImageStore:
    """This machine's store of ``files`` (built now by this process, or by the first one that got here), opened
    read-only. ``threads``: decoding threads, default the trial's CPU share (``torch.get_num_threads()``, which
    the Ray trainable sets from ``resources.cpu``)."""
    stat = os.stat(list_path)
    key: dict[str, Any] = {"format": STORE_FORMAT, "list": [os.path.abspath(list_path), stat.st_size,
                                                            stat.st_mtime_ns],
                           "images": files_key(files), "store_size": short, "crop": crop}
    threads = threads or torch.get_num_threads()
    folder = build_once(name, key, lambda d: build_store(d, files, short, crop, threads), root=root, on_wait=on_wait)
    return ImageStore.open(folder)


@dataclass(frozen=True)
class StoreView:
    """Rows of a store, read per batch: a split's inputs without a copy of its pixels.

    ``size``: the side of the square a batch gathers (each image's center square; a store of ``size`` x
    ``size`` images gathers them whole). Behaves like the (N, 3, size, size) uint8 tensor the loop and the
    methods index: ``len``, ``shape``, ``view[slice | index tensor]`` (a batch on ``device``); plus
    ``subset`` (a view of some rows) and ``images`` (the whole stored images, for training crops).
    """

    store: ImageStore | ImageFiles  # the reader: a memory-mapped store, or the files themselves (stream)
    rows: np.ndarray
    size: int
    device: torch.device = torch.device("cpu")

    dtype = torch.uint8

    @classmethod
    def of(cls, store: ImageStore | ImageFiles, size: int) -> StoreView:
        return cls(store, np.arange(len(store), dtype=np.int64), size)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.rows), 3, self.size, self.size))

    @property
    def nbytes(self) -> int:
        """Bytes of the split gathered whole (what keeping it resident on a device would cost)."""
        return len(self.rows) * 3 * self.size * self.size

    def to(self, device: torch.device | str) -> StoreView:
        return replace(self, device=torch.device(device))

    def subset(self, rows: np.ndarray) -> StoreView:
        return replace(self, rows=self.rows[np.asarray(rows, dtype=np.int64)])

    def _rows(self, key: slice | torch.Tensor | np.ndarray) -> np.ndarray:
        if isinstance(key, torch.Tensor):
            key = key.cpu().numpy()
        return self.rows[key]

    def images(self, key: slice | torch.Tensor | np.ndarray) -> list[np.ndarray] | list[torch.Tensor]:
        """The whole images of ``key``'s rows: (3, h, w) views of the memory map, or decoded files."""
        return self.store.images(self._rows(key))

    def prefetch(self, batches: Sequence[torch.Tensor]) -> None:
        """Tell a stream reader the epoch's index batches, so it reads them ahead (a store needs nothing)."""
        if isinstance(self.store, ImageFiles):
            self.store.prefetch([self._rows(b) for b in batches], self.device)

    def __getitem__(self, key: slice | torch.Tensor | np.ndarray) -> torch.Tensor:
        rows = self._rows(key)
        s = self.size
        if self.store.uniform == (s, s):
            batch = self.store.array()[rows]
        else:
            batch = np.empty((len(rows), 3, s, s), dtype=np.uint8)
            for k, r in enumerate(rows):
                batch[k] = self.store.view(int(r), s)
        out = torch.from_numpy(batch)
        if self.device.type == "cuda":
            return out.pin_memory().to(self.device, non_blocking=True)
        return out.to(self.device)


def gather_batch(x: torch.Tensor | StoreView, idx: torch.Tensor,
                 augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | PaperCrop | None,
                 generator: torch.Generator) -> torch.Tensor:
    """One training batch of rows ``idx`` of ``x`` (a device tensor or a store view), augmented with the trial's
    generator: a :class:`PaperCrop` crops the whole stored images; any other augmentation runs on the batch."""
    if isinstance(augment, PaperCrop):
        if not isinstance(x, StoreView):
            raise TypeError("PaperCrop crops whole stored images: the split must be a StoreView")
        return augment.crops(x.images(idx), generator, x.device)
    batch = x[idx]
    return augment(batch, generator) if augment is not None else batch


__all__ = ["ImageFiles", "ImageStore", "STORE_FORMAT", "StoreView", "build_store", "center_box", "decode_resized",
           "gather_batch", "node_store", "resized_shape"]
