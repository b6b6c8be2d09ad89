"""Running the raysweep CLI as a user would, in a subprocess (shared by the end-to-end tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

import yaml


def raysweep_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "raysweep.cli", *args]


def raysweep(*args: str, cwd: Path, env: Mapping[str, str] | None = None,
             timeout: int = 600) -> subprocess.CompletedProcess:
    """``raysweep ARGS`` in ``cwd``; output captured as text."""
    return subprocess.run(raysweep_cmd(*args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def run_spec(root: Path, spec: Mapping[str, Any], timeout: int = 600) -> subprocess.CompletedProcess:
    """Write ``spec`` to ``root/spec.yaml`` and ``raysweep run`` it there; the run must succeed."""
    (root / "spec.yaml").write_text(yaml.safe_dump(dict(spec)))
    proc = raysweep("run", "spec.yaml", cwd=root, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc
