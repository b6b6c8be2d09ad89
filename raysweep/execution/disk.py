"""The storage a sweep writes: an estimate of what its checkpoints take, checked against the free space
before anything starts, and a full disk mid-sweep turned into one line and a resumable sweep.

Each epoch of each trial leaves a checkpoint (``failure.keep_checkpoints`` caps how many stay) of about
two copies of the model's weights (the weights and SGD's momentum) plus small state, and a line of results.
A disk that fills while trials run makes them fail writing checkpoints (``[Errno 28]``) and can cut Ray's
experiment state short; :class:`StorageFull` stops the sweep there without counting those trials as
failed, and ``raysweep resume`` goes on once space is freed (a cut-short experiment state is rebuilt from
the manifest and the trials' folders, see :func:`raysweep.tuner.restore_tuner`).
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Iterable

from raysweep.execution.footprint import BYTES_PER_VALUE, case_weights
from raysweep.spec.schema import Spec
from raysweep.trials import PlannedTrial
from trainables.params import ConfigError

STATE_OVERHEAD = 64 * 2**10  # a checkpoint's optimizer/scheduler/method state and file headers, generously
RESULT_BYTES = 8 * 2**10  # one epoch's line in result.json and progress.csv, with Ray's bookkeeping
MARGIN = 1.5  # Ray's staged copies, experiment-state snapshots and MLflow artifacts beside the checkpoints
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class StorageFull(Exception):
    """The storage filled while the sweep ran; the sweep stops resumable (see the module docstring)."""

    def __init__(self, storage: Path, detail: str, need: int = 0) -> None:
        self.storage, self.detail, self.need = storage, detail, need
        self.sweep_dir: Path | None = None
        super().__init__(detail)

    def message(self) -> str:
        free = free_bytes(self.storage)
        need = f", the sweep needs about {human(self.need)} in all" if self.need else ""
        where = f"raysweep resume {self.sweep_dir}" if self.sweep_dir else "run it again"
        return (f"storage: no space left on the file system of {self.storage} ({human(free)} free{need}); free space, "
                f"then: {where}")


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def free_bytes(path: Path) -> int:
    """Free bytes for an unprivileged writer on ``path``'s file system (its nearest existing folder)."""
    existing = Path(path).expanduser().resolve()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return shutil.disk_usage(existing).free


FULL_BELOW = 2**20  # free bytes under which a file system counts as full (a checkpoint no longer fits)


def storage_is_full(path: Path) -> bool:
    """Whether ``path``'s file system has (nearly) no space left."""
    try:
        return free_bytes(path) < FULL_BELOW
    except OSError:
        return False


def is_no_space(err: BaseException) -> bool:
    """Whether ``err`` (or the text of a trial's error) says the disk or the quota is full."""
    if isinstance(err, OSError) and err.errno in NO_SPACE:
        return True
    text = str(err)
    return "No space left on device" in text or "Errno 28" in text or "Disk quota exceeded" in text


def trials_run(spec: Spec, trials: list[PlannedTrial]) -> list[tuple[PlannedTrial | None, int]]:
    """(a planned trial or None for a sampled one, its epochs) of every trial the sweep may run."""
    if trials:
        runs = [(t, int(t.config["train"]["epochs"])) for t in trials]
    else:  # a sampling mode: num_samples draws of the spec's own dataset and model
        runs = [(None, spec.epochs)] * spec.search.num_samples * (len(spec.seeds) if spec.execution.group == "seeds"
                                                                   else 1)
    if spec.search.two_phase:
        runs += [(None, spec.epochs)] * (spec.search.top_k + bool(spec.search.baseline)) * len(spec.seeds)
    return runs


def estimate_bytes(spec: Spec, trials: list[PlannedTrial]) -> int:
    """What the sweep's checkpoints and results take in its storage, estimated (see the module docstring)."""
    from raysweep.execution.footprint import distinct_cases

    weights: dict[str, int | None] = {}

    def checkpoint(trial: PlannedTrial | None) -> int:
        dataset, model = (trial.config["dataset"], trial.config["model"]) if trial else distinct_cases(spec, [])[0]
        key = repr((sorted(dataset.items()), sorted(model.items())))
        if key not in weights:
            weights[key] = case_weights(dataset, model)
        return 2 * BYTES_PER_VALUE * (weights[key] or 0) + STATE_OVERHEAD

    keep = spec.failure.keep_checkpoints
    total = sum(checkpoint(t) * min(epochs, keep or epochs) + RESULT_BYTES * epochs
                for t, epochs in trials_run(spec, trials))
    return int(total * MARGIN)


def check_free_space(storage: Path, need: int) -> None:
    """A ConfigError naming ``storage`` when its file system has less than ``need`` bytes free."""
    free = free_bytes(storage)
    if free < need:
        raise ConfigError("storage", f"{storage} has {human(free)} free; the sweep's checkpoints and results need "
                                     f"about {human(need)} (free space, use another storage, or keep fewer "
                                     "checkpoints with failure.keep_checkpoints)")


def full_disk_errors(errors: Iterable[BaseException | None]) -> list[str]:
    """The first line of each trial error that says the disk is full."""
    return [(str(e).strip().splitlines() or [""])[0][:200] for e in errors if e is not None and is_no_space(e)]
