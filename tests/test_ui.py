"""`raysweep ui`'s server never outlives it (issue 15, item 12): a real `mlflow ui` started through
raysweep.reporting.ui.serve_ui in a subprocess, then that subprocess signalled; afterwards no process of the server's
tree is alive and its port is closed. Waits are bounded and on conditions."""

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.request

import pytest
from mlflow import MlflowClient

from raysweep.reporting.ui import alive, descendants, group_members, runs_url

from _procs import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.server]


def test_runs_url_is_the_training_runs_hash_route():
    assert runs_url("http://127.0.0.1:5000", "7") == \
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
    assert runs_url("http://127.0.0.1:5000/", None) == "http://127.0.0.1:5000/"
    assert runs_url("http://h:1", "7", "raysweep") == \
        "http://h:1/#/experiments/7/runs?viewStateShareKey=raysweep&workflowType=machine_learning"


def test_the_route_is_in_the_installed_mlflow_ui():
    from pathlib import Path

    import mlflow

    bundle = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    text = "".join(p.read_text(errors="ignore") for p in bundle.glob("main.*.js"))
    assert '"/experiments/:experimentId/runs"' in text and "createHashRouter" in text


def _serve(tmp_path, jobs: bool, wait_url: bool = True):
    """``serve_ui`` in a subprocess of its own session; (process, log path, printed URL or None)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = MlflowClient(uri).create_experiment("uitest")
    log = tmp_path / "ui.log"
    code = textwrap.dedent(f"""
        import sys
        from raysweep.reporting.ui import serve_ui
        sys.exit(serve_ui({uri!r}, "uitest", port=5400, jobs={jobs}, echo=lambda s: print(s, flush=True)))
    """)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=tmp_path)

    def printed():
        found = re.search(r"Open (http://127\.0\.0\.1:\d+/#/experiments/\d+/runs)", log.read_text())
        return found and found.group(1)

    if not wait_url:
        return proc, log, None
    url = wait_for(printed, "the runs URL", 400, proc, log)
    assert url.endswith(f"/#/experiments/{exp}/runs")
    return proc, log, url


def _port(url: str) -> int:
    return int(re.search(r":(\d+)/", url).group(1))


def _closed(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except OSError:
        return True


def _alive(tree: dict[int, int]) -> list[int]:
    return [pid for pid, start in tree.items() if alive(pid, start)]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _cleanup(proc, tree):
    """Whatever a failing test leaves: SIGKILL by pid and start time, nothing else."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)
    for pid in _alive(tree):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("sig, jobs", [(signal.SIGTERM, True), (signal.SIGINT, False), (signal.SIGHUP, False)])
def test_a_stop_signal_stops_the_whole_server(tmp_path, sig, jobs):
    proc, log, url = _serve(tmp_path, jobs)
    tree = {}
    try:
        with urllib.request.urlopen(url.split("#")[0], timeout=30) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
        if jobs:  # the tree the issue saw orphaned: job runner and huey consumers too
            wait_for(lambda: any("huey_consumer" in _cmdline(p) for p in descendants(proc.pid)), "huey consumers",
                     120, proc, log)
        tree = descendants(proc.pid)
        leader = min(tree, key=tree.get)  # the earliest started
        assert len(tree) >= 2 and os.getpgid(leader) == leader != os.getpgid(proc.pid)  # its own group
        os.kill(proc.pid, sig)
        assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
        assert _alive(tree) == [] and group_members(leader) == []
        assert _closed(_port(url))
    finally:
        _cleanup(proc, tree)


def test_a_stop_signal_while_the_server_starts_stops_it_too(tmp_path):
    proc, log, _ = _serve(tmp_path, jobs=False, wait_url=False)
    tree = {}
    try:
        wait_for(lambda: "starting on" in log.read_text(), "the server to be started", 120, proc, log)
        tree = descendants(proc.pid)
        assert tree  # the server exists (it may or may not answer yet)
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
        assert _alive(tree) == []
    finally:
        _cleanup(proc, tree)


def test_a_server_that_dies_takes_its_children_with_it(tmp_path):
    proc, log, url = _serve(tmp_path, jobs=False)
    tree = {}
    try:
        tree = descendants(proc.pid)
        leader = min(tree, key=tree.get)  # the earliest started
        os.kill(leader, signal.SIGKILL)  # the MLflow CLI itself, leaving uvicorn's workers behind
        assert proc.wait(timeout=120) == 1, log.read_text()[-3000:]
        assert _alive(tree) == [] and group_members(leader) == []
        assert _closed(_port(url))
    finally:
        _cleanup(proc, tree)


def test_a_killed_raysweep_ui_does_not_orphan_its_server(tmp_path):
    """SIGKILL cannot be handled; the server's parent-death signal stops it anyway (Linux)."""
    proc, log, url = _serve(tmp_path, jobs=False)
    tree = {}
    try:
        tree = descendants(proc.pid)
        proc.kill()
        proc.wait(timeout=30)
        wait_for(lambda: not _alive(tree), "the orphaned server to stop", 120)
        assert _closed(_port(url))
    finally:
        _cleanup(proc, tree)
