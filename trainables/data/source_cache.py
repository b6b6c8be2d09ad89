"""A generated or embedded source's raw pools, built once per machine and reused by every process.

mnist1d is generated (about 1 s a build, more under load), scikit-learn's sets cost an import of
scikit-learn; every Ray worker, group member and preflight used to build them again. A source registered
with ``cache`` (the distributions whose versions shape its output) is built by the first process that needs
it through :func:`trainables.data.node_cache.build_once`, keyed by the source's name, its own options and
those versions, never by the protocol's options: a sweep over imbalance, noise or split sizes builds the
raw source once. File-backed sources (``cache`` None) are read from their files as before.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from trainables.data.node_cache import build_once
from trainables.data.protocol import SourceData

FORMAT = 1  # bump when what the file holds changes shape
FILE = "source.pt"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def cache_key(name: str, own: Mapping[str, Any], versions: Sequence[str]) -> dict[str, Any]:
    """What a cached source's content depends on: its name, its own options, the generators' versions."""
    return {"source": name, "options": dict(own), "versions": {d: _version(d) for d in versions},
            "format": FORMAT}


def load_cached(name: str, own: Mapping[str, Any], load: Callable[[Mapping[str, Any]], SourceData],
                versions: Sequence[str]) -> SourceData:
    """``load(own)``, built at most once per machine and key (see the module docstring)."""
    def build(folder: Path) -> None:
        torch.save(load(own), folder / FILE)

    folder = build_once(f"source-{name}", cache_key(name, own, versions), build)
    return torch.load(folder / FILE, weights_only=False)
