"""Fault injection for the fault-tolerance and cluster tests: a spec plugin of methods that misbehave on
purpose, the work folder it runs in, and the log of epochs it executed. Processes and servers: _procs.py."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import yaml

# A spec plugin (see docs/cluster.md): registered methods that misbehave on purpose. FAULT_DIR holds
# their marker and log files; every executed epoch is logged as "tag epoch".
PLUGIN = '''
import os
import time
from pathlib import Path

from trainables.methods import METHODS
from trainables.methods.base import Method
from trainables.params import Param


def _log(tag, epoch):
    with open(Path(os.environ["FAULT_DIR"]) / "epochs.txt", "a") as f:
        f.write(f"{tag} {epoch}\\n")


@METHODS.add
class Slow(Method):
    name = "slow"
    description = "CE that sleeps `sleep` seconds per epoch and logs each epoch it runs"
    params = {"tag": Param(0, (int,), low=0), "sleep": Param(0.0, (float,), low=0.0)}

    def on_epoch_start(self, epoch):
        _log(self.hparams["tag"], epoch + 1)
        time.sleep(self.hparams["sleep"])


@METHODS.add
class NanAt(Method):
    name = "nan_at"
    description = "CE whose loss turns NaN from epoch `at` (1-based; 0 = never)"
    params = {"at": Param(0, (int,), low=0)}

    def on_epoch_start(self, epoch):
        self.epoch = epoch

    def loss(self, logits, targets, indices):
        loss = super().loss(logits, targets, indices)
        at = self.hparams["at"]
        return loss * float("nan") if at and self.epoch + 1 >= at else loss


@METHODS.add
class FailOnce(Method):
    name = "fail_once"
    description = "CE that raises once, at epoch `at` (1-based), remembered by a marker file"
    params = {"at": Param(2, (int,), low=1)}

    def on_epoch_start(self, epoch):
        _log("fail_once", epoch + 1)
        marker = Path(os.environ["FAULT_DIR"]) / "fail_once-failed"
        if epoch + 1 == self.hparams["at"] and not marker.exists():
            marker.write_text("failed once")
            raise RuntimeError("injected transient failure")
'''

GAUSSIAN = {"name": "gaussian", "imbalance": 10, "samples_per_class": 100}
MLP = {"name": "mlp", "width": 32}


def setup_workdir(root: Path, spec: dict) -> dict[str, str]:
    """Write the plugin and the spec into ``root``; the environment for CLI subprocesses (Ray's local
    workers inherit the driver's environment, so PYTHONPATH reaches them)."""
    (root / "fault_plugin.py").write_text(PLUGIN)
    (root / "spec.yaml").write_text(yaml.safe_dump(spec))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["FAULT_DIR"] = str(root)
    return env


def epoch_log(root: Path) -> list[tuple[str, int]]:
    path = root / "epochs.txt"
    if not path.exists():
        return []
    return [(ln.split()[0], int(ln.split()[1])) for ln in path.read_text().splitlines() if ln.strip()]


def last_epochs(log: list[tuple[str, int]]) -> dict[str, int]:
    """The highest epoch each tagged trial started, from :func:`epoch_log`."""
    out: dict[str, int] = {}
    for tag, epoch in log:
        out[tag] = max(out.get(tag, 0), epoch)
    return out


def finished_and_midway(root: Path, sweep: str, children: Callable[[], list], epochs: int) -> list | None:
    """A condition for ``wait_for`` before killing a driver: the child runs MLflow shows FINISHED, once one is
    and some trial is half-way (an epoch checkpointed, two still to come); None until then.

    The store is touched only once the driver has created it (its parent run id is in sweep ``sweep``'s
    manifest): two processes creating a fresh SQLite store race on its schema migration. Finished is as
    MLflow says (it lags Ray, never leads it); half-way is as the trials' own epoch log says (MLflow's view
    of a running trial lags its training, so a trial it shows half-way may already have finished).
    """
    manifests = list((root / "raysweep_results").glob(f"{sweep}-*/manifest.json"))
    if not manifests or not json.loads(manifests[0].read_text()).get("parent_run_id"):
        return None
    try:
        found = children()
    except Exception:  # the store is being created
        return None
    done = [c for c in found if c.info.status == "FINISHED"]
    midway = [tag for tag, last in last_epochs(epoch_log(root)).items() if 2 <= last <= epochs - 2]
    return done if done and midway else None
