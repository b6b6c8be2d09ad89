"""Whether ``tracking.uri`` names an MLflow store that exists and answers, checked before anything starts.

Without this, ``ftp://...`` or ``bogus://...`` ran a whole sweep untracked and exited 0, and
``sqlite:////proc/raysweep.db`` spent two minutes in MLflow's retries. Two checks:

- :func:`check_scheme` (pure, for spec validation): the URI's scheme is one MLflow 3.17.2 has a tracking
  store for: ``sqlite``, ``postgresql``, ``mysql``, ``mssql`` (each with an optional ``+driver``),
  ``http``, ``https``, ``databricks``, a local path or ``file:`` (MLflow 3.17 opens that file store only
  with ``MLFLOW_ALLOW_FILE_STORE=true``); or one an installed MLflow plugin registers (entry point group
  ``mlflow.tracking_store``).
- :func:`check_store` (the preflight, bounded by ``timeout_s``): a sqlite file can be opened or created
  (its folder exists and takes a new file; an existing file is a database), a file store's folder can be
  created, an HTTP(S) server answers ``GET /health``, a database server accepts a connection.

An outage later in the sweep is not this module's business: the sweep goes on and ``raysweep sync``
backfills (see ``raysweep.tracking``).
"""

from __future__ import annotations

import base64
import contextlib
import math
import os
import socket
import sqlite3
import ssl
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from importlib.metadata import entry_points
from pathlib import Path

from trainables.params import ConfigError

FIELD = "tracking.uri"
# MLflow 3.17.2's tracking store registry (mlflow.tracking._tracking_service.utils._register_tracking_stores),
# less the model-registry-only Unity Catalog schemes; a test pins this to the installed MLflow.
FILE_SCHEMES = ("", "file")
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
SCHEMES = (*FILE_SCHEMES, *DATABASE_SCHEMES, "http", "https", "databricks")
DEFAULT_DB_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
# The argument each dialect's usual drivers take for a connect timeout in seconds.
CONNECT_TIMEOUT_ARG = {"postgresql": "connect_timeout", "mysql": "connect_timeout", "mssql": "timeout"}


def plugin_schemes() -> tuple[str, ...]:
    """Schemes that installed MLflow plugins register for tracking stores."""
    return tuple(sorted(ep.name for ep in entry_points(group="mlflow.tracking_store")))


def uri_scheme(uri: str) -> str:
    """The scheme as MLflow dispatches on it: ``postgresql+psycopg`` -> ``postgresql``; a path -> ``""``;
    the bare word ``databricks`` -> ``databricks``."""
    if uri in ("databricks", "databricks-uc", "uc"):
        return uri
    scheme = urllib.parse.urlparse(uri).scheme.lower()
    base = scheme.split("+", 1)[0]
    if base in DATABASE_SCHEMES:
        return base
    if len(scheme) == 1 and scheme.isalpha():  # a Windows drive letter: a local path
        return ""
    return scheme


def file_store_allowed() -> bool:
    """MLflow 3.17 raises on a file store (maintenance mode) unless MLFLOW_ALLOW_FILE_STORE is true."""
    return os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").strip().lower() in ("true", "1")


def check_scheme(uri: str, field: str = FIELD) -> str:
    """``uri``'s scheme if MLflow can track to it, else a ConfigError naming ``field`` and the schemes."""
    if not isinstance(uri, str) or not uri.strip():
        raise ConfigError(field, f"must be an MLflow tracking URI, got {uri!r}")
    scheme = uri_scheme(uri)
    if scheme in FILE_SCHEMES and not file_store_allowed():
        raise ConfigError(field, f"{uri!r} is an MLflow file store, which MLflow 3.17 opens only with "
                                 "MLFLOW_ALLOW_FILE_STORE=true; use a database, e.g. sqlite:///mlflow.db")
    if scheme in SCHEMES or scheme in plugin_schemes():
        return scheme
    allowed = ", ".join(s for s in SCHEMES if s) + ", or a local folder path"
    extra = plugin_schemes()
    if extra:
        allowed += f" (plugins: {', '.join(extra)})"
    raise ConfigError(field, f"MLflow has no tracking store for the scheme {scheme!r} of {uri!r}; allowed: {allowed}")


def check_store(uri: str, timeout_s: float = 5.0, field: str = FIELD) -> None:
    """Prove within about ``timeout_s`` seconds that ``uri``'s store can be reached or created; else a
    ConfigError naming ``field``. Leaves nothing behind (a missing sqlite file or file-store folder is not
    created: its folder is probed with a temporary file). ``databricks`` and plugin schemes, which need
    their own credentials, are only scheme-checked."""
    scheme = check_scheme(uri, field)
    if scheme == "sqlite":
        _check_sqlite(uri, timeout_s, field)
    elif scheme in FILE_SCHEMES:
        _check_file_store(uri, field)
    elif scheme in ("http", "https"):
        _check_http(uri, timeout_s, field)
    elif scheme in DEFAULT_DB_PORTS:
        _check_database(uri, scheme, timeout_s, field)


def _probe_folder(folder: Path, what: str, field: str) -> None:
    """A temporary file can be created (and is removed) in ``folder``."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".raysweep-store-check-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ConfigError(field, f"cannot create {what}: {folder} does not take new files "
                                 f"({err.strerror or err})") from None


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:`` URI (relative to the working directory, as SQLAlchemy takes it);
    None for an in-memory database."""
    from sqlalchemy.engine import make_url

    database = make_url(uri).database
    if not database or database == ":memory:":
        return None
    return Path(database).expanduser()


def _check_sqlite(uri: str, timeout_s: float, field: str) -> None:
    try:
        path = sqlite_path(uri)
    except Exception as err:  # sqlalchemy's ArgumentError and friends
        raise ConfigError(field, f"not a valid sqlite URI {uri!r}: {err}") from None
    if path is None:
        return
    folder = path.parent.resolve()
    if not folder.is_dir():
        raise ConfigError(field, f"cannot create the sqlite file {path}: the folder {folder} does not exist")
    if path.is_dir():
        raise ConfigError(field, f"{path} is a folder, not a sqlite database file")
    # sqlite writes a journal beside the database: the folder must take new files even if the file exists.
    _probe_folder(folder, f"the sqlite database {path}", field)
    if not path.exists():
        return
    if not os.access(path, os.R_OK | os.W_OK):  # sqlite would quietly open it read-only
        raise ConfigError(field, f"the sqlite database {path} is not readable and writable by this user")
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True,
                                                timeout=timeout_s)) as db:
            db.execute("PRAGMA schema_version").fetchone()
    except sqlite3.Error as err:
        raise ConfigError(field, f"cannot open {path} as a sqlite database: {err}") from None


def _check_file_store(uri: str, field: str) -> None:
    parsed = urllib.parse.urlparse(uri)
    root = Path(urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else uri).expanduser().resolve()
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(field, f"cannot use {root} as an MLflow file store: {existing} is a file, not a folder")
    _probe_folder(existing, f"the MLflow file store {root}", field)


def _check_http(uri: str, timeout_s: float, field: str) -> None:
    """``GET <uri>/health`` answers 200, with the credentials and TLS settings MLflow's client would use."""
    url = uri.rstrip("/") + "/health"
    headers = {}
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        headers["Authorization"] = f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"
    elif os.environ.get("MLFLOW_TRACKING_USERNAME"):
        pair = f"{os.environ['MLFLOW_TRACKING_USERNAME']}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    context = None
    if url.startswith("https:"):
        context = ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None)
        if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s,
                                    context=context) as response:
            status = response.status
    except urllib.error.HTTPError as err:
        status = err.code
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise ConfigError(field, f"no MLflow server answers at {uri} ({reason}, within {timeout_s:g} s); start it "
                                 "or fix the URI") from None
    if status != 200:
        raise ConfigError(field, f"{url} answered HTTP {status}, not 200: not a healthy MLflow server "
                                 "(or it refuses these credentials)")


def _check_database(uri: str, dialect: str, timeout_s: float, field: str) -> None:
    """A TCP connection to the server, then a real login through SQLAlchemy, each bounded."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    try:
        url = make_url(uri)
    except Exception as err:
        raise ConfigError(field, f"not a valid {dialect} URI: {err}") from None
    shown = url.render_as_string(hide_password=True)
    if url.host:  # else a local socket (e.g. ?host=/var/run/postgresql): the login below is the check
        port = url.port or DEFAULT_DB_PORTS[dialect]
        try:
            with socket.create_connection((url.host, port), timeout=timeout_s):
                pass
        except OSError as err:
            reason = "timed out" if isinstance(err, socket.timeout) else (err.strerror or str(err))
            raise ConfigError(field, f"no {dialect} server answers at {url.host}:{port} ({reason}, within "
                                     f"{timeout_s:g} s); start it or fix {shown}") from None
    seconds = max(2, math.ceil(timeout_s))  # libpq's minimum; the drivers take whole seconds
    try:
        engine = create_engine(url, poolclass=NullPool, connect_args={CONNECT_TIMEOUT_ARG[dialect]: seconds})
        with engine.connect():
            pass
        engine.dispose()
    except ModuleNotFoundError as err:
        raise ConfigError(field, f"the database driver for {shown} is not installed ({err.name}); install it "
                                 "or name another driver (e.g. postgresql+psycopg://)") from None
    except Exception as err:  # OperationalError (bad login, missing database), a timeout, ...
        first = (str(getattr(err, "orig", None) or err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise ConfigError(field, f"cannot log in to {shown}: {first}") from None
