"""Joining a Ray cluster (or starting a loopback-only local one), and the storage preflight every multi-node
sweep needs before its first trial.

Ray 2.7+ no longer syncs trial folders to the head node: every node writes checkpoints and results to the
storage path itself, so each node must see the same folder (NFS, a shared disk, or one machine). The
preflight writes a sentinel file there from the driver and reads it back with one tiny task pinned to each
alive node; a node that cannot read it stops the sweep with a ConfigError naming ``storage``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from raysweep.spec.resources import local_cpus
from trainables.params import ConfigError

# Ray binds its servers (GCS, raylet, object manager, core workers, runtime-env agent) to 127.0.0.1 only when
# the node's IP is 127.0.0.1, and it picks that IP only with "clusters" off: the switch it reads for
# Windows and macOS, where that is the default. Passing node_ip_address="127.0.0.1" is not enough (Ray
# resolves a loopback address to the machine's outward IP). Ray 2.60: ray._private.services
# .get_node_ip_address and ray_constants.ENABLE_RAY_CLUSTER.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Set (to a fresh token) in the environment of the local Ray a driver starts: every process of that Ray (its
# daemons, which leave the driver's process tree, and the workers its raylet forks) inherits it, so the
# driver can tell its own Ray's processes from anyone else's after ray.shutdown().
OWNER_ENV = "RAYSWEEP_RAY_OWNER"
# The token this process put there, if it started a local Ray. Kept here, not read back from the environment:
# a driver launched from a process that started a Ray of its own inherits that process's token, and must not
# end the processes it marks (a `ray start --head` launched from there too, say) when it shuts down.
_owned_token: str | None = None
LEFTOVER_WAIT_S = 10.0  # ray.shutdown() returns before its workers have exited; past this they are killed


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """While a local Ray starts: every server it starts listens on 127.0.0.1 only.

    Sets LOOPBACK_ENV=0 for the processes Ray starts and Ray's parsed copy of it in this process (read when
    ``ray`` was first imported, usually long before); both are restored afterwards, so a later ``ray.init``
    that joins a real cluster is unaffected.
    """
    from ray._private import ray_constants

    before_env, before_flag = os.environ.get(LOOPBACK_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before_flag
        if before_env is None:
            os.environ.pop(LOOPBACK_ENV, None)
        else:
            os.environ[LOOPBACK_ENV] = before_env


def parse_address(address: str) -> tuple[str, int] | None:
    """``host:port`` (optionally ``ray://``-prefixed) -> (host, port); None for ``auto`` / ``local``."""
    text = address.strip()
    if text in ("auto", "local"):
        return None
    if "://" in text:
        text = text.split("://", 1)[1]
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("cluster.address", f"expected host:port (e.g. 127.0.0.1:6379) or auto, got {address!r}")
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float) -> None:
    """A TCP connection to the head's GCS port within ``timeout`` seconds, or a ConfigError.

    ``ray.init`` retries an unreachable address for a long time; this answers in at most ``timeout``.
    """
    target = parse_address(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout):
            pass
    except OSError as err:
        reason = "timed out" if isinstance(err, socket.timeout) else (err.strerror or str(err))
        raise ConfigError("cluster.address", f"no Ray head answers at {address} ({reason} after at most "
                                             f"{timeout:g} s); start one with `ray start --head` or fix the "
                                             "address") from None


def on_loopback(address: str) -> bool:
    """Whether ``address`` (``auto``: the cluster ``ray start`` last started here) is a loopback one."""
    if address.strip() == "auto":
        from ray._private.services import get_ray_address_from_environment

        try:
            address = get_ray_address_from_environment("auto", None) or ""
        except Exception:  # noqa: BLE001 - no cluster to find: ray.init says so, as a ConfigError
            return False
    target = parse_address(address) if address and address != "auto" else None
    return target is not None and target[0] in ("127.0.0.1", "localhost", "::1")


def start_ray(address: str | None, timeout: float = 10.0) -> bool:
    """Join ``address`` (or RAY_ADDRESS) or start a local Ray with this machine's CPUs. True if we started it.

    A local Ray listens on 127.0.0.1 only (:func:`loopback_only`), has no dashboard and uses Ray's token
    authentication by default; docs/cluster.md says what a cluster node exposes instead.
    """
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        check_reachable(address, timeout)
        try:
            # A head bound to loopback (the fast path: `ray start --head --node-ip-address 127.0.0.1` kept
            # running) is joined on loopback too; Ray would otherwise turn 127.0.0.1 into the machine's
            # outward IP, where nobody answers, and wait forever.
            with loopback_only() if on_loopback(address) else contextlib.nullcontext():
                ray.init(address=address, log_to_driver=False, logging_level="WARNING")
        except Exception as err:  # ConnectionError, RuntimeError, an auth error: all mean "cannot join"
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            hint = ""
            if "token" in str(err).lower() or "auth" in str(err).lower():
                hint = "; every node and the driver need the same RAY_AUTH_MODE (see the README's cluster recipe)"
            raise ConfigError("cluster.address", f"cannot connect to Ray at {address!r}: {first}{hint}") from None
        return False
    global _owned_token
    _owned_token = os.environ[OWNER_ENV] = uuid.uuid4().hex
    try:
        with loopback_only():
            ray.init(num_cpus=local_cpus(), include_dashboard=False, dashboard_host="127.0.0.1",
                     log_to_driver=False, configure_logging=True, logging_level="WARNING")
    except BaseException:
        stop_ray()
        raise
    return True


def marked_processes(name: str, value: str) -> list[int]:
    """Pids of the living processes whose environment holds ``name=value`` (Linux; none elsewhere)."""
    needle = f"{name}={value}".encode()
    try:
        entries = [int(e) for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return []
    found = []
    for pid in entries:
        try:
            if needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.append(pid)
        except OSError:  # gone, a zombie, or not ours to read
            continue
    return found


def stop_ray(wait_s: float = LEFTOVER_WAIT_S) -> list[int]:
    """``ray.shutdown()``, then, for a Ray this process started, wait until every process of it has exited
    (SIGKILL for any left after ``wait_s``): no worker outlives the driver. Returns the pids killed."""
    import ray

    global _owned_token
    ray.shutdown()
    token, _owned_token = _owned_token, None
    if token is None:
        return []
    if os.environ.get(OWNER_ENV) == token:
        del os.environ[OWNER_ENV]
    deadline = time.monotonic() + wait_s
    while (left := [p for p in marked_processes(OWNER_ENV, token) if p != os.getpid()]) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return left


def _read_sentinel(path: str) -> dict[str, str]:
    """Runs on one node: the sentinel's content (or the error reading it) and where it ran."""
    import ray

    try:
        content = Path(path).read_text()
    except OSError as err:
        content = f"ERROR {err.strerror or err}"
    return {"content": content, "node_id": ray.get_runtime_context().get_node_id(),
            "host": socket.gethostname()}


def storage_problems(token: str, nodes: Iterable[Mapping[str, Any]],
                     answers: Mapping[str, Mapping[str, str] | None]) -> list[str]:
    """One line per alive node that did not read ``token`` back: which node, and what it saw instead."""
    problems = []
    for node in nodes:
        node_id, ip = node["NodeID"], node.get("NodeManagerAddress", "?")
        answer = answers.get(node_id)
        if answer is None:
            problems.append(f"node {ip} ({node_id[:12]}): no answer in time")
        elif answer["content"] != token:
            seen = answer["content"][6:] if answer["content"].startswith("ERROR ") else "it holds a different file"
            problems.append(f"node {ip} ({node_id[:12]}): {seen}")
    return problems


def check_storage_on_nodes(root: Path, timeout: float = 120.0) -> int:
    """Every alive node reads a sentinel the driver wrote in ``root``; else a ConfigError naming ``storage``.

    Returns the number of nodes checked. The sentinel is removed afterwards whatever happens.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = uuid.uuid4().hex
    sentinel = Path(root) / f".raysweep-storage-check-{token[:12]}"
    sentinel.write_text(token)
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        task = ray.remote(_read_sentinel)
        refs = {n["NodeID"]: task.options(num_cpus=0, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(str(sentinel)) for n in nodes}
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout)
        answers = {}
        for node_id, ref in refs.items():
            try:
                answers[node_id] = ray.get(ref) if ref in ready else None
            except Exception as err:  # the task itself failed on that node
                answers[node_id] = {"content": f"ERROR {type(err).__name__}", "node_id": node_id, "host": "?"}
    finally:
        sentinel.unlink(missing_ok=True)
    problems = storage_problems(token, nodes, answers)
    if problems:
        raise ConfigError("storage", f"{root} is not visible from {'; '.join(problems)}; give a storage path "
                                     "every node shares (NFS or a shared disk)")
    return len(nodes)
