import os
import sys

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import platform  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# platform.uname().processor runs `uname -p` once per interpreter and caches it; MLflow's first import calls it. Run it
# here, so the fast-tier guard below never takes a library's one-off probe for a process a test starts.
platform.uname().processor  # noqa: B018 (the lazy field runs the probe)

torch.set_num_threads(1)


# ---- the test tiers (docs/architecture.md): an unmarked test is in the fast tier ---------------------------
TIER_MARKERS = ("process", "ray", "server", "slow")


@pytest.fixture(autouse=True)
def _fast_tier_guard(request, monkeypatch):
    """An unmarked test (the fast tier, `make test-fast`) may not start a process or Ray: it fails naming the
    marker it needs, so the tiers stay what they say."""
    if any(request.node.get_closest_marker(m) for m in TIER_MARKERS):
        yield
        return
    import multiprocessing.process
    import subprocess

    def refuse(what: str, marker: str):
        def refused(*args, **kwargs):
            raise AssertionError(f"this test {what} but is in the fast tier: mark it @pytest.mark.{marker}")
        return refused

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("starts a subprocess", "process"))
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refuse("starts a process", "process"))
    if "ray" in sys.modules:
        monkeypatch.setattr(sys.modules["ray"], "init", refuse("starts Ray", "ray"))
    yield


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# ---- processes and servers (the kit is tests/_procs.py) -------------------------------------------------
import shutil  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from _procs import Tracked, postgres_bin, start_postgres  # noqa: E402


@pytest.fixture
def procs():
    """Processes this test starts (`procs.start`), every one and its descendants ended afterwards."""
    tracked = Tracked()
    yield tracked
    tracked.stop()


@pytest.fixture
def ray_tmp(monkeypatch):
    """A short private RAY_TMPDIR (Ray's socket paths must stay under 107 characters), removed after."""
    path = Path(tempfile.mkdtemp(prefix="rs-", dir="/tmp"))
    monkeypatch.setenv("RAY_TMPDIR", str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_uri():
    """A PostgreSQL server of our own on 127.0.0.1, stopped at the end of the module. Fails in CI without
    PostgreSQL (`.ci/run` installs it); elsewhere a machine without it skips."""
    bindir = postgres_bin()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed in CI: .ci/run must apt-get install postgresql")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql); CI runs this case")
    tracked, data = Tracked(), Path(tempfile.mkdtemp(prefix="raysweep-pg-"))
    try:
        yield start_postgres(tracked, bindir, data)
    finally:
        tracked.stop()
        shutil.rmtree(data, ignore_errors=True)
