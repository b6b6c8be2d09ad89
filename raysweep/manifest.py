"""The sweep manifest: what a sweep planned and how far it got, beside Ray's experiment state.

``<storage>/<sweep_id>/manifest.json`` holds the spec (as written, after ``--set``), where the sweep logs
(tracking URI, experiment, parent run id and tags), and per phase its Ray experiment folder, its planned
trial keys (None for Optuna, whose draws Ray's saved searcher holds) and its status; once phase 1 is done,
the configurations phase 2 confirms. ``raysweep resume`` and ``raysweep sync`` read it; it is rewritten
atomically (temporary file, then rename) so a crash never leaves it half-written.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from trainables.params import ConfigError

MANIFEST = "manifest.json"
VERSION = 1


class Manifest:
    """A sweep's manifest file; ``data`` is its JSON content, :meth:`save` writes it atomically."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path, self.data = Path(path), data

    @classmethod
    def new(cls, sweep_dir: Path, *, sweep_id: str, spec: dict[str, Any], tracking_uri: str, experiment: str,
            parent_tags: dict[str, str]) -> "Manifest":
        data = {"version": VERSION, "sweep_id": sweep_id, "status": "running", "spec": spec,
                "tracking_uri": tracking_uri, "experiment": experiment, "parent_run_id": None,
                "parent_tags": parent_tags, "phases": {}, "top_k": None}
        return cls(Path(sweep_dir) / MANIFEST, data)

    @classmethod
    def find(cls, sweep: str, storage: str | None = None) -> "Manifest":
        """The manifest of ``sweep``: a sweep folder, or a sweep id under ``storage`` (default: raysweep_results)."""
        candidates = [Path(sweep)]
        if not os.sep in sweep and "/" not in sweep:
            candidates.append(Path(storage or "raysweep_results") / sweep)
        for folder in candidates:
            if (folder / MANIFEST).is_file():
                return cls.load(folder / MANIFEST)
        where = " or ".join(str(c) for c in candidates)
        raise ConfigError("sweep", f"no {MANIFEST} in {where}; give the sweep folder under the storage path "
                                   "(or its id with --storage)")

    @classmethod
    def load(cls, path: Path) -> "Manifest":
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise ConfigError("sweep", f"cannot read {path}: {err}") from None
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise ConfigError("sweep", f"{path} is not a raysweep manifest (version {VERSION})")
        return cls(Path(path), data)

    @property
    def sweep_dir(self) -> Path:
        return self.path.parent

    @property
    def storage_root(self) -> Path:
        """Where the phases' Ray experiment folders are (the sweep folder's parent, wherever it moved)."""
        return self.path.parent.parent

    def phase(self, name: str) -> dict[str, Any] | None:
        return self.data["phases"].get(name)

    def start_phase(self, name: str, experiment: str, trial_keys: list[str] | None) -> None:
        self.data["phases"][name] = {"experiment": experiment, "status": "running", "trial_keys": trial_keys,
                                     "num_trials": None, "num_errors": None, "num_non_finite": None}
        self.save()

    def finish_phase(self, name: str, num_trials: int, num_errors: int, num_non_finite: int) -> None:
        self.data["phases"][name].update(status="finished", num_trials=num_trials, num_errors=num_errors,
                                         num_non_finite=num_non_finite)
        self.save()

    def update(self, **values: Any) -> None:
        self.data.update(values)
        self.save()

    def save(self) -> None:
        """Write atomically: a temporary file in the same folder, then rename over the manifest."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.data, f, indent=1, default=str)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
