"""A real two-node Ray cluster on this machine (`ray start --head` and `ray start --address`), a sweep
through the CLI with `cluster.address`, and the second node killed while a trial runs on it.

Every command gets the same RAY_AUTH_MODE (Ray 2.60 token authentication) and a private RAY_TMPDIR. The
test stops exactly the process groups it started (never `ray stop`, which would end other users' Ray).
"""

import ipaddress
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from raysweep.execution.cluster import LOOPBACK_ENV, parse_address, start_ray, stop_ray, storage_problems
from trainables.params import ConfigError

from _cli import raysweep_cmd
from _faults import GAUSSIAN, MLP, setup_workdir
from _procs import Tracked, descendants, free_port, wait_for

EPOCHS = 4


@pytest.fixture
def cluster(tmp_path):
    """(address, environment, tracker, head process, node-2 process) of a fresh two-node cluster."""
    tracked = Tracked()
    ray_tmp = Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp"))
    # Token mode with a token of the cluster's own: a fresh machine has no ~/.ray/auth_token, and then
    # `ray start` in token mode refuses to start.
    env = {**setup_workdir(tmp_path, {}), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_TMPDIR": str(ray_tmp),
           "RAY_USAGE_STATS_ENABLED": "0",
           # Notice a dead node within seconds instead of Ray's default of about half a minute.
           "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}
    port = free_port()
    ray_bin = str(Path(sys.executable).parent / "ray")
    try:
        head = tracked.start([ray_bin, "start", "--head", "--port", str(port), "--num-cpus", "1", "--resources",
                              '{"head": 1}', "--include-dashboard", "false", "--disable-usage-stats", "--block"],
                             env, tmp_path, tmp_path / "head.log")
        node2 = tracked.start([ray_bin, "start", "--address", f"127.0.0.1:{port}", "--num-cpus", "1", "--resources",
                               '{"node2": 1}', "--disable-usage-stats", "--block"], env, tmp_path,
                              tmp_path / "node2.log")
        wait = textwrap.dedent(f"""
            import time, ray
            ray.init(address="127.0.0.1:{port}", logging_level="ERROR")
            deadline = time.time() + 120
            while sum(n["Alive"] for n in ray.nodes()) < 2 and time.time() < deadline:
                time.sleep(0.5)
            print(sum(n["Alive"] for n in ray.nodes()))
        """)
        out = subprocess.run([sys.executable, "-c", wait], env=env, capture_output=True, text=True, timeout=180)
        assert out.stdout.strip().endswith("2"), out.stdout + out.stderr + (tmp_path / "head.log").read_text()[-2000:]
        yield f"127.0.0.1:{port}", env, tracked, head, node2
    finally:
        tracked.stop()
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.ray
def test_sweep_spreads_over_two_nodes_and_survives_losing_one(tmp_path, cluster):
    address, env, tracked, head, node2 = cluster
    spec = {"name": "twonode", "plugins": ["fault_plugin"], "dataset": GAUSSIAN, "model": MLP,
            "train": {"epochs": EPOCHS, "batch_size": 64}, "methods": {"slow": {"tag": [1, 2, 3, 4], "sleep": 1.5}},
            "seeds": 1, "resources": {"cpu": 1}, "failure": {"max_failures": 2},
            "cluster": {"address": address}, "storage": str(tmp_path / "shared")}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    log = tmp_path / "run.log"
    driver = tracked.start(raysweep_cmd("run", "spec.yaml"), env, tmp_path, log)

    def trials():
        try:
            client = MlflowClient(uri)
            exp = client.get_experiment_by_name("twonode")
            runs = client.search_runs([exp.experiment_id], "tags.`raysweep.role` = 'trial'") if exp else []
        except Exception:
            return []
        return runs

    def both_nodes_busy():
        runs = trials()
        nodes = {r.data.tags.get("raysweep.node_id") for r in runs} - {None}
        running = [r for r in runs if r.info.status == "RUNNING" and r.data.tags.get("raysweep.node_id")]
        return (nodes, running) if len(nodes) == 2 and running else None

    nodes, running = wait_for(both_nodes_busy, "trials on both nodes", 300, driver, log)
    # Node 2 is the one that is not the driver's head: the trial resources tell us which id is whose.
    head_id = _head_node_id(env, address)
    victim = next((r for r in running if r.data.tags["raysweep.node_id"] != head_id), None)
    if victim is None:  # the running one is on the head: wait for one on node 2
        victim = wait_for(lambda: next((r for r in trials() if r.info.status == "RUNNING"
                                        and r.data.tags.get("raysweep.node_id", head_id) != head_id), None),
                          "a trial running on node 2", 300, driver, log)
    tracked.kill_tree(node2)  # node loss, mid-trial

    assert driver.wait(timeout=600) == 0, log.read_text()[-5000:]
    out = log.read_text()
    assert "4 trials, 0 failed" in out
    client = MlflowClient(uri)
    runs = trials()
    assert len(runs) == 4 and len({r.data.tags["raysweep.trial_key"] for r in runs}) == 4
    ran_on = set().union(*(r.data.tags["raysweep.node_ids"].split(",") for r in runs))
    assert ran_on == nodes and head_id in nodes, "trials ran on both nodes"
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.tags["raysweep.stop_reason"] == "completed"
        history = sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_balanced_acc"))
        assert history == list(range(1, EPOCHS + 1)), "the rescheduled trial continued without duplicate epochs"
    moved = next(r for r in runs if r.info.run_id == victim.info.run_id)
    assert moved.data.tags["raysweep.node_id"] == head_id, "the lost node's trial finished on the head"
    assert len(moved.data.tags["raysweep.node_ids"].split(",")) == 2
    assert not list((tmp_path / "shared").glob(".raysweep-storage-check-*")), "the preflight cleans up"


def _head_node_id(env, address) -> str:
    code = ("import ray; ray.init(address=%r, logging_level='ERROR'); "
            "print(next(n['NodeID'] for n in ray.nodes() if n['Alive'] and 'head' in n['Resources']))" % address)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    return out.stdout.strip().splitlines()[-1]


def test_storage_problems_name_each_node_that_cannot_read_the_sentinel():
    nodes = [{"NodeID": c * 56, "NodeManagerAddress": f"10.0.0.{i}"} for i, c in enumerate("abcd", start=1)]
    answers = {"a" * 56: {"content": "tok"}, "b" * 56: {"content": "ERROR No such file or directory"},
               "c" * 56: {"content": "other"}}
    assert storage_problems("tok", nodes, answers) == [
        "node 10.0.0.2 (bbbbbbbbbbbb): No such file or directory",
        "node 10.0.0.3 (cccccccccccc): it holds a different file",
        "node 10.0.0.4 (dddddddddddd): no answer in time",
    ]


def test_addresses_parse_or_fail_naming_cluster_address():
    assert parse_address("127.0.0.1:6379") == ("127.0.0.1", 6379)
    assert parse_address("ray://head:10001") == ("head", 10001)
    assert parse_address("auto") is None
    for bad in ("head", "head:port", "head:0", ":6379"):
        with pytest.raises(ConfigError) as err:
            parse_address(bad)
        assert err.value.path == "cluster.address"


def test_a_driver_that_joined_a_cluster_ends_no_process_at_shutdown(monkeypatch):
    """A driver inherits the owner mark of the process that launched it (a test runner that started a Ray of
    its own, say); a `ray start --head` launched from there carries the same mark. Joining that head and
    shutting down must leave it running: only a Ray this process started is this process's to end."""
    import raysweep.execution.cluster as cluster

    monkeypatch.setenv(cluster.OWNER_ENV, "inherited-from-the-parent")
    monkeypatch.setattr(cluster, "_owned_token", None)
    looked_for = []
    monkeypatch.setattr(cluster, "marked_processes", lambda name, value: looked_for.append(value) or [12345])
    monkeypatch.setattr(os, "kill", lambda *a: pytest.fail(f"os.kill{a} by a driver that started no Ray"))
    assert cluster.stop_ray(wait_s=0) == []
    assert looked_for == [] and os.environ[cluster.OWNER_ENV] == "inherited-from-the-parent"


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.gpu
def test_fractional_gpu_trials_cap_their_memory(tmp_path):
    spec = {"name": "gpu", "dataset": GAUSSIAN, "model": MLP,
            "train": {"epochs": 2, "batch_size": 64, "device": "cuda"},
            "methods": {"ce": {}}, "seeds": 2, "resources": {"cpu": 1, "trials_per_gpu": 2}}
    env = setup_workdir(tmp_path, spec)
    proc = subprocess.run(raysweep_cmd("run", "spec.yaml"), cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("gpu")
    runs = client.search_runs([exp.experiment_id], "tags.`raysweep.role` = 'trial'")
    assert len(runs) == 2
    for run in runs:
        assert run.data.metrics["gpu_memory_fraction"] == 0.5
        assert 0 < run.data.metrics["gpu_max_memory_mb"]


def _proc_net_address(hex_addr: str) -> str:
    """An address of /proc/net/tcp{,6} (little-endian 32-bit words) as text."""
    raw = bytes.fromhex(hex_addr)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, words)


def listening_sockets(pids) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every listening TCP socket the given processes hold (from /proc)."""
    listening = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                address, port = fields[1].split(":")
                listening[fields[9]] = (_proc_net_address(address), int(port, 16))
    out = []
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        for link in links:
            if link.startswith("socket:[") and link[8:-1] in listening:
                out.append((pid, *listening[link[8:-1]]))
    return out


def _loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def test_proc_net_addresses_decode():
    assert _proc_net_address("0100007F") == "127.0.0.1"
    assert _proc_net_address("0000000000000000FFFF00000100007F") == "::ffff:127.0.0.1"
    assert not _loopback("0.0.0.0") and not _loopback("::") and _loopback("::ffff:127.0.0.1") and _loopback("::1")


@pytest.mark.slow
@pytest.mark.ray
def test_a_local_ray_listens_on_loopback_only(monkeypatch):
    """Every listening socket of the driver and of every process the local Ray started (GCS, raylet, agents,
    workers) is on a loopback address; and the switch is off again afterwards."""
    import ray
    from ray._private import ray_constants

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", tempfile.mkdtemp(prefix="rl-", dir="/tmp"))
    assert not ray.is_initialized()
    before = (ray_constants.ENABLE_RAY_CLUSTER, os.environ.get(LOOPBACK_ENV))
    assert start_ray(None) is True
    try:
        @ray.remote(num_cpus=0)
        def worker_pid():
            return os.getpid()

        workers = set(ray.get([worker_pid.remote() for _ in range(2)]))
        pids = {os.getpid(), *descendants(os.getpid())}
        assert workers <= pids
        sockets = listening_sockets(pids)
        names = {Path(f"/proc/{pid}/exe").resolve().name for pid, _, _ in sockets}
        assert "gcs_server" in names and "raylet" in names, sockets
        assert {pid for pid, _, _ in sockets} & workers, "the trial workers' own servers were checked too"
        assert [s for s in sockets if not _loopback(s[1])] == []
        assert (ray_constants.ENABLE_RAY_CLUSTER, os.environ.get(LOOPBACK_ENV)) == before
    finally:
        stop_ray()  # not ray.shutdown(): that left this Ray's owner mark in the runner's environment
        shutil.rmtree(os.environ["RAY_TMPDIR"], ignore_errors=True)


def test_the_private_ray_switch_loopback_only_relies_on_is_still_what_ray_reads():
    """Ray 2.60 offers no public way to keep a local Ray on 127.0.0.1 (``ray.init``'s node IP argument is
    private too, and a loopback value is resolved to the outward IP): ``loopback_only`` flips the switch Ray
    reads for Windows and macOS. This pin fails loudly, naming what moved, the day Ray changes it."""
    import inspect

    from ray._private import ray_constants, services

    assert ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR == LOOPBACK_ENV, "Ray renamed its clusters switch"
    assert isinstance(ray_constants.ENABLE_RAY_CLUSTER, bool), "Ray no longer parses the switch at import"
    source = inspect.getsource(services.get_node_ip_address)
    assert "ray_constants.ENABLE_RAY_CLUSTER" in source and "get_localhost_ip()" in source, \
        "Ray's node IP no longer follows the switch: loopback_only would not keep a local Ray on 127.0.0.1"
