"""Build once per machine: a folder of data built by the first process that needs it, shared by all the others.

Every trial of a sweep runs in its own process (Ray workers, group members, ``plan --calibrate``), and each
used to build its data itself: generated sources once per process, decoded image stores once per trial.
:func:`build_once` makes one build per machine and key instead:

- the folder is ``<root>/<name>-<digest>``, the digest a hash of everything the content depends on (the
  source's options, its files' paths, sizes and mtimes, the storage format), so a different config never
  reuses a build;
- the first process takes an exclusive ``flock`` on ``<folder>.lock`` and builds into a private temporary
  folder beside the target, then publishes it with one atomic ``rename``; the others wait on the lock
  (bounded, with one message) and find the folder there;
- a builder killed half-way leaves only its temporary folder (removed by the next builder) and releases
  its lock with its death (the kernel drops an ``flock`` with the process), so nobody ever trusts a
  half-written build and a stale lock is taken over without a timeout.

The root is ``$RAYSWEEP_DATA_CACHE`` when set, else ``~/.cache/raysweep/data``: local disk, one per node.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

ENV_ROOT = "RAYSWEEP_DATA_CACHE"
WAIT_TIMEOUT_S = 3600.0  # a build of a paper-scale image store takes minutes; a wait past an hour is a fault
_POLL_S = 0.05


class CacheBusy(TimeoutError):
    """Another process held a build's lock for longer than the caller allowed."""


def cache_root(root: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``root`` when given, else ``$RAYSWEEP_DATA_CACHE``, else ``~/.cache/raysweep/data``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(ENV_ROOT)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "raysweep" / "data"


def digest(key: Mapping[str, Any]) -> str:
    """A stable hash of ``key`` (JSON with sorted keys; every value must be JSON-serialisable)."""
    return hashlib.sha256(json.dumps(dict(key), sort_keys=True, default=str).encode()).hexdigest()[:20]


def build_once(name: str, key: Mapping[str, Any], build: Callable[[Path], None], *,
               root: str | os.PathLike | None = None, timeout_s: float = WAIT_TIMEOUT_S,
               on_wait: Callable[[str], None] | None = None) -> Path:
    """The folder holding ``build``'s output for ``key``, built by at most one process of this machine.

    ``build(folder)`` writes its files into an empty private folder; it is published (renamed into place)
    only when ``build`` returns. Concurrent callers with the same key block on the lock (up to ``timeout_s``,
    then :class:`CacheBusy`), calling ``on_wait`` once with a line saying whom they wait for.
    """
    base = cache_root(root)
    target = base / f"{name}-{digest(key)}"
    if target.is_dir():
        return target
    base.mkdir(parents=True, exist_ok=True)
    with _locked(target.with_name(target.name + ".lock"), timeout_s, on_wait, target.name):
        if target.is_dir():  # built by the process we waited for
            return target
        for stale in base.glob(target.name + ".tmp-*"):  # a builder killed half-way
            shutil.rmtree(stale, ignore_errors=True)
        staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        staging.mkdir()
        try:
            build(staging)
            (staging / "key.json").write_text(json.dumps(dict(key), sort_keys=True, default=str, indent=1))
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return target


class _locked:
    """An exclusive ``flock`` on ``path``, waited for at most ``timeout_s`` seconds."""

    def __init__(self, path: Path, timeout_s: float, on_wait: Callable[[str], None] | None, what: str) -> None:
        self.path, self.timeout_s, self.on_wait, self.what = path, timeout_s, on_wait, what
        self.fd = -1

    def __enter__(self) -> _locked:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline, told = time.monotonic() + self.timeout_s, False
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(self.fd)
                    raise
            if not told:
                (self.on_wait or _say)(f"raysweep: waiting for another process to build {self.what} "
                                       f"(lock {self.path})")
                told = True
            if time.monotonic() > deadline:
                os.close(self.fd)
                raise CacheBusy(f"{self.path} was held for more than {self.timeout_s:g} s by another builder")
            time.sleep(_POLL_S)  # flock has no timed wait; the holder's exit (or death) frees it
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


__all__ = ["CacheBusy", "ENV_ROOT", "build_once", "cache_root", "digest"]
