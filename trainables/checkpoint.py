"""Checkpoint files: one ``state.pt`` per checkpoint, always loaded with ``weights_only=True``.

A checkpoint that cannot be read (truncated by a full disk or a crash mid-copy, bytes damaged) raises
:class:`UnreadableCheckpoint` naming its file, never a bare ``OSError: [Errno 22]`` from deep in torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

STATE_FILE = "state.pt"


def save_state(state: dict[str, Any], directory: str | os.PathLike) -> Path:
    """Write ``state`` atomically (temp file + rename) so a crash never leaves a half-written checkpoint."""
    path = Path(directory) / STATE_FILE
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


class UnreadableCheckpoint(Exception):
    """A checkpoint file that cannot be loaded; ``path`` is the file, ``reason`` torch's first line."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"unreadable checkpoint {path}: {reason}")


def load_state(directory: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_state` (tensors and plain Python values only); one that
    cannot be read raises :class:`UnreadableCheckpoint`."""
    path = Path(directory) / STATE_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # OSError, RuntimeError (a zip archive cut short), pickle's UnpicklingError, EOFError
        raise UnreadableCheckpoint(path, (str(err).strip().splitlines() or [type(err).__name__])[0][:200]) from None
    if not isinstance(state, dict):
        raise UnreadableCheckpoint(path, f"holds a {type(state).__name__}, not a training state")
    return state
