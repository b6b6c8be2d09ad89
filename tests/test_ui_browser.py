"""A real browser on what a user opens after a sweep (issue 14): the URL `raysweep ui` prints and the report's
report.html, each loaded by headless Chromium (``--dump-dom`` after a virtual-time budget) and asserted on
the DOM it rendered.

Screenshots: a PNG of each page is kept as a test artifact, in the folder named by env
RAYSWEEP_TEST_ARTIFACTS (default: the test's pytest tmp_path); each test prints the path.

Chromium comes from the distribution's packages (`.ci/run` installs Debian's ``chromium``). Outside CI a
machine without it skips these tests; in CI (env CI set) a missing Chromium fails them.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from _cli import raysweep, raysweep_cmd
from _procs import free_port, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.server]

CHROMIUM = ("chromium", "chromium-browser")
PAGE_TIMEOUT_S = 180  # one page load, Chromium's start and exit included
VIRTUAL_TIME_MS = 20000  # the page's clock; it stands still while a fetch is pending
CHARTS_TIME_MS = 60000  # the chart tab loads its plotting code lazily, chart by chart
SPEC = {
    "name": "uibrowser",
    "dataset": {"name": "gaussian", "num_classes": 4, "imbalance": 1, "samples_per_class": 40,
                "test_per_class": 10, "meta_per_class": 5},
    "model": {"name": "mlp", "width": 16},
    "train": {"epochs": 2, "batch_size": 64},
    "methods": {"ce": {}, "focal": {"gamma": [0.5, 2.0]}},
    "seeds": 2,
    "search": {"mode": "grid", "metric": "val_balanced_acc"},
    "resources": {"cpu": 0.5},
}


# ---- the browser -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chromium() -> str:
    """Chromium's executable; a failure in CI without it, a skip elsewhere."""
    found = next((path for path in map(shutil.which, CHROMIUM) if path), None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is not installed in CI: .ci/run must apt-get install chromium")
        pytest.skip("Chromium is not installed (apt-get install chromium); CI runs these tests")
    return found


@pytest.fixture
def artifacts(tmp_path) -> Path:
    """Where the screenshots go: $RAYSWEEP_TEST_ARTIFACTS, or this test's tmp_path."""
    folder = Path(os.environ.get("RAYSWEEP_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class Page:
    """What the rendered DOM shows: its title, headings, text nodes and tables (rows of cell texts)."""

    title: str = ""
    headings: dict[str, list[str]] = field(default_factory=dict)  # "h1" -> texts
    texts: list[str] = field(default_factory=list)
    tables: list[list[list[str]]] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # alt texts


class _DomReader(HTMLParser):
    """Collects a :class:`Page` from serialized HTML (script and style contents left out)."""

    HEADINGS = ("h1", "h2", "h3")

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self.open: list[str] = []
        self.text: list[str] = []  # the text of the current title, heading or cell
        self.row: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.page.images.append(dict(attrs).get("alt") or "")
            return
        self.open.append(tag)
        if tag in ("title", "th", "td") + self.HEADINGS:
            self.text = []
        elif tag == "table":
            self.page.tables.append([])
        elif tag == "tr":
            self.row = []

    def handle_endtag(self, tag):
        if tag not in self.open:
            return
        while self.open.pop() != tag:
            pass
        joined = " ".join(self.text).strip()
        if tag == "title" and not self.page.title:
            self.page.title = joined
        elif tag in self.HEADINGS:
            self.page.headings.setdefault(tag, []).append(joined)
        elif tag in ("th", "td") and self.row is not None:
            self.row.append(joined)
        elif tag == "tr" and self.row is not None and self.page.tables:
            self.page.tables[-1].append(self.row)
            self.row = None

    def handle_data(self, data):
        if {"script", "style"} & set(self.open):
            return
        if data.strip():
            self.page.texts.append(data.strip())
            self.text.append(data.strip())


def read_page(html: str) -> Page:
    reader = _DomReader()
    reader.feed(html)
    reader.close()
    return reader.page


def load_page(procs, chromium: str, url: str, screenshot: Path, work: Path, budget_ms: int = VIRTUAL_TIME_MS) -> Page:
    """``url`` rendered by headless Chromium: the DOM after the virtual-time budget, and a screenshot.

    Chromium runs in its own process group with a fresh profile (no saved UI state), bounded by
    PAGE_TIMEOUT_S; on a timeout its whole tree is killed."""
    work.mkdir(parents=True, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="chromium-", dir=work)
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}", "--window-size=1600,1200",
           f"--screenshot={screenshot}", "--dump-dom", url]
    dom, log = work / f"{screenshot.stem}.dom.html", work / f"{screenshot.stem}.chromium.log"
    with open(dom, "wb") as out, open(log, "ab") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
    procs.groups.append(proc)  # ended with the test's other processes, whatever happens
    try:
        code = proc.wait(timeout=PAGE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        procs.kill_tree(proc)
        raise AssertionError(f"Chromium did not render {url} in {PAGE_TIMEOUT_S} s:\n{_tail(log)}") from None
    assert code == 0, f"Chromium exited with {code} on {url}:\n{_tail(log)}"
    assert screenshot.is_file() and screenshot.stat().st_size > 0, f"no screenshot of {url}:\n{_tail(log)}"
    return read_page(dom.read_text(errors="replace"))


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


# ---- the sweep -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A finished small sweep run through the CLI (3 configurations x 2 seeds, 2 epochs, sqlite in its
    folder; ce is the baseline), with the names of its runs as MLflow has them."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("uibrowser")
    (root / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    run = raysweep("run", "spec.yaml", cwd=root)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    folder = re.search(r"Compare the configurations:\s+raysweep ui (\S+)", run.stdout)
    assert folder, f"`raysweep run` names no sweep folder to open:\n{run.stdout[-3000:]}"
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(SPEC["name"]).experiment_id
    names: dict[str, list[str]] = {}
    for found in client.search_runs([experiment], max_results=1000):
        names.setdefault(found.data.tags.get("raysweep.role"), []).append(found.info.run_name)
    assert len(names.get("sweep", [])) == 1 and len(names.get("summary", [])) == 3 \
        and len(names.get("trial", [])) == 6, names
    return SimpleNamespace(root=root, folder=folder.group(1), uri=uri, experiment=experiment,
                           parent=names["sweep"][0], summaries=sorted(names["summary"]), trials=names["trial"])


def _group_gone(pgid: int) -> bool:
    from raysweep.reporting.ui import group_members

    return group_members(pgid) == []


def _living(tree: dict[int, int]) -> list[int]:
    """The pids of ``tree`` (pid -> start time) still running: same start time, not a zombie."""
    from raysweep.reporting.ui import alive

    return [pid for pid, start in tree.items() if alive(pid, start)]


def _port_closed(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except OSError:
        return True


def _start_ui(sweep, procs, tmp_path):
    """``raysweep ui`` on the sweep's folder, as a user runs it: (the printed runs URL, the process, port, log)."""
    port = free_port()
    log = tmp_path / "ui.log"
    # As a user runs it, output to a file: the URL must arrive while the server runs (no PYTHONUNBUFFERED).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    ui = procs.start(raysweep_cmd("ui", sweep.folder, "--port", str(port)), env, sweep.root, log)

    def printed():
        found = re.search(r"Open (http://127\.0\.0\.1:(\d+)/#/experiments/(\d+)/runs\S*)", log.read_text())
        return found and found.groups()

    url, shown_port, experiment = wait_for(printed, "the runs URL `raysweep ui` prints", 400, ui, log)
    assert experiment == sweep.experiment and int(shown_port) == port
    return url, ui, port, log


# ---- the tests -------------------------------------------------------------------------------------------
def test_raysweep_ui_opens_the_training_runs_view_with_parent_and_summary_runs(sweep, procs, chromium, artifacts,
                                                                              tmp_path):
    from raysweep.reporting.ui import descendants

    url, ui, port, log = _start_ui(sweep, procs, tmp_path)
    assert "viewStateShareKey=raysweep" in url, f"not the saved comparison view: {url}"

    shot = artifacts / "mlflow_ui_runs_view.png"
    page = load_page(procs, chromium, url, shot, tmp_path / "chromium")
    print(f"screenshot of the MLflow UI ({url}): {shot}")
    where = f"(screenshot: {shot}, DOM: {tmp_path / 'chromium'})"
    # The training-runs view of this experiment, not the GenAI overview MLflow 3 opens by default.
    assert page.title.startswith(f"Runs - Experiment {sweep.experiment} "), (page.title, where)
    headings = page.headings.get("h2", [])
    assert {"Training runs", "Runs"} & set(headings) and "Overview" not in headings, (headings, where)
    # The saved view: trials filtered out, runs grouped by role; the parent and every summary run by name.
    assert "Group by: raysweep.role" in page.texts, where
    missing = [name for name in [sweep.parent] + sweep.summaries if name not in page.texts]
    assert not missing, f"runs not listed: {missing} {where}"
    shown_trials = [name for name in sweep.trials if name in page.texts]
    assert not shown_trials, f"trial runs listed in the comparison view: {shown_trials} {where}"

    # SIGTERM, as `kill` sends it: the command ends with 0 and neither its group nor the server's is left.
    tree = descendants(ui.pid)
    servers = [pid for pid in tree if os.getpgid(pid) == pid]
    assert servers, f"no MLflow server in a process group of its own under `raysweep ui`: {tree}"
    os.kill(ui.pid, signal.SIGTERM)
    assert ui.wait(timeout=120) == 0, _tail(log)
    assert _group_gone(ui.pid) and all(_group_gone(pgid) for pgid in servers)
    assert _living(tree) == []
    assert _port_closed(port)


def test_report_html_renders_its_tables_and_plots(sweep, procs, chromium, artifacts, tmp_path):
    out = sweep.root / "report"
    rep = raysweep("report", SPEC["name"], "--tracking-uri", sweep.uri, "--out", str(out), cwd=sweep.root)
    assert rep.returncode == 0, rep.stdout[-3000:] + rep.stderr[-3000:]

    shot = artifacts / "report.png"
    page = load_page(procs, chromium, (out / "report.html").as_uri(), shot, tmp_path / "chromium")
    print(f"screenshot of report.html ({out / 'report.html'}): {shot}")
    where = f"(screenshot: {shot}, page: {out / 'report.html'})"
    assert page.headings.get("h1") == [f"raysweep report: {sweep.parent}"], (page.headings, where)
    # Every table the report wrote (tables/<name>.html) is on the page, cell for cell, and nothing else is.
    written = [read_page(path.read_text()).tables[0] for path in sorted((out / "tables").glob("*.html"))]
    assert len(written) >= 2, f"the report wrote {len(written)} tables"
    assert sorted(page.tables) == sorted(written), where
    main = read_page((out / "tables" / "main.html").read_text()).tables[0]
    rows = {row[0] for row in main[1:]}
    assert rows == {name.removeprefix("summary ") for name in sweep.summaries}, (rows, where)
    assert all("±" in cell for row in main[1:] for cell in row[1:]), main
    # Every plot is embedded in the page.
    plots = {path.stem for path in (out / "plots").glob("*.png")}
    assert plots and set(page.images) == plots, (page.images, plots, where)


HEADER_CELL = re.compile(r'<div class="ag-header-cell [^>]*aria-colindex="(\d+)" col-id="([^"]+)"[^>]*'
                         r'style="left: (\d+)px; width: (\d+)px;')


def header_cells(dom: str) -> list[tuple[str, int]]:
    """(column id, right edge in px within its viewport) of the runs table's header cells, in the order the grid
    shows them (its aria-colindex; the DOM order is not the visual one)."""
    cells = sorted((int(i), col, int(left) + int(width)) for i, col, left, width in HEADER_CELL.findall(dom))
    return [(col, right) for _, col, right in cells]


def test_the_saved_view_leads_with_the_knobs_the_metric_and_its_band(sweep, procs, chromium, artifacts, tmp_path):
    """What a person sees first in `raysweep ui`: the table's knobs as parameter columns and the table metric (mean,
    std, interval, difference to ce) as metric columns, sorted by it; in the chart tab, first the metric's per-epoch
    mean with its seed band, then its mean and its difference to the baseline (issue 21, item 8)."""
    url, ui, _, log = _start_ui(sweep, procs, tmp_path)
    shot = artifacts / "mlflow_ui_comparison_table.png"
    page = load_page(procs, chromium, url, shot, tmp_path / "chromium")
    print(f"screenshot of the saved view's table ({url}): {shot}")
    where = f"(screenshot: {shot}, DOM: {tmp_path / 'chromium'})"
    assert "Sort: test_acc" in page.texts, where
    assert page.texts.index("Parameters") < page.texts.index("Metrics"), where
    # Left to right after the run name: the knobs and n, then the metric's columns; the knobs and the metric's mean
    # within the first 450 px of the scrolling part (the first screen, even beside MLflow's assistant panel).
    cells = header_cells((tmp_path / "chromium" / f"{shot.stem}.dom.html").read_text(errors="replace"))
    shown = [col for col, _ in cells if col.startswith(("params.", "metrics."))]
    assert shown[:7] == ["params.`method.name`", "params.`method.gamma`", "params.`n_seeds`", "metrics.`test_acc`",
                         "metrics.`test_acc_std`", "metrics.`test_acc_lo`", "metrics.`test_acc_hi`"], (cells, where)
    assert dict(cells)["metrics.`test_acc`"] <= 450, (cells, where)
    for name in sweep.summaries:
        assert name in page.texts, (name, where)

    charts = url + "&compareRunsMode=CHART"
    shot = artifacts / "mlflow_ui_comparison_charts.png"
    page = load_page(procs, chromium, charts, shot, tmp_path / "chromium", CHARTS_TIME_MS)
    print(f"screenshot of the saved view's charts ({charts}): {shot}")
    where = f"(screenshot: {shot}, DOM: {tmp_path / 'chromium'})"
    first = page.texts.index("test_acc (raysweep)")
    assert first < page.texts.index("Model metrics"), ("the metric's section is not first", where)
    titles = [t for t in page.texts[first:page.texts.index("Model metrics")]
              if t in ("curve.test_acc vs curve.test_acc_lo vs curve.test_acc_hi", "test_acc", "test_acc_vs_ce")]
    # (then parallel coordinates, whose axis names test_acc again)
    assert titles[:3] == ["curve.test_acc vs curve.test_acc_lo vs curve.test_acc_hi", "test_acc",
                          "test_acc_vs_ce"], (titles, where)
    assert not any(t.startswith(("n_seeds", "best.n_seeds", "early_stopped")) for t in page.texts[:first]), where
    os.kill(ui.pid, signal.SIGTERM)
    assert ui.wait(timeout=120) == 0, _tail(log)
