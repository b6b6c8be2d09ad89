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
import time
from pathlib import Path
from typing import Any

from raysweep.paths import MAX_CLAIMS, SWEEP_TIMESTAMP, check_name
from trainables.params import ConfigError

MANIFEST = "manifest.json"
VERSION = 1
DEFAULT_STORAGE = "raysweep_results"


def claim_sweep_dir(storage: str | os.PathLike, name: str, now: float | None = None) -> tuple[str, Path]:
    """(sweep id, absolute sweep folder) of a new sweep, the folder created here and by no one else.

    The id is ``<name>-<YYYYmmdd-HHMMSS>``; when that folder exists (another run of the same spec in the
    same second, on this machine or another one sharing the storage), ``-2``, ``-3``, ... up to
    ``-999`` (MAX_CLAIMS) are tried. ``os.mkdir`` fails if the folder exists, atomically even on NFS, so two
    runs can never share a sweep folder, and with it a sweep id and an MLflow parent run. ``storage`` is
    created if missing; ``now`` (seconds since the epoch) is for tests.
    """
    check_name(name, "name")
    root = Path(storage).expanduser().resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError("storage", f"cannot create {root}: {err.strerror or err}") from None
    base = f"{name}-{time.strftime(SWEEP_TIMESTAMP, time.localtime(now))}"
    for k in range(1, MAX_CLAIMS + 1):
        sweep_id = base if k == 1 else f"{base}-{k}"
        try:
            os.mkdir(root / sweep_id)
        except FileExistsError:
            continue
        except OSError as err:
            raise ConfigError("storage", f"cannot create a sweep folder in {root}: {err.strerror or err}") from None
        return sweep_id, root / sweep_id
    raise ConfigError("storage", f"{MAX_CLAIMS} sweeps named {name!r} started in the same second in {root}; "
                                 "wait a second or use another name")


class Manifest:
    """A sweep's manifest file; ``data`` is its JSON content, :meth:`save` writes it atomically."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path, self.data = Path(path).expanduser().resolve(), data  # absolute: see find

    @classmethod
    def new(cls, sweep_dir: Path, *, sweep_id: str, spec: dict[str, Any], tracking_uri: str, experiment: str,
            parent_tags: dict[str, str]) -> "Manifest":
        data = {"version": VERSION, "sweep_id": sweep_id, "status": "running", "spec": spec,
                "tracking_uri": tracking_uri, "experiment": experiment, "parent_run_id": None,
                "parent_tags": parent_tags, "phases": {}, "top_k": None}
        return cls(Path(sweep_dir) / MANIFEST, data)

    @classmethod
    def find(cls, sweep: str, storage: str | None = None) -> "Manifest":
        """The manifest of ``sweep``: a sweep folder (relative or absolute), its manifest file, or a sweep id
        under ``storage`` (default: raysweep_results). Its path is absolute, and so is every path derived
        from it (``sweep_dir``, ``storage_root``): Ray's ``Tuner.can_restore`` takes a relative path for a
        URI and fails with ``URI has empty scheme``."""
        given = Path(sweep).expanduser()
        candidates = [given.parent if given.name == MANIFEST else given]
        if sweep and "/" not in sweep and os.sep not in sweep and (not os.altsep or os.altsep not in sweep):
            candidates.append(Path(storage or DEFAULT_STORAGE).expanduser() / sweep)
        for folder in candidates:
            if (folder / MANIFEST).is_file():
                return cls.load(folder / MANIFEST)
        where = " or ".join(str(c.absolute()) for c in dict.fromkeys(candidates))
        raise ConfigError("sweep", f"no {MANIFEST} in {where}; give the sweep folder under the storage path "
                                   "(or its id with --storage)")

    @classmethod
    def load(cls, path: Path) -> "Manifest":
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ConfigError("sweep", f"cannot read {path}: {err}") from None
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise ConfigError("sweep", f"{path} is not a raysweep manifest (version {VERSION})")
        return cls(Path(path), data)

    @property
    def sweep_dir(self) -> Path:
        return self.path.parent

    @property
    def ended(self) -> bool:
        """Whether the sweep already ran to its end (finished, or failed with every phase done): a resume
        can answer from the manifest alone, without starting Ray."""
        phases = self.data["phases"].values()
        return self.data["status"] in ("finished", "failed") and all(p["status"] == "finished" for p in phases)

    def totals(self) -> tuple[int, int, int]:
        """(trials, errors, non-finite stops) over the phases recorded so far."""
        recorded = self.data["phases"].values()
        return tuple(sum(p[k] or 0 for p in recorded) for k in ("num_trials", "num_errors", "num_non_finite"))

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
