"""Provenance attached to every sweep: package versions, git commit, Python, host, command line."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("raysweep", "torch", "torchvision", "ray", "mlflow", "optuna", "numpy", "pandas", "mnist1d", "scikit-learn")


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str:
    """The commit of the raysweep checkout (``+dirty`` when it has uncommitted changes), or 'unknown'."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def provenance() -> dict[str, str]:
    """Flat string mapping, ready to be MLflow tags."""
    tags = {f"raysweep.version.{k}": v for k, v in package_versions().items()}
    tags.update({
        "raysweep.git_commit": git_commit(),
        "raysweep.python": sys.version.split()[0],
        "raysweep.platform": platform.platform(),
        "raysweep.command": " ".join(sys.argv)[:5000],
    })
    return tags
