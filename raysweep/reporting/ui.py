"""``raysweep ui``: an MLflow UI server for a local store, on 127.0.0.1, that never outlives the command.

``mlflow ui`` is a tree of processes (the CLI, uvicorn and its workers, the job runner and its huey
consumers). Run as a plain child, a SIGTERM to ``raysweep ui`` left that whole tree running with parent 1,
still answering on the port. Here the server gets its own process group, and the group (plus any
descendant that left it) is stopped on SIGTERM, SIGINT and SIGHUP of this process, when the server exits
by itself, and, on Linux, also when this process is killed outright (the server's parent-death signal).

The printed URL opens the sweep's experiment on MLflow 3.17's training-runs view (the UI's hash route
``#/experiments/<id>/runs``) rather than the server root.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import webbrowser
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from analysis import mlflow_tags as tags
from trainables.params import ConfigError

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
READY_TIMEOUT_S = 300.0  # mlflow ui took about 70 s to answer on a loaded 2-core machine
STOP_TIMEOUT_S = 30.0  # SIGTERM to the whole group, then SIGKILL for what is left
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def free_port(host: str, start: int, tries: int = 100) -> int:
    """The first port from ``start`` that can be bound on ``host``; a ConfigError naming ``--port`` if none."""
    for port in range(start, start + tries):
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise ConfigError("--port", f"no free port in {start}..{start + tries - 1} on {host}")


def runs_url(base: str, experiment_id: str | None, view: str | None = None) -> str:
    """The UI's training-runs view of an experiment (MLflow 3.17's hash route), opened in the saved view
    ``view`` when given, or the root without an experiment."""
    base = base.rstrip("/")
    if not experiment_id:
        return f"{base}/"
    # workflowType: MLflow 3.17's sidebar defaults to GenAI whatever the experiment's kind; this opens it on
    # "Model training", where the runs view is.
    query = (f"viewStateShareKey={view}&" if view else "") + "workflowType=machine_learning"
    return f"{base}/#/experiments/{experiment_id}/runs?{query}"


def experiment_link(tracking_uri: str, name: str | None) -> tuple[str | None, str | None]:
    """(id of experiment ``name``, its raysweep comparison view if it has one); (None, None) when there is
    no name, no such experiment, or the store cannot be read."""
    if not name:
        return None, None
    from mlflow import MlflowClient

    try:
        found = MlflowClient(tracking_uri).get_experiment_by_name(name)
    except Exception:  # the UI is still useful without the deep link
        return None, None
    if found is None:
        return None, None
    has_view = tags.SHARED_VIEW_PREFIX + tags.COMPARISON_VIEW in found.tags
    return found.experiment_id, (tags.COMPARISON_VIEW if has_view else None)


# ---- processes -----------------------------------------------------------------------------------------
def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, parent pid, process group, start time) of a process, from /proc; None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1]), int(fields[2]), int(fields[19])


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def group_members(pgid: int) -> list[int]:
    """Living (not zombie) processes of process group ``pgid``."""
    if not Path("/proc").is_dir():  # no /proc: ask the kernel whether the group has any process left
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    return [pid for pid in _pids() if (st := _stat(pid)) is not None and st[2] == pgid and st[0] != "Z"]


def descendants(pid: int) -> dict[int, int]:
    """pid -> start time of every living descendant of ``pid`` (whatever its process group)."""
    if not Path("/proc").is_dir():
        return {}
    children: dict[int, list[int]] = {}
    stats = {p: st for p in _pids() if (st := _stat(p)) is not None}
    for child, st in stats.items():
        children.setdefault(st[1], []).append(child)
    out, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out and stats[child][0] != "Z":
                out[child] = stats[child][3]
                todo.append(child)
    return out


def alive(pid: int, start: int) -> bool:
    """Whether process ``pid`` is still the one that started at ``start`` (a reused pid is not) and not a zombie."""
    st = _stat(pid)
    return st is not None and st[3] == start and st[0] != "Z"


def stop_process_group(pgid: int, extra: dict[int, int] | None = None, timeout_s: float = STOP_TIMEOUT_S) -> list[int]:
    """SIGTERM process group ``pgid`` and the processes in ``extra`` (pid -> start time, e.g. descendants that
    left the group); after ``timeout_s`` SIGKILL what is left. Returns the pids that had to be killed."""
    extra = dict(extra or {})

    def signal_all(sig: int) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        for pid, start in extra.items():
            if alive(pid, start):
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass

    def remaining() -> list[int]:
        return group_members(pgid) + [p for p, s in extra.items() if alive(p, s) and p not in group_members(pgid)]

    signal_all(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while remaining() and time.monotonic() < deadline:
        time.sleep(0.1)
    killed = remaining()
    if killed:
        signal_all(signal.SIGKILL)
        deadline = time.monotonic() + 10.0
        while remaining() and time.monotonic() < deadline:
            time.sleep(0.1)
    return killed


def _child_setup() -> None:
    """In the child before exec: take the stop signals again (:func:`serve_ui` blocks them while it starts
    the server), and get SIGTERM when the parent dies (Linux), so even a SIGKILL of ``raysweep ui`` does
    not orphan the server (the MLflow CLI stops its own children on SIGTERM)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            pass


@dataclass
class UiServer:
    """A started MLflow UI: its process (the leader of its own process group) and its base URL."""

    process: subprocess.Popen
    url: str

    @property
    def pgid(self) -> int:
        return self.process.pid

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> bool:
        """Until ``GET /health`` answers 200 (True), the server exits or ``timeout_s`` passes (False)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if self.healthy():
                return True
            time.sleep(0.5)
        return False

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop the whole server (its group and any descendant that left it) and reap its leader."""
        stop_process_group(self.pgid, descendants(self.process.pid), timeout_s)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def start_ui(tracking_uri: str, host: str = "127.0.0.1", port: int = 5000, *, workers: int = 1, jobs: bool = False,
             log: Path | None = None) -> UiServer:
    """Start ``mlflow ui`` for ``tracking_uri`` on ``host`` and the first free port from ``port``.

    One uvicorn worker is plenty for one user. ``jobs=False`` turns off MLflow's job execution (its GenAI
    job runner and seven huey consumer processes, which raysweep's runs do not use) unless the
    environment sets MLFLOW_SERVER_ENABLE_JOB_EXECUTION itself. Output goes to ``log`` (default: inherited).
    """
    port = free_port(host, port)
    env = dict(os.environ)
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if not jobs:
        env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri, "--host", host,
               "--port", str(port), "--workers", str(workers)]
    out = open(log, "ab") if log is not None else None
    try:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT if out else None,
                                   stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_child_setup)
    finally:
        if out is not None:
            out.close()
    shown = f"[{host}]" if ":" in host else host
    return UiServer(process, f"http://{shown}:{port}")


def say(line: str) -> None:
    """Print a line at once: the URL must reach a pipe or a log file while the server runs, not at its exit
    (Python block-buffers stdout that is not a terminal)."""
    print(line, flush=True)


class _Stopped(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def serve_ui(tracking_uri: str, experiment: str | None = None, *, host: str = "127.0.0.1", port: int = 5000,
             open_browser: bool = False, workers: int = 1, jobs: bool = False,
             echo: Callable[[str], None] = say, ready_timeout_s: float = READY_TIMEOUT_S) -> int:
    """Serve the MLflow UI until a stop signal or the server's own exit; the exit code for the CLI.

    Prints the URL of ``experiment``'s runs view once the server answers (the root if the experiment is
    not in the store) and opens it in a browser with ``open_browser``; each line is flushed at once, so the
    URL reaches a pipe or a log file while the server runs, not when it stops. SIGTERM, SIGINT and SIGHUP
    stop the whole server and return 0; a server that exits by itself is cleaned up too and its code
    returned (1 if it never became ready).
    """
    exp_id, view = experiment_link(tracking_uri, experiment)

    def on_signal(signum, frame):
        raise _Stopped(signum)

    main_thread = threading.current_thread() is threading.main_thread()  # only it can install handlers
    previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS} if main_thread else {}
    server = None
    try:
        # A stop signal between starting the server and holding it would orphan it: hold them off meanwhile.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS) if main_thread else None
        try:
            server = start_ui(tracking_uri, host, port, workers=workers, jobs=jobs)
        finally:
            if blocked is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        echo(f"MLflow UI for {tracking_uri} starting on {server.url} (Ctrl-C to stop)")
        if not server.wait_ready(ready_timeout_s):
            code = server.process.poll()
            if code is not None:
                echo(f"raysweep: error: the MLflow UI exited with code {code} before answering on {server.url}")
                return code if code > 0 else 1
            echo(f"warning: the MLflow UI does not answer on {server.url} after {ready_timeout_s:g} s; still waiting")
        url = runs_url(server.url, exp_id, view)
        note = "" if exp_id or not experiment else f" (no experiment {experiment!r} in the store yet)"
        echo(f"Open {url}{note}")
        if open_browser:
            webbrowser.open(url)
        code = server.process.wait()
        return code if code >= 0 else 1  # killed by a signal
    except _Stopped:
        return 0
    finally:
        for sig in previous:  # a second Ctrl-C must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        try:
            if server is not None:
                server.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
