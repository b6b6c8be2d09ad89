"""The test kit for processes and servers: start them in their own process group, wait on conditions with
a bound, and end only what a test started (by pid, with the start time checked so a reused pid is never
hit). Fixtures built on it are in conftest.py."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from raysweep.reporting.ui import alive, descendants


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


class Tracked:
    """Processes a test started: their groups and every descendant seen, all ended by :meth:`stop`."""

    def __init__(self) -> None:
        self.groups: list[subprocess.Popen] = []
        self.seen: dict[int, int] = {}

    def start(self, cmd: list[str], env: dict, cwd: Path, log: Path, **popen) -> subprocess.Popen:
        """``cmd`` in a new process group, output appended to ``log``."""
        out = open(log, "ab")
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                **popen)
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
            if alive(pid, start):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def kill_leftovers(self) -> None:
        """SIGKILL recorded descendants still alive (same pid and start time), e.g. Ray's agents."""
        for pid, start in list(self.seen.items()):
            if alive(pid, start):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        deadline = time.time() + 10
        while time.time() < deadline and any(alive(p, s) for p, s in self.seen.items()):
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


def start_mlflow_server(procs: Tracked, root: Path, backend: str, log: Path, port: int | None = None,
                        timeout: float = 120) -> tuple[str, subprocess.Popen]:
    """`mlflow server` on 127.0.0.1 (artifacts proxied into ``root/artifacts``), healthy: (URL, process)."""
    port = port or free_port()
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend, "--artifacts-destination",
           str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    proc = procs.start(cmd, env, root, log)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: http_ok(f"{url}/health"), "the MLflow server", timeout, proc, log)
    return url, proc


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def start_postgres(procs: Tracked, bindir: Path, data: Path) -> str:
    """A PostgreSQL server of our own on 127.0.0.1 with a database `mlflow` (as user postgres when root)."""
    as_root = os.geteuid() == 0
    user = {"user": "postgres", "group": "postgres"} if as_root else {}
    if as_root:
        shutil.chown(data, "postgres", "postgres")
    subprocess.run([bindir / "initdb", "-D", data / "db", "-A", "trust", "-U", "raysweep", "--no-sync"],
                   check=True, capture_output=True, **user)
    port = free_port()
    log = data / "server.log"
    proc = procs.start([str(bindir / "postgres"), "-D", str(data / "db"), "-h", "127.0.0.1", "-p", str(port),
                        "-k", str(data), "-c", "fsync=off"], dict(os.environ), data, log, **user)
    ready = [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)]
    wait_for(lambda: subprocess.run(ready, capture_output=True).returncode == 0, "postgres", 60, proc, log)
    subprocess.run([bindir / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "raysweep", "mlflow"],
                   check=True, capture_output=True)
    return f"postgresql://raysweep@127.0.0.1:{port}/mlflow"
