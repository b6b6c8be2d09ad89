"""Helpers for the fault-tolerance and cluster tests: a fault-injecting plugin, and process bookkeeping
that ends only what a test started (by pid, with the start time checked so a reused pid is never hit)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import yaml

# A spec plugin (see docs/cluster.md): registered methods that misbehave on purpose. FAULT_DIR holds
# their marker and log files; every executed epoch is logged as "tag epoch".
PLUGIN = '''
import os
import time
from pathlib import Path

from trainables.methods import register
from trainables.methods.base import Method
from trainables.params import Param


def _log(tag, epoch):
    with open(Path(os.environ["FAULT_DIR"]) / "epochs.txt", "a") as f:
        f.write(f"{tag} {epoch}\\n")


@register
class Slow(Method):
    name = "slow"
    description = "CE that sleeps `sleep` seconds per epoch and logs each epoch it runs"
    params = {"tag": Param(0, (int,), low=0), "sleep": Param(0.0, (float,), low=0.0)}

    def on_epoch_start(self, epoch):
        _log(self.hparams["tag"], epoch + 1)
        time.sleep(self.hparams["sleep"])


@register
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


@register
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- processes ---------------------------------------------------------------------------------------
def _start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def descendants(pid: int) -> dict[int, int]:
    """pid -> start time of every living descendant of ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            start = _start_time(child)
            if start is not None and child not in out:
                out[child] = start
                todo.append(child)
    return out


class Tracked:
    """Processes a test started: their groups and every descendant seen, all ended by :meth:`stop`."""

    def __init__(self) -> None:
        self.groups: list[subprocess.Popen] = []
        self.seen: dict[int, int] = {}

    def start(self, cmd: list[str], env: dict, cwd: Path, log: Path) -> subprocess.Popen:
        out = open(log, "ab")
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        self.groups.append(proc)
        return proc

    def remember(self) -> None:
        """Record the current descendants of every started process (call before a kill)."""
        for proc in self.groups:
            self.seen.update(descendants(proc.pid))

    def kill_group(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        self.remember()
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)

    def kill_tree(self, proc: subprocess.Popen) -> None:
        """SIGKILL one started process group and every descendant it had (and nothing else)."""
        tree = descendants(proc.pid)
        self.kill_group(proc)
        for pid, start in tree.items():
            if _start_time(pid) == start:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def kill_leftovers(self) -> None:
        """SIGKILL recorded descendants still alive (same pid and start time), e.g. Ray's agents."""
        for pid, start in list(self.seen.items()):
            if _start_time(pid) == start:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        deadline = time.time() + 10
        while time.time() < deadline and any(_start_time(p) == s for p, s in self.seen.items()):
            time.sleep(0.2)

    def stop(self) -> None:
        self.remember()
        for proc in self.groups:
            self.kill_group(proc, signal.SIGTERM)
        self.kill_leftovers()


def wait_for(check, what: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None):
    """Poll ``check()`` until it returns something truthy; fail with the log's tail on timeout or exit."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) before {what}:\n{_tail(log)}")
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}:\n{_tail(log)}")


def _tail(log: Path | None) -> str:
    return log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
