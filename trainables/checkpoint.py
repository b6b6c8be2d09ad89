"""Checkpoint files: one ``state.pt`` per checkpoint, always loaded with ``weights_only=True``."""

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


def load_state(directory: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_state` (tensors and plain Python values only)."""
    return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)
