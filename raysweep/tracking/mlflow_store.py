"""The MLflow store as the driver sees it: where it is, batched writes within MLflow's limits, and outages.

Every call that can reach the store goes through :meth:`SweepRun.call`, a circuit breaker: a failure
prints one warning, and for ``retry_after_s`` seconds further calls fail at once instead of waiting on a
dead server, so tracking never stalls or ends a sweep. What the sweep logs per trial is
:mod:`raysweep.tracking.trial_logger`'s job; the tag names are in :mod:`analysis.mlflow_tags`.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

from analysis import mlflow_tags as tags
from raysweep.paths import contained

if TYPE_CHECKING:  # mlflow is imported where a store is used (about 3 s): by then Ray is starting beside it
    from mlflow import MlflowClient
    from mlflow.entities import Metric

MAX_BATCH_PARAMS = 100  # params or tags per log_batch request
MAX_BATCH_METRICS = 1000
MAX_PARAM_LENGTH = 500  # longer values are shortened in params; the full config is a JSON artifact
DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"


def default_tracking_uri(directory: str | Path = ".") -> str:
    return f"sqlite:///{(Path(directory) / DEFAULT_DB).resolve()}"


def resolve_tracking_uri(uri: str | None) -> str:
    """The spec's ``tracking.uri``, MLFLOW_TRACKING_URI, or the sqlite file in the working directory."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def limit_http_retries() -> None:
    """Short timeouts and few retries for a remote store, for this (driver) process only.

    MLflow's defaults (120 s timeout, 7 retries with exponential back-off) would stall a sweep for many
    minutes per call while a tracking server is down. The user's own settings win.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")


def comparison_view(columns: Sequence[str] | None = None, order_by: str | None = None, ascending: bool = False,
                    charts: list[dict] | None = None, sections: list[dict] | None = None) -> str:
    """The runs-table state of raysweep's saved view: sweeps' parents and their summary runs (trials filtered
    out), grouped by role with both groups open, every run shown, charts per run (not per group).

    ``columns`` (MLflow's ``params.`k``` / ``metrics.`m``` keys) replace the default column set, in that order,
    ``order_by`` sorts the table; ``charts`` and ``sections`` set the chart tab (MLflow 3.17's card and section
    shapes)."""
    role = tags.ROLE
    state: dict[str, Any] = {
        "searchFilter": f"tags.`{role}` != '{tags.TRIAL}'",
        "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": role}]},
        "groupsExpanded": {f"tag.{role}.{tags.SUMMARY}": True, f"tag.{role}.{tags.SWEEP}": True},
        "useGroupedValuesInCharts": False, "runsHiddenMode": "SHOW_ALL",
    }
    if columns is not None:  # shown in this order after the run name, which gets room for a configuration's label
        name = "attributes.`Run Name`"
        widths = {name: 250} | {c: 100 if c.startswith("metrics.") else 90 for c in columns}  # first screen
        state.update(selectedColumns=list(columns), columnOrder=[name] + list(columns), columnWidths=widths)
    if order_by is not None:
        state.update(orderByKey=order_by, orderByAsc=ascending)
    if charts is not None:
        state.update(compareRunCharts=charts, compareRunSections=sections or [], isAccordionReordered=True)
    return json.dumps(state)


def experiment_tags() -> dict[str, str]:
    """What raysweep's experiments carry: the training-runs kind (MLflow 3's UI opens its runs view, not the
    GenAI overview) and the saved comparison view of the runs table."""
    return {tags.EXPERIMENT_KIND: tags.TRAINING_RUNS_KIND,
            tags.SHARED_VIEW_PREFIX + tags.COMPARISON_VIEW: comparison_view()}


def get_or_create_experiment(client: MlflowClient, name: str, tracking_uri: str) -> str:
    """The experiment's id, with :func:`experiment_tags` (added to an older experiment found without them).

    A new experiment on the default sqlite store keeps its artifacts in ./mlartifacts/<name>.
    """
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        view = tags.SHARED_VIEW_PREFIX + tags.COMPARISON_VIEW
        for key, value in experiment_tags().items():
            if existing.tags.get(key) != value and not (key == view and key in existing.tags):  # keep a sweep's view
                client.set_experiment_tag(existing.experiment_id, key, value)
        return existing.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:///"):
        root = Path(tracking_uri[len("sqlite:///"):]).parent / DEFAULT_ARTIFACTS
        location = contained(root, root / name, "tracking.experiment").as_uri()
    return client.create_experiment(name, artifact_location=location, tags=experiment_tags())


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> dotted keys (``{"method": {"gamma": 1}}`` -> ``{"method.gamma": 1}``)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    entries = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
    for chunk in _chunks(entries, MAX_BATCH_PARAMS):
        client.log_batch(run_id, params=chunk)


def log_tags(client: MlflowClient, run_id: str, values: Mapping[str, Any]) -> None:
    from mlflow.entities import RunTag

    entries = [RunTag(k, str(v)) for k, v in values.items()]
    for chunk in _chunks(entries, MAX_BATCH_PARAMS):
        client.log_batch(run_id, tags=chunk)


def epoch_batches(epochs: Sequence[tuple[int, Mapping[str, float], int]],
                  limit: int = MAX_BATCH_METRICS) -> Iterator[tuple[list[int], list[Metric]]]:
    """(epochs, metrics) batches of whole epochs, each at most ``limit`` metrics, in order; an epoch with more
    metrics than the limit is a batch of its own, sent in chunks by :func:`log_epochs`.

    One ``log_batch`` per epoch cost as much again as the insert (MLflow reads and updates the run's latest
    metrics per call), so a trial's waiting epochs go together."""
    from mlflow.entities import Metric

    batch_epochs: list[int] = []
    batch: list[Metric] = []
    for step, metrics, timestamp_ms in epochs:
        entries = [Metric(k, float(v), timestamp_ms, step) for k, v in metrics.items()]
        if batch and len(batch) + len(entries) > limit:
            yield batch_epochs, batch
            batch_epochs, batch = [], []
        batch_epochs.append(step)
        batch.extend(entries)
    if batch_epochs:
        yield batch_epochs, batch


def log_epochs(client: MlflowClient, run_id: str, metrics: list[Metric]) -> None:
    """One batch of :func:`epoch_batches` (chunked when a single epoch exceeds MLflow's limit)."""
    for chunk in _chunks(metrics, MAX_BATCH_METRICS):
        client.log_batch(run_id, metrics=chunk)


STORE_CREATION_WAIT_S = 60.0


def open_client(tracking_uri: str, wait_s: float = STORE_CREATION_WAIT_S) -> MlflowClient:
    """A client of ``tracking_uri`` whose store exists (created now if need be).

    Two processes that open one new SQLite file at once race on MLflow's schema migration: the loser failed
    with "table ... already exists" and ran its whole sweep untracked, and a migration cut short can leave
    alembic's temporary tables behind for good. So a SQLite store is opened holding an exclusive ``flock``
    on its database file (SQLite's own locks are fcntl byte ranges, which flock does not touch): the first
    process migrates the schema, the others wait for it (at most ``wait_s`` seconds) and find it done.
    """
    from raysweep.tracking.store_check import sqlite_path, uri_scheme

    path = sqlite_path(tracking_uri) if uri_scheme(tracking_uri) == "sqlite" else None
    if path is None:
        return _opened(tracking_uri)
    deadline = time.monotonic() + wait_s
    with open(path, "ab") as db:  # creates the (empty) file SQLite would create
        while True:
            try:
                fcntl.flock(db, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{path} stayed locked by another process creating it for {wait_s:g} s"
                                       ) from None
                time.sleep(0.1)  # another process is creating the store's schema
        try:
            return _opened(tracking_uri)
        finally:
            fcntl.flock(db, fcntl.LOCK_UN)


def _opened(tracking_uri: str) -> MlflowClient:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)  # builds the store (and migrates a new schema) here
    client.search_experiments(max_results=1)
    return client


def open_in_background(tracking_uri: str) -> threading.Thread:
    """Import MLflow and open an existing store in a thread, so that it happens while Ray starts rather than
    before; join it before the first use. A new SQLite store is not created here: nothing may exist before
    the cluster checks have passed. A failure is left to the first
    real use, which reports it (the store is cached by URI, so a success makes that use immediate)."""
    from raysweep.tracking.store_check import sqlite_path, uri_scheme

    path = sqlite_path(tracking_uri) if uri_scheme(tracking_uri) == "sqlite" else None

    def warm() -> None:
        try:
            if path is not None and not path.exists():
                # A new store is created only once the cluster checks passed ("bad input starts nothing":
                # a GPU demand no node meets is known only once Ray is up); MLflow's import is the bulk of it.
                import mlflow  # noqa: F401
                from mlflow.store.tracking import sqlalchemy_store  # noqa: F401
                return
            open_client(tracking_uri)
        except Exception:  # noqa: BLE001 - SweepRun's circuit breaker reports it on first use
            pass

    thread = threading.Thread(target=warm, name="raysweep-open-store", daemon=True)
    thread.start()
    return thread


class TrackingUnavailable(RuntimeError):
    """The MLflow store did not answer (or is in its back-off period after a failure)."""


class SweepRun:
    """The parent MLflow run of one sweep, the lookup of its trial children, and outage handling.

    The parent run is created on first use if it does not exist yet (found again by its sweep id tag, so
    it is never duplicated); texts for it and its final status wait in memory until the store answers.
    Pickles as its settings only: a process that unpickles it looks the store up afresh.
    """

    retry_after_s = 20.0

    def __init__(self, tracking_uri: str, experiment: str, sweep_id: str, parent_tags: Mapping[str, Any] | None = None,
                 run_id: str | None = None, on_parent: Callable[[str], None] | None = None) -> None:
        self.tracking_uri, self.experiment, self.sweep_id = tracking_uri, experiment, sweep_id
        self.tags = {k: str(v) for k, v in (parent_tags or {}).items()}
        self.run_id = run_id
        # Called with the parent run id once it is created or found (the runner records it in the manifest:
        # the store may answer only after an outage or a concurrent first write).
        self.on_parent = on_parent
        self._reset()

    def _reset(self) -> None:
        self._client: MlflowClient | None = None
        self.experiment_id: str | None = None
        self._down_since: float | None = None
        self._warned = False
        self.failures = 0
        self._pending_texts: list[tuple[str, str]] = []
        self._pending_status: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("tracking_uri", "experiment", "sweep_id", "tags", "run_id")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.on_parent = None  # a callback of the process that pickled it
        self._reset()

    @classmethod
    def create(cls, tracking_uri: str, experiment: str, sweep_id: str, parent_tags: Mapping[str, Any]) -> SweepRun:
        """Create the parent run now; an unreachable store raises (see :meth:`open` for the tolerant way)."""
        sweep = cls(tracking_uri, experiment, sweep_id, parent_tags)
        sweep._ensure_parent()
        return sweep

    @classmethod
    def open(cls, tracking_uri: str, experiment: str, sweep_id: str, parent_tags: Mapping[str, Any],
             run_id: str | None = None, on_parent: Callable[[str], None] | None = None) -> SweepRun:
        """The parent run (created or found) if the store answers; otherwise one to create later."""
        sweep = cls(tracking_uri, experiment, sweep_id, parent_tags, run_id, on_parent)
        try:
            sweep.parent()
        except TrackingUnavailable:
            pass
        return sweep

    # ---- the store, guarded ----------------------------------------------------------------------
    @property
    def client(self) -> MlflowClient:
        """The store's client; creating it can fail too (a sqlite store migrates its schema on first use)."""
        if self._client is None:
            self._client = self.call(open_client, self.tracking_uri)
        return self._client

    @property
    def down(self) -> bool:
        """True while the store failed within the last ``retry_after_s`` seconds."""
        return self._down_since is not None and time.monotonic() - self._down_since < self.retry_after_s

    def call(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)``; any failure (or a recent one) raises TrackingUnavailable, warned once."""
        if self.down:
            raise TrackingUnavailable(self.tracking_uri)
        try:
            out = fn(*args, **kwargs)
        except Exception as err:  # connection refused, timeouts, a 5xx: tracking must never end the sweep
            self.failures += 1
            self._down_since = time.monotonic()
            if not self._warned:
                self._warned = True
                first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
                print(f"warning: MLflow at {self.tracking_uri} failed ({first}); the sweep goes on, results stay "
                      f"in Ray's storage and logging is retried (or run: raysweep sync)", file=sys.stderr, flush=True)
            raise TrackingUnavailable(self.tracking_uri) from err
        if self._down_since is not None:
            self._down_since = None
            if self._warned:
                print(f"notice: MLflow at {self.tracking_uri} answers again; catching up", file=sys.stderr, flush=True)
            self._warned = False
        return out

    def parent(self) -> str:
        """The parent run id, creating the run (and sending pending texts/status) once the store answers."""
        if self.run_id is None or self.experiment_id is None:
            self.call(self._ensure_parent)
        while self._pending_texts:
            text, name = self._pending_texts[0]
            self.call(self.client.log_text, self.run_id, text, name)
            self._pending_texts.pop(0)
        if self._pending_status:
            self.call(self.client.set_terminated, self.run_id, self._pending_status)
            self._pending_status = None
        return self.run_id

    def _ensure_parent(self) -> None:
        self.experiment_id = get_or_create_experiment(self.client, self.experiment, self.tracking_uri)
        if self.run_id is None:
            found = self.client.search_runs([self.experiment_id], tags.sweep_filter(self.sweep_id), max_results=1)
            if found:
                self.run_id = found[0].info.run_id
            else:
                run = self.client.create_run(self.experiment_id, run_name=self.sweep_id,
                                             tags={tags.ROLE: tags.SWEEP, tags.SWEEP_ID: self.sweep_id, **self.tags})
                self.run_id = run.info.run_id
            if self.on_parent is not None:
                self.on_parent(self.run_id)

    def log_text(self, text: str, name: str) -> None:
        """Log a text artifact on the parent run now, or as soon as the store answers."""
        self._pending_texts.append((text, name))
        try:
            self.parent()
        except TrackingUnavailable:
            pass

    def child_runs(self) -> dict[str, tuple[str, str]]:
        """trial_key -> (run id, status) of the trial runs already under this parent."""
        parent = self.parent()
        runs = self.call(self.client.search_runs, [self.experiment_id], tags.children_filter(parent, tags.TRIAL),
                         max_results=50000)
        return {r.data.tags[tags.TRIAL_KEY]: (r.info.run_id, r.info.status) for r in runs}

    def reopen(self) -> None:
        """Mark the parent RUNNING again (a resumed sweep that was interrupted); best effort: finish() ends it."""
        try:
            self.call(self.client.update_run, self.parent(), "RUNNING")
        except TrackingUnavailable:
            pass

    def finish(self, status: str = "FINISHED") -> bool:
        """End the parent run; False if the store is unreachable (it is ended when it answers again)."""
        self._pending_status = status
        try:
            self.parent()
            return True
        except TrackingUnavailable:
            return False
