"""trainables.data.node_cache: one build per machine and key, whatever the number of processes asking."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

import pytest

from trainables.data.node_cache import CacheBusy, build_once, digest

BOUND_S = 120


def _build_counting(root: str, log: str, start: multiprocessing.Event) -> str:
    """Wait for the start signal, then ask for the same build; every real build appends a line to ``log``."""
    def build(folder: Path) -> None:
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        (folder / "data.bin").write_bytes(b"x" * 100_000)

    start.wait(BOUND_S)
    return str(build_once("shared", {"source": "test", "n": 1}, build, root=root, on_wait=lambda line: None))


def _worker(root: str, log: str, start, out) -> None:
    out.put(_build_counting(root, log, start))


@pytest.mark.process
def test_four_processes_asking_together_build_once_and_read_the_same_folder(tmp_path):
    ctx = multiprocessing.get_context("fork")
    start, out, log = ctx.Event(), ctx.Queue(), str(tmp_path / "builds.log")
    procs = [ctx.Process(target=_worker, args=(str(tmp_path / "cache"), log, start, out)) for _ in range(4)]
    for proc in procs:
        proc.start()
    start.set()
    folders = {out.get(timeout=BOUND_S) for _ in procs}
    for proc in procs:
        proc.join(BOUND_S)
        assert proc.exitcode == 0
    assert len(Path(log).read_text().splitlines()) == 1
    assert len(folders) == 1
    assert (Path(folders.pop()) / "data.bin").stat().st_size == 100_000


def test_a_different_key_never_reuses_a_build(tmp_path):
    built: list[dict] = []

    def build_for(key):
        return lambda folder: (built.append(key), (folder / "k").write_text(repr(key)))

    keys = [{"name": "mnist1d", "seed": 42}, {"name": "mnist1d", "seed": 43}, {"name": "digits", "seed": 42}]
    folders = [build_once("src", k, build_for(k), root=tmp_path) for k in keys]
    again = [build_once("src", k, build_for(k), root=tmp_path) for k in keys]
    assert len(set(folders)) == 3 and folders == again
    assert built == keys  # the second round found every build
    assert digest({"a": 1, "b": 2}) == digest({"b": 2, "a": 1})


def _killed_builder(root: str, ready) -> None:
    def build(folder: Path) -> None:
        (folder / "half").write_bytes(b"half-written")
        ready.set()
        signal.pause()  # killed here, mid-build

    build_once("store", {"k": 1}, build, root=root)


@pytest.mark.process
def test_a_builder_killed_half_way_leaves_nothing_trusted_and_its_lock_is_taken_over(tmp_path):
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_killed_builder, args=(str(tmp_path), ready))
    proc.start()
    assert ready.wait(BOUND_S)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(BOUND_S)
    assert not (tmp_path / f"store-{digest({'k': 1})}").exists()  # nothing published
    folder = build_once("store", {"k": 1}, lambda f: (f / "whole").write_bytes(b"ok"), root=tmp_path)
    assert (folder / "whole").read_bytes() == b"ok" and not (folder / "half").exists()
    assert not list(tmp_path.glob("store-*.tmp-*"))  # the dead builder's staging folder is gone


def test_a_failed_build_publishes_nothing(tmp_path):
    def failing(folder: Path) -> None:
        (folder / "part").write_text("x")
        raise RuntimeError("decode failed")

    with pytest.raises(RuntimeError, match="decode failed"):
        build_once("bad", {"k": 1}, failing, root=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [f"bad-{digest({'k': 1})}.lock"]


def _holder(root: str, ready, release) -> None:
    def build(folder: Path) -> None:
        ready.set()
        release.wait(BOUND_S)

    build_once("slow", {"k": 1}, build, root=root)


@pytest.mark.process
def test_a_waiter_is_told_once_and_gives_up_at_its_bound(tmp_path):
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_holder, args=(str(tmp_path), ready, release))
    proc.start()
    try:
        assert ready.wait(BOUND_S)
        lines: list[str] = []
        with pytest.raises(CacheBusy, match="held for more than"):
            build_once("slow", {"k": 1}, lambda f: None, root=tmp_path, timeout_s=0.2, on_wait=lines.append)
        assert len(lines) == 1 and "waiting for another process to build slow-" in lines[0]
    finally:
        release.set()
        proc.join(BOUND_S)
    assert proc.exitcode == 0
