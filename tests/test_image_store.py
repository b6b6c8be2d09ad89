"""The per-node image store (trainables.data.image_store) and the papers' augmentation: one build under
concurrency, a killed builder, views that never copy, parity with torchvision, exact resumes."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests._images import write_image_lists
from trainables.data import load_splits, resolve_dataset
from trainables.data.augment import PaperCrop, color_jitter, resized_crop_box
from trainables.data.image_store import (
    ImageFiles,
    ImageStore,
    StoreView,
    build_store,
    center_box,
    decode_resized,
    gather_batch,
    node_store,
    resized_shape,
)
from trainables.loop import Trial, splits_on

BOUND_S = 180
REPO = Path(__file__).resolve().parent.parent


def _files(root: Path, split: str = "train") -> tuple[str, list[str]]:
    lines = (root / f"ImageNet_LT_{split}.txt").read_text().split("\n")
    return str(root / f"ImageNet_LT_{split}.txt"), [str(root / line.rsplit(maxsplit=1)[0]) for line in lines if line]


# ---- geometry ------------------------------------------------------------------------------------------------
def test_resize_rule_and_center_box_follow_torchvision():
    import torchvision.transforms.functional as TF

    for h, w in ((375, 500), (500, 375), (256, 256), (300, 1000), (41, 40)):
        expected = TF.resize(torch.zeros(3, h, w, dtype=torch.uint8), 256, antialias=True).shape[1:]
        assert resized_shape(h, w, 256) == tuple(expected)
    image = torch.arange(3 * 10 * 13, dtype=torch.int32).reshape(3, 10, 13)
    top, left = center_box(10, 13, 7)
    assert torch.equal(image[:, top:top + 7, left:left + 7], TF.center_crop(image, 7))


def test_a_store_keeps_each_images_aspect_and_the_val_store_is_the_papers_test_view(tmp_path):
    root = write_image_lists(tmp_path / "d", {"train": [2, 1]}, size=(60, 90), ext="jpg", seed=0)
    _, files = _files(root)
    build_store(tmp_path, files, 32, None, 2)
    store = ImageStore.open(tmp_path)
    assert len(store) == 3 and store.shapes.tolist() == [[32, 48]] * 3 and store.uniform == (32, 48)
    assert isinstance(store.pixels, np.memmap) and store.pixels.mode == "r"
    assert np.array_equal(store.image(1), decode_resized(files[1], 32))
    view = StoreView.of(store, 24)
    top, left = center_box(32, 48, 24)
    center = np.array(store.image(1)[:, top:top + 24, left:left + 24])
    assert torch.equal(view[torch.tensor([1])][0], torch.from_numpy(center))
    assert np.array_equal(decode_resized(files[1], 32, 24), store.image(1)[:, top:top + 24, left:left + 24])


# ---- one build per node ----------------------------------------------------------------------------------------
def _open_counting(cache: str, list_path: str, files: list[str], log: str, start, out) -> None:
    """Wait for the start signal, then open the store; every decode appends a line to ``log``."""
    import trainables.data.image_store as image_store

    real = image_store.decode_resized

    def counting(path, short, crop=None):
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()} {path}\n")
        return real(path, short, crop)

    image_store.decode_resized = counting
    start.wait(BOUND_S)
    store = node_store("imagenet_lt-train", list_path, files, 24, None, threads=1, root=cache,
                       on_wait=lambda line: None)
    out.put((str(store.folder), int(np.asarray(store.pixels, dtype=np.int64).sum())))


@pytest.mark.process
def test_four_trials_starting_together_decode_once_and_read_the_same_bytes(tmp_path):
    root = write_image_lists(tmp_path / "d", {"train": [6, 4, 2]}, size=(30, 40), ext="jpg", seed=1)
    list_path, files = _files(root)
    ctx = multiprocessing.get_context("fork")
    start, out, log = ctx.Event(), ctx.Queue(), str(tmp_path / "decodes.log")
    procs = [ctx.Process(target=_open_counting, args=(str(tmp_path / "cache"), list_path, files, log, start, out))
             for _ in range(4)]
    for proc in procs:
        proc.start()
    start.set()
    results = {out.get(timeout=BOUND_S) for _ in procs}
    for proc in procs:
        proc.join(BOUND_S)
        assert proc.exitcode == 0
    decodes = Path(log).read_text().splitlines()
    assert len(decodes) == len(files) and len({line.split()[0] for line in decodes}) == 1  # one builder
    assert len(results) == 1  # one folder, the same bytes


@pytest.mark.process
def test_a_builder_killed_half_way_leaves_no_store_that_others_trust(tmp_path):
    root = write_image_lists(tmp_path / "d", {"train": [5, 5]}, size=(30, 40), ext="jpg", seed=2)
    list_path, files = _files(root)
    cache = tmp_path / "cache"
    script = textwrap.dedent(f"""
        import time, trainables.data.image_store as s
        real = s.decode_resized
        def slow(path, short, crop=None):
            out = real(path, short, crop)
            open({str(tmp_path / 'progress')!r}, 'a').write('x')
            time.sleep(30)
            return out
        s.decode_resized = slow
        s.node_store('imagenet_lt-train', {list_path!r}, {files!r}, 24, None, threads=1, root={str(cache)!r})
    """)
    builder = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    try:
        deadline = time.monotonic() + BOUND_S
        while not (tmp_path / "progress").exists():  # the builder is half-way: one image decoded
            assert builder.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert not [p for p in cache.iterdir() if p.is_dir() and ".tmp-" not in p.name]
    finally:
        os.kill(builder.pid, signal.SIGKILL)
        builder.wait(BOUND_S)
    store = node_store("imagenet_lt-train", list_path, files, 24, None, threads=1, root=cache,
                       on_wait=lambda line: None)
    assert [p.name for p in cache.iterdir() if ".tmp-" in p.name] == []  # the half-written build is gone
    assert all(np.array_equal(store.image(i), decode_resized(f, 24)) for i, f in enumerate(files))


# ---- splits are views ----------------------------------------------------------------------------------------
def _dataset(root: Path, cache: Path, **options) -> dict:
    return resolve_dataset({"name": "imagenet_lt", "root": str(root), "cache_dir": str(cache), "image_size": 24,
                            "store_size": 32, "meta_per_class": 1, **options})


def test_splits_are_views_of_the_stores_and_val_is_the_meta_set(tmp_path):
    root = write_image_lists(tmp_path / "d", {"train": [6, 3], "val": [3, 3], "test": [2, 2]}, size=(30, 40))
    s = load_splits(_dataset(root, tmp_path / "c"))
    assert all(isinstance(split.x, StoreView) for split in (s.train, s.meta, s.val, s.test))
    assert s.val is s.meta  # val_per_class 0: one split, not a copy
    assert s.train.x.rows.tolist() == list(range(9)) and s.input_shape == (3, 24, 24)
    assert len({id(split.x.store.pixels) for split in (s.train, s.meta, s.test)}) == 3
    assert set(s.test.x[:][:, 0, 0, 0].tolist()) == {15, 16, 17, 18}  # test ids follow train (9) and val (6)
    on_cpu = splits_on(s, torch.device("cpu"))
    assert isinstance(on_cpu.test.x, StoreView)  # CPU: the page cache is the memory; nothing gathered
    resident = splits_on(s, torch.device("cpu"), budget=10**9)
    assert isinstance(resident.test.x, torch.Tensor) and torch.equal(resident.test.x, s.test.x[:])
    assert isinstance(resident.train.x, StoreView)  # the papers' crops need the whole stored images


PRIVATE_PROBE = """
import json, sys, numpy as np
from trainables.data import load_splits, resolve_dataset
from trainables.data.image_store import gather_batch
import torch

def anon():
    return int(next(l for l in open('/proc/self/smaps_rollup') if l.startswith('Anonymous:')).split()[1]) * 1024

from trainables.data.augment import PaperCrop
cfg = resolve_dataset(json.loads(sys.argv[1]))
PaperCrop(112).crops([np.zeros((3, 160, 200), np.uint8)] * 64, torch.Generator())  # torch's own first-use buffers
before = anon()
s = load_splits(cfg)
g = torch.Generator().manual_seed(0)
for idx in torch.randperm(len(s.train), generator=g).split(64):
    gather_batch(s.train.x, idx, s.augment, g)
for i in range(0, len(s.test), 64):
    s.test.x[i:i + 64]
print(json.dumps({"private": anon() - before, "store": s.train.x.store.nbytes + s.test.x.store.nbytes}))
"""


@pytest.mark.process
def test_a_trials_private_memory_stays_far_below_its_stores(tmp_path):
    root = write_image_lists(tmp_path / "d", {"train": [150, 100], "val": [2, 2], "test": [60, 60]}, size=(200, 260),
                             ext="jpg", seed=3)
    cfg = {"name": "imagenet_lt", "root": str(root), "cache_dir": str(tmp_path / "c"), "image_size": 112,
           "store_size": 160, "meta_per_class": 1}
    load_splits(resolve_dataset(cfg))  # the build: another process's, as in a sweep
    out = subprocess.run([sys.executable, "-c", PRIVATE_PROBE, json.dumps(cfg)], cwd=REPO, capture_output=True,
                         text=True, timeout=BOUND_S, check=True)
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    # A fixed allowance (the lists, the protocol's index arrays, a batch or two the allocator keeps) while the
    # stores are more than twice it: a private copy of any split would break it. The old path held every
    # split privately, train and test twice over (> 2x the store).
    bound = 12 * 2**20
    assert probe["store"] > 2 * bound and probe["private"] < bound, probe


# ---- the papers' augmentation --------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(256, 341), (341, 256), (256, 256), (256, 1200), (1200, 256), (20, 13)])
def test_crop_boxes_equal_torchvisions_fed_the_same_random_numbers(shape):
    from torchvision.transforms import RandomResizedCrop

    image = torch.zeros(3, *shape)
    for seed in range(200):
        torch.manual_seed(seed)
        expected = RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3])
        assert resized_crop_box(*shape, torch.Generator().manual_seed(seed)) == tuple(expected)


def test_the_fallback_is_torchvisions_center_crop():
    from torchvision.transforms import RandomResizedCrop

    image = torch.zeros(3, 10, 200)  # aspect 20: no random box fits, the ratio-clamped center crop is taken
    torch.manual_seed(0)
    expected = RandomResizedCrop.get_params(image, [0.9, 1.0], [3 / 4, 4 / 3])
    assert resized_crop_box(10, 200, torch.Generator().manual_seed(0), (0.9, 1.0)) == tuple(expected) == (0, 93, 10, 13)


@pytest.mark.parametrize("jitter", [0.0, 0.4])
def test_paper_crop_pixels_equal_torchvisions_transform(jitter):
    from torchvision import transforms as T

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=(3, h, w), dtype=np.uint8) for h, w in ((256, 341), (300, 256), (256, 256))]
    steps = [T.RandomResizedCrop(64, antialias=True), T.RandomHorizontalFlip()]
    if jitter:
        steps.append(T.ColorJitter(jitter, jitter, jitter))
    reference = T.Compose(steps)
    torch.manual_seed(7)
    expected = torch.stack([reference(torch.from_numpy(im)) for im in images])
    out = PaperCrop(64, jitter=jitter).crops(images, torch.Generator().manual_seed(7))
    assert out.dtype == torch.uint8 and out.shape == (3, 3, 64, 64)
    assert torch.equal(out, expected)


def test_color_jitter_draws_like_torchvision():
    from torchvision.transforms import ColorJitter

    torch.manual_seed(3)
    fn_idx, b, c, s, h = ColorJitter.get_params([0.6, 1.4], [0.6, 1.4], [0.6, 1.4], None)
    x = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    torch.manual_seed(3)
    expected = ColorJitter(0.4, 0.4, 0.4)(x)
    assert torch.equal(color_jitter(x, torch.Generator().manual_seed(3), 0.4, 0.4, 0.4), expected)
    assert h is None and len(fn_idx) == 4 and 0.6 <= min(b, c, s) <= max(b, c, s) <= 1.4


def test_gather_batch_with_the_paper_crop_reads_the_whole_stored_image(tmp_path):
    root = write_image_lists(tmp_path / "d", {"train": [3], "val": [1], "test": [1]}, size=(30, 60), seed=4)
    s = load_splits(_dataset(root, tmp_path / "c", meta_per_class=0, augment="resized", store_size=30,
                             image_size=16))
    idx = torch.tensor([2, 0])
    out = gather_batch(s.train.x, idx, s.augment, torch.Generator().manual_seed(5))
    images = [s.train.x.store.image(2), s.train.x.store.image(0)]
    assert images[0].shape == (3, 30, 60)
    assert torch.equal(out, PaperCrop(16).crops(images, torch.Generator().manual_seed(5)))


def test_a_resumed_trial_sees_the_same_crops_as_an_uninterrupted_one(tmp_path):
    root = write_image_lists(tmp_path / "d", {"train": [8, 6], "val": [2, 2], "test": [2, 2]}, size=(40, 56), seed=5)
    config = {"method": {"name": "ce"}, "model": "resnet10", "seed": 3,
              "dataset": {"name": "imagenet_lt", "root": str(root), "cache_dir": str(tmp_path / "c"),
                          "image_size": 24, "store_size": 32, "meta_per_class": 1, "color_jitter": 0.4},
              "train": {"epochs": 2, "batch_size": 5, "device": "cpu", "eval_batch_size": 8}}

    def recording(trial: Trial) -> list[torch.Tensor]:
        seen: list[torch.Tensor] = []
        batch = trial.batch

        def record(idx):
            out = batch(idx)
            seen.append(out[0].clone())
            return out

        trial.batch = record
        return seen

    whole = Trial(config)
    seen_whole = recording(whole)
    whole.run_epoch()
    first_epoch = len(seen_whole)
    whole.run_epoch()
    cut = Trial(config)
    cut.run_epoch()
    state = cut.state_dict()
    resumed = Trial(config)
    resumed.load_state_dict(state)
    seen_resumed = recording(resumed)
    metrics = resumed.run_epoch()
    assert len(seen_resumed) == len(seen_whole) - first_epoch > 0
    assert all(torch.equal(a, b) for a, b in zip(seen_resumed, seen_whole[first_epoch:], strict=True))
    assert metrics["epoch"] == 2.0


# ---- stream ----------------------------------------------------------------------------------------------------
def test_stream_and_store_give_the_same_test_images_and_labels(tmp_path):
    root = write_image_lists(tmp_path / "d", {"train": [4, 3], "val": [2, 2], "test": [3, 3]}, size=(40, 56),
                             ext="jpg", seed=6)
    store = load_splits(_dataset(root, tmp_path / "c", loader="store"))
    stream = load_splits(_dataset(root, tmp_path / "c", loader="stream"))
    assert isinstance(stream.train.x.store, ImageFiles) and isinstance(store.train.x.store, ImageStore)
    assert torch.equal(stream.test.x[:], store.test.x[:]) and torch.equal(stream.test.y, store.test.y)
    assert torch.equal(stream.meta.x[:], store.meta.x[:])
    assert torch.equal(stream.train.x[:], store.train.x[:])  # the train split's test view: the same pixels
    assert torch.equal(stream.train.y, store.train.y) and stream.class_counts.tolist() == [4, 3]
    idx = torch.tensor([5, 1, 3])
    originals = stream.train.x.images(idx)
    assert originals[0].shape == (3, 40, 56)  # streamed: the whole original image
    expected = PaperCrop(24).crops(originals, torch.Generator().manual_seed(2))
    assert torch.equal(gather_batch(stream.train.x, idx, stream.augment, torch.Generator().manual_seed(2)), expected)


@pytest.mark.process
def test_a_streamed_epoch_is_the_same_with_loader_workers_and_after_a_resume(tmp_path):
    root = write_image_lists(tmp_path / "d", {"train": [7, 5], "val": [2, 2], "test": [2, 2]}, size=(40, 56),
                             ext="jpg", seed=7)

    def config(workers):
        return {"method": {"name": "ce"}, "model": "resnet10", "seed": 4,
                "dataset": {"name": "imagenet_lt", "root": str(root), "cache_dir": str(tmp_path / "c"),
                            "image_size": 24, "store_size": 32, "meta_per_class": 1, "loader": "stream",
                            "workers": workers},
                "train": {"epochs": 2, "batch_size": 4, "device": "cpu", "eval_batch_size": 8}}

    def epoch_batches_of(trial):
        _, batches = trial.begin_epoch()
        return [trial.batch(b)[0] for b in batches]

    inline = Trial(config(1))  # 0 loader processes: read in the loop
    pooled = Trial(config(3))  # 2 loader processes reading ahead
    assert inline.train_set.x.store.workers == 0 and pooled.train_set.x.store.workers == 2
    first = epoch_batches_of(inline)
    assert all(torch.equal(a, b) for a, b in zip(first, epoch_batches_of(pooled), strict=True))
    inline.end_epoch(0.0, 0.1, 0.0)
    second = epoch_batches_of(inline)
    resumed = Trial(config(3))
    epoch_batches_of(resumed)
    resumed.end_epoch(0.0, 0.1, 0.0)
    state = resumed.state_dict()
    again = Trial(config(3))
    again.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(second, epoch_batches_of(again), strict=True))


# ---- end to end through the CLI ---------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.ray
def test_a_sweep_on_image_lists_trains_an_mlp_and_a_streamed_resnet_and_builds_each_store_once(tmp_path):
    """The issue's failing example (``model: mlp`` on imagenet_lt: every trial failed on a uint8 batch) and the
    stream loader, through ``raysweep run``: every trial finishes, the node's stores are built once."""
    from _cli import run_spec

    root = write_image_lists(tmp_path / "data", {"train": [8, 4, 2], "val": [3, 3, 3], "test": [2, 2, 2]},
                             size=(40, 56), ext="jpg", seed=8)
    dataset = {"name": "imagenet_lt", "root": str(root), "image_size": 24, "store_size": 32, "meta_per_class": 1,
               "cache_dir": str(tmp_path / "cache")}
    spec = {"name": "lists", "dataset": dataset, "model": {"name": "mlp", "width": 16}, "methods": {"ce": {}},
            "seeds": 2, "train": {"epochs": 1, "batch_size": 4, "eval_batch_size": 8}, "resources": {"cpu": 1}}
    out = run_spec(tmp_path, spec).stdout
    assert "2 trials, 0 failed" in out
    stores = sorted(p.name.split("-")[1] for p in (tmp_path / "cache").iterdir() if p.is_dir())
    assert stores == ["test", "train", "val"]
    streamed = {**spec, "name": "streamed", "model": "resnet10", "dataset": {**dataset, "loader": "stream",
                                                                             "workers": 2}}
    assert "2 trials, 0 failed" in run_spec(tmp_path, streamed).stdout
    assert sorted(p.name.split("-")[1] for p in (tmp_path / "cache").iterdir() if p.is_dir()) == stores
